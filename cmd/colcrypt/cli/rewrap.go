package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/colcrypt/migrate"
)

func newRewrapCmd() *cobra.Command {
	var f migrateFlags
	cmd := &cobra.Command{
		Use:   "rewrap --config FILE --table T --column C [--batch N] [--rate ROWS/S] [--as ROLE]",
		Short: "Re-encrypt a column's values with the newest key version, online",
		Long: `Moves every value of a protected column that is not sealed with the newest key version of its scope (after
keyservice keyring rotate) to that version, in short batches. It is idempotent and resumable, and ends by
opening every value (or --verify-sample of them) and counting those still at an older version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, _, err := f.run(cmd, migrate.Rewrap)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rewrapped %s: %d values moved to key version %d in %d batches, %d verified, %d remaining, %s\n",
				res.Column, res.Rows, res.Version, res.Batches, res.Verified, res.Remaining, res.Elapsed.Round(time.Millisecond))
			if res.Remaining > 0 {
				return &exitError{ExitError, fmt.Errorf("%d values are still not at key version %d (written meanwhile); run rewrap again", res.Remaining, res.Version)}
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
