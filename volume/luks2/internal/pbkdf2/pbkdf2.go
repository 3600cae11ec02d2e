// Package pbkdf2 is PBKDF2 (RFC 8018 section 5.2) over byte slices.
//
// It exists because both crypto/pbkdf2 and golang.org/x/crypto/pbkdf2 take the password as a Go
// string, which copies the secret into immutable memory that can never be wiped. Here the password
// stays in the caller's slice and the output is written into a caller-owned slice, so the caller
// decides where the derived key lives and when it is wiped. The arithmetic is the RFC's; results are
// checked against crypto/pbkdf2 and the RFC 6070 vectors in the tests.
//
// Non-guarantee: crypto/hmac keeps its own padded copy of the password inside the hash state until
// the state is garbage collected; Go offers no way to wipe it.
package pbkdf2

import (
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"hash"
)

// Key fills dst with PBKDF2-HMAC-h(password, salt, iter). It returns an error only for iter < 1 or an
// empty dst.
func Key(dst, password, salt []byte, iter int, h func() hash.Hash) error {
	if iter < 1 {
		return errors.New("pbkdf2: iteration count must be positive")
	}
	if len(dst) == 0 {
		return errors.New("pbkdf2: empty output")
	}
	prf := hmac.New(h, password)
	hLen := prf.Size()
	u := make([]byte, 0, hLen)
	t := make([]byte, hLen)
	defer clear(u[:hLen])
	defer clear(t)
	var ctr [4]byte
	for block, off := uint32(1), 0; off < len(dst); block, off = block+1, off+hLen {
		binary.BigEndian.PutUint32(ctr[:], block)
		prf.Reset()
		prf.Write(salt)
		prf.Write(ctr[:])
		u = prf.Sum(u[:0])
		copy(t, u)
		for i := 1; i < iter; i++ {
			prf.Reset()
			prf.Write(u)
			u = prf.Sum(u[:0])
			for j := range t {
				t[j] ^= u[j]
			}
		}
		copy(dst[off:], t)
	}
	return nil
}
