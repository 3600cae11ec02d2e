package colkeys_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/colkeys/colkeystest"
	"github.com/keyward/keyward/colcrypt/envelope"
	"github.com/keyward/keyward/keyagent/client"
)

var (
	ssn    = colkeys.Column{Table: "public.employees", Name: "ssn", Scope: "payroll:employees.ssn", Mode: colkeys.Deterministic}
	salary = colkeys.Column{Table: "public.employees", Name: "salary", Scope: "payroll:employees.salary", Mode: colkeys.Randomized}
	note   = colkeys.Column{Table: "public.employees", Name: "note", Scope: "vault:employees.note", Mode: colkeys.HSM}
)

func TestKeys(t *testing.T) {
	st := colkeystest.Start(t)
	ctx := context.Background()
	k := colkeys.New(colkeys.Config{Agent: st.Client, TTL: 500 * time.Millisecond})
	t.Cleanup(k.Close)

	seal := func(t *testing.T, id string, col colkeys.Column, pt string) []byte {
		t.Helper()
		s, err := k.Sealer(ctx, id, col)
		if err != nil {
			t.Fatalf("Sealer(%s, %s): %v", id, col.AADName(), err)
		}
		env, err := s.Seal(ctx, nil, []byte(pt))
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		return env
	}
	for _, col := range []colkeys.Column{ssn, salary, note} {
		t.Run("round trip "+col.Mode, func(t *testing.T) {
			env := seal(t, "db:alice", col, "123-45-6789")
			if !bytes.HasPrefix(env, []byte("KW\x01")) {
				t.Fatalf("not an envelope: %x", env[:4])
			}
			alg, _ := colkeys.AlgFor(col.Mode)
			if len(env) != len("123-45-6789")+alg.Overhead() {
				t.Fatalf("envelope of %d bytes, want plaintext+%d", len(env), alg.Overhead())
			}
			got, err := k.Open(ctx, "db:alice", col, env, nil)
			if err != nil || string(got) != "123-45-6789" {
				t.Fatalf("Open = %q, %v", got, err)
			}
			// Another column (same scope keyring) must not open it.
			other := col
			other.Name = "other"
			if _, err := k.Open(ctx, "db:alice", other, env, nil); !errors.Is(err, envelope.ErrOpen) {
				t.Fatalf("Open as another column: %v, want ErrOpen", err)
			}
			bad := bytes.Clone(env)
			bad[len(bad)-1] ^= 1
			if _, err := k.Open(ctx, "db:alice", col, bad, nil); !errors.Is(err, envelope.ErrOpen) {
				t.Fatalf("Open of a tampered value: %v, want ErrOpen", err)
			}
			if _, err := k.Open(ctx, "db:alice", col, env[:len(env)-3], nil); !errors.Is(err, envelope.ErrOpen) {
				t.Fatalf("Open of a truncated value: %v, want ErrOpen", err)
			}
			if _, err := k.Open(ctx, "db:alice", col, []byte("plaintext"), nil); !errors.Is(err, envelope.ErrOpen) {
				t.Fatalf("Open of a non-envelope: %v, want ErrOpen", err)
			}
		})
	}
	t.Run("deterministic equality", func(t *testing.T) {
		a, b := seal(t, "db:alice", ssn, "x"), seal(t, "db:keyward", ssn, "x")
		if !bytes.Equal(a, b) {
			t.Fatal("two deterministic seals of one value differ")
		}
		r1, r2 := seal(t, "db:alice", salary, "x"), seal(t, "db:alice", salary, "x")
		if bytes.Equal(r1, r2) {
			t.Fatal("two randomized seals of one value are equal")
		}
	})
	t.Run("denials", func(t *testing.T) {
		env := seal(t, "db:alice", salary, "100")
		if got, err := k.Open(ctx, "db:bob", salary, env, nil); err != nil || string(got) != "100" {
			t.Fatalf("bob (decrypt grant) Open = %q, %v", got, err)
		}
		if _, err := k.Sealer(ctx, "db:bob", salary); !errors.Is(err, colkeys.ErrDenied) || !errors.Is(err, client.ErrDenied) {
			t.Fatalf("bob Sealer: %v, want ErrDenied", err)
		}
		envSSN := seal(t, "db:alice", ssn, "1")
		for _, c := range []struct {
			id  string
			col colkeys.Column
			env []byte
		}{{"db:bob", ssn, envSSN}, {"db:carol", salary, env}, {"db:carol", note, seal(t, "db:alice", note, "n")}} {
			if _, err := k.Open(ctx, c.id, c.col, c.env, nil); !errors.Is(err, colkeys.ErrDenied) {
				t.Fatalf("%s Open %s: %v, want ErrDenied", c.id, c.col.AADName(), err)
			}
		}
		if _, err := k.MatchSealers(ctx, "db:carol", ssn); !errors.Is(err, colkeys.ErrDenied) {
			t.Fatalf("carol MatchSealers: %v", err)
		}
		if _, err := k.MatchSealers(ctx, "db:alice", salary); !errors.Is(err, colkeys.ErrMode) {
			t.Fatalf("MatchSealers on randomized: %v, want ErrMode", err)
		}
	})
	t.Run("rotation", func(t *testing.T) {
		old := seal(t, "db:alice", ssn, "same")
		oldNote := seal(t, "db:alice", note, "note")
		st.Rotate(t, "payroll")
		st.Rotate(t, "vault")
		// The cached "newest" answer lasts one TTL (and the agent's cache one second).
		deadline := time.Now().Add(10 * time.Second)
		var fresh []byte
		for {
			s, err := k.Sealer(ctx, "db:alice", ssn)
			if err != nil {
				t.Fatal(err)
			}
			if s.Version() == 2 {
				fresh, _ = s.Seal(ctx, nil, []byte("same"))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still sealing with version %d after rotation", s.Version())
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, env := range [][]byte{old, fresh} {
			if got, err := k.Open(ctx, "db:alice", ssn, env, nil); err != nil || string(got) != "same" {
				t.Fatalf("Open = %q, %v", got, err)
			}
		}
		ms, err := k.MatchSealers(ctx, "db:alice", ssn)
		if err != nil {
			t.Fatal(err)
		}
		var found [2]bool
		for _, s := range ms {
			e, _ := s.Seal(ctx, nil, []byte("same"))
			found[0] = found[0] || bytes.Equal(e, old)
			found[1] = found[1] || bytes.Equal(e, fresh)
		}
		if len(ms) != 2 || !found[0] || !found[1] {
			t.Fatalf("MatchSealers: %d sealers, match old %v, new %v", len(ms), found[0], found[1])
		}
		for time.Now().Before(deadline) {
			s, err := k.Sealer(ctx, "db:alice", note)
			if err != nil {
				t.Fatal(err)
			}
			if s.Version() == 2 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got, err := k.Open(ctx, "db:alice", note, oldNote, nil); err != nil || string(got) != "note" {
			t.Fatalf("hsm version 1 after rotation: %q, %v", got, err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		k2 := colkeys.New(colkeys.Config{Agent: st.Client})
		k2.Close()
		if _, err := k2.Sealer(ctx, "db:alice", salary); !errors.Is(err, colkeys.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	})
}
