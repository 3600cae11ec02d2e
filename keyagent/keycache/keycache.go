// Package keycache is the key agent's cache of data keys: memsafe keys per (scope, version, size),
// with a time to live, an offline grace period, a size bound, and one upstream request for any number
// of concurrent misses of the same key.
//
// Semantics:
//   - A key younger than TTL is served from the cache. An older one is re-fetched on its next use.
//   - When the re-fetch fails because the upstream is unavailable (errors.Is wire.ErrUnavailable), a
//     cached key younger than TTL+Grace is still served ("offline grace"); after that the request
//     fails as unavailable. Any other upstream answer (denied, not found) is final and not papered over.
//   - "Newest version" lookups (version 0) are cached the same way, per operation.
//   - Keys older than TTL+Grace are destroyed (wiped, not just dropped) by Sweep, which the agent runs
//     periodically; Purge destroys everything now. A key being sent to a client is pinned: eviction
//     marks it and the last user destroys it, so no response ever reads a wiped key.
//   - At most MaxKeys keys are held; inserting beyond that evicts the oldest.
//
// The cache does not authorize: the agent decides policy before asking it.
package keycache

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

// Source says where a key came from.
type Source string

const (
	Hit   Source = "cache"
	Miss  Source = "upstream"
	Grace Source = "grace" // stale key served while the upstream is unavailable
)

// Config configures a Cache.
type Config struct {
	TTL     time.Duration
	Grace   time.Duration
	MaxKeys int
	Now     func() time.Time // for tests; default time.Now
}

// ID names a cached key.
type ID struct {
	Scope   string
	Version uint32 // 0 in a lookup: the newest version for Op
	Bits    int
	Op      wire.Op // only used for version-0 lookups (a disabled newest version differs by op)
}

// Fetch gets a key from upstream. It returns the key and its actual version.
type Fetch func(ctx context.Context) (*memsafe.Key, uint32, error)

type entryKey struct {
	scope   string
	version uint32
	bits    int
}

type latestKey struct {
	scope string
	bits  int
	op    wire.Op
}

type entry struct {
	key     *memsafe.Key
	fetched time.Time
	refs    int
	dead    bool // evicted while pinned: destroy at last unpin
}

type latest struct {
	version uint32
	fetched time.Time
}

type flight struct {
	done chan struct{}
	v    uint32
	err  error
}

// Cache is safe for concurrent use.
type Cache struct {
	cfg     Config
	mu      sync.Mutex
	entries map[entryKey]*entry
	latest  map[latestKey]latest
	flights map[ID]*flight
}

// New returns an empty cache.
func New(cfg Config) *Cache {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 512
	}
	return &Cache{cfg: cfg, entries: map[entryKey]*entry{}, latest: map[latestKey]latest{}, flights: map[ID]*flight{}}
}

// Use finds the key for id (fetching it on a miss) and calls fn with it pinned. fn must not keep k.
func (c *Cache) Use(ctx context.Context, id ID, fetch Fetch, fn func(k *memsafe.Key, version uint32, src Source) error) error {
	e, v, src, err := c.get(ctx, id, fetch)
	if err != nil {
		return err
	}
	defer c.unpin(e)
	return fn(e.key, v, src)
}

