package envelope

import (
	"context"
	"errors"
	"fmt"
)

// HSM performs AES-256-GCM inside the HSM, through the key agent (whose client implements it). It
// belongs to this package because this package is its consumer.
//
// Encrypt seals plaintext with the given version of the scope's hsm-aead keyring and returns the HSM's
// nonce (12 bytes) || ciphertext || tag (16 bytes) and the version it used, which must be the version
// asked for: the version is part of the associated data, so it has to be fixed before sealing.
//
// Decrypt reverses it. An authentication failure in the HSM must be returned as (or wrap) ErrOpen;
// other errors (denied, unavailable) are passed through to the caller unchanged, so the proxy can
// apply its on_denied policy. Neither may retain plaintext or return key material.
type HSM interface {
	Encrypt(ctx context.Context, scope string, version uint32, plaintext, aad []byte) (nonceCtTag []byte, v uint32, err error)
	Decrypt(ctx context.Context, scope string, version uint32, nonceCtTag, aad []byte) (plaintext []byte, err error)
}

// HSMCipher seals and opens alg 3 envelopes of one scope and key version, each operation a call to the
// HSM. No key ever enters this process. It is safe for concurrent use if the HSM is.
type HSMCipher struct {
	h       HSM
	version uint32
	scope   string
	fp      [4]byte
}

// NewHSM returns an HSMCipher for version (>= 1) of scope's hsm-aead keyring.
func NewHSM(h HSM, version uint32, scope string) (*HSMCipher, error) {
	switch {
	case h == nil:
		return nil, errors.New("envelope: hsm cipher: nil HSM")
	case version == 0:
		return nil, fmt.Errorf("envelope: hsm cipher for %q: key version 0 does not exist", scope)
	case scope == "":
		return nil, errors.New("envelope: hsm cipher: empty scope")
	}
	return &HSMCipher{h: h, version: version, scope: scope, fp: Fingerprint(scope)}, nil
}

// KeyVersion is the key version written into every envelope this cipher seals.
func (c *HSMCipher) KeyVersion() uint32 { return c.version }

// Scope is the scope of the HSM keyring.
func (c *HSMCipher) Scope() string { return c.scope }

// Header is the header this cipher writes (and expects).
func (c *HSMCipher) Header() Header {
	return Header{Alg: AlgHSM, KeyVersion: c.version, Fingerprint: c.fp}
}

// Seal appends the envelope of plaintext for column to dst.
func (c *HSMCipher) Seal(ctx context.Context, dst, plaintext []byte, column string) ([]byte, error) {
	if column == "" {
		return dst, errors.New("envelope: seal: empty column name")
	}
	hdr, _ := c.Header().AppendBinary(make([]byte, 0, HeaderSize+len(column)))
	aad := append(hdr, column...)
	body, v, err := c.h.Encrypt(ctx, c.scope, c.version, plaintext, aad)
	if err != nil {
		return dst, fmt.Errorf("envelope: hsm encrypt %q v%d: %w", c.scope, c.version, err)
	}
	if v != c.version {
		return dst, fmt.Errorf("envelope: hsm encrypt %q: sealed with key version %d, asked for %d", c.scope, v, c.version)
	}
	if len(body) != len(plaintext)+gcmNonceSize+gcmTagSize {
		return dst, fmt.Errorf("envelope: hsm encrypt %q: returned %d bytes for a %d-byte value, want nonce(12)+ciphertext+tag(16)", c.scope, len(body), len(plaintext))
	}
	dst = append(dst, hdr...)
	return append(dst, body...), nil
}

// Open authenticates env (inside the HSM) and appends its plaintext to dst. A value that does not
// open is (wraps) ErrOpen; errors of the HSM path (denied, unavailable) are wrapped and passed on.
func (c *HSMCipher) Open(ctx context.Context, dst, env []byte, column string) ([]byte, error) {
	if err := checkHeader(c.Header(), c.scope, env); err != nil {
		return dst, err
	}
	aad := append(env[:HeaderSize:HeaderSize], column...) // a fresh copy: the HSM client may keep it
	body := env[HeaderSize:]
	pt, err := c.h.Decrypt(ctx, c.scope, c.version, body, aad)
	if err != nil {
		if errors.Is(err, ErrOpen) {
			return dst, ErrOpen
		}
		return dst, fmt.Errorf("envelope: hsm decrypt %q v%d: %w", c.scope, c.version, err)
	}
	if len(pt) != len(body)-gcmNonceSize-gcmTagSize {
		clear(pt)
		return dst, ErrOpen
	}
	return append(dst, pt...), nil
}
