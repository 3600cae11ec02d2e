package soft

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/backend/backendtest"
)

// testArgon2 keeps tests fast; production uses DefaultArgon2.
var testArgon2 = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

func newStore(t testing.TB) Config {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{Path: filepath.Join(dir, "keyrings.sealed"), PassphraseFile: pass, Argon2: testArgon2}
}

func openT(t *testing.T, cfg Config) *Backend {
	t.Helper()
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestContract(t *testing.T) {
	backendtest.Run(t, backendtest.Config{
		NewStore: func(t *testing.T) func(t *testing.T) backend.Backend {
			cfg := newStore(t)
			return func(t *testing.T) backend.Backend { return openT(t, cfg) }
		},
		OAEPSHA256: true,
	})
}

// TestBadFiles checks that a store that does not open is reported clearly and never overwritten.
func TestBadFiles(t *testing.T) {
	ctx := context.Background()
	cfg := newStore(t)
	b := openT(t, cfg)
	if _, err := b.CreateKeyring(ctx, "payroll", backend.KindDerive); err != nil {
		t.Fatal(err)
	}
	b.Close()
	good, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	wrongPass := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongPass, []byte("not the passphrase"), 0o600)
	emptyPass := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(emptyPass, []byte("\n"), 0o600)

	flip := func(i int) []byte { c := append([]byte(nil), good...); c[i] ^= 1; return c }
	tests := []struct {
		name    string
		content []byte // nil: keep the good file
		pass    string
		target  error
		parse   bool
	}{
		{"wrong passphrase", nil, wrongPass, ErrUnseal, false},
		{"flipped ciphertext bit", flip(len(good) - 20), "", ErrUnseal, false},
		{"flipped salt bit", flip(20), "", ErrUnseal, false},
		{"bad magic", flip(0), "", backend.ErrBadInput, true},
		{"unknown version", func() []byte { c := flip(0); c[0] = 'K'; c[4] = 9; return c }(), "", backend.ErrBadInput, true},
		{"bad argon2 params", func() []byte { c := append([]byte(nil), good...); c[13] = 0; return c }(), "", backend.ErrBadInput, true},
		{"truncated", good[:30], "", backend.ErrBadInput, true},
		{"trailing bytes", append(append([]byte(nil), good...), 0), "", ErrUnseal, false},
		{"empty passphrase", nil, emptyPass, backend.ErrBadInput, false},
		{"missing passphrase file", nil, filepath.Join(t.TempDir(), "none"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			content := good
			if tt.content != nil {
				content = tt.content
			}
			if err := os.WriteFile(c.Path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.pass != "" {
				c.PassphraseFile = tt.pass
			}
			b, err := Open(c)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Fatalf("error %v, want %v", err, tt.target)
			}
			var pe *backend.ParseError
			if errors.As(err, &pe) != tt.parse {
				t.Fatalf("error %v: ParseError = %v, want %v", err, !tt.parse, tt.parse)
			}
			after, _ := os.ReadFile(c.Path)
			if string(after) != string(content) {
				t.Fatal("a store that did not open was modified")
			}
		})
	}
	// The good file still opens with the right passphrase and keeps its keyring.
	os.WriteFile(cfg.Path, good, 0o600)
	b = openT(t, cfg)
	if _, err := b.Keyring(ctx, "payroll"); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptedWhileOpen: a store corrupted behind a running backend makes operations fail (unavailable)
// and is never overwritten by a later mutation.
func TestCorruptedWhileOpen(t *testing.T) {
	ctx := context.Background()
	cfg := newStore(t)
	b := openT(t, cfg)
	if _, err := b.CreateKeyring(ctx, "payroll", backend.KindDerive); err != nil {
		t.Fatal(err)
	}
	junk := []byte("KWKS\x01 this is not a store")
	if err := os.WriteFile(cfg.Path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Rotate(ctx, "payroll"); err == nil {
		t.Fatal("Rotate on a corrupted store succeeded")
	}
	if after, _ := os.ReadFile(cfg.Path); string(after) != string(junk) {
		t.Fatal("corrupted store was overwritten")
	}
}

func TestArgonParamsRecorded(t *testing.T) {
	cfg := newStore(t)
	cfg.Argon2 = Argon2Params{Time: 2, MemoryKiB: 128, Threads: 2}
	openT(t, cfg).Close()
	// Reopening with other defaults must use the file's own parameters.
	cfg.Argon2 = testArgon2
	b := openT(t, cfg)
	if b.hdr.params != (Argon2Params{Time: 2, MemoryKiB: 128, Threads: 2}) {
		t.Fatalf("params = %+v", b.hdr.params)
	}
}

// FuzzParsePayload checks the decrypted payload parser on arbitrary input (the header and the AEAD are
// checked by TestBadFiles; the payload is what a bug in a writer would corrupt).
func FuzzParsePayload(f *testing.F) {
	cfg := newStore(f)
	b, err := Open(cfg)
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	b.CreateKeyring(ctx, "payroll", backend.KindDerive)
	b.CreateKeyring(ctx, "vault", backend.KindHSMAEAD)
	b.Rotate(ctx, "payroll")
	b.SetState(ctx, "payroll", 1, backend.StateDestroyed)
	p, err := marshalPayload(b.s)
	if err != nil {
		f.Fatal(err)
	}
	b.Close()
	f.Add(p)
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := parsePayload(p)
		if err != nil {
			var pe *backend.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("not a ParseError: %v", err)
			}
			return
		}
		defer s.destroy()
		q, err := marshalPayload(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(q) != string(p) {
			t.Fatal("payload does not re-encode to the same bytes")
		}
	})
}
