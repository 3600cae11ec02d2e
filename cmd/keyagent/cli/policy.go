package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/keyagent/policy"
)

func policyCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "policy", Short: "Check a policy file, or explain a decision"}
	c.AddCommand(policyCheckCmd(e), policyExplainCmd(e))
	return c
}

func policyCheckCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "check FILE", Short: "Validate a policy file (strict: unknown keys, bad patterns, unknown roles)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policy.Load(args[0])
			if err != nil {
				return err
			}
			for _, w := range p.Warnings() {
				fmt.Fprintf(e.out, "warning: %s\n", w)
			}
			fmt.Fprintf(e.out, "%s: ok (version %s)\n", args[0], p.Version())
			return nil
		},
	}
}

func policyExplainCmd(e *env) *cobra.Command {
	var (
		file, exe, as, scope, op string
		uid, gid                 uint32
	)
	c := &cobra.Command{
		Use:   "explain --uid U [--exe PATH] [--as IDENTITY] --scope S --op decrypt",
		Short: "Print the decision for a request and the rule that made it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("uid") {
				return usagef("--uid is required")
			}
			if file == "" {
				return usagef("--policy is required")
			}
			p, err := policy.Load(file)
			if err != nil {
				return err
			}
			req := policy.Request{Caller: policy.Caller{UID: uid, GID: gid, Exe: exe}, ActingFor: as, Scope: scope, Op: policy.Op(op)}
			fmt.Fprint(e.out, p.Explain(req))
			if !p.Decide(req).Allowed {
				return fmt.Errorf("denied")
			}
			return nil
		},
	}
	c.Flags().StringVar(&file, "policy", "/etc/keyward/policy.yaml", "policy file")
	c.Flags().Uint32Var(&uid, "uid", 0, "caller uid")
	c.Flags().Uint32Var(&gid, "gid", 0, "caller gid")
	c.Flags().StringVar(&exe, "exe", "", "caller executable")
	c.Flags().StringVar(&as, "as", "", "identity acted for")
	c.Flags().StringVar(&scope, "scope", "", "scope")
	c.Flags().StringVar(&op, "op", "decrypt", "encrypt | decrypt | status | purge")
	return c
}
