package kwp

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 5649 section 6 vectors.
func TestRFC5649(t *testing.T) {
	kek := "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"
	tests := []struct{ name, key, wrapped string }{
		{"20 bytes", "c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"7 bytes", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Wrap(unhex(t, kek), unhex(t, tt.key))
			if err != nil || hex.EncodeToString(w) != tt.wrapped {
				t.Fatalf("Wrap = %x, %v; want %s", w, err, tt.wrapped)
			}
			p, err := Unwrap(unhex(t, kek), w)
			if err != nil || hex.EncodeToString(p) != tt.key {
				t.Fatalf("Unwrap: %v (or not the vector's key)", err)
			}
		})
	}
}

func TestUnwrapRejects(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	w, err := Wrap(kek, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	flip := bytes.Clone(w)
	flip[len(flip)-1] ^= 1
	tests := []struct {
		name    string
		kek, in []byte
	}{
		{"flipped bit", kek, flip},
		{"wrong kek", bytes.Repeat([]byte{8}, 32), w},
		{"truncated", kek, w[:len(w)-8]},
		{"not multiple of 8", kek, w[:len(w)-1]},
		{"too short", kek, w[:8]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Unwrap(tt.kek, tt.in); err != ErrUnwrap {
				t.Fatalf("err = %v, want ErrUnwrap", err)
			}
		})
	}
}

// TestOpenSSL checks interoperability with `openssl enc -id-aes256-wrap-pad` for several lengths.
func TestOpenSSL(t *testing.T) {
	ossl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed (make deps)")
	}
	kek := unhex(t, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	for _, n := range []int{1, 8, 9, 32, 64, 100} {
		in := bytes.Repeat([]byte{byte(n)}, n)
		f := filepath.Join(t.TempDir(), "in")
		if err := os.WriteFile(f, in, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(ossl, "enc", "-id-aes256-wrap-pad", "-K", hex.EncodeToString(kek), "-iv", "A65959A6", "-in", f).Output()
		if err != nil {
			t.Fatalf("openssl: %v", err)
		}
		w, err := Wrap(kek, in)
		if err != nil || !bytes.Equal(w, out) {
			t.Fatalf("len %d: Wrap = %x, openssl = %x", n, w, out)
		}
		if p, err := Unwrap(kek, out); err != nil || !bytes.Equal(p, in) {
			t.Fatalf("len %d: Unwrap(openssl) failed: %v", n, err)
		}
	}
}

func FuzzUnwrap(f *testing.F) {
	kek := bytes.Repeat([]byte{3}, 32)
	for _, n := range []int{1, 8, 32} {
		w, _ := Wrap(kek, bytes.Repeat([]byte{9}, n))
		f.Add(w)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := Unwrap(kek, in)
		if err != nil {
			return
		}
		w, err := Wrap(kek, p)
		if err != nil || !bytes.Equal(w, in) {
			t.Fatalf("unwrap/wrap not inverse")
		}
	})
}
