package luks2test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFailAfter(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := FailAfter(f, 5)
	if n, err := w.WriteAt([]byte("abc"), 0); n != 3 || err != nil {
		t.Fatalf("first write: %d %v", n, err)
	}
	if n, err := w.WriteAt([]byte("defg"), 3); n != 2 || !errors.Is(err, ErrInjected) {
		t.Fatalf("torn write: %d %v", n, err)
	}
	if n, err := w.WriteAt([]byte("x"), 0); n != 0 || !errors.Is(err, ErrInjected) {
		t.Fatalf("after budget: %d %v", n, err)
	}
	b, _ := os.ReadFile(f.Name())
	if string(b) != "abcde" {
		t.Fatalf("file holds %q", b)
	}
	c := FailAfter(f, -1)
	c.WriteAt([]byte("0123456789"), 0)
	if c.Written() != 10 {
		t.Fatalf("counting writer: %d", c.Written())
	}
}
