package keycache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/keyagent/keycache"
	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// upstream is a fake key source for the cache's unit tests (the agent's integration tests use a real
// key service).
type upstream struct {
	calls   atomic.Int32
	version uint32
	down    atomic.Bool
	deny    atomic.Bool
	delay   time.Duration
	keys    []*memsafe.Key
	mu      sync.Mutex
}

func (u *upstream) fetch(bits int) keycache.Fetch {
	return func(ctx context.Context) (*memsafe.Key, uint32, error) {
		u.calls.Add(1)
		time.Sleep(u.delay)
		if u.down.Load() {
			return nil, 0, fmt.Errorf("%w: every endpoint failed", wire.ErrUnavailable)
		}
		if u.deny.Load() {
			return nil, 0, fmt.Errorf("%w: no grant", wire.ErrDenied)
		}
		k, err := memsafe.NewRandom(bits / 8)
		if err != nil {
			return nil, 0, err
		}
		u.mu.Lock()
		u.keys = append(u.keys, k)
		u.mu.Unlock()
		return k, u.version, nil
	}
}

func get(t *testing.T, c *keycache.Cache, u *upstream, id keycache.ID) (uint32, keycache.Source, error) {
	t.Helper()
	var v uint32
	var src keycache.Source
	err := c.Use(context.Background(), id, u.fetch(id.Bits), func(k *memsafe.Key, ver uint32, s keycache.Source) error {
		if !k.Alive() {
			return errors.New("served a destroyed key")
		}
		v, src = ver, s
		return nil
	})
	return v, src, err
}

func setup(max int) (*keycache.Cache, *upstream, *clock) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := keycache.New(keycache.Config{TTL: time.Minute, Grace: 5 * time.Minute, MaxKeys: max, Now: clk.now})
	return c, &upstream{version: 3}, clk
}

var ssn = keycache.ID{Scope: "payroll:employees.ssn", Bits: 256, Op: wire.OpDecrypt}

func TestHitMissAndTTL(t *testing.T) {
	c, u, clk := setup(10)
	steps := []struct {
		name    string
		advance time.Duration
		want    keycache.Source
		calls   int32
	}{
		{"first use fetches", 0, keycache.Miss, 1},
		{"second use hits", 10 * time.Second, keycache.Hit, 1},
		{"after ttl re-fetches", time.Minute, keycache.Miss, 2},
		{"then hits again", time.Second, keycache.Hit, 2},
	}
	for _, s := range steps {
		clk.add(s.advance)
		v, src, err := get(t, c, u, ssn)
		if err != nil || v != 3 || src != s.want || u.calls.Load() != s.calls {
			t.Fatalf("%s: v=%d src=%s err=%v calls=%d, want src=%s calls=%d", s.name, v, src, err, u.calls.Load(), s.want, s.calls)
		}
	}
	// The re-fetch replaced the first key: it must have been wiped, not just dropped.
	if u.keys[0].Alive() {
		t.Fatal("replaced key not destroyed")
	}
}

func TestOfflineGrace(t *testing.T) {
	c, u, clk := setup(10)
	if _, _, err := get(t, c, u, ssn); err != nil {
		t.Fatal(err)
	}
	u.down.Store(true)
	clk.add(2 * time.Minute) // past TTL, within grace
	if _, src, err := get(t, c, u, ssn); err != nil || src != keycache.Grace {
		t.Fatalf("within grace: src=%s err=%v", src, err)
	}
	clk.add(5 * time.Minute) // past TTL+grace
	if _, _, err := get(t, c, u, ssn); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("after grace: want unavailable, got %v", err)
	}
	u.down.Store(false)
	if _, src, err := get(t, c, u, ssn); err != nil || src != keycache.Miss {
		t.Fatalf("upstream back: src=%s err=%v", src, err)
	}
}

func TestDenialIsNotPaperedOver(t *testing.T) {
	c, u, clk := setup(10)
	if _, _, err := get(t, c, u, ssn); err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Minute)
	u.deny.Store(true)
	if _, _, err := get(t, c, u, ssn); !errors.Is(err, wire.ErrDenied) {
		t.Fatalf("want denied after TTL even with a cached key, got %v", err)
	}
}

func TestConcurrentMissesFetchOnce(t *testing.T) {
	c, u, _ := setup(10)
	u.delay = 50 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := get(t, c, u, ssn); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := u.calls.Load(); n != 1 {
		t.Fatalf("%d upstream calls for 32 concurrent misses, want 1", n)
	}
}

func TestMaxKeysEvictsOldest(t *testing.T) {
	c, u, clk := setup(2)
	for i := 0; i < 3; i++ {
		clk.add(time.Second)
		id := keycache.ID{Scope: fmt.Sprintf("payroll:c%d", i), Bits: 256, Op: wire.OpDecrypt}
		if _, _, err := get(t, c, u, id); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != 2 || u.keys[0].Alive() || !u.keys[2].Alive() {
		t.Fatalf("len=%d first alive=%t last alive=%t", c.Len(), u.keys[0].Alive(), u.keys[2].Alive())
	}
}

func TestSweepAndPurgeWipe(t *testing.T) {
	c, u, clk := setup(10)
	get(t, c, u, ssn)
	get(t, c, u, keycache.ID{Scope: "payroll:x", Bits: 512, Op: wire.OpEncrypt})
	clk.add(time.Minute + 5*time.Minute)
	get(t, c, u, keycache.ID{Scope: "payroll:y", Bits: 256, Op: wire.OpDecrypt})
	if n := c.Sweep(); n != 2 {
		t.Fatalf("swept %d, want 2", n)
	}
	if u.keys[0].Alive() || u.keys[1].Alive() || !u.keys[2].Alive() {
		t.Fatal("sweep did not wipe exactly the expired keys")
	}
	if n := c.Purge(); n != 1 || u.keys[2].Alive() || c.Len() != 0 {
		t.Fatalf("purge: n=%d", n)
	}
}

func TestPinnedKeySurvivesEviction(t *testing.T) {
	c, u, _ := setup(10)
	err := c.Use(context.Background(), ssn, u.fetch(256), func(k *memsafe.Key, _ uint32, _ keycache.Source) error {
		c.Purge() // evicted while a response is being written
		return k.Use(func([]byte) error { return nil })
	})
	if err != nil {
		t.Fatalf("pinned key destroyed under its user: %v", err)
	}
	if u.keys[0].Alive() {
		t.Fatal("evicted key not destroyed after its last user")
	}
}

func TestNewestVersionLookup(t *testing.T) {
	c, u, _ := setup(10)
	enc := keycache.ID{Scope: "payroll:a", Bits: 256, Op: wire.OpEncrypt}
	if v, _, err := get(t, c, u, enc); err != nil || v != 3 {
		t.Fatalf("v=%d err=%v", v, err)
	}
	// The explicit version is now cached too.
	if _, src, _ := get(t, c, u, keycache.ID{Scope: "payroll:a", Version: 3, Bits: 256, Op: wire.OpDecrypt}); src != keycache.Hit {
		t.Fatalf("explicit version after newest lookup: %s", src)
	}
	u.version = 4
	// A wrong version from upstream for an explicit request is refused.
	if _, _, err := get(t, c, u, keycache.ID{Scope: "payroll:a", Version: 2, Bits: 256, Op: wire.OpDecrypt}); err == nil {
		t.Fatal("accepted a key of another version")
	}
}
