package luks2

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// BinaryHeaderSize is the size of the fixed binary part of each header copy.
const BinaryHeaderSize = 4096

var (
	magicPrimary   = []byte("LUKS\xba\xbe")
	magicSecondary = []byte("SKUL\xba\xbe")
)

// hdrSizes are the only header-area sizes (binary header + JSON area) the specification allows.
// They are also the offsets at which a secondary header is searched when the primary is unreadable.
var hdrSizes = []uint64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}

// Field offsets in the binary header (all integers big endian).
const (
	offMagic     = 0   // [6]byte
	offVersion   = 6   // uint16
	offHdrSize   = 8   // uint64
	offSeqID     = 16  // uint64
	offLabel     = 24  // [48]byte
	offCsumAlg   = 72  // [32]byte
	offSalt      = 104 // [64]byte
	offUUID      = 168 // [40]byte
	offSubsystem = 208 // [48]byte
	offHdrOffset = 256 // uint64
	offCsum      = 448 // [64]byte, after 184 bytes of padding
)

// Header is one decoded binary header copy.
type Header struct {
	Secondary bool   // magic "SKUL\xba\xbe" rather than "LUKS\xba\xbe"
	Version   uint16 // always 2 once parsed
	HdrSize   uint64 // binary header + JSON area, one of 16 KiB .. 4 MiB
	SeqID     uint64 // incremented on every metadata update
	Label     string
	CsumAlg   string // always "sha256" once parsed
	Salt      [64]byte
	UUID      string
	Subsystem string
	HdrOffset uint64 // where this copy lives; 0 or HdrSize
	Csum      [64]byte
}

// ParseHeader decodes a 4096-byte binary header. It checks magic, version, sizes and string fields
// but not the checksum, which covers the JSON area as well (see Read).
func ParseHeader(b []byte) (*Header, error) {
	return parseHeaderAt(b, -1)
}

func parseHeaderAt(b []byte, at int64) (*Header, error) {
	if len(b) != BinaryHeaderSize {
		return nil, perr(at, "binary header", "length %d, want %d", len(b), BinaryHeaderSize)
	}
	h := &Header{}
	switch {
	case bytes.Equal(b[offMagic:offMagic+6], magicPrimary):
	case bytes.Equal(b[offMagic:offMagic+6], magicSecondary):
		h.Secondary = true
	default:
		return nil, perr(at, "magic", "not a LUKS header")
	}
	h.Version = binary.BigEndian.Uint16(b[offVersion:])
	if h.Version != 2 {
		return nil, perr(at, "version", "%d, want 2", h.Version)
	}
	h.HdrSize = binary.BigEndian.Uint64(b[offHdrSize:])
	if !slices.Contains(hdrSizes, h.HdrSize) {
		return nil, perr(at, "hdr_size", "%d is not an allowed size", h.HdrSize)
	}
	h.SeqID = binary.BigEndian.Uint64(b[offSeqID:])
	var err error
	str := func(off, n int, name string) string {
		if err != nil {
			return ""
		}
		f := b[off : off+n]
		i := bytes.IndexByte(f, 0)
		if i < 0 {
			err = perr(at, name, "not NUL-terminated")
			return ""
		}
		return string(f[:i])
	}
	h.Label = str(offLabel, 48, "label")
	h.CsumAlg = str(offCsumAlg, 32, "csum_alg")
	h.UUID = str(offUUID, 40, "uuid")
	h.Subsystem = str(offSubsystem, 48, "subsystem")
	if err != nil {
		return nil, err
	}
	if h.CsumAlg != "sha256" {
		// The format allows other hashes; cryptsetup only ever writes sha256, and accepting a
		// weaker one would let a forged copy win the seqid race more cheaply.
		return nil, perr(at, "csum_alg", "%q, only sha256 is supported", h.CsumAlg)
	}
	copy(h.Salt[:], b[offSalt:])
	h.HdrOffset = binary.BigEndian.Uint64(b[offHdrOffset:])
	copy(h.Csum[:], b[offCsum:])
	return h, nil
}

