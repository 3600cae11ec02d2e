// Package cli is the keyagent command line: `serve` runs the agent; `status`, `purge` and `get` talk
// to a running agent over its socket; `policy check` and `policy explain` read a policy file.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/keyagent/confile"
)

// Main runs the command line and returns the exit code: 0 ok, 1 failure or denial, 2 usage.
func Main(ctx context.Context, args []string) int {
	return run(ctx, args, os.Stdout, os.Stderr)
}

type env struct {
	config string
	socket string
	out    io.Writer
	errw   io.Writer
}

type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func run(ctx context.Context, args []string, out, errw io.Writer) int {
	e := &env{out: out, errw: errw}
	root := &cobra.Command{
		Use:           "keyagent",
		Short:         "Keyward's node-local key agent",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return confile.ApplyEnv(cmd.Flags(), "KEYWARD")
		},
	}
	root.PersistentFlags().StringVar(&e.config, "config", "/etc/keyward/agent.yaml", "configuration file (serve)")
	root.PersistentFlags().StringVar(&e.socket, "socket", "", "agent socket (default $KEYWARD_AGENT_SOCKET, else "+client.DefaultSocket+")")
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errw)
	root.AddCommand(serveCmd(e), statusCmd(e), purgeCmd(e), getCmd(e), policyCmd(e))
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(errw, "keyagent: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "flag") {
			return 2
		}
		return 1
	}
	return 0
}

// client returns a client of the agent socket chosen by the usual rule. The --socket flag may have
// been filled from KEYWARD_SOCKET by ApplyEnv; KEYWARD_AGENT_SOCKET is the documented variable.
func (e *env) client() *client.Client { return client.New(client.SocketPath(e.socket)) }
