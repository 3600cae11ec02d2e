package backend

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReadWrapKey(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		size int
		ok   bool
	}{
		{"32 bytes", 32, true},
		{"16 bytes", 16, false},
		{"empty", 0, false},
		{"33 bytes", 33, false},
		{"hex text", 65, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if err := os.WriteFile(p, make([]byte, tt.size), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := ReadWrapKey(p)
			if tt.ok != (err == nil) {
				t.Fatalf("ReadWrapKey: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadInput) {
				t.Fatalf("error %v does not wrap ErrBadInput", err)
			}
			if k != nil && k.Len() != 32 {
				t.Fatalf("key length %d", k.Len())
			}
			k.Destroy()
		})
	}
	if _, err := ReadWrapKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    int // secret length; -1: rejected
	}{
		{"plain", "s3cret", 0o600, 6},
		{"newline", "s3cret\n", 0o600, 6},
		{"crlf", "s3cret\r\n", 0o600, 6},
		{"only one newline dropped", "s3cret\n\n", 0o600, 7},
		{"empty", "", 0o600, -1},
		{"only a newline", "\n", 0o600, -1},
		{"group-readable", "s3cret\n", 0o640, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if err := os.WriteFile(p, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil { // WriteFile's mode passes through the umask
				t.Fatal(err)
			}
			k, err := ReadSecretFile(p)
			if (tt.want >= 0) != (err == nil) {
				t.Fatalf("ReadSecretFile: %v, want ok=%v", err, tt.want >= 0)
			}
			if err != nil {
				if !errors.Is(err, ErrBadInput) {
					t.Fatalf("error %v does not wrap ErrBadInput", err)
				}
				return
			}
			defer k.Destroy()
			if k.Len() != tt.want {
				t.Fatalf("secret length %d, want %d", k.Len(), tt.want)
			}
		})
	}
	if _, err := ReadSecretFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
