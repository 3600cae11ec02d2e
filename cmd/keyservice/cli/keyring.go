package cli

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/backend"
)

func keyringCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "keyring", Short: "Create, rotate, list, disable, destroy and import keyrings"}
	c.AddCommand(keyringCreateCmd(e), keyringRotateCmd(e), keyringListCmd(e),
		keyringStateCmd(e, "disable", backend.StateDisabled, "Stop using NAME@V for new encryption (decryption still works)"),
		keyringStateCmd(e, "enable", backend.StateActive, "Re-enable a disabled NAME@V"),
		keyringDestroyCmd(e), keyringImportCmd(e))
	return c
}

func keyringCreateCmd(e *env) *cobra.Command {
	var kind string
	c := &cobra.Command{
		Use: "create NAME", Short: "Create a keyring with a fresh version 1 generated in the backend", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := backend.ParseKind(kind)
			if err != nil {
				return usagef("--kind: %v", err)
			}
			return e.withBackend(func(b backend.Backend) error {
				r, err := b.CreateKeyring(cmd.Context(), args[0], k)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.out, "created keyring=%s kind=%s version=%d\n", r.Name, r.Kind, len(r.Versions))
				return nil
			})
		},
	}
	c.Flags().StringVar(&kind, "kind", "derive", "derive | hsm-aead")
	return c
}

func keyringRotateCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "rotate NAME", Short: "Add a new version, which becomes the one used for new encryption", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withBackend(func(b backend.Backend) error {
				v, err := b.Rotate(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(e.out, "rotated keyring=%s version=%d\n", args[0], v.N)
				return nil
			})
		},
	}
}

func keyringListCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List keyrings: name, kind, versions, state, created", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withBackend(func(b backend.Backend) error {
				rings, err := b.Keyrings(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tVERSION\tSTATE\tCREATED")
				for _, r := range rings {
					for _, v := range r.Versions {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Name, r.Kind, v.N, v.State, v.Created.UTC().Format(time.RFC3339))
					}
				}
				return tw.Flush()
			})
		},
	}
}

func keyringStateCmd(e *env, use string, to backend.State, short string) *cobra.Command {
	return &cobra.Command{
		Use: use + " NAME@V", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, v, err := parseRingVersion(args[0])
			if err != nil {
				return err
			}
			return e.withBackend(func(b backend.Backend) error {
				if err := b.SetState(cmd.Context(), name, v, to); err != nil {
					return err
				}
				fmt.Fprintf(e.out, "keyring=%s version=%d state=%s\n", name, v, to)
				return nil
			})
		},
	}
}

func keyringDestroyCmd(e *env) *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use: "destroy NAME@V", Short: "Destroy a version for good: data encrypted under it can never be read again", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, v, err := parseRingVersion(args[0])
			if err != nil {
				return err
			}
			if !yes {
				fmt.Fprintf(e.errw, "Destroying %s@%d is irreversible: everything encrypted under it becomes unreadable.\nType the version (%s@%d) to confirm: ", name, v, name, v)
				line, _ := bufio.NewReader(e.in).ReadString('\n')
				if strings.TrimSpace(line) != args[0] {
					return fmt.Errorf("not confirmed: nothing destroyed")
				}
			}
			return e.withBackend(func(b backend.Backend) error {
				if err := b.SetState(cmd.Context(), name, v, backend.StateDestroyed); err != nil {
					return err
				}
				fmt.Fprintf(e.out, "keyring=%s version=%d state=destroyed\n", name, v)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	return c
}

func keyringImportCmd(e *env) *cobra.Command {
	var bundle, wrapping, kind string
	c := &cobra.Command{
		Use:   "import NAME --bundle FILE --wrapping RSA_AES_KEY_WRAP_SHA_1|RSA_AES_KEY_WRAP_SHA_256",
		Short: "Import a BYOK bundle (RSA-OAEP(ephemeral AES key) || AES-KWP(secret)) as a new keyring or version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w, err := backend.ParseWrapping(wrapping)
			if err != nil {
				return usagef("--wrapping: %v", err)
			}
			k, err := backend.ParseKind(kind)
			if err != nil {
				return usagef("--kind: %v", err)
			}
			if bundle == "" {
				return usagef("--bundle is required")
			}
			data, err := os.ReadFile(bundle)
			if err != nil {
				return err
			}
			return e.withBackend(func(b backend.Backend) error {
				v, kcv, err := b.Import(cmd.Context(), args[0], k, data, w)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.out, "imported keyring=%s kind=%s version=%d kcv=%s\n", args[0], k, v.N, kcv)
				return nil
			})
		},
	}
	c.Flags().StringVar(&bundle, "bundle", "", "the wrapped key bundle file")
	c.Flags().StringVar(&wrapping, "wrapping", string(backend.WrapRSAAESKeyWrapSHA256), "RSA_AES_KEY_WRAP_SHA_1 | RSA_AES_KEY_WRAP_SHA_256")
	c.Flags().StringVar(&kind, "kind", "derive", "derive | hsm-aead")
	return c
}
