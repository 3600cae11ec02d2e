// Package cli is the volumectl command line (see volume/bind for what each subcommand guarantees).
//
// Exit codes, so that boot scripts can tell failures apart without parsing messages:
//
//	0 done
//	1 any other failure
//	2 usage
//	3 the agent is unreachable (worth retrying: it may not be up yet)
//	4 the agent denied the key, or has no such key
//	5 the volume has no keyward token, or the agent's key does not open its keyslot (use the recovery passphrase)
//	6 busy: the mapping already exists, or is still in use
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/volume/bind"
	"github.com/keyward/keyward/volume/luks2"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitUnavailable = 3
	exitDenied      = 4
	exitNoKey       = 5
	exitBusy        = 6
)

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string) int {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, os.Stdin, os.Stdout, os.Stderr)
}

type env struct {
	socket  string
	timeout time.Duration
	in      io.Reader
	out     io.Writer
	errw    io.Writer
}

type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func run(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	e := &env{in: in, out: out, errw: errw}
	root := &cobra.Command{
		Use:           "volumectl",
		Short:         "Bind LUKS2 volumes to Keyward keys",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().StringVar(&e.socket, "socket", "", "agent socket, or a virtio-serial port device (default $KEYWARD_AGENT_SOCKET, else "+client.DefaultSocket+")")
	root.PersistentFlags().DurationVar(&e.timeout, "timeout", 30*time.Second, "how long to wait for the agent")
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errw)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(enrollCmd(e), unlockCmd(e), lockCmd(e), statusCmd(e), rotateCmd(e))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(errw, "volumectl: %v\n", err)
	return exitCode(err)
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue), strings.HasPrefix(err.Error(), "unknown command"), strings.Contains(err.Error(), "accepts "):
		return exitUsage
	case errors.Is(err, client.ErrUnavailable):
		return exitUnavailable
	case errors.Is(err, client.ErrDenied), errors.Is(err, client.ErrNotFound):
		return exitDenied
	case errors.Is(err, bind.ErrNoToken), errors.Is(err, bind.ErrWrongKey):
		return exitNoKey
	case errors.Is(err, bind.ErrBusy):
		return exitBusy
	}
	return exitFailure
}

// agent returns a client of the agent chosen by the usual rule (flag, $KEYWARD_AGENT_SOCKET, default).
func (e *env) agent() *client.Client { return bind.Agent(client.SocketPath(e.socket)) }

// explain adds the hint an operator needs to the errors a boot fails with.
func explain(err error) error {
	switch {
	case errors.Is(err, luks2.ErrNotLUKS2):
		return fmt.Errorf("%w (not a LUKS2 volume)", err)
	case errors.Is(err, client.ErrUnavailable):
		return fmt.Errorf("%w (agent unreachable: is keyagent running, and is --socket right?)", err)
	case errors.Is(err, client.ErrDenied):
		return fmt.Errorf("%w (denied by the agent's policy or the key service's grants)", err)
	case errors.Is(err, bind.ErrWrongKey):
		return fmt.Errorf("%w (wrong key: the token's scope or version was changed, or the keyslot is damaged; unlock with the recovery passphrase)", err)
	}
	return err
}
