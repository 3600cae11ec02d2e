package luks2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzParseHeader feeds header areas to Open. Seeds are the real cryptsetup headers in testdata.
// With fix set, the fuzzer's input gets valid checksums on both copies before parsing, so mutations
// reach the JSON validation instead of dying at the checksum (as a forger's header would).
//
// Run it with -fuzzminimizetime 0: inputs are at least 32 KiB (two 16 KiB copies), and the default
// minimization of every new interesting input byte by byte stalls the worker for minutes.
func FuzzParseHeader(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.luks2")
	hdrs, _ := filepath.Glob("testdata/*.hdr")
	for _, name := range append(files, hdrs...) {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 2*16384)], false)
		f.Add(b[:min(len(b), 2*16384)], true)
	}
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix {
			data = bytes.Clone(data)
			for _, off := range []int{0, 16384, 32768, 65536} {
				if len(data) < off+BinaryHeaderSize {
					break
				}
				hs := int(binary.BigEndian.Uint64(data[off+offHdrSize:]))
				if slices.Contains(hdrSizes, uint64(hs)) && len(data) >= off+hs {
					fixCsum(data[off : off+hs])
				}
			}
		}
		if len(data) >= BinaryHeaderSize {
			_, _ = ParseHeader(data[:BinaryHeaderSize])
		}
		v, err := Open(bytes.NewReader(data))
		if err != nil {
			var pe *ParseError
			var ue *UnsupportedError
			if !errors.As(err, &pe) && !errors.As(err, &ue) && !errors.Is(err, ErrNotLUKS2) {
				// Short inputs end in read errors, which are fine; anything else is a bug.
				if !bytes.Contains([]byte(err.Error()), []byte("EOF")) {
					t.Fatalf("untyped error: %v", err)
				}
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
	})
}
