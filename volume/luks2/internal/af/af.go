// Package af is the LUKS anti-forensic information splitter (AFsplitter), the "luks1" AF type that
// LUKS2 keyslots use. A key of n bytes is expanded into stripes*n bytes such that losing (or wiping)
// any part of the expansion loses the key: every stripe but the last is random, and the last is the
// key XORed with a hash-diffused chain of the others.
//
// The hash diffusion is the one in the LUKS1 on-disk format specification, section "AF-Splitter":
// the block is cut into hash-sized pieces and piece i is replaced by H(be32(i) || piece), truncated
// to the piece's length.
//
// Both functions work in caller-owned buffers and wipe their own scratch space; the caller wipes the
// buffers it passes in.
package af

import (
	"encoding/binary"
	"errors"
	"hash"
	"io"
)

// ErrSize reports inconsistent sizes (a material length that is not stripes*len(key)).
var ErrSize = errors.New("af: material length is not stripes * key length")

// Merge recovers the key from split material. len(material) must be at least stripes*len(key); extra
// trailing bytes (the sector padding of a keyslot area) are ignored.
func Merge(key, material []byte, stripes int, h func() hash.Hash) error {
	n := len(key)
	if n == 0 || stripes < 1 || len(material)/n < stripes {
		return ErrSize
	}
	d := make([]byte, n)
	defer clear(d)
	for i := 0; i < stripes-1; i++ {
		xor(d, material[i*n:(i+1)*n])
		diffuse(d, h)
	}
	last := material[(stripes-1)*n : stripes*n]
	for i := range key {
		key[i] = d[i] ^ last[i]
	}
	return nil
}

// Split writes stripes*len(key) bytes of split material into dst, drawing stripes-1 random blocks
// from rand.
func Split(dst, key []byte, stripes int, h func() hash.Hash, rand io.Reader) error {
	n := len(key)
	if n == 0 || stripes < 1 || len(dst) != stripes*n {
		return ErrSize
	}
	d := make([]byte, n)
	defer clear(d)
	for i := 0; i < stripes-1; i++ {
		s := dst[i*n : (i+1)*n]
		if _, err := io.ReadFull(rand, s); err != nil {
			return err
		}
		xor(d, s)
		diffuse(d, h)
	}
	last := dst[(stripes-1)*n:]
	for i := range key {
		last[i] = d[i] ^ key[i]
	}
	return nil
}

func xor(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}

func diffuse(b []byte, newHash func() hash.Hash) {
	h := newHash()
	ds := h.Size()
	sum := make([]byte, 0, ds)
	var iv [4]byte
	for i, off := uint32(0), 0; off < len(b); i, off = i+1, off+ds {
		end := min(off+ds, len(b))
		h.Reset()
		binary.BigEndian.PutUint32(iv[:], i)
		h.Write(iv[:])
		h.Write(b[off:end])
		sum = h.Sum(sum[:0])
		copy(b[off:end], sum)
	}
	clear(sum[:ds])
}
