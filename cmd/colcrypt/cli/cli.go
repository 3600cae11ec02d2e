// Package cli is the colcrypt command line: one file per subcommand. Main returns the exit code so the
// binary's main stays one line and tests can run the commands in-process.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitError  = 1
	ExitConfig = 2
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs colcrypt with args (without the program name) and returns the process exit code.
func Main(ctx context.Context, args []string) int {
	return run(ctx, args, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "colcrypt",
		Short:         "Transparent column encryption proxy for PostgreSQL",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServeCmd())
	for _, add := range extraCommands {
		root.AddCommand(add())
	}
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "colcrypt:", err)
		if e, ok := err.(*exitError); ok {
			return e.code
		}
		return ExitError
	}
	return ExitOK
}

// extraCommands lets other files of this package (encrypt-column, rewrap, check) register themselves.
var extraCommands []func() *cobra.Command
