// Package kwp is AES Key Wrap with Padding, RFC 5649 (NIST SP 800-38F KWP), the format of BYOK bundles
// and of Keyward backups, as produced by `openssl enc -id-aes256-wrap-pad` and CKM_AES_KEY_WRAP_PAD.
//
// Unwrap failures are one opaque error (ErrUnwrap) whatever the cause, as for any authenticated
// decryption. Not guaranteed: the AES key schedule built from kek lives in the Go heap while a call runs.
package kwp

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// ErrUnwrap means the wrapped key did not authenticate under the key-encryption key.
var ErrUnwrap = errors.New("aes-kwp: unwrap failed (wrong key or corrupted data)")

const aivHigh = 0xA65959A6 // RFC 5649 alternative initial value, high 32 bits

// Wrap wraps plaintext (1 to 2^32-1 bytes) under kek (16, 24 or 32 bytes).
func Wrap(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 || uint64(len(plaintext)) > 0xffffffff {
		return nil, errors.New("aes-kwp: plaintext length out of range")
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	padded := (len(plaintext) + 7) &^ 7
	out := make([]byte, 8+padded)
	binary.BigEndian.PutUint32(out[0:], aivHigh)
	binary.BigEndian.PutUint32(out[4:], uint32(len(plaintext)))
	copy(out[8:], plaintext)
	if padded == 8 {
		// One block: a single AES encryption of AIV || P (RFC 5649 section 4.1).
		b.Encrypt(out, out)
		return out, nil
	}
	n := padded / 8
	var buf [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(buf[:8], out[:8])
			copy(buf[8:], out[8*i:8*i+8])
			b.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(buf[:8])^t)
			copy(out[8*i:], buf[8:])
		}
	}
	clear(buf[:])
	return out, nil
}

// Unwrap reverses Wrap. The returned slice is the caller's to wipe.
func Unwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return nil, ErrUnwrap
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	work := make([]byte, len(wrapped))
	copy(work, wrapped)
	n := len(wrapped)/8 - 1
	if n == 1 {
		b.Decrypt(work, work)
	} else {
		var buf [16]byte
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				t := uint64(n*j + i)
				binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(work[:8])^t)
				copy(buf[8:], work[8*i:8*i+8])
				b.Decrypt(buf[:], buf[:])
				copy(work[:8], buf[:8])
				copy(work[8*i:], buf[8:])
			}
		}
		clear(buf[:])
	}
	mli := int(binary.BigEndian.Uint32(work[4:8]))
	ok := binary.BigEndian.Uint32(work[0:4]) == aivHigh
	ok = ok && mli > 8*(n-1) && mli <= 8*n
	if ok {
		var z [8]byte
		pad := work[8+mli:]
		ok = subtle.ConstantTimeCompare(pad, z[:len(pad)]) == 1
	}
	if !ok {
		clear(work)
		return nil, ErrUnwrap
	}
	out := work[8 : 8+mli]
	clear(work[:8])
	return out, nil
}