func (c *Cache) get(ctx context.Context, id ID, fetch Fetch) (*entry, uint32, Source, error) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		now := c.cfg.Now()
		if e, v, ok := c.lookup(id, now, c.cfg.TTL); ok {
			e.refs++
			c.mu.Unlock()
			return e, v, Hit, nil
		}
		f, inFlight := c.flights[id]
		if !inFlight {
			f = &flight{done: make(chan struct{})}
			c.flights[id] = f
		}
		c.mu.Unlock()

		if inFlight {
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, 0, "", ctx.Err()
			}
		} else {
			f.v, f.err = c.fill(ctx, id, fetch)
			c.mu.Lock()
			delete(c.flights, id)
			c.mu.Unlock()
			close(f.done)
		}
		if f.err != nil {
			if errors.Is(f.err, wire.ErrUnavailable) {
				c.mu.Lock()
				if e, v, ok := c.lookup(id, c.cfg.Now(), c.cfg.TTL+c.cfg.Grace); ok {
					e.refs++
					c.mu.Unlock()
					return e, v, Grace, nil
				}
				c.mu.Unlock()
			}
			return nil, 0, "", f.err
		}
		c.mu.Lock()
		e, ok := c.entries[entryKey{id.Scope, f.v, id.Bits}]
		if ok && !e.dead {
			e.refs++
			c.mu.Unlock()
			src := Miss
			if inFlight {
				src = Hit // another request's fetch served this one
			}
			return e, f.v, src, nil
		}
		c.mu.Unlock()
		if attempt > 2 {
			// Evicted between fill and use three times over: the cache is far too small.
			return nil, 0, "", errors.New("keycache: key evicted before use (max_keys too small?)")
		}
	}
}

// lookup finds a live entry for id not older than maxAge. Called with mu held.
func (c *Cache) lookup(id ID, now time.Time, maxAge time.Duration) (*entry, uint32, bool) {
	v := id.Version
	if v == 0 {
		l, ok := c.latest[latestKey{id.Scope, id.Bits, id.Op}]
		if !ok || now.Sub(l.fetched) >= maxAge {
			return nil, 0, false
		}
		v = l.version
	}
	e, ok := c.entries[entryKey{id.Scope, v, id.Bits}]
	if !ok || e.dead || now.Sub(e.fetched) >= maxAge {
		return nil, 0, false
	}
	return e, v, true
}

func (c *Cache) fill(ctx context.Context, id ID, fetch Fetch) (uint32, error) {
	k, v, err := fetch(ctx)
	if err != nil {
		return 0, err
	}
	if v == 0 || k.Len()*8 != id.Bits || (id.Version != 0 && v != id.Version) {
		k.Destroy()
		return 0, errors.New("keycache: upstream returned a key of the wrong version or size")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	ek := entryKey{id.Scope, v, id.Bits}
	if old, ok := c.entries[ek]; ok {
		c.evictLocked(ek, old)
	}
	for len(c.entries) >= c.cfg.MaxKeys {
		c.evictOldestLocked()
	}
	c.entries[ek] = &entry{key: k, fetched: now}
	if id.Version == 0 {
		c.latest[latestKey{id.Scope, id.Bits, id.Op}] = latest{version: v, fetched: now}
	}
	return v, nil
}

func (c *Cache) unpin(e *entry) {
	c.mu.Lock()
	e.refs--
	destroy := e.dead && e.refs == 0
	c.mu.Unlock()
	if destroy {
		e.key.Destroy()
	}
}

// evictLocked removes an entry, destroying its key now or at its last unpin.
func (c *Cache) evictLocked(ek entryKey, e *entry) {
	delete(c.entries, ek)
	e.dead = true
	if e.refs == 0 {
		e.key.Destroy()
	}
}

func (c *Cache) evictOldestLocked() {
	var (
		oldK  entryKey
		oldE  *entry
		found bool
	)
	for k, e := range c.entries {
		if !found || e.fetched.Before(oldE.fetched) {
			oldK, oldE, found = k, e, true
		}
	}
	if found {
		c.evictLocked(oldK, oldE)
	}
}

// Sweep destroys keys older than TTL+Grace and forgets stale newest-version lookups. It returns how
// many keys it destroyed.
func (c *Cache) Sweep() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	n := 0
	for k, e := range c.entries {
		if now.Sub(e.fetched) >= c.cfg.TTL+c.cfg.Grace {
			c.evictLocked(k, e)
			n++
		}
	}
	for k, l := range c.latest {
		if now.Sub(l.fetched) >= c.cfg.TTL+c.cfg.Grace {
			delete(c.latest, k)
		}
	}
	return n
}

// Purge destroys every key now and returns how many.
func (c *Cache) Purge() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.entries)
	for k, e := range c.entries {
		c.evictLocked(k, e)
	}
	clear(c.latest)
	return n
}

// Len is the number of keys held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
