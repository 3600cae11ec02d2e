package luks2test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Cryptsetup runs the cryptsetup binary cs with stdin and args and returns its combined output.
func Cryptsetup(cs, stdin string, args ...string) (string, error) {
	cmd := exec.Command(cs, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Format makes an 8 MiB image at path and formats it as LUKS2 with the real cryptsetup cs: keyslot 0
// opens with pass (PBKDF2 with 1000 iterations, so that tests stay fast), 16 KiB header copies and a
// 1 MiB keyslots area. A failure fails t with cryptsetup's output.
func Format(t testing.TB, cs, path, pass string) {
	t.Helper()
	if err := os.WriteFile(path, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := Cryptsetup(cs, pass, "luksFormat", "--type", "luks2", "--batch-mode", "--key-file", "-",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--luks2-metadata-size", "16k",
		"--luks2-keyslots-size", "1M", path); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
}

// TestPassphrase is `cryptsetup open --test-passphrase --key-slot slot --key-file -` on path with pass
// on stdin. The error carries cryptsetup's output, never the passphrase.
func TestPassphrase(cs, path, pass string, slot int) error {
	out, err := Cryptsetup(cs, pass, "open", "--test-passphrase", "--key-slot", strconv.Itoa(slot), "--key-file", "-", path)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
