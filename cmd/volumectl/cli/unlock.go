package cli

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/volume/bind"
)

func unlockCmd(e *env) *cobra.Command {
	var test, useCryptsetup, readOnly bool
	cmd := &cobra.Command{
		Use:   "unlock DEVICE NAME | unlock DEVICE --test",
		Short: "Open the keyward keyslot with the agent's key and activate /dev/mapper/NAME",
		Long: `unlock reads the volume's keyward token, fetches the key it names (scope and version) from the
agent, opens that one keyslot and activates the dm-crypt mapping /dev/mapper/NAME through device-mapper
ioctls (no udev, no cryptsetup needed). --test only checks that the keyslot opens. --cryptsetup hands the
derived passphrase to "cryptsetup open --key-slot N --key-file -" instead. --socket may name a
virtio-serial port device (e.g. /dev/vport0p1) to reach a host agent from a guest.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if test && len(args) == 1 || !test && len(args) == 2 {
				return nil
			}
			return usagef("unlock: want DEVICE NAME, or DEVICE with --test")
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o := bind.UnlockOptions{Test: test, ReadOnly: readOnly}
			if !test {
				o.Name = args[1]
			}
			if useCryptsetup {
				p, err := exec.LookPath("cryptsetup")
				if err != nil {
					return fmt.Errorf("unlock: --cryptsetup: %w", err)
				}
				o.Cryptsetup = p
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), e.timeout)
			defer cancel()
			c := e.agent()
			defer c.Close()
			u, err := bind.Unlock(ctx, args[0], c, o)
			if err != nil {
				return explain(err)
			}
			if test {
				fmt.Fprintf(e.out, "ok: keyslot %d opens with %s version %d (token %d)\n", u.Keyslot, u.Scope, u.Version, u.Token)
			} else {
				fmt.Fprintf(e.out, "unlocked %s as %s (keyslot %d, %s version %d)\n", args[0], u.Mapper, u.Keyslot, u.Scope, u.Version)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&test, "test", false, "only check that the keyward keyslot opens")
	cmd.Flags().BoolVar(&useCryptsetup, "cryptsetup", false, "open with cryptsetup (passphrase on its stdin) instead of device-mapper ioctls")
	cmd.Flags().BoolVar(&readOnly, "readonly", false, "activate a read-only mapping")
	return cmd
}
