package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/kdf"
)

func kcvCmd(e *env) *cobra.Command {
	var scope string
	var version, bits int
	c := &cobra.Command{
		Use:   "kcv --scope NAME:scope [--version V]",
		Short: "Print the key check value of a derived data key (never the key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if scope == "" {
				return usagef("--scope is required")
			}
			return e.withBackend(func(b backend.Backend) error {
				k, v, err := b.Derive(cmd.Context(), scope, version, bits, false)
				if err != nil {
					return err
				}
				defer k.Destroy()
				kcv, err := kdf.KCV(k)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.out, "scope=%s version=%d kcv=%s\n", scope, v, kcv)
				return nil
			})
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "the scope, KEYRING:NAME")
	c.Flags().IntVar(&version, "version", 0, "keyring version (0: the newest active)")
	c.Flags().IntVar(&bits, "bits", 256, "data key size: 256, or 512 for AES-SIV columns")
	return c
}
