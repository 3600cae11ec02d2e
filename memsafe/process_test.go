package memsafe_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/testenv"
)

// countInMemory counts occurrences of the bytes mask[i]^0xff in this process's readable memory,
// without ever forming that byte string outside the key itself: the scan compares byte by byte
// against the mask, and reads memory into an mmap'd buffer that is excluded from the scan and wiped.
func countInMemory(t *testing.T, mask []byte) int {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	const chunk = 1 << 20
	buf, err := unix.Mmap(-1, 0, chunk+len(mask), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	bufStart := uint64(uintptrOf(buf))
	first := mask[0] ^ 0xff
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' || (len(f) >= 6 && strings.HasPrefix(f[5], "[v")) {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		if end-start > 128<<20 || (bufStart >= start && bufStart < end) {
			continue // race-detector shadow maps and the like; and our own scan buffer
		}
		for off := start; off < end; off += chunk {
			n := min(uint64(chunk+len(mask)), end-off)
			got, err := mem.ReadAt(buf[:n], int64(off))
			if got <= 0 || (err != nil && got < len(mask)) {
				continue
			}
			b := buf[:got]
			for i := 0; i+len(mask) <= len(b) && i < chunk; {
				j := bytes.IndexByte(b[i:], first)
				if j < 0 || i+j+len(mask) > len(b) {
					break
				}
				i += j
				match := true
				for k := range mask {
					if b[i+k] != mask[k]^0xff {
						match = false
						break
					}
				}
				if match {
					found++
				}
				i++
			}
			clear(b)
		}
	}
	return found
}

func TestKeyBytesGoneAfterDestroy(t *testing.T) {
	mask := newMask(t, 32)
	k, err := memsafe.FromReader(&maskedReader{mask: mask}, 32)
	if err != nil {
		t.Fatal(err)
	}
	if n := countInMemory(t, mask); n != 1 {
		t.Fatalf("live key found %d times in process memory, want exactly 1 (the locked buffer)", n)
	}
	k.Destroy()
	if n := countInMemory(t, mask); n != 0 {
		t.Fatalf("destroyed key still found %d times in process memory", n)
	}
}

func TestVmLckGrowsWithKeys(t *testing.T) {
	before, err := memsafe.LockedBytes()
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var keys []*memsafe.Key
	for i := 0; i < n; i++ {
		k, err := memsafe.NewRandom(32)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	during, _ := memsafe.LockedBytes()
	page := uint64(os.Getpagesize())
	if during < before+n*page {
		t.Fatalf("VmLck %d -> %d with %d live keys, want growth >= %d", before, during, n, n*page)
	}
	for _, k := range keys {
		k.Destroy()
	}
	after, _ := memsafe.LockedBytes()
	if after > before {
		t.Fatalf("VmLck %d after destroying keys, was %d before", after, before)
	}
}

// TestHelperProcess is not a test: the tests below run the test binary as a subprocess with
// MEMSAFE_HELPER set, to change process-wide state (dumpable, rlimits, uid) in isolation.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv("MEMSAFE_HELPER") {
	case "":
		t.Skip("helper process only")
	case "harden":
		before, _ := memsafe.Dumpable()
		r := memsafe.Harden(memsafe.HardenOptions{})
		after, _ := memsafe.Dumpable()
		var rl unix.Rlimit
		_ = unix.Getrlimit(unix.RLIMIT_CORE, &rl)
		fmt.Printf("dumpable_before=%t dumpable_after=%t core=%d report=%q\n", before, after, rl.Cur, r.String())
	case "signals":
		signalHelper()
	case "slab":
		slabHelper()
	case "locklimit":
		fmt.Printf("uid=%d\n", os.Getuid())
		fmt.Printf("small: %v\n", memsafe.CheckLockLimit(1, 32))
		fmt.Printf("big: %v\n", memsafe.CheckLockLimit(512, 32))
	}
	os.Exit(0)
}

func helper(t *testing.T, mode string, cmd *exec.Cmd) string {
	t.Helper()
	cmd.Env = append(os.Environ(), "MEMSAFE_HELPER="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s: %v: %s", mode, err, out)
	}
	return string(out)
}

// underLockLimit runs TestHelperProcess in mode as the unprivileged user under a 64 KiB
// RLIMIT_MEMLOCK, from a copy of the test binary that user can execute.
func underLockLimit(t *testing.T, mode string) string {
	t.Helper()
	sh := testenv.Require(t, "sh")
	bin := testenv.ExecutableCopy(t)
	uid, gid, _ := testenv.Unprivileged(t)
	cmd := exec.Command(sh, "-c", `ulimit -l 64 && exec "$0" -test.run='^TestHelperProcess$'`, bin)
	testenv.AsUser(cmd, uid, gid)
	return helper(t, mode, cmd)
}

func TestHardenMakesProcessNonDumpable(t *testing.T) {
	out := helper(t, "harden", exec.Command(os.Args[0], "-test.run=^TestHelperProcess$"))
	if !strings.Contains(out, "dumpable_before=true dumpable_after=false core=0") {
		t.Fatalf("Harden did not take effect: %s", out)
	}
	if !strings.Contains(out, "non_dumpable=true no_core_files=true") {
		t.Fatalf("Harden report: %s", out)
	}
}

func TestCheckLockLimitUnprivileged(t *testing.T) {
	out := underLockLimit(t, "locklimit")
	if strings.Contains(out, "uid=0\n") {
		t.Fatalf("helper ran as root: %s", out)
	}
	if !strings.Contains(out, "small: <nil>") {
		t.Fatalf("one key under a 64 KiB limit should fit: %s", out)
	}
	for _, want := range []string{"big: locked-memory limit too small", "RLIMIT_MEMLOCK is 65536 bytes", "512 keys need", "ulimit -l", "cache.max_keys"} {
		if !strings.Contains(out, want) {
			t.Fatalf("lock limit error lacks %q: %s", want, out)
		}
	}
}
