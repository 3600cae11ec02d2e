package luks2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseHeader fuzzes the header parser and the metadata validation, seeded with the real
// cryptsetup headers in testdata. The input is a 4096-byte binary header and a JSON text; the target
// builds the two header copies from them (so inputs stay small and the fuzzer can minimise them) and
// opens the result. Flags choose whether the checksums are made valid (as a forger would: the
// checksum is not a MAC), so mutations reach the JSON validation, and whether the secondary copy is
// a faithful copy, stale, or missing.
func FuzzParseHeader(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.luks2")
	hdrs, _ := filepath.Glob("testdata/*.hdr")
	for _, name := range append(files, hdrs...) {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		hs := binary.BigEndian.Uint64(b[offHdrSize:])
		js := b[BinaryHeaderSize:hs]
		js = js[:bytes.IndexByte(js, 0)]
		for _, flags := range []byte{0, 1, 3, 5} {
			f.Add(b[:BinaryHeaderSize], js, flags)
		}
	}
	f.Fuzz(func(t *testing.T, bin, js []byte, flags byte) {
		_, _ = ParseHeader(bin)
		if len(bin) != BinaryHeaderSize {
			return
		}
		hs := binary.BigEndian.Uint64(bin[offHdrSize:])
		if hs < 16384 || hs > 4<<20 || hs%4096 != 0 {
			hs = 16384
		}
		img := make([]byte, 2*hs)
		p, s := img[:hs], img[hs:]
		copy(p, bin)
		copy(p[BinaryHeaderSize:], js)
		if flags&4 == 0 { // a faithful secondary copy
			copy(s, p)
			copy(s, magicSecondary)
			binary.BigEndian.PutUint64(s[offHdrOffset:], hs)
			if flags&2 != 0 { // ...left one update behind
				binary.BigEndian.PutUint64(s[offSeqID:], binary.BigEndian.Uint64(s[offSeqID:])-1)
			}
		}
		if flags&1 != 0 {
			fixCsum(p)
			fixCsum(s)
		}
		v, err := Open(bytes.NewReader(img))
		if err != nil {
			var pe *ParseError
			var ue *UnsupportedError
			if !errors.As(err, &pe) && !errors.As(err, &ue) && !errors.Is(err, ErrNotLUKS2) &&
				!strings.Contains(err.Error(), "EOF") { // a copy claiming to reach past the image
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		// Whatever Open accepts must be self-consistent: its metadata re-validates, every keyslot
		// area lies in the keyslots area, and the data segment lies after it.
		if _, err := parseMetadata(v.MetadataJSON(), v.Header().HdrSize); err != nil {
			t.Fatalf("accepted metadata does not re-validate: %v", err)
		}
		end := uint64(v.HeaderAreaSize())
		for id, ks := range v.Metadata().Keyslots {
			if ks.Area.Size > 0 && (ks.Area.Offset < 2*v.Header().HdrSize || ks.Area.Offset+ks.Area.Size > end) {
				t.Fatalf("keyslot %d area out of bounds", id)
			}
		}
		if _, s := v.DataSegment(); s.Offset < end {
			t.Fatalf("data segment overlaps the metadata")
		}
		_, _ = v.KeywardTokens()
		_, _ = v.Mapping(int64(end) + 1<<30)
		// A metadata rewrite of an accepted header yields a header we accept again (in memory).
		dev := &memDev{b: bytes.Clone(img)}
		if dv, err := Open(dev); err == nil {
			if e, err := dv.edit(); err == nil {
				if err := dv.commit(dev, e); err != nil && !errors.Is(err, ErrNoSpace) {
					t.Fatalf("rewrite of an accepted header failed: %v", err)
				}
			}
		}
	})
}