// appendBinary encodes h as a 4096-byte binary header with the checksum field as stored in h.
func (h *Header) appendBinary(dst []byte) []byte {
	b := make([]byte, BinaryHeaderSize)
	if h.Secondary {
		copy(b, magicSecondary)
	} else {
		copy(b, magicPrimary)
	}
	binary.BigEndian.PutUint16(b[offVersion:], 2)
	binary.BigEndian.PutUint64(b[offHdrSize:], h.HdrSize)
	binary.BigEndian.PutUint64(b[offSeqID:], h.SeqID)
	copy(b[offLabel:offLabel+47], h.Label)
	copy(b[offCsumAlg:offCsumAlg+31], "sha256")
	copy(b[offSalt:], h.Salt[:])
	copy(b[offUUID:offUUID+39], h.UUID)
	copy(b[offSubsystem:offSubsystem+47], h.Subsystem)
	binary.BigEndian.PutUint64(b[offHdrOffset:], h.HdrOffset)
	copy(b[offCsum:], h.Csum[:])
	return append(dst, b...)
}

// checksum is SHA-256 over the whole header area (binary header and JSON area) with the 64-byte
// checksum field taken as zero.
func checksum(area []byte) [32]byte {
	d := sha256.New()
	d.Write(area[:offCsum])
	d.Write(make([]byte, 64))
	d.Write(area[offCsum+64:])
	var s [32]byte
	d.Sum(s[:0])
	return s
}

// headerCopy is one copy read from the device.
type headerCopy struct {
	hdr  *Header
	json []byte // JSON text without the NUL padding
	err  error  // nil when the copy is valid
}

// readCopy reads and verifies the copy at off. wantSecondary says which magic belongs there.
func readCopy(r io.ReaderAt, off int64, wantSecondary bool) headerCopy {
	bin := make([]byte, BinaryHeaderSize)
	if _, err := r.ReadAt(bin, off); err != nil {
		return headerCopy{err: fmt.Errorf("luks2: read header at %d: %w", off, err)}
	}
	h, err := parseHeaderAt(bin, off)
	if err != nil {
		return headerCopy{err: err}
	}
	c := headerCopy{hdr: h}
	if h.Secondary != wantSecondary {
		c.err = perr(off, "magic", "primary/secondary magic in the wrong place")
		return c
	}
	if h.HdrOffset != uint64(off) {
		c.err = perr(off, "hdr_offset", "%d, but the copy is at %d", h.HdrOffset, off)
		return c
	}
	area := make([]byte, h.HdrSize)
	if _, err := r.ReadAt(area, off); err != nil {
		c.err = fmt.Errorf("luks2: read header area at %d: %w", off, err)
		return c
	}
	sum := checksum(area)
	if subtle.ConstantTimeCompare(sum[:], h.Csum[:32]) != 1 || !allZero(h.Csum[32:]) {
		c.err = perr(off, "csum", "checksum mismatch")
		return c
	}
	js := area[BinaryHeaderSize:]
	n := bytes.IndexByte(js, 0)
	if n < 0 {
		c.err = perr(off, "json area", "JSON not NUL-terminated")
		return c
	}
	if !allZero(js[n:]) {
		c.err = perr(off, "json area", "bytes after the JSON terminator")
		return c
	}
	c.json = js[:n]
	return c
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// encodeArea builds a complete header area for h with the given JSON, computing the checksum.
func encodeArea(h *Header, js []byte) ([]byte, error) {
	if uint64(len(js)) >= h.HdrSize-BinaryHeaderSize {
		return nil, fmt.Errorf("%w: metadata JSON (%d bytes) does not fit the %d-byte JSON area",
			ErrNoSpace, len(js), h.HdrSize-BinaryHeaderSize)
	}
	h.Csum = [64]byte{}
	area := h.appendBinary(make([]byte, 0, h.HdrSize))
	area = append(area, js...)
	area = append(area, make([]byte, int(h.HdrSize)-len(area))...)
	sum := checksum(area)
	copy(h.Csum[:], sum[:])
	copy(area[offCsum:], h.Csum[:])
	return area, nil
}
