package soft

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/kdf"
	"github.com/keyward/keyward/memsafe"
)

type byokVector struct {
	Bundle   string           `json:"bundle"`
	Wrapping backend.Wrapping `json:"wrapping"`
	Secret   string           `json:"secret"`
	KCV      string           `json:"kcv"`
}

// withTestImportKey opens a store whose import key is the public test key of testdata/byok.
func withTestImportKey(t testing.TB) *Backend {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("test"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Open(Config{Path: filepath.Join(dir, "s"), PassphraseFile: pass, Argon2: testArgon2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	raw, err := os.ReadFile("testdata/byok/import_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatal("testdata/byok/import_key.pem is not a PKCS#8 PEM key")
	}
	k, err := memsafe.FromBytes(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.mutate(func() (func(), error) { b.s.importKey = k; return func() {}, nil }); err != nil {
		t.Fatal(err)
	}
	return b
}

func loadBYOK(t testing.TB) []byokVector {
	raw, err := os.ReadFile("testdata/byok/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []byokVector
	if err := json.Unmarshal(raw, &vs); err != nil || len(vs) == 0 {
		t.Fatalf("vectors: %v", err)
	}
	return vs
}

// TestBYOKVectors imports the committed openssl-made bundles (testdata/byok/gen.sh).
func TestBYOKVectors(t *testing.T) {
	ctx := context.Background()
	b := withTestImportKey(t)
	for i, v := range loadBYOK(t) {
		t.Run(string(v.Wrapping), func(t *testing.T) {
			bundle, err := os.ReadFile(filepath.Join("testdata/byok", v.Bundle))
			if err != nil {
				t.Fatal(err)
			}
			ring := []string{"one", "two"}[i]
			ver, kcv, err := b.Import(ctx, ring, backend.KindDerive, bundle, v.Wrapping)
			if err != nil || ver.N != 1 || kcv != v.KCV {
				t.Fatalf("Import = v%d kcv %s, %v; want kcv %s", ver.N, kcv, err, v.KCV)
			}
			sb, _ := hex.DecodeString(v.Secret)
			secret, _ := memsafe.FromBytes(sb)
			defer secret.Destroy()
			want, _ := kdf.Derive(kdf.HMACPRF(secret), ring+":x", 256)
			defer want.Destroy()
			got, _, err := b.Derive(ctx, ring+":x", 1, 256, true)
			if err != nil || !got.Equal(want) {
				t.Fatalf("derived key differs from the reference: %v", err)
			}
			got.Destroy()
			other := backend.WrapRSAAESKeyWrapSHA1
			if v.Wrapping == other {
				other = backend.WrapRSAAESKeyWrapSHA256
			}
			if _, _, err := b.Import(ctx, ring, backend.KindDerive, bundle, other); !errors.Is(err, backend.ErrBadInput) {
				t.Fatalf("import with the other OAEP hash: %v, want ErrBadInput", err)
			}
		})
	}
}

// FuzzImport feeds arbitrary bundles to Import: it must fail cleanly (ErrBadInput) or import.
func FuzzImport(f *testing.F) {
	for _, v := range loadBYOK(f) {
		bundle, err := os.ReadFile(filepath.Join("testdata/byok", v.Bundle))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bundle, v.Wrapping == backend.WrapRSAAESKeyWrapSHA256)
	}
	b := withTestImportKey(f)
	f.Fuzz(func(t *testing.T, bundle []byte, sha256 bool) {
		w := backend.WrapRSAAESKeyWrapSHA1
		if sha256 {
			w = backend.WrapRSAAESKeyWrapSHA256
		}
		_, kcv, err := b.Import(context.Background(), "fuzz", backend.KindDerive, bundle, w)
		if err != nil && !errors.Is(err, backend.ErrBadInput) {
			t.Fatalf("unexpected error class: %v", err)
		}
		if err == nil && len(kcv) != 6 {
			t.Fatalf("kcv %q", kcv)
		}
	})
}
