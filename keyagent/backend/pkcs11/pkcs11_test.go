package pkcs11

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/backend/backendtest"
	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/testenv"
)

func configFor(h *testenv.HSM) Config {
	return Config{Module: h.Module, TokenLabel: h.TokenLabel, PinFile: h.PinFile, PoolSize: 4}
}

func openT(t testing.TB, cfg Config) *Backend {
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
			cfg := configFor(testenv.SoftHSM(t))
			return func(t *testing.T) backend.Backend { return openT(t, cfg) }
		},
		OAEPSHA256: false, // SoftHSM 2.6 has RSA-OAEP with SHA-1 only
	})
}

func TestOpenErrors(t *testing.T) {
	h := testenv.SoftHSM(t)
	wrongPin := filepath.Join(t.TempDir(), "pin")
	os.WriteFile(wrongPin, []byte("00000000\n"), 0o600)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"module not found", Config{Module: "/nonexistent/libnope.so", TokenLabel: h.TokenLabel, PIN: h.UserPin}, "not found"},
		{"not a module", Config{Module: "/etc/hostname", TokenLabel: h.TokenLabel, PIN: h.UserPin}, "cannot be loaded"},
		{"token not found", Config{Module: h.Module, TokenLabel: "nope", PIN: h.UserPin}, `token "nope" not found`},
		{"wrong pin", Config{Module: h.Module, TokenLabel: h.TokenLabel, PinFile: wrongPin}, "PIN for token"},
		{"no pin", Config{Module: h.Module, TokenLabel: h.TokenLabel}, "no PIN"},
		{"missing pin file", Config{Module: h.Module, TokenLabel: h.TokenLabel, PinFile: "/nonexistent/pin"}, "pin file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Open(tt.cfg)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
	// After all those failures the right configuration still opens.
	openT(t, configFor(h))
}

// TestLostSessions pulls the sessions, the library or the token away behind the backend's back: the
// next request fails with ErrUnavailable (never a crash), and once the HSM is back a later request opens
// new sessions, logs in again and derives the same key.
func TestLostSessions(t *testing.T) {
	ctx := context.Background()
	cfg := configFor(testenv.SoftHSM(t))
	cfg.RetryInterval = 50 * time.Millisecond
	b := openT(t, cfg)
	if _, err := b.CreateKeyring(ctx, "payroll", backend.KindDerive); err != nil {
		t.Fatal(err)
	}
	want, _, err := b.Derive(ctx, "payroll:x", 0, 256, true)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Destroy()
	derive := func() error {
		k, _, err := b.Derive(ctx, "payroll:x", 0, 256, true)
		if err == nil {
			eq := k.Equal(want)
			k.Destroy()
			if !eq {
				t.Fatal("another key after reconnect")
			}
		}
		return err
	}
	tests := []struct {
		name      string
		pull      func(t *testing.T)
		downCalls int // requests made while the HSM is away
		restore   func()
	}{
		{"close all sessions", func(t *testing.T) {
			if err := b.mod.ctx.CloseAllSessions(b.conn.slot); err != nil {
				t.Fatal(err)
			}
		}, 1, nil},
		{"library finalized", func(t *testing.T) {
			if err := b.mod.ctx.Finalize(); err != nil {
				t.Fatal(err)
			}
		}, 1, nil},
		{"token gone", func(t *testing.T) {
			b.mu.Lock()
			b.cfg.TokenLabel = "unplugged" // the next reconnect cannot find the token
			b.mu.Unlock()
			if err := b.mod.ctx.CloseAllSessions(b.conn.slot); err != nil {
				t.Fatal(err)
			}
		}, 3, func() {
			b.mu.Lock()
			b.cfg.TokenLabel = cfg.TokenLabel
			b.mu.Unlock()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pull(t)
			for i := range tt.downCalls {
				if err := derive(); !errors.Is(err, backend.ErrUnavailable) {
					t.Fatalf("request %d while the HSM is away: %v, want ErrUnavailable", i, err)
				}
			}
			if tt.restore != nil {
				tt.restore()
			}
			time.Sleep(cfg.RetryInterval)
			if err := derive(); err != nil {
				t.Fatalf("derive after the HSM is back: %v", err)
			}
		})
	}
}

// TestTokenObjects checks the attributes the HSM actually stored for keyring versions.
func TestTokenObjects(t *testing.T) {
	ctx := context.Background()
	b := openT(t, configFor(testenv.SoftHSM(t)))
	if _, err := b.CreateKeyring(ctx, "payroll", backend.KindDerive); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateKeyring(ctx, "vault", backend.KindHSMAEAD); err != nil {
		t.Fatal(err)
	}
	pub, err := b.ImportPublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	bundle := backendtest.Bundle(t, pub, secret, "sha1")
	if _, _, err := b.Import(ctx, "byok", backend.KindDerive, bundle, backend.WrapRSAAESKeyWrapSHA1); err != nil {
		t.Fatal(err)
	}
	checkObjects(t, b)
	checkRestrictions(t, b, bundle[:384])
}

// BenchmarkDerive measures direct in-process derivations (C_Sign per 32-byte block) on SoftHSM, the
// baseline the key service's throughput is compared with.
func BenchmarkDerive(b *testing.B) {
	ctx := context.Background()
	be := openT(b, configFor(testenv.SoftHSM(b)))
	if _, err := be.CreateKeyring(ctx, "bench", backend.KindDerive); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k, _, err := be.Derive(ctx, "bench:col", 0, 256, true)
			if err != nil {
				b.Error(err)
				return
			}
			k.Destroy()
		}
	})
}

// TestPINChanged: when the token starts rejecting the PIN, the backend stops logging in (repeated wrong
// PINs would lock the token) and says so.
func TestPINChanged(t *testing.T) {
	ctx := context.Background()
	cfg := configFor(testenv.SoftHSM(t))
	cfg.RetryInterval = time.Millisecond
	b := openT(t, cfg)
	// SoftHSM caches the PIN per process, so a PIN changed by another process is not seen here; swap the
	// backend's copy instead, which is what the token rejecting it looks like from the backend.
	wrong, err := memsafe.FromBytes([]byte("87654321"))
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.pin.Destroy()
	b.pin = wrong
	b.mu.Unlock()
	if err := b.mod.ctx.CloseAllSessions(b.conn.slot); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := b.Ping(ctx)
		if !errors.Is(err, backend.ErrUnavailable) {
			t.Fatalf("ping %d: %v, want ErrUnavailable", i, err)
		}
		time.Sleep(2 * time.Millisecond)
		if i == 2 && !strings.Contains(err.Error(), "not retrying") {
			t.Fatalf("ping %d: %v, want a refusal to retry the PIN", i, err)
		}
	}
}
