package memsafe_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward/memsafe"
)

func slabKey(t *testing.T, mask []byte) *memsafe.Key {
	t.Helper()
	k, err := memsafe.SlabFromReader(&maskedReader{mask: mask}, len(mask))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSlabFromReaderAndUse(t *testing.T) {
	for _, n := range []int{1, 32, memsafe.SlotSize} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			mask := newMask(t, n)
			k := slabKey(t, mask)
			defer k.Destroy()
			if k.Len() != n || !k.Alive() {
				t.Fatalf("Len=%d Alive=%t", k.Len(), k.Alive())
			}
			err := k.Use(func(b []byte) error {
				if len(b) != n || cap(b) != n {
					return fmt.Errorf("len %d cap %d, want %d: an append could reach the next slot", len(b), cap(b), n)
				}
				for i := range b {
					if b[i] != mask[i]^0xff {
						return fmt.Errorf("byte %d differs", i)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSlabRejects(t *testing.T) {
	cases := []struct {
		name string
		mk   func() (*memsafe.Key, error)
		want string
	}{
		{"size 0", func() (*memsafe.Key, error) { return memsafe.SlabFromReader(bytes.NewReader(nil), 0) }, "size 0"},
		{"size 65", func() (*memsafe.Key, error) {
			return memsafe.SlabFromReader(bytes.NewReader(make([]byte, 65)), memsafe.SlotSize+1)
		}, "size 65"},
		{"short read", func() (*memsafe.Key, error) { return memsafe.SlabFromReader(bytes.NewReader(make([]byte, 10)), 32) }, "short read"},
		{"empty bytes", func() (*memsafe.Key, error) { return memsafe.SlabFromBytes(nil) }, "empty"},
		{"bytes too long", func() (*memsafe.Key, error) { return memsafe.SlabFromBytes(make([]byte, 65)) }, "size 65"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := memsafe.SlabInfo().InUse
			k, err := c.mk()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				k.Destroy()
				t.Fatalf("want an error with %q, got %v", c.want, err)
			}
			if after := memsafe.SlabInfo().InUse; after != before {
				t.Fatalf("a failed construction kept a slot: in use %d -> %d", before, after)
			}
		})
	}
	if _, err := memsafe.SlabFromReader(bytes.NewReader(make([]byte, 3)), 32); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short read does not wrap io.ErrUnexpectedEOF: %v", err)
	}
}

func TestSlabFromBytesWipesSource(t *testing.T) {
	src := []byte("0123456789abcdef0123456789abcdef")
	k, err := memsafe.SlabFromBytes(src)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	if !bytes.Equal(src, make([]byte, len(src))) {
		t.Fatal("SlabFromBytes left the source slice unwiped")
	}
	if !k.Equal(k) || k.Len() != 32 {
		t.Fatal("slab key from bytes is not usable")
	}
}

// TestSlabKeyBytesGoneAfterDestroy is the memory scan of TestKeyBytesGoneAfterDestroy for slab keys:
// the freed slot stays mapped, so this checks the wipe itself, not an unmap.
func TestSlabKeyBytesGoneAfterDestroy(t *testing.T) {
	mask := newMask(t, 32)
	k := slabKey(t, mask)
	other := slabKey(t, newMask(t, 64)) // keeps the chunk mapped after k is destroyed
	defer other.Destroy()
	if n := countInMemory(t, mask); n != 1 {
		t.Fatalf("live slab key found %d times in process memory, want exactly 1 (its slot)", n)
	}
	k.Destroy()
	if n := countInMemory(t, mask); n != 0 {
		t.Fatalf("destroyed slab key still found %d times in process memory", n)
	}
	// The same through DestroyAll, and through a clone.
	mask2 := newMask(t, 32)
	k2 := slabKey(t, mask2)
	c, err := k2.Clone()
	if err != nil {
		t.Fatal(err)
	}
	if !c.Equal(k2) {
		t.Fatal("clone differs")
	}
	if n := countInMemory(t, mask2); n != 2 {
		t.Fatalf("key and clone found %d times, want 2", n)
	}
	memsafe.DestroyAll()
	if n := countInMemory(t, mask2); n != 0 || k2.Alive() || c.Alive() || other.Alive() {
		t.Fatalf("after DestroyAll: found %d times, alive %t %t %t", n, k2.Alive(), c.Alive(), other.Alive())
	}
}

// TestSlabGuardPages: the locked slot pages of a chunk sit between two inaccessible pages.
func TestSlabGuardPages(t *testing.T) {
	k := slabKey(t, newMask(t, 32))
	defer k.Destroy()
	var addr uint64
	_ = k.Use(func(b []byte) error { addr = uint64(uintptrOf(b)); return nil })
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	type region struct {
		start, end uint64
		perms      string
	}
	var regions []region
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		lo, hi, _ := strings.Cut(f[0], "-")
		s, _ := strconv.ParseUint(lo, 16, 64)
		e, _ := strconv.ParseUint(hi, 16, 64)
		regions = append(regions, region{s, e, f[1]})
	}
	for i, r := range regions {
		if addr < r.start || addr >= r.end {
			continue
		}
		if r.perms != "rw-p" {
			t.Fatalf("slot region perms %s, want rw-p", r.perms)
		}
		if i == 0 || i == len(regions)-1 || regions[i-1].end != r.start || regions[i+1].start != r.end ||
			regions[i-1].perms != "---p" || regions[i+1].perms != "---p" {
			t.Fatalf("slot region %x-%x is not fenced by PROT_NONE pages:\n%s", r.start, r.end, maps)
		}
		return
	}
	t.Fatal("slot address not in /proc/self/maps")
}

// TestSlabVmLck: the slab locks whole chunks as it grows and unlocks all but one spare when its keys
// are destroyed.
func TestSlabVmLck(t *testing.T) {
	page := uint64(os.Getpagesize())
	perChunk := int(page) / memsafe.SlotSize
	before, err := memsafe.LockedBytes()
	if err != nil {
		t.Fatal(err)
	}
	s0 := memsafe.SlabInfo()
	var keys []*memsafe.Key
	for range s0.Slots - s0.InUse + 2*perChunk + 1 { // fill what is free, then at least 3 new chunks
		k, err := memsafe.SlabFromBytes(make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	s1 := memsafe.SlabInfo()
	during, _ := memsafe.LockedBytes()
	if s1.Chunks < s0.Chunks+3 || s1.InUse != s0.InUse+len(keys) {
		t.Fatalf("slab %+v -> %+v after %d keys", s0, s1, len(keys))
	}
	if grew := during - before; grew < uint64(s1.Chunks-s0.Chunks)*page {
		t.Fatalf("VmLck %d -> %d, want growth >= %d chunk pages", before, during, s1.Chunks-s0.Chunks)
	}
	for _, k := range keys {
		k.Destroy()
	}
	s2 := memsafe.SlabInfo()
	after, _ := memsafe.LockedBytes()
	if s2.InUse != s0.InUse || s2.Chunks > max(s0.Chunks, 1) {
		t.Fatalf("slab %+v after destroying the keys, was %+v", s2, s0)
	}
	if after > before+page {
		t.Fatalf("VmLck %d after destroying slab keys, was %d before (one spare page allowed)", after, before)
	}
}

func TestSlabConcurrent(t *testing.T) {
	shared := slabKey(t, newMask(t, 32))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 300 {
				k, err := memsafe.SlabFromBytes(bytes.Repeat([]byte{byte(g + 1)}, 32))
				if err != nil {
					t.Error(err)
					return
				}
				err = k.Use(func(b []byte) error {
					for _, c := range b {
						if c != byte(g+1) {
							return errors.New("slot shared with another key")
						}
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				_ = shared.Use(func(b []byte) error { _ = b[j%len(b)]; return nil })
				k.Destroy()
			}
		}()
	}
	shared.Destroy()
	wg.Wait()
	if err := shared.Use(func([]byte) error { return nil }); !errors.Is(err, memsafe.ErrDestroyed) {
		t.Fatalf("Use after Destroy: %v", err)
	}
}

func TestSlabRedaction(t *testing.T) {
	k, err := memsafe.SlabFromBytes([]byte("SECRETSECRETSECRETSECRETSECRET!!"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	h := struct {
		Name string
		K    *memsafe.Key
	}{"x", k}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	js, _ := json.Marshal(h)
	var lb bytes.Buffer
	slog.New(slog.NewJSONHandler(&lb, nil)).Info("m", "key", k, "holder", h)
	outs = append(outs, string(js), lb.String())
	for i, out := range outs {
		if strings.Contains(out, "SECRET") || strings.Contains(strings.ToLower(out), "5345435245") || !strings.Contains(out, memsafe.Redacted) {
			t.Errorf("output %d is not redacted", i)
		}
	}
}

// slabHelper runs in the subprocess TestSlabLockLimit starts (TestHelperProcess, mode "slab"), under a
// small RLIMIT_MEMLOCK.
func slabHelper() {
	// The most keys CheckLockLimit accepts must fit in the slab...
	n := 0
	for n < 1<<12 && memsafe.CheckLockLimit(n+1, 32) == nil {
		n++
	}
	if n == 1<<12 {
		fmt.Println("no lock limit applies (CAP_IPC_LOCK?)")
		os.Exit(0)
	}
	var keys []*memsafe.Key
	for i := range n {
		k, err := memsafe.SlabFromBytes(make([]byte, 32))
		if err != nil {
			fmt.Printf("check passed for %d keys but key %d failed: %v\n", n, i, err)
			os.Exit(0)
		}
		keys = append(keys, k)
	}
	fmt.Printf("check_ok=%d fit\n", n)
	// ...and past the limit the slab answers with an error, not a panic.
	for i := 0; i < 1<<14; i++ {
		k, err := memsafe.SlabFromBytes(make([]byte, 32))
		if err != nil {
			fmt.Printf("limit error after %d more: %v\n", i, err)
			os.Exit(0)
		}
		keys = append(keys, k)
	}
	fmt.Println("no limit reached")
	os.Exit(0)
}

func TestSlabLockLimit(t *testing.T) {
	s := underLockLimit(t, "slab")
	t.Logf("helper: %s", strings.TrimSpace(s))
	if !strings.Contains(s, " fit\n") || strings.Contains(s, "check_ok=0 ") {
		t.Fatalf("keys CheckLockLimit accepted did not fit in the slab (or none were accepted): %s", s)
	}
	if !strings.Contains(s, "limit error after") || !strings.Contains(s, "mlock") {
		t.Fatalf("want a clean mlock error past RLIMIT_MEMLOCK: %s", s)
	}
}

// BenchmarkKeyFromReader: what receiving one key costs, in a memguard buffer of its own or in a slab
// slot, from allocation to Destroy.
func BenchmarkKeyFromReader(b *testing.B) {
	src := make([]byte, 32)
	for _, c := range []struct {
		name string
		mk   func(io.Reader, int) (*memsafe.Key, error)
	}{{"memguard", memsafe.FromReader}, {"slab", memsafe.SlabFromReader}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				k, err := c.mk(bytes.NewReader(src), 32)
				if err != nil {
					b.Fatal(err)
				}
				k.Destroy()
			}
		})
		b.Run(c.name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k, err := c.mk(bytes.NewReader(src), 32)
					if err != nil {
						b.Error(err)
						return
					}
					k.Destroy()
				}
			})
		})
	}
}
