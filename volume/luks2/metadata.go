package luks2

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/keyward/keyward/volume/luks2/internal/sectorcipher"
)

// Limits on values an attacker controls through an unauthenticated header. They are cryptsetup's own
// limits where it has them, so every volume cryptsetup makes is accepted.
const (
	maxKeyslots    = 32
	maxTokens      = 32
	maxKeySize     = 512     // bytes
	maxStripes     = 1 << 16 // cryptsetup only writes 4000
	maxArgonMemory = 4 << 20 // KiB (4 GiB), cryptsetup's maximum
	maxArgonTime   = 1 << 24
	maxArgonCPUs   = 255       // argon2 lanes are a uint8 in golang.org/x/crypto/argon2
	maxIterations  = 1<<31 - 1 // fits int everywhere; hours of PBKDF2 already
)

// Metadata is the decoded JSON area.
type Metadata struct {
	Keyslots map[int]Keyslot
	Tokens   map[int]Token
	Segments map[int]Segment
	Digests  map[int]Digest
	Config   Config
}

// Keyslot is one entry of "keyslots". Only Type "luks2" keyslots can be opened.
type Keyslot struct {
	Type     string
	KeySize  int // bytes of the key stored in the slot (the volume key)
	Priority int // 0 ignore, 1 normal (also when absent), 2 high
	KDF      KDF
	AF       AF
	Area     Area
}

// KDF is a keyslot's key derivation: "pbkdf2" (Hash, Iterations) or "argon2i"/"argon2id" (Time,
// Memory in KiB, CPUs).
type KDF struct {
	Type       string
	Hash       string
	Iterations int
	Time       int
	Memory     int
	CPUs       int
	Salt       []byte
}

// AF is the anti-forensic splitter; only Type "luks1" exists.
type AF struct {
	Type    string
	Stripes int
	Hash    string
}

// Area is where a keyslot's encrypted material lives, relative to the device start.
type Area struct {
	Type       string // "raw" for luks2 keyslots
	Offset     uint64
	Size       uint64
	Encryption string
	KeySize    int
}

// Segment is one data segment.
type Segment struct {
	Type       string // "crypt"
	Offset     uint64 // bytes from the device start
	Size       uint64 // bytes; 0 when Dynamic
	Dynamic    bool   // the segment runs to the end of the device
	IVTweak    uint64
	Encryption string
	SectorSize int
}

// Digest verifies a volume key: PBKDF2(Hash, key, Salt, Iterations) must equal Digest.
type Digest struct {
	Type       string
	Keyslots   []int
	Segments   []int
	Hash       string
	Iterations int
	Salt       []byte
	Digest     []byte
}

// Token is one entry of "tokens". Raw is the token's whole JSON object.
type Token struct {
	Type     string
	Keyslots []int
	Raw      json.RawMessage
}

// Config is the "config" object.
type Config struct {
	JSONSize     uint64
	KeyslotsSize uint64
	Flags        []string
}

// ---- JSON decoding -------------------------------------------------------------------------------

// u64 is the specification's encoding of 64-bit integers: a JSON string of decimal digits.
type u64 uint64

func (v *u64) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a decimal string, got %s", b)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return fmt.Errorf("%q is not a canonical decimal", s)
	}
	*v = u64(n)
	return nil
}

func (v u64) MarshalJSON() ([]byte, error) { return json.Marshal(strconv.FormatUint(uint64(v), 10)) }

type jsonMeta struct {
	Keyslots map[string]json.RawMessage `json:"keyslots"`
	Tokens   map[string]json.RawMessage `json:"tokens"`
	Segments map[string]json.RawMessage `json:"segments"`
	Digests  map[string]json.RawMessage `json:"digests"`
	Config   *struct {
		JSONSize     u64             `json:"json_size"`
		KeyslotsSize u64             `json:"keyslots_size"`
		Flags        []string        `json:"flags"`
		Requirements json.RawMessage `json:"requirements"`
	} `json:"config"`
}

