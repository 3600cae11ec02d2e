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
	dh := newDiffuser(h)
	defer dh.wipe()
	for i := 0; i < stripes-1; i++ {
		xor(d, material[i*n:(i+1)*n])
		dh.diffuse(d)
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
	dh := newDiffuser(h)
	defer dh.wipe()
	for i := 0; i < stripes-1; i++ {
		s := dst[i*n : (i+1)*n]
		if _, err := io.ReadFull(rand, s); err != nil {
			return err
		}
		xor(d, s)
		dh.diffuse(d)
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

// diffuser holds one hash state and one output buffer for all the diffusions of a merge or split
// (4000 of them for a LUKS2 keyslot), instead of allocating them per stripe.
type diffuser struct {
	h   hash.Hash
	sum []byte
}

func newDiffuser(newHash func() hash.Hash) *diffuser {
	h := newHash()
	return &diffuser{h: h, sum: make([]byte, 0, h.Size())}
}

func (d *diffuser) wipe() { clear(d.sum[:cap(d.sum)]) }

func (d *diffuser) diffuse(b []byte) {
	ds := d.h.Size()
	var iv [4]byte
	for i, off := uint32(0), 0; off < len(b); i, off = i+1, off+ds {
		end := min(off+ds, len(b))
		d.h.Reset()
		binary.BigEndian.PutUint32(iv[:], i)
		d.h.Write(iv[:])
		d.h.Write(b[off:end])
		d.sum = d.h.Sum(d.sum[:0])
		copy(b[off:end], d.sum)
	}
}
