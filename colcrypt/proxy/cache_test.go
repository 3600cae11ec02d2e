package proxy

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestStatementCache(t *testing.T) {
	c := NewStatementCache[int](2)
	c.Put("a", 1)
	c.Put("b", 2)
	if v, ok := c.Get("a"); !ok || v != 1 { // a is now the most recent
		t.Fatalf("a: %d %v", v, ok)
	}
	c.Put("c", 3) // evicts b, the least recently used
	if _, ok := c.Get("b"); ok {
		t.Fatal("b survived eviction")
	}
	if v, ok := c.Get("c"); !ok || v != 3 || c.Len() != 2 {
		t.Fatalf("c: %d %v len %d", v, ok, c.Len())
	}
	calls := 0
	compute := func(sql string) (int, error) {
		calls++
		if sql == "bad" {
			return 0, errors.New("parse error")
		}
		return len(sql), nil
	}
	for i := 0; i < 3; i++ {
		if v, err := c.GetOrCompute("hello", compute); err != nil || v != 5 {
			t.Fatalf("%d %v", v, err)
		}
		if _, err := c.GetOrCompute("bad", compute); err == nil {
			t.Fatal("error not returned")
		}
	}
	if calls != 4 { // hello once, bad every time (errors are not cached)
		t.Fatalf("compute called %d times", calls)
	}
	hits, misses := c.Stats()
	if hits == 0 || misses == 0 {
		t.Fatalf("stats %d/%d", hits, misses)
	}
	c.Purge()
	if c.Len() != 0 {
		t.Fatal("purge left entries")
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				k := fmt.Sprint(i % 50)
				c.GetOrCompute(k, func(s string) (int, error) { return len(s), nil })
			}
		}()
	}
	wg.Wait()
	if c.Len() != 2 {
		t.Fatalf("len %d after concurrent use", c.Len())
	}
}