type jsonKeyslot struct {
	Type     string `json:"type"`
	KeySize  int    `json:"key_size"`
	Priority *int   `json:"priority,omitempty"`
	KDF      *struct {
		Type       string `json:"type"`
		Hash       string `json:"hash,omitempty"`
		Iterations int    `json:"iterations,omitempty"`
		Time       int    `json:"time,omitempty"`
		Memory     int    `json:"memory,omitempty"`
		CPUs       int    `json:"cpus,omitempty"`
		Salt       []byte `json:"salt"`
	} `json:"kdf"`
	AF *struct {
		Type    string `json:"type"`
		Stripes int    `json:"stripes"`
		Hash    string `json:"hash"`
	} `json:"af"`
	Area *struct {
		Type       string `json:"type"`
		Offset     *u64   `json:"offset"`
		Size       *u64   `json:"size"`
		Encryption string `json:"encryption,omitempty"`
		KeySize    int    `json:"key_size,omitempty"`
	} `json:"area"`
}

type jsonSegment struct {
	Type       string          `json:"type"`
	Offset     *u64            `json:"offset"`
	Size       string          `json:"size"`
	IVTweak    *u64            `json:"iv_tweak"`
	Encryption string          `json:"encryption"`
	SectorSize int             `json:"sector_size"`
	Integrity  json.RawMessage `json:"integrity"`
	Flags      []string        `json:"flags"`
}

type jsonDigest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int      `json:"iterations"`
	Salt       []byte   `json:"salt"`
	Digest     []byte   `json:"digest"`
}

type jsonToken struct {
	Type     *string  `json:"type"`
	Keyslots []string `json:"keyslots"`
}

// parseID parses an object key or reference: a canonical decimal below limit.
func parseID(s string, limit int) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= limit || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

