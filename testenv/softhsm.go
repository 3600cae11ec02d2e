package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// SoftHSMModules are the places Debian and others install the SoftHSM2 PKCS#11 module.
var SoftHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// HSM is a fresh SoftHSM2 token.
type HSM struct {
	Module     string // PKCS#11 module path
	ConfPath   string // its SOFTHSM2_CONF
	TokenLabel string
	Slot       uint
	SOPin      string
	UserPin    string
	PinFile    string // the user PIN in a 0600 file, as daemons read it
	Dir        string
}

// SoftHSM initialises a fresh token in a temporary directory with random PINs and points
// SOFTHSM2_CONF at it with t.Setenv (so a test using it cannot be parallel: SoftHSM reads its
// configuration once per process, at C_Initialize).
func SoftHSM(t testing.TB) *HSM {
	t.Helper()
	util := Require(t, "softhsm2-util")
	h := &HSM{TokenLabel: "keyward-test", SOPin: randHex(8), UserPin: randHex(8)}
	for _, m := range SoftHSMModules {
		if _, err := os.Stat(m); err == nil {
			h.Module = m
			break
		}
	}
	if h.Module == "" {
		msg := "SoftHSM2 module (libsofthsm2.so) not found: run `make deps` to install the test dependencies"
		if InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	h.Dir = SharedDir(t)
	tokens := filepath.Join(h.Dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	h.ConfPath = filepath.Join(h.Dir, "softhsm2.conf")
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(h.ConfPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	h.PinFile = filepath.Join(h.Dir, "user.pin")
	if err := os.WriteFile(h.PinFile, []byte(h.UserPin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(util, "--init-token", "--free", "--label", h.TokenLabel, "--so-pin", h.SOPin, "--pin", h.UserPin)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+h.ConfPath)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	m := regexp.MustCompile(`reassigned to slot (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("softhsm2-util: no slot in output: %s", out)
	}
	slot, _ := strconv.ParseUint(string(m[1]), 10, 32)
	h.Slot = uint(slot)
	t.Setenv("SOFTHSM2_CONF", h.ConfPath)
	return h
}

// Env is the environment a subprocess needs to see this token.
func (h *HSM) Env() []string { return append(os.Environ(), "SOFTHSM2_CONF="+h.ConfPath) }
