//go:build linux

// Package peercred tells who is on the other end of a unix socket: the uid,
// gid and pid the kernel recorded when the peer connected (SO_PEERCRED), and
// the executable that process runs (/proc/<pid>/exe).
//
// # Guarantees
//
//   - UID, GID and PID are the kernel's record from connect time; the peer
//     cannot choose them.
//   - The pid is pinned before the executable is read, so a peer that exits
//     and whose pid is reused by another process is detected instead of being
//     given that process's executable. With SO_PEERPIDFD (Linux 6.5+) the
//     kernel hands us a pidfd for the very process that connected; on older
//     kernels we open one with pidfd_open right after reading the credentials
//     and check that the process start time (/proc/<pid>/stat field 22) is the
//     same before and after reading the executable. Either way, after the
//     read the pidfd must show the process still running: a process that is
//     still running cannot have had its pid reused.
//   - Cred.Alive tells, later, whether that same process still runs (a pidfd
//     never refers to a reused pid).
//
// # Non-guarantees
//
//   - On kernels without SO_PEERPIDFD a peer that exits between connect and
//     pidfd_open, with its pid reused in that window by a process that is
//     still running, is not detected; SO_PEERPIDFD closes that window.
//   - The credentials are those of the process that called connect. A
//     connected socket can be passed to another process (SCM_RIGHTS, fork):
//     what is checked is who opened it.
//   - Exe is the path the kernel shows: a binary replaced on disk shows as
//     "<path> (deleted)". Reading it needs ptrace-read access to the peer; an
//     unprivileged reader gets Exe "" and ExeErr set instead of a failure, so
//     that uid-only rules can still apply.
//   - Peers in another pid namespace have no pid here: Read fails with
//     ErrNoPID.
package peercred

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors that callers branch on.
var (
	// ErrPeerGone: the peer exited before its executable could be verified.
	ErrPeerGone = errors.New("peercred: peer process exited")
	// ErrPIDReused: the pid named a different process after the read.
	ErrPIDReused = errors.New("peercred: peer pid was reused")
	// ErrNoPID: the kernel reports no pid (a peer in another pid namespace).
	ErrNoPID = errors.New("peercred: peer has no pid in this namespace")
)

// Cred is the peer of a unix socket connection. Copies share one pidfd;
// Close it when the connection ends (a finalizer closes it otherwise).
type Cred struct {
	UID uint32
	GID uint32
	PID int
	// Exe is the peer's executable, or "" with ExeErr saying why.
	Exe    string
	ExeErr error
	// StartTime is the process start time in clock ticks since boot.
	StartTime uint64
	// PeerPIDFD reports whether the pidfd came from SO_PEERPIDFD (no window
	// for pid reuse) rather than pidfd_open.
	PeerPIDFD bool

	pidfd *os.File // nil if the kernel has no pidfds
}

// usePeerPIDFD lets tests exercise the pidfd_open fallback on new kernels.
var usePeerPIDFD = true

