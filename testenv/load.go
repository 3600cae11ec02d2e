package testenv

import (
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Load accumulates one measured side of a speed comparison (make bench) over several rounds: how many
// operations ran, in how much wall time and process CPU time, and each one's latency.
type Load struct {
	N       int
	Elapsed time.Duration
	CPU     time.Duration // user+system time of the whole process (both ends when both are in it)
	Lat     []time.Duration
}

// Drive runs one goroutine per op for dur, each calling its op in a loop, and adds the results.
// An op error fails the test.
func (f *Load) Drive(t testing.TB, ops []func() error, dur time.Duration) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0 := ProcessCPU()
	start := time.Now()
	deadline := start.Add(dur)
	for _, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1<<14)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := op(); err != nil {
					t.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			f.Lat = append(f.Lat, mine...)
			f.N += len(mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	f.Elapsed += time.Since(start)
	f.CPU += ProcessCPU() - cpu0
}

// Rate is operations per second of wall time.
func (f *Load) Rate() float64 { return float64(f.N) / f.Elapsed.Seconds() }

// CPUPer is the process's CPU time per operation: unlike a rate, it does not depend on how much of
// the machine other processes take while the figure is measured.
func (f *Load) CPUPer() time.Duration { return f.CPU / time.Duration(max(f.N, 1)) }

// Pct is the p-th percentile latency (0 with no samples).
func (f *Load) Pct(p int) time.Duration {
	if len(f.Lat) == 0 {
		return 0
	}
	slices.Sort(f.Lat)
	return f.Lat[(len(f.Lat)-1)*p/100]
}

// ProcessCPU is this process's user+system CPU time so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Micros is d in microseconds, for BENCH lines.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