func parseIDs(ss []string, limit int) ([]int, bool) {
	out := make([]int, 0, len(ss))
	for _, s := range ss {
		n, ok := parseID(s, limit)
		if !ok || slices.Contains(out, n) {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

// parseMetadata decodes and validates the JSON area of a header with hdrSize. It returns a
// *ParseError for malformed metadata and an *UnsupportedError for well-formed metadata this package
// refuses to use (requirements, integrity, ciphers outside the allowlist).
func parseMetadata(js []byte, hdrSize uint64) (*Metadata, error) {
	bad := func(field, format string, args ...any) error { return perr(-1, field, format, args...) }
	var jm jsonMeta
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(&jm); err != nil {
		return nil, bad("json", "%v", err)
	}
	if dec.More() {
		return nil, bad("json", "trailing data after the metadata object")
	}
	if jm.Keyslots == nil || jm.Tokens == nil || jm.Segments == nil || jm.Digests == nil || jm.Config == nil {
		return nil, bad("json", "missing one of keyslots, tokens, segments, digests, config")
	}
	m := &Metadata{
		Keyslots: map[int]Keyslot{}, Tokens: map[int]Token{},
		Segments: map[int]Segment{}, Digests: map[int]Digest{},
	}

	// config
	c := jm.Config
	if uint64(c.JSONSize) != hdrSize-BinaryHeaderSize {
		return nil, bad("config.json_size", "%d, want %d for a %d-byte header", c.JSONSize, hdrSize-BinaryHeaderSize, hdrSize)
	}
	ksSize := uint64(c.KeyslotsSize)
	if ksSize%4096 != 0 || ksSize > 128<<20 {
		return nil, bad("config.keyslots_size", "%d is not a 4096 multiple up to 128 MiB", ksSize)
	}
	m.Config = Config{JSONSize: uint64(c.JSONSize), KeyslotsSize: ksSize, Flags: c.Flags}
	if err := checkRequirements(c.Requirements); err != nil {
		return nil, err
	}
	areaStart, areaEnd := 2*hdrSize, 2*hdrSize+ksSize

	// keyslots
	for k, raw := range jm.Keyslots {
		id, ok := parseID(k, maxKeyslots)
		if !ok {
			return nil, bad("keyslots", "bad keyslot id %q", k)
		}
		field := "keyslots." + k
		var jk jsonKeyslot
		if err := json.Unmarshal(raw, &jk); err != nil {
			return nil, bad(field, "%v", err)
		}
		ks := Keyslot{Type: jk.Type, KeySize: jk.KeySize, Priority: 1}
		if jk.Priority != nil {
			if *jk.Priority < 0 || *jk.Priority > 2 {
				return nil, bad(field+".priority", "%d", *jk.Priority)
			}
			ks.Priority = *jk.Priority
		}
		if jk.Area == nil || jk.Area.Offset == nil || jk.Area.Size == nil {
			// Every keyslot type, including cryptsetup's "reencrypt", names its area.
			return nil, bad(field+".area", "missing offset or size")
		}
		ks.Area = Area{Type: jk.Area.Type, Offset: uint64(*jk.Area.Offset), Size: uint64(*jk.Area.Size),
			Encryption: jk.Area.Encryption, KeySize: jk.Area.KeySize}
		if ks.Area.Size > 0 {
			if ks.Area.Offset < areaStart || ks.Area.Offset > areaEnd || ks.Area.Size > areaEnd-ks.Area.Offset {
				return nil, bad(field+".area", "[%d,+%d) outside the keyslots area [%d,%d)",
					ks.Area.Offset, ks.Area.Size, areaStart, areaEnd)
			}
		}
		if jk.Type == "luks2" {
			if err := checkLUKS2Keyslot(field, &jk, &ks); err != nil {
				return nil, err
			}
		}
		m.Keyslots[id] = ks
	}
	spans := areaSpans(m.Keyslots)
	for i := 1; i < len(spans); i++ {
		if spans[i].off < spans[i-1].end {
			return nil, bad("keyslots", "keyslot areas overlap at %d", spans[i].off)
		}
	}

	// segments
	for k, raw := range jm.Segments {
		id, ok := parseID(k, 1<<20)
		if !ok {
			return nil, bad("segments", "bad segment id %q", k)
		}
		field := "segments." + k
		var js jsonSegment
		if err := json.Unmarshal(raw, &js); err != nil {
			return nil, bad(field, "%v", err)
		}
		if js.Type != "crypt" {
			// "linear" segments only exist during an online reencryption, which also sets a
			// requirement; anything else is unknown.
			return nil, &UnsupportedError{Feature: field + " type", Value: js.Type}
		}
		if len(js.Integrity) > 0 && string(js.Integrity) != "null" {
			return nil, &UnsupportedError{Feature: field + " integrity", Value: string(js.Integrity)}
		}
		if len(js.Flags) > 0 {
			return nil, &UnsupportedError{Feature: field + " flags", Value: fmt.Sprint(js.Flags)}
		}
		if js.Offset == nil || js.IVTweak == nil {
			return nil, bad(field, "missing offset or iv_tweak")
		}
		s := Segment{Type: js.Type, Offset: uint64(*js.Offset), IVTweak: uint64(*js.IVTweak),
			Encryption: js.Encryption, SectorSize: js.SectorSize}
		switch s.SectorSize {
		case 512, 1024, 2048, 4096:
		default:
			return nil, bad(field+".sector_size", "%d", s.SectorSize)
		}
		if s.Offset%uint64(s.SectorSize) != 0 || s.Offset < areaEnd {
			return nil, bad(field+".offset", "%d is unaligned or inside the metadata", s.Offset)
		}
		if js.Size == "dynamic" {
			s.Dynamic = true
		} else {
			var n u64
			q, _ := json.Marshal(js.Size)
			if err := n.UnmarshalJSON(q); err != nil || uint64(n)%uint64(s.SectorSize) != 0 {
				return nil, bad(field+".size", "%q is neither \"dynamic\" nor a sector multiple", js.Size)
			}
			s.Size = uint64(n)
		}
		if !sectorcipher.Known(s.Encryption) {
			return nil, &UnsupportedError{Feature: field + " encryption", Value: s.Encryption}
		}
		m.Segments[id] = s
	}
	if len(m.Segments) == 0 {
		return nil, bad("segments", "no data segment")
	}

	// digests
	for k, raw := range jm.Digests {
		id, ok := parseID(k, maxKeyslots)
		if !ok {
			return nil, bad("digests", "bad digest id %q", k)
		}
		field := "digests." + k
		var jd jsonDigest
		if err := json.Unmarshal(raw, &jd); err != nil {
			return nil, bad(field, "%v", err)
		}
		if jd.Type != "pbkdf2" {
			return nil, &UnsupportedError{Feature: field + " type", Value: jd.Type}
		}
		if hashFunc(jd.Hash) == nil {
			return nil, &UnsupportedError{Feature: field + " hash", Value: jd.Hash}
		}
		if jd.Iterations < 1 || jd.Iterations > maxIterations {
			return nil, bad(field+".iterations", "%d", jd.Iterations)
		}
		if len(jd.Digest) < 16 || len(jd.Digest) > 64 || len(jd.Salt) == 0 || len(jd.Salt) > 64 {
			return nil, bad(field, "digest of %d bytes or salt of %d bytes", len(jd.Digest), len(jd.Salt))
		}
		d := Digest{Type: jd.Type, Hash: jd.Hash, Iterations: jd.Iterations, Salt: jd.Salt, Digest: jd.Digest}
		if d.Keyslots, ok = parseIDs(jd.Keyslots, maxKeyslots); !ok {
			return nil, bad(field+".keyslots", "bad keyslot reference")
		}
		if d.Segments, ok = parseIDs(jd.Segments, 1<<20); !ok {
			return nil, bad(field+".segments", "bad segment reference")
		}
		for _, ks := range d.Keyslots {
			if _, ok := m.Keyslots[ks]; !ok {
				return nil, bad(field+".keyslots", "keyslot %d does not exist", ks)
			}
			for oid, od := range m.Digests {
				if slices.Contains(od.Keyslots, ks) {
					return nil, bad(field+".keyslots", "keyslot %d also in digest %d", ks, oid)
				}
			}
		}
		for _, sg := range d.Segments {
			if _, ok := m.Segments[sg]; !ok {
				return nil, bad(field+".segments", "segment %d does not exist", sg)
			}
		}
		m.Digests[id] = d
	}

	// tokens
	for k, raw := range jm.Tokens {
		id, ok := parseID(k, maxTokens)
		if !ok {
			return nil, bad("tokens", "bad token id %q", k)
		}
		var jt jsonToken
		if err := json.Unmarshal(raw, &jt); err != nil || jt.Type == nil {
			return nil, bad("tokens."+k, "not an object with a string type")
		}
		t := Token{Type: *jt.Type, Raw: slices.Clone(raw)}
		if t.Keyslots, ok = parseIDs(jt.Keyslots, maxKeyslots); !ok {
			return nil, bad("tokens."+k+".keyslots", "bad keyslot reference")
		}
		for _, ks := range t.Keyslots {
			if _, ok := m.Keyslots[ks]; !ok {
				return nil, bad("tokens."+k+".keyslots", "keyslot %d does not exist", ks)
			}
		}
		m.Tokens[id] = t
	}
	return m, nil
}

// checkRequirements refuses every requirement: an online reencryption in progress, an unfinished
// conversion, anything future. A volume with requirements is one whose layout this package would
// misread.
func checkRequirements(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var req map[string]json.RawMessage
	if err := json.Unmarshal(raw, &req); err != nil {
		return perr(-1, "config.requirements", "%v", err)
	}
	for k, v := range req {
		if k == "mandatory" {
			var list []string
			if err := json.Unmarshal(v, &list); err != nil {
				return perr(-1, "config.requirements.mandatory", "%v", err)
			}
			if len(list) == 0 {
				continue
			}
			return &UnsupportedError{Feature: "config requirements", Value: fmt.Sprint(list)}
		}
		return &UnsupportedError{Feature: "config requirements", Value: k}
	}
	return nil
}

// checkLUKS2Keyslot validates a "luks2" keyslot's structure. Unsupported algorithms are not an
// error here (the volume may still open through another keyslot); OpenKeyslot refuses them.
func checkLUKS2Keyslot(field string, jk *jsonKeyslot, ks *Keyslot) error {
	bad := func(f, format string, args ...any) error { return perr(-1, field+f, format, args...) }
	if ks.KeySize < 1 || ks.KeySize > maxKeySize {
		return bad(".key_size", "%d", ks.KeySize)
	}
	if jk.KDF == nil || jk.AF == nil {
		return bad("", "missing kdf or af")
	}
	k := jk.KDF
	ks.KDF = KDF{Type: k.Type, Hash: k.Hash, Iterations: k.Iterations, Time: k.Time, Memory: k.Memory, CPUs: k.CPUs, Salt: k.Salt}
	if len(k.Salt) == 0 || len(k.Salt) > 1024 {
		return bad(".kdf.salt", "%d bytes", len(k.Salt))
	}
	switch k.Type {
	case "pbkdf2":
		if k.Iterations < 1 || k.Iterations > maxIterations {
			return bad(".kdf.iterations", "%d", k.Iterations)
		}
	case "argon2i", "argon2id":
		if k.Time < 1 || k.Time > maxArgonTime || k.Memory < 8 || k.Memory > maxArgonMemory || k.CPUs < 1 || k.CPUs > maxArgonCPUs {
			return bad(".kdf", "argon2 time %d memory %d cpus %d out of range", k.Time, k.Memory, k.CPUs)
		}
	}
	a := jk.AF
	ks.AF = AF{Type: a.Type, Stripes: a.Stripes, Hash: a.Hash}
	if a.Stripes < 1 || a.Stripes > maxStripes {
		return bad(".af.stripes", "%d", a.Stripes)
	}
	if need := roundUp(uint64(ks.KeySize)*uint64(a.Stripes), 512); need > ks.Area.Size {
		return bad(".area.size", "%d, the split key needs %d", ks.Area.Size, need)
	}
	if ks.Area.Offset%512 != 0 {
		return bad(".area.offset", "%d is not sector aligned", ks.Area.Offset)
	}
	return nil
}

// span is a byte range [off, end) of the device.
type span struct{ off, end uint64 }

// areaSpans returns the non-empty keyslot areas, sorted by offset.
func areaSpans(keyslots map[int]Keyslot) []span {
	var spans []span
	for _, ks := range keyslots {
		if ks.Area.Size > 0 {
			spans = append(spans, span{ks.Area.Offset, ks.Area.Offset + ks.Area.Size})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.off, b.off) })
	return spans
}

func roundUp(n, to uint64) uint64 { return (n + to - 1) / to * to }

// DigestFor returns the id of the digest that covers keyslot slot.
func (m *Metadata) DigestFor(slot int) (int, bool) {
	for id, d := range m.Digests {
		if slices.Contains(d.Keyslots, slot) {
			return id, true
		}
	}
	return 0, false
}

// SortedKeyslots returns the keyslot ids in ascending order.
func (m *Metadata) SortedKeyslots() []int { return sortedKeys(m.Keyslots) }

// SortedTokens returns the token ids in ascending order.
func (m *Metadata) SortedTokens() []int { return sortedKeys(m.Tokens) }

func sortedKeys[V any](mp map[int]V) []int {
	ids := make([]int, 0, len(mp))
	for id := range mp {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
