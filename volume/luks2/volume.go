package luks2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
)

// CopyState describes one header copy as found on the device.
type CopyState struct {
	Offset int64  // where the copy is (or was searched for)
	SeqID  uint64 // 0 when the binary header could not be decoded
	Err    error  // nil for a valid copy (good magic, version, sizes, checksum and JSON)
	Stale  bool   // valid, but with a lower seqid than the copy in use
	Differ bool   // valid, same seqid as the copy in use, different metadata
}

// OK reports whether the copy is valid and current.
func (c CopyState) OK() bool { return c.Err == nil && !c.Stale && !c.Differ }

// Report says what Open found. Open never repairs anything: a damaged or stale copy is reported here
// and left alone until the next write, which rewrites both copies.
type Report struct {
	Primary, Secondary CopyState
	UsedSecondary      bool // the metadata in use came from the secondary copy
}

// Healthy reports whether both copies are valid and agree.
func (r Report) Healthy() bool { return r.Primary.OK() && r.Secondary.OK() }

// Volume is an opened LUKS2 volume: its header and metadata as read by Open. A Volume is not safe
// for concurrent use. After a failed write, discard it and call Open again.
type Volume struct {
	r      io.ReaderAt
	hdr    Header // the copy in use
	salts  [2][64]byte
	js     []byte // JSON text of the copy in use
	meta   *Metadata
	report Report
}

// Open reads both header copies from r, verifies them and picks the valid copy with the higher
// seqid. It returns ErrNotLUKS2 (wrapped) when r holds no LUKS2 header at all, a *ParseError when
// the headers are malformed or damaged beyond use, and an *UnsupportedError when the volume uses a
// feature this package refuses (integrity, requirements, a cipher outside the allowlist).
func Open(r io.ReaderAt) (*Volume, error) {
	primary := readCopy(r, 0, false)
	// The secondary copy sits at the primary's hdr_size. When the primary is invalid its hdr_size
	// cannot be trusted either, so the other allowed offsets are searched too, as cryptsetup does.
	var candidates []uint64
	if primary.hdr != nil {
		candidates = []uint64{primary.hdr.HdrSize}
	}
	if primary.err != nil {
		for _, off := range hdrSizes {
			if !slices.Contains(candidates, off) {
				candidates = append(candidates, off)
			}
		}
	}
	var secondary headerCopy
	for i, off := range candidates {
		c := readCopy(r, int64(off), true)
		if c.err == nil && c.hdr.HdrSize != off {
			c.err = perr(int64(off), "hdr_size", "%d, but the secondary copy is at %d", c.hdr.HdrSize, off)
		}
		// Keep the first valid copy; failing that, the first that decodes; failing that, the error
		// at the expected offset.
		if i == 0 || c.err == nil || secondary.hdr == nil && c.hdr != nil {
			secondary = c
		}
		if c.err == nil {
			break
		}
	}
	secOff := int64(candidates[0])
	if secondary.hdr != nil {
		secOff = int64(secondary.hdr.HdrOffset)
	}

	var metas [2]*Metadata
	var unsupported [2]error
	for i, c := range []*headerCopy{&primary, &secondary} {
		if c.err != nil {
			continue
		}
		m, err := parseMetadata(c.json, c.hdr.HdrSize)
		var ue *UnsupportedError
		switch {
		case errors.As(err, &ue):
			unsupported[i] = err
		case err != nil:
			c.err = err
		}
		metas[i] = m
	}

	rep := Report{
		Primary:   CopyState{Offset: 0, Err: primary.err},
		Secondary: CopyState{Offset: secOff, Err: secondary.err},
	}
	if primary.hdr != nil {
		rep.Primary.SeqID = primary.hdr.SeqID
	}
	if secondary.hdr != nil {
		rep.Secondary.SeqID = secondary.hdr.SeqID
	}

	use := 0
	switch {
	case primary.err == nil && secondary.err == nil:
		switch {
		case secondary.hdr.SeqID > primary.hdr.SeqID:
			use = 1
			rep.Primary.Stale = true
		case secondary.hdr.SeqID < primary.hdr.SeqID:
			rep.Secondary.Stale = true
		case !bytes.Equal(primary.json, secondary.json) || primary.hdr.HdrSize != secondary.hdr.HdrSize:
			rep.Secondary.Differ = true
		}
	case primary.err == nil:
	case secondary.err == nil:
		use = 1
	default:
		if primary.hdr == nil && secondary.hdr == nil {
			var pe *ParseError
			if errors.As(primary.err, &pe) && pe.Field == "magic" || errors.As(primary.err, &pe) && pe.Field == "version" {
				return nil, fmt.Errorf("%w: %w", ErrNotLUKS2, primary.err)
			}
		}
		return nil, fmt.Errorf("luks2: no valid header copy: primary: %w; secondary: %w", primary.err, secondary.err)
	}
	rep.UsedSecondary = use == 1
	if unsupported[use] != nil {
		return nil, unsupported[use]
	}
	chosen := []headerCopy{primary, secondary}[use]
	v := &Volume{r: r, hdr: *chosen.hdr, js: chosen.json, meta: metas[use], report: rep}
	if primary.hdr != nil {
		v.salts[0] = primary.hdr.Salt
	}
	if secondary.hdr != nil {
		v.salts[1] = secondary.hdr.Salt
	}
	return v, nil
}

// Header returns the binary header of the copy in use.
func (v *Volume) Header() Header { return v.hdr }

// Metadata returns the decoded metadata. The caller must not modify it.
func (v *Volume) Metadata() *Metadata { return v.meta }

// Report returns the state of both header copies as found by Open.
func (v *Volume) Report() Report { return v.report }

// UUID is the volume's UUID.
func (v *Volume) UUID() string { return v.hdr.UUID }

// MetadataJSON returns a copy of the JSON text of the copy in use (what `cryptsetup luksDump
// --dump-json-metadata` prints).
func (v *Volume) MetadataJSON() []byte { return bytes.Clone(v.js) }

// HeaderAreaSize is the size of everything before the data: both header copies and the keyslots
// area. It is what Backup copies.
func (v *Volume) HeaderAreaSize() int64 {
	return int64(2*v.hdr.HdrSize + v.meta.Config.KeyslotsSize)
}

// DataSegment returns the data segment with the lowest id (LUKS2 volumes outside a reencryption have
// exactly one) and its id.
func (v *Volume) DataSegment() (int, Segment) {
	ids := sortedKeys(v.meta.Segments)
	return ids[0], v.meta.Segments[ids[0]]
}
