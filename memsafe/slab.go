package memsafe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/awnumar/memguard/core"
	"golang.org/x/sys/unix"
)

// SlotSize is the size of one slab slot, and so the largest key the slab holds: a 512-bit AES-SIV key.
//
// A memguard buffer costs one mmap, one mlock and two mprotect calls for its guard pages, and one more
// mprotect to make it read-only: 50 to 140 µs per key on this project's machines, and as many calls
// again to destroy it. A process that receives a key per request (the proxy asking the agent, the agent
// asking the key service) cannot afford that per key. The slab pays those system calls once per chunk
// of SlotSize-byte slots instead:
//
//	PROT_NONE guard page | one page of slots, mlock'd, MADV_DONTDUMP, MADV_WIPEONFORK | PROT_NONE guard page
//
// A slot is handed to one Key, filled straight from a reader (or from a slice that is then wiped),
// and on Destroy zeroed with a loop the compiler cannot elide (memguard's core.Wipe) before it goes
// back to the free list. A chunk whose slots are all free is unmapped, except one kept as a spare so
// that a process cycling through keys does not map and unmap a chunk each time.
//
// What a slab key keeps from a memguard key: locked memory (never swapped), kept out of core dumps,
// wiped on Destroy and DestroyAll, not inherited by a fork()ed child, reachable only inside Use,
// redacted everywhere, and guard pages at both ends of its chunk.
//
// What it gives up, and why that is acceptable:
//   - No guard pages around each key: up to SlotSize-1 other keys share its page. A guard page stops a
//     linear overrun by C code or unsafe pointer arithmetic; Go code cannot overrun a slice (bounds are
//     checked, and Use hands out a slice whose capacity is the key's length, so an append copies instead
//     of writing into the next slot). The guard pages of the chunk still stop overruns past the slab.
//   - No read-only protection: the slot's page stays writable, because other slots on it are filled
//     while this key lives, and toggling protection per fill would cost an mprotect (and, in a
//     multi-threaded process, a TLB shoot-down) per key — the cost the slab exists to avoid. A stray
//     write through the slice given to Use silently corrupts the key instead of faulting; the result
//     is a wrong key (decryption fails closed, encryption under a key nobody else has), never a leak.
//   - A freed slot's memory stays mapped (zeroed) until its chunk is empty; memguard unmaps at once.
//     It holds only zeros, which the memory-scan tests check.
//
// Locked memory: a slab key costs SlotSize bytes of RLIMIT_MEMLOCK when its chunk is full, and a chunk
// is locked whole; at worst (one live key left per chunk) the slab locks one page per live key plus one
// spare chunk, which is what a memguard key costs plus the margin CheckLockLimit already adds. So
// CheckLockLimit's figure (a page per key) is an upper bound for both kinds of key, and a process that
// passed it can hold that many slab keys. When mlock fails, the slab returns an error where memguard
// would panic.
const SlotSize = 64

// slab is the process's one key slab.
var slab = &keySlab{}

type keySlab struct {
	mu     sync.Mutex
	chunks []*chunk
	empty  int // chunks with every slot free
}

type chunk struct {
	mem  []byte  // the whole mapping, guard pages included
	data []byte  // the locked pages between the guards
	free []int32 // free slot indices (a stack: recently freed slots are reused first, still in cache)
}

type slot struct {
	c *chunk
	i int32
	b []byte // the key: data[i*SlotSize:][:n:n]
}

// SlabStats describes the process's key slab.
type SlabStats struct {
	Chunks      int    // mapped chunks
	Slots       int    // slots in them
	InUse       int    // slots holding a live key
	LockedBytes uint64 // memory the slab has locked
}

// SlabInfo returns the slab's current figures.
func SlabInfo() SlabStats {
	slab.mu.Lock()
	defer slab.mu.Unlock()
	var s SlabStats
	for _, c := range slab.chunks {
		n := len(c.data) / SlotSize
		s.Chunks++
		s.Slots += n
		s.InUse += n - len(c.free)
		s.LockedBytes += uint64(len(c.data))
	}
	return s
}

