package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var builds struct {
	sync.Mutex
	done map[string]string
}

// binDir is shared by every test process of the module: binaries are built under a temporary name and
// renamed into place, so parallel packages never see a half-written file, and nothing piles up in
// /tmp run after run. It is world-readable so servers and clients run as the unprivileged user can
// execute the binaries.
func binDir() (string, error) {
	d := filepath.Join(os.TempDir(), "keyward-testbin")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	return d, os.Chmod(d, 0o755)
}

// ModuleRoot is the directory of Keyward's go.mod, found from the working directory up.
func ModuleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/keyward/keyward\n")) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("go.mod of github.com/keyward/keyward not found above the working directory")
		}
		d = parent
	}
}

// Binary builds ./cmd/<name> (once per test process; the go build cache makes it quick) and returns
// its path. CLIs are tested by running the built binaries.
func Binary(t testing.TB, name string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.done[name]; ok {
		return p
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.CreateTemp(dir, name+".build-*")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "./cmd/"+name)
	cmd.Dir = root
	if name == "volumectl" {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp.Name())
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(dir, fmt.Sprintf("%s-%d", name, os.Getpid()))
	if err := os.Rename(tmp.Name(), final); err != nil {
		t.Fatal(err)
	}
	if builds.done == nil {
		builds.done = map[string]string{}
	}
	builds.done[name] = final
	// One binary per test process, removed when the test that built it ends; later tests rebuild
	// from the go build cache.
	t.Cleanup(func() {
		builds.Lock()
		delete(builds.done, name)
		builds.Unlock()
		os.Remove(final)
	})
	return final
}
