package sectorcipher

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
)

func TestRoundTripAndIVs(t *testing.T) {
	tests := []struct {
		name string
		spec string
		klen int
	}{
		{"xts-plain64-256", "aes-xts-plain64", 32},
		{"xts-plain64-512", "aes-xts-plain64", 64},
		{"xts-plain-512", "aes-xts-plain", 64},
		{"cbc-essiv-256", "aes-cbc-essiv:sha256", 32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := bytes.Repeat([]byte{7}, tc.klen)
			c, err := New(tc.spec, key)
			if err != nil {
				t.Fatal(err)
			}
			pt := bytes.Repeat([]byte("0123456789abcdef"), 32)
			ct := make([]byte, len(pt))
			c.Encrypt(ct, pt, 5)
			ct2 := make([]byte, len(pt))
			c.Encrypt(ct2, pt, 6)
			if bytes.Equal(ct, ct2) || bytes.Equal(ct, pt) {
				t.Fatal("IV has no effect")
			}
			got := make([]byte, len(pt))
			c.Decrypt(got, ct, 5)
			if !bytes.Equal(got, pt) {
				t.Fatal("round trip failed")
			}
		})
	}
}

// The plain IV is the plain64 IV truncated to 32 bits: sector 2^32+5 under "plain" equals sector 5.
func TestPlainTruncates(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 64)
	p, _ := New("aes-xts-plain", key)
	p64, _ := New("aes-xts-plain64", key)
	pt := make([]byte, 512)
	a, b := make([]byte, 512), make([]byte, 512)
	p.Encrypt(a, pt, 1<<32+5)
	p64.Encrypt(b, pt, 5)
	if !bytes.Equal(a, b) {
		t.Fatal("plain IV not truncated to 32 bits")
	}
}

// ESSIV computed independently from its definition.
func TestESSIVDefinition(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 16)
	c, _ := New("aes-cbc-essiv:sha256", key)
	pt := bytes.Repeat([]byte{9}, 512)
	got := make([]byte, 512)
	c.Encrypt(got, pt, 77)

	salt := sha256.Sum256(key)
	eb, _ := aes.NewCipher(salt[:])
	var iv [16]byte
	binary.LittleEndian.PutUint64(iv[:], 77)
	eb.Encrypt(iv[:], iv[:])
	b, _ := aes.NewCipher(key)
	want := make([]byte, 512)
	cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(want, pt)
	if !bytes.Equal(got, want) {
		t.Fatal("ESSIV mismatch")
	}
}

func TestAllowlist(t *testing.T) {
	for _, tc := range []struct {
		spec string
		klen int
	}{
		{"cipher_null-ecb", 0}, {"cipher_null", 32}, {"aes-ecb", 32}, {"twofish-xts-plain64", 64},
		{"aes-xts-plain64", 16}, {"aes-cbc-essiv:sha256", 64}, {"aes-cbc-plain64", 32}, {"", 32},
	} {
		if _, err := New(tc.spec, make([]byte, tc.klen)); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%q/%d: got %v, want ErrUnsupported", tc.spec, tc.klen, err)
		}
	}
}
