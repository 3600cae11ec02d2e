package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/keyagent/kdf"
)

func statusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "status", Short: "Show the running agent's upstream health, cache size and policy version", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := e.client()
			defer c.Close()
			fields, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			for _, f := range fields {
				fmt.Fprintf(e.out, "%s=%s\n", f.Name, f.Value)
			}
			return nil
		},
	}
}

func purgeCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "purge", Short: "Wipe every key the agent holds, now", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := e.client()
			defer c.Close()
			if err := c.Purge(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.out, "purged")
			return nil
		},
	}
}

func getCmd(e *env) *cobra.Command {
	var (
		scope, as string
		version   uint32
		bits      int
		encrypt   bool
		kcv       bool
	)
	c := &cobra.Command{
		Use:   "get --scope S [--version V] [--as ID] --kcv",
		Short: "Fetch a key through the agent and print its key check value (never the key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if scope == "" {
				return usagef("--scope is required")
			}
			if !kcv {
				return usagef("--kcv is required: keyagent get never prints keys, only their check values")
			}
			op := client.Decrypt
			if encrypt {
				op = client.Encrypt
			}
			c := e.client()
			defer c.Close()
			k, v, err := c.Key(cmd.Context(), client.Request{Scope: scope, Version: version, ActingFor: as, Op: op, Bits: bits})
			if err != nil {
				return err // a denial reads "denied: <the policy's reason>"
			}
			defer k.Destroy()
			sum, err := kdf.KCV(k)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.out, "scope=%s version=%d kcv=%s\n", scope, v, sum)
			return nil
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "scope, KEYRING:NAME")
	c.Flags().Uint32Var(&version, "version", 0, "key version (0: newest)")
	c.Flags().StringVar(&as, "as", "", "identity to act for (e.g. db:alice)")
	c.Flags().IntVar(&bits, "bits", 256, "256, or 512 for AES-SIV")
	c.Flags().BoolVar(&encrypt, "encrypt", false, "ask for the key to encrypt with (newest active version)")
	c.Flags().BoolVar(&kcv, "kcv", false, "print the key check value")
	return c
}