// Read reads the credentials of conn's peer.
func Read(conn *net.UnixConn) (Cred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("peercred: %w", err)
	}
	var (
		uc      *unix.Ucred
		ucErr   error
		pidfd         = -1
		pfdErr  error = unix.ENOPROTOOPT
		ctrlErr error
	)
	ctrlErr = raw.Control(func(fd uintptr) {
		uc, ucErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if ucErr == nil && usePeerPIDFD {
			pidfd, pfdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		}
	})
	if ctrlErr != nil {
		return Cred{}, fmt.Errorf("peercred: %w", ctrlErr)
	}
	if ucErr != nil {
		return Cred{}, fmt.Errorf("peercred: SO_PEERCRED: %w", ucErr)
	}
	c := Cred{UID: uc.Uid, GID: uc.Gid, PID: int(uc.Pid)}
	if c.PID <= 0 {
		if pfdErr == nil {
			unix.Close(pidfd)
		}
		return Cred{}, ErrNoPID
	}

	var start1 uint64
	switch {
	case pfdErr != nil && !errors.Is(pfdErr, unix.ENOPROTOOPT):
		// The kernel has SO_PEERPIDFD but cannot make a pidfd: the peer
		// has exited (EINVAL, ESRCH). Falling back to the pid number here
		// would reopen the very window SO_PEERPIDFD closes.
		if errors.Is(pfdErr, unix.EINVAL) || errors.Is(pfdErr, unix.ESRCH) {
			return Cred{}, ErrPeerGone
		}
		return Cred{}, fmt.Errorf("peercred: SO_PEERPIDFD: %w", pfdErr)
	case pfdErr == nil:
		c.PeerPIDFD = true
		start1, err = startTime(c.PID)
	default:
		// No SO_PEERPIDFD: read the start time first, then pin the pid
		// with pidfd_open; the second start time read below catches a
		// reuse between the two.
		start1, err = startTime(c.PID)
		if err == nil {
			pidfd, pfdErr = unix.PidfdOpen(c.PID, 0)
			if pfdErr != nil && !errors.Is(pfdErr, unix.ENOSYS) {
				err = gone(pfdErr)
			}
		}
	}
	if pfdErr == nil {
		c.pidfd = os.NewFile(uintptr(pidfd), "pidfd:"+strconv.Itoa(c.PID))
	}
	if err != nil {
		c.Close()
		return Cred{}, err
	}

	c.Exe, c.ExeErr = readExe(c.PID)
	if c.ExeErr != nil && errors.Is(c.ExeErr, os.ErrNotExist) {
		c.Close()
		return Cred{}, ErrPeerGone
	}
	start2, err := startTime(c.PID)
	if err != nil {
		c.Close()
		return Cred{}, err
	}
	if start1 != start2 {
		c.Close()
		return Cred{}, ErrPIDReused
	}
	c.StartTime = start1
	// A running process keeps its pid: if the pinned process still runs
	// now, everything read from /proc/<pid> above was about it.
	if c.pidfd != nil && !c.Alive() {
		c.Close()
		return Cred{}, ErrPeerGone
	}
	return c, nil
}

func gone(err error) error {
	if errors.Is(err, syscall.ESRCH) || errors.Is(err, os.ErrNotExist) {
		return ErrPeerGone
	}
	return fmt.Errorf("peercred: %w", err)
}

func readExe(pid int) (string, error) {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return "", fmt.Errorf("peercred: exe: %w", err)
	}
	return exe, nil
}

// startTime reads field 22 of /proc/<pid>/stat.
func startTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, gone(err)
	}
	v, err := parseStartTime(data)
	if err != nil {
		return 0, fmt.Errorf("peercred: /proc/%d/stat: %w", pid, err)
	}
	return v, nil
}

// parseStartTime takes field 22 of a /proc/<pid>/stat line. Field 2 (comm)
// is in parentheses and may itself contain spaces and ')', so fields are
// counted after the last ')'.
func parseStartTime(data []byte) (uint64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("no comm field")
	}
	fields := bytes.Fields(data[i+1:])
	const idx = 22 - 3 // fields after ')' start at field 3 (state)
	if len(fields) <= idx {
		return 0, fmt.Errorf("%d fields, want at least 22", len(fields)+2)
	}
	v, err := strconv.ParseUint(string(fields[idx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("start time: %w", err)
	}
	return v, nil
}

// Alive reports whether the peer process still runs. With a pidfd this is
// exact; without one (kernels before 5.3) it compares the start time of
// whatever now has the pid.
func (c Cred) Alive() bool {
	if c.pidfd != nil {
		fd := int(c.pidfd.Fd())
		if fd < 0 { // closed through a copy
			return false
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// A pidfd polls readable once the process has exited.
			// POLLNVAL: the pidfd was closed (Close on a copy).
			return err == nil && (n == 0 || fds[0].Revents&(unix.POLLIN|unix.POLLERR|unix.POLLNVAL) == 0)
		}
	}
	if c.PID <= 0 || c.StartTime == 0 {
		return false
	}
	st, err := startTime(c.PID)
	return err == nil && st == c.StartTime
}

// Close releases the pidfd. It is idempotent.
func (c *Cred) Close() error {
	if c.pidfd == nil {
		return nil
	}
	err := c.pidfd.Close()
	c.pidfd = nil
	return err
}

// String is for logs and audit lines.
func (c Cred) String() string {
	return fmt.Sprintf("uid=%d gid=%d pid=%d exe=%q", c.UID, c.GID, c.PID, c.Exe)
}
