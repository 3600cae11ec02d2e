package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/backend"
)

func importKeyCmd(e *env) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "import-key --out import.pem",
		Short: "Create (once) the RSA-3072 BYOK import key in the backend and write its public key as PEM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out is required")
			}
			return e.withBackend(func(b backend.Backend) error {
				pub, err := b.ImportPublicKey(cmd.Context())
				if err != nil {
					return err
				}
				p, err := backend.PublicKeyPEM(pub)
				if err != nil {
					return err
				}
				if err := os.WriteFile(out, p, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(e.out, "import public key (RSA-%d) written to %s\n", pub.N.BitLen(), out)
				return nil
			})
		},
	}
	c.Flags().StringVar(&out, "out", "", "where to write the PEM public key")
	return c
}
