// Package siv implements AES-SIV (RFC 5297) with a single associated-data component, as a
// [cipher.AEAD] whose nonce is empty.
//
// Why not tink-go's daead/subtle.AESSIV, which the envelope was first specified against: its
// constructor keeps slices of the key it is given and re-expands the CTR key on every call. In Keyward
// the key given to a constructor is the inside of a memsafe.Key, valid only during Key.Use and unmapped
// by Key.Destroy, so keeping it would crash (or read wiped bytes) after a cache expiry; and a fresh AES
// key schedule per row would leave one heap copy of the key per value encrypted, the very thing
// memsafe.AEAD exists to prevent. This implementation expands both AES keys exactly once and keeps no
// reference to the caller's key bytes; the two expanded schedules and the CMAC subkeys derived from the
// MAC key stay in the Go heap for the SIV's lifetime, the same exposure as any crypto/aes cipher (see
// memsafe.AEAD). It is checked against the RFC 5297 vectors, against tink-go (differentially, on
// random inputs) and against vectors made by pyca/cryptography's AESSIV (testdata/).
//
// Guarantees: deterministic authenticated encryption (the output is a function of key, associated data
// and plaintext only); Open returns an error and no plaintext unless the 128-bit synthetic IV verifies,
// compared in constant time. Non-guarantees: equal plaintexts under equal key and associated data give
// equal ciphertexts (that is the point: equality search); the length of the plaintext is not hidden.
package siv

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Overhead is the size of the synthetic IV prepended to the ciphertext.
const Overhead = aes.BlockSize

var errOpen = errors.New("siv: message authentication failed")

// SIV is AES-SIV-CMAC. It is safe for concurrent use.
type SIV struct {
	mac cipher.Block // K1: S2V (CMAC)
	ctr cipher.Block // K2: CTR encryption
	k1  [aes.BlockSize]byte
	k2  [aes.BlockSize]byte // CMAC subkeys (derived from the MAC key, needed on every call)
	d0  [aes.BlockSize]byte // dbl(CMAC(K, <zero>)): the same for every call, computed once
}

var _ cipher.AEAD = (*SIV)(nil)

// New returns AES-SIV for a 32-, 48- or 64-byte key (AES-128/192/256 halves). key is not retained.
func New(key []byte) (*SIV, error) {
	switch len(key) {
	case 32, 48, 64:
	default:
		return nil, fmt.Errorf("siv: key is %d bytes, want 32, 48 or 64", len(key))
	}
	half := len(key) / 2
	mac, err := aes.NewCipher(key[:half])
	if err != nil {
		return nil, err
	}
	ctr, err := aes.NewCipher(key[half:])
	if err != nil {
		return nil, err
	}
	s := &SIV{mac: mac, ctr: ctr}
	// RFC 4493 subkeys: L = AES(K, 0^128); K1 = dbl(L); K2 = dbl(K1).
	var l [aes.BlockSize]byte
	mac.Encrypt(l[:], l[:])
	s.k1 = l
	dbl(&s.k1)
	s.k2 = s.k1
	dbl(&s.k2)
	clear(l[:])
	// S2V starts with D = CMAC(K, <zero>); with one associated-data component the first step is
	// always dbl(D), so keep dbl(D).
	var zero [aes.BlockSize]byte
	sc := getScratch()
	s.cmac(sc, &s.d0, zero[:], nil)
	putScratch(sc)
	dbl(&s.d0)
	return s, nil
}

// NonceSize is 0: SIV derives its IV from the message.
func (s *SIV) NonceSize() int { return 0 }

// Overhead is the 16-byte synthetic IV.
func (s *SIV) Overhead() int { return Overhead }

// scratch holds the per-call blocks. Pooled rather than declared on the stack, because handing a
// stack array to cipher.Block (an interface) moves it to the heap: one allocation per block per call.
type scratch struct {
	x, blk, d, v, q, ks [aes.BlockSize]byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(sc *scratch) {
	*sc = scratch{} // keystream and message-derived blocks do not outlive the call
	scratchPool.Put(sc)
}

// Seal appends V || CTR(K2, V, plaintext) to dst, V = S2V(K1, additionalData, plaintext).
func (s *SIV) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != 0 {
		panic("siv: nonce must be empty")
	}
	sc := getScratch()
	defer putScratch(sc)
	s.s2v(sc, additionalData, plaintext)
	ret, out := sliceForAppend(dst, Overhead+len(plaintext))
	if inexactOverlap(out[Overhead:], plaintext) {
		panic("siv: invalid buffer overlap")
	}
	copy(out, sc.v[:])
	s.xorCTR(sc, out[Overhead:], plaintext)
	return ret
}

// Open verifies and decrypts V || C, appending the plaintext to dst. On failure the bytes written
// past len(dst) are zeroed and an error is returned.
func (s *SIV) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != 0 {
		panic("siv: nonce must be empty")
	}
	if len(ciphertext) < Overhead {
		return nil, errOpen
	}
	sc := getScratch()
	defer putScratch(sc)
	var want [aes.BlockSize]byte
	copy(want[:], ciphertext)
	sc.v = want
	ct := ciphertext[Overhead:]
	ret, out := sliceForAppend(dst, len(ct))
	if inexactOverlap(out, ct) {
		panic("siv: invalid buffer overlap")
	}
	s.xorCTR(sc, out, ct)
	s.s2v(sc, additionalData, out)
	if subtle.ConstantTimeCompare(sc.v[:], want[:]) != 1 {
		clear(out)
		return nil, errOpen
	}
	return ret, nil
}

