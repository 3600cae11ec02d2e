//go:build linux

package peercred

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/testenv"
)

// The test binary doubles as the peer process: with these variables set it
// connects to the socket and, in mode "wait", stays until the server hangs
// up; in mode "exit" it leaves at once.
const (
	envSocket = "PEERCRED_TEST_SOCKET"
	envMode   = "PEERCRED_TEST_MODE"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(envSocket); path != "" {
		os.Exit(peer(path, os.Getenv(envMode)))
	}
	os.Exit(m.Run())
}

func peer(path, mode string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	if mode == "wait" {
		_, _ = io.Copy(io.Discard, c)
	}
	return 0
}

// modes runs f once with SO_PEERPIDFD and once with the pidfd_open fallback.
func modes(t *testing.T, f func(t *testing.T, peerPIDFD bool)) {
	for _, usePeer := range []bool{true, false} {
		name := "SO_PEERPIDFD"
		if !usePeer {
			name = "pidfd_open"
		}
		t.Run(name, func(t *testing.T) {
			old := usePeerPIDFD
			usePeerPIDFD = usePeer
			t.Cleanup(func() { usePeerPIDFD = old })
			f(t, usePeer)
		})
	}
}

func listen(t *testing.T, dir string) (*net.UnixListener, string) {
	t.Helper()
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// The peer may run as another user.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	return ln, path
}

func checkMode(t *testing.T, c Cred, peerPIDFD bool) {
	t.Helper()
	if !peerPIDFD && c.PeerPIDFD {
		t.Fatal("PeerPIDFD set in pidfd_open mode")
	}
	if peerPIDFD && !c.PeerPIDFD {
		t.Log("this kernel has no SO_PEERPIDFD; the fallback was used")
	}
}

func TestReadSameProcess(t *testing.T) {
	modes(t, func(t *testing.T, peerPIDFD bool) {
		ln, path := listen(t, t.TempDir())
		client, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		conn, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c, err := Read(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		self, _ := os.Executable()
		self, _ = filepath.EvalSymlinks(self)
		if c.UID != uint32(os.Getuid()) || c.GID != uint32(os.Getgid()) || c.PID != os.Getpid() || c.Exe != self {
			t.Fatalf("Read = %v, want uid=%d gid=%d pid=%d exe=%q", c, os.Getuid(), os.Getgid(), os.Getpid(), self)
		}
		if c.ExeErr != nil || c.StartTime == 0 || !c.Alive() {
			t.Fatalf("ExeErr=%v StartTime=%d Alive=%v", c.ExeErr, c.StartTime, c.Alive())
		}
		checkMode(t, c, peerPIDFD)
		// Copies share the pidfd: closing one makes every copy report
		// "not alive" rather than poll a stale descriptor.
		cp := c
		c.Close()
		if cp.Alive() {
			t.Fatal("a copy is alive after Close")
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

// TestReadOtherUser runs the peer as an unprivileged user (when the test is
// root) from a copy of the test binary, then checks Alive after it exits.
func TestReadOtherUser(t *testing.T) {
	uid, gid, name := testenv.Unprivileged(t)
	exe := testenv.ExecutableCopy(t)
	modes(t, func(t *testing.T, peerPIDFD bool) {
		ln, path := listen(t, testenv.SharedDir(t))
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envSocket+"="+path, envMode+"=wait")
		cmd.Stderr = os.Stderr
		testenv.AsUser(cmd, uid, gid)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

		conn, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		c, err := Read(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wantExe, _ := filepath.EvalSymlinks(exe)
		if c.UID != uid || c.GID != gid || c.PID != cmd.Process.Pid || c.Exe != wantExe {
			t.Fatalf("Read = %v, want uid=%d (%s) gid=%d pid=%d exe=%q", c, uid, name, gid, cmd.Process.Pid, wantExe)
		}
		if !c.Alive() {
			t.Fatal("peer not alive while connected")
		}
		checkMode(t, c, peerPIDFD)

		conn.Close() // the peer reads EOF and exits
		if err := cmd.Wait(); err != nil {
			t.Fatalf("peer: %v", err)
		}
		if c.Alive() {
			t.Fatal("peer alive after it exited")
		}
	})
}

// TestPeerGone: a peer that connects and exits before the server reads its
// credentials is refused, not attributed to whatever has its pid now.
func TestPeerGone(t *testing.T) {
	exe := testenv.ExecutableCopy(t)
	modes(t, func(t *testing.T, _ bool) {
		ln, path := listen(t, t.TempDir())
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envSocket+"="+path, envMode+"=exit")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil { // connected, exited, reaped
			t.Fatalf("peer: %v", err)
		}
		conn, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c, err := Read(conn)
		if !errors.Is(err, ErrPeerGone) {
			c.Close()
			t.Fatalf("Read of an exited peer = %v, %v; want ErrPeerGone", c, err)
		}
	})
}

func TestParseStartTime(t *testing.T) {
	tail := "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21"
	tests := []struct {
		name string
		line string
		want uint64
		ok   bool
	}{
		{"plain", "123 (bash) " + tail, 424242, true},
		{"comm with space and parens", "123 (a) (b c) " + tail, 424242, true},
		{"no comm", "123 bash " + tail, 0, false},
		{"too short", "123 (bash) S 1 2", 0, false},
		{"not a number", "123 (bash) " + strings.Replace(tail, "424242", "x", 1), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tt.line))
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("parseStartTime = %d, %v; want %d ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
	// And on a real process: our own start time is stable.
	a, err := startTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if b, _ := startTime(os.Getpid()); a != b || a == 0 {
		t.Fatalf("start time %d then %d", a, b)
	}
}
