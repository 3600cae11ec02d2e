package cli

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/volume/luks2"
)

func statusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status DEVICE",
		Short: "Show the volume's keyslots and tokens, and which are Keyward's",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			v, err := luks2.Open(f)
			if err != nil {
				return explain(fmt.Errorf("%s: %w", args[0], err))
			}
			return printStatus(e, args[0], v)
		},
	}
}

func printStatus(e *env, path string, v *luks2.Volume) error {
	m := v.Metadata()
	kw, err := v.KeywardTokens()
	if err != nil {
		return err
	}
	byslot := map[int]int{} // keyslot -> keyward token
	for id, t := range kw {
		for _, s := range t.Keyslots {
			byslot[s] = id
		}
	}
	w := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "device:\t%s\n", path)
	fmt.Fprintf(w, "uuid:\t%s\n", v.UUID())
	rep := v.Report()
	fmt.Fprintf(w, "header:\t%s\n", health(rep))
	_, seg := v.DataSegment()
	fmt.Fprintf(w, "data:\t%s, %d-byte sectors, offset %d\n", seg.Encryption, seg.SectorSize, seg.Offset)
	fmt.Fprintln(w, "keyslots:")
	for _, id := range m.SortedKeyslots() {
		ks := m.Keyslots[id]
		kdf := ks.KDF.Type
		switch ks.KDF.Type {
		case "pbkdf2":
			kdf = fmt.Sprintf("pbkdf2-%s, %d iterations", ks.KDF.Hash, ks.KDF.Iterations)
		case "argon2i", "argon2id":
			kdf = fmt.Sprintf("%s, time %d, memory %d KiB, %d cpus", ks.KDF.Type, ks.KDF.Time, ks.KDF.Memory, ks.KDF.CPUs)
		}
		who := "passphrase (recovery)"
		if tid, ok := byslot[id]; ok {
			who = fmt.Sprintf("keyward: %s version %d (token %d)", kw[tid].Scope, kw[tid].Version, tid)
		}
		fmt.Fprintf(w, "  %d\t%s\t%s\t%s\n", id, ks.Type, kdf, who)
	}
	fmt.Fprintln(w, "tokens:")
	for _, id := range m.SortedTokens() {
		t := m.Tokens[id]
		slots := make([]string, len(t.Keyslots))
		for i, s := range t.Keyslots {
			slots[i] = fmt.Sprint(s)
		}
		desc := t.Type
		if k, ok := kw[id]; ok {
			desc = fmt.Sprintf("keyward\t%s version %d", k.Scope, k.Version)
		} else {
			desc += "\t(not Keyward's)"
		}
		fmt.Fprintf(w, "  %d\tkeyslots [%s]\t%s\n", id, strings.Join(slots, ","), desc)
	}
	if len(kw) == 0 {
		fmt.Fprintln(w, "keyward:\tnot enrolled")
	} else {
		fmt.Fprintf(w, "keyward:\tenrolled (%d token(s))\n", len(kw))
	}
	return w.Flush()
}

func health(r luks2.Report) string {
	if r.Healthy() {
		return fmt.Sprintf("both copies valid (seqid %d)", r.Primary.SeqID)
	}
	var parts []string
	for _, c := range []struct {
		name string
		s    luks2.CopyState
	}{{"primary", r.Primary}, {"secondary", r.Secondary}} {
		switch {
		case c.s.Err != nil:
			parts = append(parts, fmt.Sprintf("%s damaged: %v", c.name, c.s.Err))
		case c.s.Stale:
			parts = append(parts, fmt.Sprintf("%s stale (seqid %d)", c.name, c.s.SeqID))
		case c.s.Differ:
			parts = append(parts, fmt.Sprintf("%s differs", c.name))
		}
	}
	return "DEGRADED: " + strings.Join(parts, "; ") + " (the next write repairs it; cryptsetup repair also does)"
}
