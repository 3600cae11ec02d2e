// Package sectorcipher implements the dm-crypt sector ciphers that LUKS2 keyslot areas and data
// segments may use, behind an allowlist:
//
//	aes-xts-plain64       XTS, tweak = the 64-bit sector IV, little endian (the LUKS2 default)
//	aes-xts-plain         XTS, tweak = the low 32 bits of the sector IV (old LUKS1 volumes)
//	aes-cbc-essiv:sha256  CBC, IV = AES_{SHA-256(key)}(le64(sector IV) || 0^8) (old LUKS1 volumes)
//
// Anything else, cipher_null above all, is refused with ErrUnsupported: a LUKS2 header is not
// authenticated, so an attacker who swaps it can name any cipher, and a helper that accepted
// cipher_null would "unlock" with any passphrase a volume whose contents the attacker chose.
//
// One call encrypts or decrypts one unit (a 512-byte keyslot sector or one data sector of
// 512..4096 bytes) under one IV, as dm-crypt does. The caller computes the IV.
//
// Non-guarantee: the AES key schedules live on the Go heap for the life of the Cipher and cannot be
// wiped; keep Ciphers short-lived.
package sectorcipher

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/xts"
)

// ErrUnsupported is returned for a cipher spec outside the allowlist or a key size it does not take.
var ErrUnsupported = errors.New("unsupported cipher")

// Cipher is one keyed sector cipher.
type Cipher struct {
	spec  string
	xts   *xts.Cipher
	trunc bool         // aes-xts-plain: 32-bit IV
	cbc   cipher.Block // aes-cbc-essiv:sha256 data key
	essiv cipher.Block // ESSIV IV generator keyed by SHA-256(key)
}

// Supported reports whether spec is on the allowlist and takes keys of keyLen bytes.
func Supported(spec string, keyLen int) bool {
	switch spec {
	case "aes-xts-plain64", "aes-xts-plain":
		return keyLen == 32 || keyLen == 48 || keyLen == 64
	case "aes-cbc-essiv:sha256":
		return keyLen == 16 || keyLen == 24 || keyLen == 32
	}
	return false
}

// Known reports whether spec is on the allowlist at all (for some key size).
func Known(spec string) bool {
	return Supported(spec, 32)
}

// New keys the cipher named by spec.
func New(spec string, key []byte) (*Cipher, error) {
	if !Supported(spec, len(key)) {
		return nil, fmt.Errorf("%w: %q with a %d-bit key", ErrUnsupported, spec, 8*len(key))
	}
	c := &Cipher{spec: spec}
	var err error
	switch spec {
	case "aes-xts-plain64", "aes-xts-plain":
		c.trunc = spec == "aes-xts-plain"
		c.xts, err = xts.NewCipher(aes.NewCipher, key)
	case "aes-cbc-essiv:sha256":
		salt := sha256.Sum256(key)
		if c.cbc, err = aes.NewCipher(key); err == nil {
			c.essiv, err = aes.NewCipher(salt[:])
		}
		clear(salt[:])
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Decrypt decrypts one unit; len(src) must be a positive multiple of 16 and len(dst) >= len(src).
func (c *Cipher) Decrypt(dst, src []byte, iv uint64) { c.crypt(dst, src, iv, false) }

// Encrypt encrypts one unit; len(src) must be a positive multiple of 16 and len(dst) >= len(src).
func (c *Cipher) Encrypt(dst, src []byte, iv uint64) { c.crypt(dst, src, iv, true) }

func (c *Cipher) crypt(dst, src []byte, iv uint64, enc bool) {
	if len(src) == 0 || len(src)%16 != 0 || len(dst) < len(src) {
		panic("sectorcipher: unit length is not a positive multiple of 16")
	}
	if c.xts != nil {
		if c.trunc {
			iv &= 0xffffffff
		}
		if enc {
			c.xts.Encrypt(dst, src, iv)
		} else {
			c.xts.Decrypt(dst, src, iv)
		}
		return
	}
	var ivb [16]byte
	binary.LittleEndian.PutUint64(ivb[:], iv)
	c.essiv.Encrypt(ivb[:], ivb[:])
	if enc {
		cipher.NewCBCEncrypter(c.cbc, ivb[:]).CryptBlocks(dst[:len(src)], src)
	} else {
		cipher.NewCBCDecrypter(c.cbc, ivb[:]).CryptBlocks(dst[:len(src)], src)
	}
}
