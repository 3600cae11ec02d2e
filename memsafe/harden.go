package memsafe

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// HardenOptions selects the optional parts of Harden.
type HardenOptions struct {
	// MlockAll locks every current and future page of the process (mlockall). It needs
	// CAP_IPC_LOCK or a large RLIMIT_MEMLOCK; when it fails, Harden reports it and goes on.
	MlockAll bool
}

// HardenReport says what Harden could and could not do. Daemons log it at start.
type HardenReport struct {
	NonDumpable bool // PR_SET_DUMPABLE=0: no core dumps, no ptrace attach by the same uid
	NoCoreFiles bool // RLIMIT_CORE=0
	MlockAll    bool // mlockall(MCL_CURRENT|MCL_FUTURE) succeeded
	Errors      []error
}

func (r HardenReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "non_dumpable=%t no_core_files=%t mlockall=%t", r.NonDumpable, r.NoCoreFiles, r.MlockAll)
	for _, err := range r.Errors {
		fmt.Fprintf(&b, "; %v", err)
	}
	return b.String()
}

// Err joins the failures, nil when every requested measure took effect.
func (r HardenReport) Err() error { return errors.Join(r.Errors...) }

// Harden applies process-level protections for a daemon that holds keys. Call it first thing in main.
func Harden(opts HardenOptions) HardenReport {
	var r HardenReport
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		r.Errors = append(r.Errors, fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err))
	} else {
		r.NonDumpable = true
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		r.Errors = append(r.Errors, fmt.Errorf("setrlimit(RLIMIT_CORE, 0): %w", err))
	} else {
		r.NoCoreFiles = true
	}
	if opts.MlockAll {
		if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
			r.Errors = append(r.Errors, fmt.Errorf("mlockall: %w (needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)", err))
		} else {
			r.MlockAll = true
		}
	}
	return r
}

// Dumpable reports the process's PR_GET_DUMPABLE value.
func Dumpable() (bool, error) {
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return false, fmt.Errorf("prctl(PR_GET_DUMPABLE): %w", err)
	}
	return v != 0, nil
}
