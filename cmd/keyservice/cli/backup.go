package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/memsafe"
)

func backupCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "backup", Short: "Export data keys wrapped under a customer key (AES-KWP), and restore them"}
	c.AddCommand(backupExportCmd(e), backupRestoreCmd(e))
	return c
}

// readWrapKey reads the --wrap-key file (backend.ReadWrapKey: 32 raw bytes, into locked memory).
func readWrapKey(path string) (*memsafe.Key, error) {
	if path == "" {
		return nil, usagef("--wrap-key is required")
	}
	return backend.ReadWrapKey(path)
}

func backupExportCmd(e *env) *cobra.Command {
	var scope, wrapKey, out string
	var version, bits int
	c := &cobra.Command{
		Use:   "export --scope S --wrap-key FILE --out FILE",
		Short: "Wrap the data key of a scope under a customer AES-256 key (AES-KWP, RFC 5649)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if scope == "" || out == "" {
				return usagef("--scope and --out are required")
			}
			wk, err := readWrapKey(wrapKey)
			if err != nil {
				return err
			}
			defer wk.Destroy()
			return e.withBackend(func(b backend.Backend) error {
				blob, v, err := b.ExportBackup(cmd.Context(), scope, version, bits, wk)
				if err != nil {
					return err
				}
				if err := os.WriteFile(out, blob, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(e.out, "exported scope=%s version=%d to %s\n", scope, v, out)
				return nil
			})
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "the scope, KEYRING:NAME")
	c.Flags().IntVar(&version, "version", 0, "keyring version (0: the newest active)")
	c.Flags().IntVar(&bits, "bits", 256, "256, or 512")
	c.Flags().StringVar(&wrapKey, "wrap-key", "", "file with the raw 32-byte customer AES key")
	c.Flags().StringVar(&out, "out", "", "where to write the backup")
	return c
}

func backupRestoreCmd(e *env) *cobra.Command {
	var in, wrapKey string
	c := &cobra.Command{
		Use:   "restore --in FILE --wrap-key FILE",
		Short: "Unwrap a backup, check it, and print its scope, version and KCV",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" {
				return usagef("--in is required")
			}
			blob, err := os.ReadFile(in)
			if err != nil {
				return err
			}
			wk, err := readWrapKey(wrapKey)
			if err != nil {
				return err
			}
			defer wk.Destroy()
			return e.withBackend(func(b backend.Backend) error {
				r, err := b.RestoreBackup(cmd.Context(), blob, wk)
				if err != nil {
					return err
				}
				defer r.Key.Destroy()
				fmt.Fprintf(e.out, "restored scope=%s version=%d kcv=%s verified=%t\n", r.Scope, r.Version, r.KCV, r.Verified)
				return nil
			})
		},
	}
	c.Flags().StringVar(&in, "in", "", "the backup file")
	c.Flags().StringVar(&wrapKey, "wrap-key", "", "file with the raw 32-byte customer AES key")
	return c
}
