package memsafe

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"sync/atomic"
)

// AEAD is one long-lived cipher.AEAD built from a Key.
//
// Why: building a cipher expands the key into a schedule in the Go heap. Doing that per row or per
// request leaves a fresh heap copy of the key material each time, hundreds of them waiting for the
// garbage collector. An AEAD builds the schedule exactly once and keeps it until Destroy. The schedule
// itself is NOT in locked memory (Go's crypto/aes owns it); Destroy drops the reference so the
// collector can reclaim it, but cannot zero it. That is the limit of what Go allows today.
type AEAD struct {
	// aead is read once per sealed or opened value: an atomic load, not a lock, so that concurrent
	// sessions do not contend on one cache line. A lock would guard nothing more: a caller that got
	// the cipher before Destroy keeps using it either way.
	aead atomic.Pointer[cipher.AEAD]
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
	r := &AEAD{}
	r.aead.Store(&a)
	return r, nil
}

// AEAD returns the cipher, or nil after Destroy.
func (a *AEAD) AEAD() cipher.AEAD {
	if p := a.aead.Load(); p != nil {
		return *p
	}
	return nil
}

// Destroy drops the cipher. It does not destroy the Key it was built from.
func (a *AEAD) Destroy() {
	if a == nil {
		return
	}
	a.aead.Store(nil)
}

func (a *AEAD) String() string { return "memsafe.AEAD" + Redacted }
