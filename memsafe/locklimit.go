package memsafe

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// pagesPerKey is what one Key locks: memguard puts each buffer in its own pages and locks the inner
// ones. Guard pages are mapped but not locked.
func lockedBytesPerKey(keySize int) uint64 {
	page := os.Getpagesize()
	inner := (keySize + page - 1) / page * page
	return uint64(inner)
}

// baseLocked is memguard's own locked state (its session-key coffer: three one-page buffers) plus a
// margin for the handful of keys a process holds outside its cache (TLS, sealing keys).
func baseLocked() uint64 { return uint64(8 * os.Getpagesize()) }

// LockLimitError says that RLIMIT_MEMLOCK is too small for the configured number of keys.
type LockLimitError struct {
	Keys  int
	Need  uint64
	Limit uint64
}

func (e *LockLimitError) Error() string {
	return fmt.Sprintf("locked-memory limit too small: RLIMIT_MEMLOCK is %d bytes but %d keys need %d bytes; "+
		"raise it (systemd: LimitMEMLOCK=%d, shell: ulimit -l %d) or lower cache.max_keys",
		e.Limit, e.Keys, e.Need, e.Need, (e.Need+1023)/1024)
}

// CheckLockLimit checks that RLIMIT_MEMLOCK leaves room for nKeys keys of keySize bytes each, on top of
// memory already locked by this process. memguard itself panics (or, in some kernels, blocks) when mlock
// fails, so daemons call this at start with their cache size and refuse to start with a clear error.
// A process with CAP_IPC_LOCK (root, usually) is not limited.
func CheckLockLimit(nKeys, keySize int) error {
	if nKeys < 0 || keySize <= 0 {
		return fmt.Errorf("memsafe: check lock limit: bad arguments (%d keys of %d bytes)", nKeys, keySize)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return fmt.Errorf("memsafe: getrlimit(RLIMIT_MEMLOCK): %w", err)
	}
	if rl.Cur == unix.RLIM_INFINITY || hasIPCLock() {
		return nil
	}
	need := uint64(nKeys)*lockedBytesPerKey(keySize) + baseLocked()
	if locked, err := LockedBytes(); err == nil {
		need += locked
	}
	if need > rl.Cur {
		return &LockLimitError{Keys: nKeys, Need: need, Limit: rl.Cur}
	}
	return nil
}

// LockedBytes reads VmLck from /proc/self/status.
func LockedBytes() (uint64, error) {
	return procStatusKB("VmLck")
}

func hasIPCLock() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_IPC_LOCK) != 0
}
