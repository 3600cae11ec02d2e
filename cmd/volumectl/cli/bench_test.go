package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/testenv"
)

// TestBenchUnlock is the `make bench` scenario for boot unlock, process against process on the same
// image and keyslot: `volumectl unlock --test` (agent round trip, header parse, PBKDF2-1000 keyslot
// open, digest check) against `cryptsetup open --test-passphrase --key-slot N` given the same derived
// passphrase on stdin. Runs alternate to share the noise of a busy machine; the headline is each side's
// fastest run (noise only ever adds time), medians are extra lines. Two agents: one with a warm cache
// (the key is served from locked memory) and one that caches nothing (every unlock goes to the key
// service over mutual TLS, as the first unlock after boot does).
func TestBenchUnlock(t *testing.T) {
	if os.Getenv("KEYWARD_BENCH") != "1" {
		t.Skip("set KEYWARD_BENCH=1 (make bench)")
	}
	runs := 20
	if os.Getenv("KEYWARD_BENCH_QUICK") == "1" {
		runs = 7
	}
	f := newFixture(t) // agent with a 1ms cache TTL: every request is a miss
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	warm := testenv.StartAgent(t, testenv.AgentOptions{KeyServices: []*testenv.KeyService{f.ks},
		Policy: strings.Replace(fmt.Sprintf(policyTmpl, f.bin, self), "ttl: 1ms", "ttl: 10m", 1)})

	img := f.image("bench.img")
	keyFile := filepath.Join(f.dir, "recovery.key")
	os.WriteFile(keyFile, []byte(recovery), 0o600)
	f.must("enroll", img, "--scope", scope, "--unlock-key-file", keyFile, "--backup-dir", f.backup)
	pass := f.expected(img, 1)
	const slot = 1

	volumectl := func(sock string) func() error {
		return func() error {
			out, err := exec.Command(f.bin, "unlock", img, "--test", "--socket", sock).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
	}
	cryptsetup := func() error { return f.testPassphrase(img, pass, slot) }
	if err := volumectl(warm.Socket)(); err != nil { // fill the warm cache
		t.Fatal(err)
	}

	for _, sc := range []struct {
		name string
		sock string
	}{
		{"volumectl-unlock-test-vs-cryptsetup", warm.Socket},
		{"volumectl-unlock-test-vs-cryptsetup-cache-miss", f.agent.Socket},
	} {
		var ours, theirs []time.Duration
		for i := 0; i < runs; i++ {
			ours = append(ours, timeIt(t, volumectl(sc.sock)))
			theirs = append(theirs, timeIt(t, cryptsetup))
		}
		o, c := quantile(ours, 0), quantile(theirs, 0)
		fmt.Printf("BENCH scenario=%q keyward=%.2f baseline=%.2f unit=ms ratio=%.3f goal=\"<=1.2\" met=%v\n", sc.name, o, c, o/c, o/c <= 1.2)
		fmt.Printf("BENCH scenario=%q keyward=%.2f baseline=0 unit=ms ratio=0 goal=\"report\" met=true\n", sc.name+"-p50", quantile(ours, 0.5))
		fmt.Printf("BENCH scenario=%q keyward=%.2f baseline=0 unit=ms ratio=0 goal=\"report\" met=true\n", sc.name+"-p50-cryptsetup", quantile(theirs, 0.5))
	}
}

func timeIt(t *testing.T, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := fn(); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// quantile returns the q-quantile (0 = minimum, 0.5 = median) in milliseconds.
func quantile(d []time.Duration, q float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1)+0.5)].Microseconds()) / 1000
}
