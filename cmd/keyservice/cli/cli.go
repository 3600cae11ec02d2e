// Package cli is the keyservice command line: `serve` and the operator subcommands that act on the
// backend directly (keyring create/rotate/list/disable/enable/destroy/import, import-key, kcv, backup).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/confile"
	"github.com/keyward/keyward/keyagent/keyservice"
	"github.com/keyward/keyward/memsafe"
)

// Main runs the command line and returns the exit code: 0 ok, 1 failure, 2 usage.
func Main(ctx context.Context, args []string) int {
	return run(ctx, args, os.Stdin, os.Stdout, os.Stderr)
}

type env struct {
	config string
	in     io.Reader
	out    io.Writer
	errw   io.Writer
}

func run(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	e := &env{in: in, out: out, errw: errw}
	root := &cobra.Command{
		Use:           "keyservice",
		Short:         "Keyward's HSM-backed key service",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return confile.ApplyEnv(cmd.Flags(), "KEYWARD")
		},
	}
	root.PersistentFlags().StringVar(&e.config, "config", "/etc/keyward/keyservice.yaml", "configuration file")
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errw)
	root.AddCommand(serveCmd(e), keyringCmd(e), importKeyCmd(e), kcvCmd(e), backupCmd(e))
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(errw, "keyservice: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "flag") {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// openBackend loads the config (backend part only) and opens the backend.
func (e *env) openBackend() (backend.Backend, error) {
	cfg, err := keyservice.Load(e.config, false)
	if err != nil {
		return nil, err
	}
	return keyservice.OpenBackend(cfg.Backend, slog.New(slog.NewTextHandler(e.errw, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// withBackend opens the backend, runs fn, and closes it.
func (e *env) withBackend(fn func(b backend.Backend) error) error {
	b, err := e.openBackend()
	if err != nil {
		return err
	}
	defer memsafe.DestroyAll()
	defer b.Close()
	return fn(b)
}

// parseRingVersion parses NAME@V.
func parseRingVersion(s string) (string, int, error) {
	name, v, ok := strings.Cut(s, "@")
	if !ok {
		return "", 0, usagef("%q: want NAME@VERSION", s)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return "", 0, usagef("%q: version must be a number >= 1", s)
	}
	return name, n, nil
}
