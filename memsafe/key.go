package memsafe

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/awnumar/memguard"
)

// Redacted is what every formatting of a Key prints.
const Redacted = "[REDACTED]"

// ErrDestroyed is returned by Use on a Key that has been destroyed (directly or by DestroyAll).
var ErrDestroyed = errors.New("memsafe: key destroyed")

// Key is a secret held in locked, guarded memory. The zero value is not usable; build one with
// NewRandom, FromReader or FromBytes. A Key is safe for concurrent use; Destroy waits for running Use
// calls to return so a callback never sees its memory unmapped under it.
type Key struct {
	mu   sync.RWMutex
	buf  *memguard.LockedBuffer // memguard keys; nil once destroyed
	slot *slot                  // slab keys (SlabFromReader, SlabFromBytes); nil once destroyed
	n    int
}

// NewRandom returns a Key of n bytes from the operating system's CSPRNG.
func NewRandom(n int) (*Key, error) {
	if n <= 0 {
		return nil, fmt.Errorf("memsafe: key size %d: must be positive", n)
	}
	b := memguard.NewBufferRandom(n)
	return track(b, n), nil
}

// FromReader reads exactly n bytes from r straight into locked memory. Nothing is kept on a short read.
func FromReader(r io.Reader, n int) (*Key, error) {
	if n <= 0 {
		return nil, fmt.Errorf("memsafe: key size %d: must be positive", n)
	}
	b, err := memguard.NewBufferFromReader(r, n)
	if err != nil {
		b.Destroy()
		return nil, readError(n, err)
	}
	return track(b, n), nil
}

// readError is the error of a failed key read, the same for memguard and slab keys.
func readError(n int, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("memsafe: read key: short read (want %d bytes): %w", n, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("memsafe: read key: %w", err)
}

// FromBytes moves src into locked memory and wipes src. Use it only where a library hands back a key
// in a heap slice (a PKCS#11 C_Sign result, say); prefer FromReader.
func FromBytes(src []byte) (*Key, error) {
	n := len(src)
	if n == 0 {
		return nil, errors.New("memsafe: empty key")
	}
	b := memguard.NewBufferFromBytes(src) // wipes src
	return track(b, n), nil
}

// Use calls fn with the key bytes. The slice is valid only during fn: fn must not keep it or anything
// that aliases it, nor write to it (the memory is read-only for memguard keys; a slab key's is not).
func (k *Key) Use(fn func(b []byte) error) error {
	if k == nil {
		return ErrDestroyed
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.slot != nil {
		return fn(k.slot.b)
	}
	if k.buf == nil || !k.buf.IsAlive() {
		return ErrDestroyed
	}
	return fn(k.buf.Bytes())
}

// Len is the key's size in bytes (also after Destroy).
func (k *Key) Len() int {
	if k == nil {
		return 0
	}
	return k.n
}

// Alive reports whether the key can still be used.
func (k *Key) Alive() bool {
	if k == nil {
		return false
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.slot != nil || (k.buf != nil && k.buf.IsAlive())
}

// Destroy wipes and frees the key. It is idempotent and safe on a nil Key.
func (k *Key) Destroy() {
	if k == nil {
		return
	}
	k.mu.Lock()
	b, s := k.buf, k.slot
	k.buf, k.slot = nil, nil
	k.mu.Unlock()
	if s != nil {
		slab.release(s) // zeroes the slot before anyone else can have it
		registry.remove(k)
	}
	if b != nil {
		b.Destroy() // zeroes the pages before unmapping them
		registry.remove(k)
	}
}

// Clone returns an independent copy in its own locked memory (a slab slot for a slab key).
func (k *Key) Clone() (*Key, error) {
	var c *Key
	err := k.Use(func(b []byte) error {
		if k.slot != nil { // read under k.mu, held by Use
			s, err := slab.alloc(len(b))
			if err != nil {
				return err
			}
			copy(s.b, b)
			c = trackSlot(s)
			return nil
		}
		nb := memguard.NewBuffer(len(b))
		nb.Copy(b)
		nb.Freeze()
		c = track(nb, len(b))
		return nil
	})
	return c, err
}

// Equal compares two keys in constant time (for tests and KCV-free checks).
func (k *Key) Equal(o *Key) bool {
	eq := false
	_ = k.Use(func(a []byte) error {
		return o.Use(func(b []byte) error {
			eq = subtle.ConstantTimeCompare(a, b) == 1
			return nil
		})
	})
	return eq
}

func (k *Key) String() string               { return Redacted }
func (k *Key) GoString() string             { return Redacted }
func (k *Key) Format(f fmt.State, _ rune)   { _, _ = io.WriteString(f, Redacted) }
func (k *Key) LogValue() slog.Value         { return slog.StringValue(Redacted) }
func (k *Key) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

var (
	_ fmt.Stringer   = (*Key)(nil)
	_ fmt.GoStringer = (*Key)(nil)
	_ fmt.Formatter  = (*Key)(nil)
	_ slog.LogValuer = (*Key)(nil)
)

func track(b *memguard.LockedBuffer, n int) *Key {
	b.Freeze() // read-only: a stray write through Use's slice faults instead of corrupting the key
	k := &Key{buf: b, n: n}
	registry.add(k)
	return k
}

func trackSlot(s *slot) *Key {
	k := &Key{slot: s, n: len(s.b)}
	registry.add(k)
	return k
}

// registry holds every live Key so DestroyAll can wipe them through their own locks (memguard.Purge
// would unmap buffers under a running Use).
var registry = &keySet{m: make(map[*Key]struct{})}

type keySet struct {
	mu sync.Mutex
	m  map[*Key]struct{}
}

func (s *keySet) add(k *Key)    { s.mu.Lock(); s.m[k] = struct{}{}; s.mu.Unlock() }
func (s *keySet) remove(k *Key) { s.mu.Lock(); delete(s.m, k); s.mu.Unlock() }

// Live is the number of keys not yet destroyed.
func Live() int {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return len(registry.m)
}

// DestroyAll wipes every live Key and returns how many it destroyed.
func DestroyAll() int {
	registry.mu.Lock()
	keys := make([]*Key, 0, len(registry.m))
	for k := range registry.m {
		keys = append(keys, k)
	}
	registry.mu.Unlock()
	for _, k := range keys {
		k.Destroy()
	}
	return len(keys)
}
