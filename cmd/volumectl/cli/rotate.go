package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/volume/bind"
)

func rotateCmd(e *env) *cobra.Command {
	var scope, backupDir string
	cmd := &cobra.Command{
		Use:   "rotate DEVICE [--scope SCOPE]",
		Short: "Enroll the newest key version, then remove the keyslots of older versions",
		Long: `rotate enrolls a keyslot for the newest version of the volume's keyward key (the volume key comes
from the current keyward keyslot: no recovery passphrase needed), then removes the older keyward
keyslots and tokens. Interrupted, it leaves a volume that unlocks; running it again finishes the job.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), e.timeout)
			defer cancel()
			c := e.agent()
			defer c.Close()
			r, err := bind.Rotate(ctx, args[0], c, bind.RotateOptions{Scope: scope, BackupDir: backupDir})
			if err != nil {
				return explain(err)
			}
			if r.Added {
				fmt.Fprintf(e.out, "enrolled keyslot %d, token %d, %s version %d\n", r.Current.Keyslot, r.Current.Token, r.Current.Scope, r.Current.Version)
			} else {
				fmt.Fprintf(e.out, "keyslot %d already holds %s version %d\n", r.Current.Keyslot, r.Current.Scope, r.Current.Version)
			}
			for _, o := range r.Removed {
				fmt.Fprintf(e.out, "removed keyslot %d, token %d (version %d)\n", o.Keyslot, o.Token, o.Version)
			}
			if r.Backup != "" {
				fmt.Fprintf(e.out, "header backup: %s\n", r.Backup)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "", "the binding to rotate (default: the volume's only keyward scope)")
	cmd.Flags().StringVar(&backupDir, "backup-dir", DefaultBackupDir, "directory for the header backup taken before writing")
	return cmd
}
