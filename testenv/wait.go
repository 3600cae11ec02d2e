package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// WaitFor calls cond every 50ms until it returns nil, and fails the test after d with what and cond's
// last error. Tests use it for "eventually" conditions (a rotation reaching a cache, a backend gone
// from pg_stat_activity) instead of a hand-written deadline loop each.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitDial waits up to d until network ("tcp", "unix") addr accepts a connection, for a server a
// test started itself; it returns the last dial error on timeout so the caller can add the server's
// output to its failure.
func WaitDial(network, addr string, d time.Duration) error {
	return waitDial(network, addr, d, nil)
}

// SelfExe is the running test binary's path with symlinks resolved: what the kernel reports as
// /proc/<pid>/exe, and so what a keyagent policy's `exe:` must name for the test process itself.
func SelfExe(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, err = filepath.EvalSymlinks(self)
	if err != nil {
		t.Fatal(err)
	}
	return self
}
