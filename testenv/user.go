package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// UnprivilegedUser is the system user tests run servers and clients as when the test runs as root.
const UnprivilegedUser = "keyward-test"

var userOnce struct {
	sync.Mutex
	uid, gid uint32
	ok       bool
}

// Unprivileged returns an unprivileged user's uid and gid, creating the user when the test runs as
// root. Not root: it returns the current user, who is unprivileged already.
func Unprivileged(t testing.TB) (uid, gid uint32, name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			t.Fatalf("current user: %v", err)
		}
		return uint32(os.Getuid()), uint32(os.Getgid()), u.Username
	}
	userOnce.Lock()
	defer userOnce.Unlock()
	if userOnce.ok {
		return userOnce.uid, userOnce.gid, UnprivilegedUser
	}
	u, err := lookupOrCreate(t)
	if err != nil {
		t.Fatalf("unprivileged user %s: %v", UnprivilegedUser, err)
	}
	uid64, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid64, _ := strconv.ParseUint(u.Gid, 10, 32)
	userOnce.uid, userOnce.gid, userOnce.ok = uint32(uid64), uint32(gid64), true
	return userOnce.uid, userOnce.gid, UnprivilegedUser
}

func lookupOrCreate(t testing.TB) (*user.User, error) {
	if u, err := user.Lookup(UnprivilegedUser); err == nil {
		return u, nil
	}
	useradd := Require(t, "useradd")
	var lastErr error
	// Parallel test packages may race to create the user; useradd fails on the passwd lock, so retry.
	for i := 0; i < 20; i++ {
		out, err := exec.Command(useradd, "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", UnprivilegedUser).CombinedOutput()
		if u, lerr := user.Lookup(UnprivilegedUser); lerr == nil {
			return u, nil
		}
		lastErr = fmt.Errorf("useradd: %v: %s", err, out)
		time.Sleep(100 * time.Millisecond)
	}
	return nil, lastErr
}

// AsUser makes cmd run as uid/gid (only meaningful when the test runs as root).
func AsUser(cmd *exec.Cmd, uid, gid uint32) {
	if os.Geteuid() != 0 {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}
}

// SharedDir returns a fresh directory that the unprivileged user can enter and read (mode 0755, owned
// by the unprivileged user when root), removed at cleanup. t.TempDir's parents are 0700, so a server
// run as another user cannot reach files there.
func SharedDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "keyward-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		uid, gid, _ := Unprivileged(t)
		if err := os.Chown(d, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// ExecutableCopy copies the running test binary into a SharedDir so that a subprocess run as the
// unprivileged user can execute it (the go tool's build directory is private to its owner).
func ExecutableCopy(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(SharedDir(t), filepath.Base(self))
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}
