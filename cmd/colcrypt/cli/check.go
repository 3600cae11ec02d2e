package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/colcrypt/migrate"
	"github.com/keyward/keyward/keyagent/client"
)

func newCheckCmd() *cobra.Command {
	var f dbFlags
	cmd := &cobra.Command{
		Use:   "check --config FILE [--as ROLE] [--dsn DSN]",
		Short: "Check the config against the live catalog and the key agent",
		Long: `Validates colcrypt.yaml, then for every configured column: the table and column exist and are bytea, the
values are envelopes of the column's scope, no encrypt-column run is unfinished, and the role (--as, default
the connecting user) can seal and open with the scope's keys through the agent. Prints a report; exits
non-zero when there is a problem. It never writes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := f.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			defer e.close()
			ping := func(ctx context.Context) error {
				// Status is for admins; a denial is an answer, so the agent is there.
				_, err := e.agent.Status(ctx)
				if errors.Is(err, client.ErrDenied) {
					return nil
				}
				return err
			}
			rep, err := migrate.Check(cmd.Context(), e.cfg, migrate.CheckOptions{Conn: e.conn, Keys: e.keys, Identity: e.identity, Ping: ping})
			fmt.Fprintf(cmd.OutOrStdout(), "config %s, keys as %s\n%s", e.cfg.Path, e.identity, rep)
			if err != nil {
				return err
			}
			if n := rep.Problems(); n > 0 {
				return &exitError{ExitError, fmt.Errorf("%d problem(s)", n)}
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
