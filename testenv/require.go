package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// extraPaths are searched after $PATH: Debian puts the Postgres server binaries outside it and sbin
// tools are missing from a non-root PATH.
var extraPaths = []string{"/usr/sbin", "/sbin"}

// InCI reports whether the tests run under CI (CI=true), where missing tools are failures.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require returns the path of tool, or stops the test: under CI=true it fails (CI runs `make deps`,
// so a missing tool is a missing install step), elsewhere it skips and says how to install it.
func Require(t testing.TB, tool string) string {
	t.Helper()
	if p, err := lookPath(tool); err == nil {
		return p
	}
	msg := tool + " not found: run `make deps` to install the test dependencies"
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func lookPath(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	if filepath.IsAbs(tool) {
		return "", os.ErrNotExist
	}
	for _, d := range extraPaths {
		p := filepath.Join(d, tool)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
