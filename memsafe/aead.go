package memsafe

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"
)

// AEAD is one long-lived cipher.AEAD built from a Key.
//
// Why: building a cipher expands the key into a schedule in the Go heap. Doing that per row or per
// request leaves a fresh heap copy of the key material each time, hundreds of them waiting for the
// garbage collector. An AEAD builds the schedule exactly once and keeps it until Destroy. The schedule
// itself is NOT in locked memory (Go's crypto/aes owns it); Destroy drops the reference so the
// collector can reclaim it, but cannot zero it. That is the limit of what Go allows today.
type AEAD struct {
	mu    sync.RWMutex
	aead  cipher.AEAD
	key   *Key
	owned bool
}

// NewAEAD builds the cipher once from k with build (aes.NewCipher + cipher.NewGCM, AES-SIV, …).
// The AEAD does not take ownership of k: destroying the AEAD leaves k alive.
func NewAEAD(k *Key, build func(key []byte) (cipher.AEAD, error)) (*AEAD, error) {
	var a cipher.AEAD
	err := k.Use(func(b []byte) error {
		var err error
		a, err = build(b)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrDestroyed) {
			return nil, err
		}
		return nil, fmt.Errorf("memsafe: build aead: %w", err)
	}
	return &AEAD{aead: a, key: k}, nil
}

// AEAD returns the cipher, or nil after Destroy.
func (a *AEAD) AEAD() cipher.AEAD {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.aead
}

// Key returns the key the cipher was built from.
func (a *AEAD) Key() *Key { return a.key }

// Destroy drops the cipher. It does not destroy the Key it was built from.
func (a *AEAD) Destroy() {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.aead = nil
	a.mu.Unlock()
}

func (a *AEAD) String() string { return "memsafe.AEAD" + Redacted }