// ctrInline is the length up to which CTR runs block by block on the pooled scratch; longer messages
// use crypto/cipher's CTR (assembly, but it allocates its stream state on every call).
const ctrInline = 512

// xorCTR runs AES-CTR under K2 from Q = sc.v with bits 63 and 31 (counting from the right of each
// 64-bit half) cleared, RFC 5297 section 2.5, so a 64-bit counter in the low half cannot overflow.
func (s *SIV) xorCTR(sc *scratch, out, in []byte) {
	sc.q = sc.v
	sc.q[8] &= 0x7f
	sc.q[12] &= 0x7f
	if len(in) > ctrInline {
		cipher.NewCTR(s.ctr, sc.q[:]).XORKeyStream(out, in)
		return
	}
	for len(in) > 0 {
		s.ctr.Encrypt(sc.ks[:], sc.q[:])
		n := subtle.XORBytes(out, in, sc.ks[:])
		out, in = out[n:], in[n:]
		binary.BigEndian.PutUint64(sc.q[8:], binary.BigEndian.Uint64(sc.q[8:])+1)
	}
}

// s2v is RFC 5297 section 2.4 with n = 2 (one associated-data string, then the plaintext); the
// result is left in sc.v.
func (s *SIV) s2v(sc *scratch, ad, msg []byte) {
	sc.d = s.d0
	s.cmac(sc, &sc.v, ad, nil)
	subtle.XORBytes(sc.d[:], sc.d[:], sc.v[:])
	if len(msg) >= aes.BlockSize {
		s.cmac(sc, &sc.v, msg, &sc.d) // T = Sn xorend D
		return
	}
	dbl(&sc.d)
	// T = dbl(D) xor pad(Sn)
	subtle.XORBytes(sc.d[:len(msg)], sc.d[:len(msg)], msg)
	sc.d[len(msg)] ^= 0x80
	s.cmac(sc, &sc.v, sc.d[:], nil)
}

// cmac writes AES-CMAC (RFC 4493) of msg under K1 to out, using sc.x and sc.blk; when xorEnd is
// non-nil it is XORed into the last 16 bytes of msg on the fly (S2V's "xorend"), so msg is never
// copied or modified. msg may alias sc.d (but not sc.x or sc.blk).
func (s *SIV) cmac(sc *scratch, out *[aes.BlockSize]byte, msg []byte, xorEnd *[aes.BlockSize]byte) {
	x, blk := &sc.x, &sc.blk
	*x = [aes.BlockSize]byte{}
	n := len(msg)
	endStart := n - aes.BlockSize // first byte that xorEnd touches (only when xorEnd != nil)
	// Every block but the last goes straight through: X = AES(X xor M_i).
	nblocks := max(1, (n+aes.BlockSize-1)/aes.BlockSize)
	for i := 0; i < nblocks-1; i++ {
		off := i * aes.BlockSize
		if xorEnd == nil || off+aes.BlockSize <= endStart {
			subtle.XORBytes(x[:], x[:], msg[off:off+aes.BlockSize])
		} else {
			copy(blk[:], msg[off:off+aes.BlockSize])
			xorTail(blk, off, endStart, xorEnd)
			subtle.XORBytes(x[:], x[:], blk[:])
		}
		s.mac.Encrypt(x[:], x[:])
	}
	off := (nblocks - 1) * aes.BlockSize
	rest := n - off
	*blk = [aes.BlockSize]byte{}
	copy(blk[:], msg[off:])
	if xorEnd != nil {
		xorTail(blk, off, endStart, xorEnd)
	}
	if rest == aes.BlockSize {
		subtle.XORBytes(blk[:], blk[:], s.k1[:])
	} else {
		blk[rest] = 0x80
		subtle.XORBytes(blk[:], blk[:], s.k2[:])
	}
	subtle.XORBytes(x[:], x[:], blk[:])
	s.mac.Encrypt(out[:], x[:])
}

// xorTail XORs into blk (holding msg[off:off+16]) the part of xorEnd that falls on it.
func xorTail(blk *[aes.BlockSize]byte, off, endStart int, xorEnd *[aes.BlockSize]byte) {
	for j := range aes.BlockSize {
		if p := off + j - endStart; p >= 0 && p < aes.BlockSize {
			blk[j] ^= xorEnd[p]
		}
	}
}

// dbl multiplies by x in GF(2^128) (RFC 5297 "doubling"), in constant time.
func dbl(b *[aes.BlockSize]byte) {
	carry := b[0] >> 7
	for i := 0; i < aes.BlockSize-1; i++ {
		b[i] = b[i]<<1 | b[i+1]>>7
	}
	b[aes.BlockSize-1] = b[aes.BlockSize-1]<<1 ^ byte(subtle.ConstantTimeSelect(int(carry), 0x87, 0))
}

func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	return head, head[len(in):]
}

// inexactOverlap reports whether x and y share memory at different offsets (which CTR cannot handle).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	x0, x1 := addr(&x[0]), addr(&x[len(x)-1])
	y0, y1 := addr(&y[0]), addr(&y[len(y)-1])
	return x0 <= y1 && y0 <= x1
}
