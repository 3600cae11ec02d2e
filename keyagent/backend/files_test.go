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