// SlabFromReader is FromReader for keys of at most SlotSize bytes, in a slot of the process's key slab
// instead of a memguard buffer of their own: no system call per key. See SlotSize for what that gives
// up. Nothing is kept on a short read.
func SlabFromReader(r io.Reader, n int) (*Key, error) {
	s, err := slab.alloc(n)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, s.b); err != nil {
		slab.release(s)
		return nil, readError(n, err)
	}
	return trackSlot(s), nil
}

// SlabFromBytes is FromBytes into a slab slot: it copies src (at most SlotSize bytes) into locked
// memory and wipes src.
func SlabFromBytes(src []byte) (*Key, error) {
	if len(src) == 0 {
		return nil, errors.New("memsafe: empty key")
	}
	s, err := slab.alloc(len(src))
	if err != nil {
		core.Wipe(src)
		return nil, err
	}
	copy(s.b, src)
	core.Wipe(src)
	return trackSlot(s), nil
}

func (p *keySlab) alloc(n int) (*slot, error) {
	if n <= 0 || n > SlotSize {
		return nil, fmt.Errorf("memsafe: slab key size %d: must be 1 to %d bytes", n, SlotSize)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var c *chunk
	// The newest chunks are the likeliest to have room; a process holds few chunks (512 keys: 8).
	for i := len(p.chunks) - 1; i >= 0; i-- {
		if len(p.chunks[i].free) > 0 {
			c = p.chunks[i]
			break
		}
	}
	if c == nil {
		var err error
		if c, err = newChunk(); err != nil {
			return nil, err
		}
		p.chunks = append(p.chunks, c)
		p.empty++
	}
	if len(c.free) == len(c.data)/SlotSize {
		p.empty--
	}
	i := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	off := int(i) * SlotSize
	return &slot{c: c, i: i, b: c.data[off : off+n : off+n]}, nil
}

// release wipes the whole slot (not only the key's n bytes: a slot never holds anything but zeros
// while free) and returns it.
func (p *keySlab) release(s *slot) {
	off := int(s.i) * SlotSize
	core.Wipe(s.c.data[off : off+SlotSize])
	p.mu.Lock()
	defer p.mu.Unlock()
	c := s.c
	c.free = append(c.free, s.i)
	if len(c.free) < len(c.data)/SlotSize {
		return
	}
	p.empty++
	if p.empty <= 1 {
		return // keep one spare chunk
	}
	for j, x := range p.chunks {
		if x == c {
			p.chunks = append(p.chunks[:j], p.chunks[j+1:]...)
			break
		}
	}
	p.empty--
	// Every slot was wiped when it was freed; munmap also unlocks.
	_ = unix.Munmap(c.mem)
}

// slabChunkPages is the number of locked pages per chunk.
const slabChunkPages = 1

func newChunk() (*chunk, error) {
	page := os.Getpagesize()
	size := (slabChunkPages + 2) * page
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("memsafe: map key slab: %w", err)
	}
	fail := func(what string, err error) (*chunk, error) {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("memsafe: key slab: %s: %w", what, err)
	}
	if err := unix.Mprotect(mem[:page], unix.PROT_NONE); err != nil {
		return fail("guard page", err)
	}
	if err := unix.Mprotect(mem[size-page:], unix.PROT_NONE); err != nil {
		return fail("guard page", err)
	}
	data := mem[page : size-page : size-page]
	// Advice only: kernels without it still give locked, wiped memory.
	_ = unix.Madvise(data, unix.MADV_DONTDUMP)
	_ = unix.Madvise(data, unix.MADV_WIPEONFORK)
	if err := unix.Mlock(data); err != nil {
		return fail("mlock (RLIMIT_MEMLOCK too small? see CheckLockLimit)", err)
	}
	n := len(data) / SlotSize
	c := &chunk{mem: mem, data: data, free: make([]int32, n)}
	for i := range c.free {
		c.free[i] = int32(n - 1 - i) // slot 0 on top
	}
	return c, nil
}
