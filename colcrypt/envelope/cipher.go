package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/keyward/keyward/colcrypt/envelope/internal/siv"
	"github.com/keyward/keyward/memsafe"
)

// ErrOpen is the one error for an envelope that does not open: tampered, truncated, sealed for another
// column, under another key, version or scope. It carries nothing about the value or the key; when the
// header disagrees with the Cipher (which is public information), the wrapping message says which field.
var ErrOpen = errors.New("envelope: value does not open (wrong key or column, or corrupted)")

// ErrDestroyed is returned by a Cipher used after Destroy.
var ErrDestroyed = fmt.Errorf("envelope: cipher destroyed: %w", memsafe.ErrDestroyed)

// Key sizes.
const (
	RandomizedKeySize    = 32 // AES-256
	DeterministicKeySize = 64 // AES-SIV: a 256-bit MAC key and a 256-bit CTR key
)

// Cipher seals and opens the envelopes of one scope under one key version, in software. Build one per
// (key, version) and keep it as long as the key: it holds the expanded key schedule (in the Go heap, see
// memsafe.AEAD), so building one per value would scatter key copies. It is safe for concurrent use.
type Cipher struct {
	alg     Alg
	version uint32
	scope   string
	fp      [4]byte
	aead    *memsafe.AEAD
	rand    io.Reader // nonce source; nil means crypto/rand (tests substitute a fixed one)
}

// NewRandomized returns an AES-256-GCM Cipher with random nonces. k must be 32 bytes; it is not
// retained beyond building the cipher and stays owned by the caller.
func NewRandomized(k *memsafe.Key, version uint32, scope string) (*Cipher, error) {
	return newCipher(AlgRandomized, k, RandomizedKeySize, version, scope, func(key []byte) (cipher.AEAD, error) {
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	})
}

// NewDeterministic returns an AES-SIV Cipher (equal plaintexts give equal envelopes for one column and
// key version). k must be 64 bytes; it stays owned by the caller.
func NewDeterministic(k *memsafe.Key, version uint32, scope string) (*Cipher, error) {
	return newCipher(AlgDeterministic, k, DeterministicKeySize, version, scope, func(key []byte) (cipher.AEAD, error) {
		return siv.New(key)
	})
}

func newCipher(alg Alg, k *memsafe.Key, size int, version uint32, scope string, build func([]byte) (cipher.AEAD, error)) (*Cipher, error) {
	if version == 0 {
		return nil, fmt.Errorf("envelope: %s cipher for %q: key version 0 does not exist", alg, scope)
	}
	if scope == "" {
		return nil, fmt.Errorf("envelope: %s cipher: empty scope", alg)
	}
	if k.Len() != size {
		return nil, fmt.Errorf("envelope: %s cipher for %q: key is %d bytes, want %d", alg, scope, k.Len(), size)
	}
	a, err := memsafe.NewAEAD(k, build)
	if err != nil {
		return nil, fmt.Errorf("envelope: %s cipher for %q: %w", alg, scope, err)
	}
	return &Cipher{alg: alg, version: version, scope: scope, fp: Fingerprint(scope), aead: a}, nil
}

// Alg is the algorithm this Cipher seals with.
func (c *Cipher) Alg() Alg { return c.alg }

// KeyVersion is the key version written into every envelope this Cipher seals.
func (c *Cipher) KeyVersion() uint32 { return c.version }

// Scope is the scope this Cipher's key belongs to.
func (c *Cipher) Scope() string { return c.scope }

// Header is the header this Cipher writes (and expects).
func (c *Cipher) Header() Header { return Header{Alg: c.alg, KeyVersion: c.version, Fingerprint: c.fp} }

// Destroy drops the cipher's key schedule. It does not destroy the memsafe.Key it was built from.
func (c *Cipher) Destroy() { c.aead.Destroy() }

// String never shows key material.
func (c *Cipher) String() string {
	return fmt.Sprintf("envelope.Cipher{%s %q v%d}", c.alg, c.scope, c.version)
}

// Seal appends the envelope of plaintext for column ("schema.table.column") to dst.
func (c *Cipher) Seal(dst, plaintext []byte, column string) ([]byte, error) {
	if column == "" {
		return dst, errors.New("envelope: seal: empty column name")
	}
	a := c.aead.AEAD()
	if a == nil {
		return dst, ErrDestroyed
	}
	start := len(dst)
	dst, _ = c.Header().AppendBinary(dst) // cannot fail: the constructor checked alg and version
	aad := getAAD(dst[start:start+HeaderSize], column)
	defer putAAD(aad)
	if c.alg != AlgRandomized {
		return a.Seal(dst, nil, plaintext, *aad), nil
	}
	// The nonce is drawn straight into dst (a local array would escape through the io.Reader).
	n := len(dst)
	dst = append(dst, make([]byte, gcmNonceSize)...)
	nonce := dst[n : n+gcmNonceSize]
	r := c.rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, nonce); err != nil {
		return dst[:start], fmt.Errorf("envelope: seal: nonce: %w", err)
	}
	return a.Seal(dst, nonce, plaintext, *aad), nil
}

// Open authenticates the envelope env sealed for column and appends its plaintext to dst. Any failure
// is (wraps) ErrOpen, and nothing is appended. dst must not overlap env.
func (c *Cipher) Open(dst, env []byte, column string) ([]byte, error) {
	a := c.aead.AEAD()
	if a == nil {
		return dst, ErrDestroyed
	}
	if err := c.checkHeader(env); err != nil {
		return dst, err
	}
	aad := getAAD(env[:HeaderSize], column)
	defer putAAD(aad)
	body := env[HeaderSize:]
	var nonce []byte
	if c.alg == AlgRandomized {
		nonce, body = body[:gcmNonceSize], body[gcmNonceSize:]
	}
	out, err := a.Open(dst, nonce, body, *aad)
	if err != nil {
		return dst, ErrOpen
	}
	return out, nil
}

// checkHeader compares env's header with the one this cipher writes. The differences it names are
// public (header fields), so saying which one helps an operator without revealing anything.
func (c *Cipher) checkHeader(env []byte) error { return checkHeader(c.Header(), c.scope, env) }

func checkHeader(want Header, scope string, env []byte) error {
	h, err := ParseHeader(env)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrOpen, err)
	case h.Alg != want.Alg:
		return fmt.Errorf("%w: value is %s, column cipher is %s", ErrOpen, h.Alg, want.Alg)
	case h.KeyVersion != want.KeyVersion:
		return fmt.Errorf("%w: value has key version %d, cipher has version %d", ErrOpen, h.KeyVersion, want.KeyVersion)
	case h.Fingerprint != want.Fingerprint:
		return fmt.Errorf("%w: value was sealed for another scope than %q", ErrOpen, scope)
	}
	return nil
}

// aadPool recycles the header || column buffers: building one per value would be the only
// allocation left on the per-row path. AEADs do not retain their associated data.
var aadPool = sync.Pool{New: func() any { b := make([]byte, 0, 128); return &b }}

// getAAD returns a pooled buffer holding header || column (the associated data of every alg).
func getAAD(header []byte, column string) *[]byte {
	b := aadPool.Get().(*[]byte)
	*b = append(append((*b)[:0], header...), column...)
	return b
}

func putAAD(b *[]byte) {
	if cap(*b) <= 1024 { // do not keep a buffer an unusually long column name grew
		aadPool.Put(b)
	}
}
