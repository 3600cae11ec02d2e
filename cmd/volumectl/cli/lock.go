package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/volume/bind"
)

func lockCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "lock NAME",
		Short: "Remove the mapping /dev/mapper/NAME (the volume key leaves the kernel)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := bind.Lock(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "locked %s\n", args[0])
			return nil
		},
	}
}
