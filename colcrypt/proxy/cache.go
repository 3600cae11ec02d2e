package proxy

import (
	"container/list"
	"sync"
)

// StatementCache is a size-bounded LRU map from SQL text to a per-statement analysis (for the
// column layer: a pg_query parse and its verdict), so statement work happens once per statement text,
// not once per execution. It is safe for concurrent use by all sessions.
type StatementCache[V any] struct {
	mu           sync.Mutex
	max          int
	ll           *list.List
	items        map[string]*list.Element
	hits, misses uint64
}

type cacheEntry[V any] struct {
	key string
	val V
}

// NewStatementCache returns a cache holding at most size entries (at least 1).
func NewStatementCache[V any](size int) *StatementCache[V] {
	return &StatementCache[V]{max: max(size, 1), ll: list.New(), items: map[string]*list.Element{}}
}

// Get returns the value cached for sql.
func (c *StatementCache[V]) Get(sql string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[sql]; ok {
		c.ll.MoveToFront(e)
		c.hits++
		return e.Value.(*cacheEntry[V]).val, true
	}
	c.misses++
	var zero V
	return zero, false
}

// Put caches v for sql, evicting the least recently used entry beyond the bound.
func (c *StatementCache[V]) Put(sql string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[sql]; ok {
		e.Value.(*cacheEntry[V]).val = v
		c.ll.MoveToFront(e)
		return
	}
	c.items[sql] = c.ll.PushFront(&cacheEntry[V]{key: sql, val: v})
	for c.ll.Len() > c.max {
		e := c.ll.Back()
		c.ll.Remove(e)
		delete(c.items, e.Value.(*cacheEntry[V]).key)
	}
}

// GetOrCompute returns the cached value for sql, computing and caching it on a miss. Errors are not
// cached. Two sessions missing at once may both compute; the last result wins (analysis is pure).
func (c *StatementCache[V]) GetOrCompute(sql string, compute func(string) (V, error)) (V, error) {
	if v, ok := c.Get(sql); ok {
		return v, nil
	}
	v, err := compute(sql)
	if err != nil {
		return v, err
	}
	c.Put(sql, v)
	return v, nil
}

// Purge empties the cache (after DDL that changes what statements mean, say).
func (c *StatementCache[V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.items)
}

// Len returns the number of cached entries.
func (c *StatementCache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// Stats returns the hit and miss counts.
func (c *StatementCache[V]) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
