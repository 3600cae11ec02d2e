package luks2

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward/memsafe"
)

// memDev is an in-memory device for tests that need no cryptsetup.
type memDev struct {
	mu sync.Mutex
	b  []byte
}

func (d *memDev) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.NewReader(d.b).ReadAt(p, off)
}

func (d *memDev) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if end := int(off) + len(p); end > len(d.b) {
		d.b = append(d.b, make([]byte, end-len(d.b))...)
	}
	return copy(d.b[off:], p), nil
}

type vector struct {
	File       string `json:"file"`
	Passphrase string `json:"passphrase"`
	Slot       int    `json:"slot"`
	VolumeKey  string `json:"volume_key"`
}

func loadVectors(t testing.TB) []vector {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func readTestdata(t testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKnownAnswers unlocks the committed cryptsetup-made headers without cryptsetup.
func TestKnownAnswers(t *testing.T) {
	for _, vec := range loadVectors(t) {
		t.Run(vec.File, func(t *testing.T) {
			v, err := Open(bytes.NewReader(readTestdata(t, vec.File)))
			if err != nil {
				t.Fatal(err)
			}
			if !v.Report().Healthy() {
				t.Fatalf("report: %+v", v.Report())
			}
			k, err := v.OpenKeyslot([]byte(vec.Passphrase), vec.Slot)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Destroy()
			want, _ := hex.DecodeString(vec.VolumeKey)
			sameKey(t, k, want)
			if ok, err := v.VerifyKey(k); !ok || err != nil {
				t.Fatalf("VerifyKey: %v %v", ok, err)
			}
			if _, err := v.OpenKeyslot([]byte(vec.Passphrase+"x"), vec.Slot); err != ErrWrongPassphrase {
				t.Fatalf("wrong passphrase: %v", err)
			}
			if _, err := v.OpenKeyslot([]byte(vec.Passphrase), 5); !errors.Is(err, ErrNoKeyslot) {
				t.Fatalf("missing keyslot: %v", err)
			}
			// The keyslots area of these images holds exactly one keyslot: adding one must say so
			// and write nothing.
			dev := &memDev{b: readTestdata(t, vec.File)}
			wv, _ := Open(dev)
			_, err = wv.AddKeyslot(dev, k, []byte("x"), KeyslotParams{Slot: -1, KDF: KDF{Type: "pbkdf2", Iterations: 1000}})
			if !errors.Is(err, ErrNoSpace) || !bytes.Equal(dev.b, readTestdata(t, vec.File)) {
				t.Fatalf("full keyslots area: %v (unchanged=%v)", err, bytes.Equal(dev.b, readTestdata(t, vec.File)))
			}
			// A key that is not the volume's is refused before anything is written.
			other, _ := memsafe.NewRandom(k.Len())
			defer other.Destroy()
			if _, err := wv.AddKeyslot(dev, other, []byte("x"), KeyslotParams{Slot: -1, KDF: KDF{Type: "pbkdf2", Iterations: 1000}}); err == nil {
				t.Fatal("a foreign key was enrolled")
			}
		})
	}
}

func TestParseHeaderVectors(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, v *Volume)
	}{
		{"sector4096-token.hdr", func(t *testing.T, v *Volume) {
			h := v.Header()
			if h.Label != "kat" || h.Subsystem != "keyward" || h.HdrSize != 16384 || len(h.UUID) != 36 {
				t.Fatalf("header %+v", h)
			}
			if _, s := v.DataSegment(); s.SectorSize != 4096 || !s.Dynamic || s.Encryption != "aes-xts-plain64" {
				t.Fatalf("segment %+v", s)
			}
			toks, err := v.KeywardTokens()
			if err != nil || len(toks) != 1 || toks[0].Scope != "boot:volume/kat" || toks[0].Version != 1 || toks[0].Keyslots[0] != 0 {
				t.Fatalf("tokens %+v %v", toks, err)
			}
		}},
		{"converted-luks1.hdr", func(t *testing.T, v *Volume) {
			d := v.Metadata().Digests[0]
			if len(d.Digest) != 20 || d.Hash != "sha1" {
				t.Fatalf("digest %d bytes hash %s", len(d.Digest), d.Hash)
			}
			if ks := v.Metadata().Keyslots[0]; ks.KDF.Type != "pbkdf2" || ks.AF.Stripes != 4000 {
				t.Fatalf("keyslot %+v", ks)
			}
		}},
		{"argon2id.luks2", func(t *testing.T, v *Volume) {
			k := v.Metadata().Keyslots[0].KDF
			if k.Type != "argon2id" || k.Time != 4 || k.Memory != 8192 || k.CPUs != 1 || len(k.Salt) != 32 {
				t.Fatalf("kdf %+v", k)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b := readTestdata(t, tc.file)
			h, err := ParseHeader(b[:BinaryHeaderSize])
			if err != nil || h.Secondary || h.HdrOffset != 0 {
				t.Fatalf("ParseHeader: %+v %v", h, err)
			}
			v, err := Open(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, v)
		})
	}
}

// reseal rewrites both copies of a header area image with new JSON and/or header fields, with valid
// checksums (a forger can always do this: the checksum is not a MAC).
func reseal(t testing.TB, img []byte, which []int, js []byte, mod func(h *Header)) []byte {
	t.Helper()
	out := bytes.Clone(img)
	hs := binaryHeaderSizeOf(t, img)
	for _, i := range which {
		off := uint64(i) * hs
		h, err := ParseHeader(out[off : off+BinaryHeaderSize])
		if err != nil {
			t.Fatal(err)
		}
		body := js
		if body == nil {
			body = out[off+BinaryHeaderSize : off+hs]
			body = body[:bytes.IndexByte(body, 0)]
		}
		if mod != nil {
			mod(h)
		}
		area, err := encodeArea(h, body)
		if err != nil {
			t.Fatal(err)
		}
		copy(out[off:], area)
	}
	return out
}

// fixCsum recomputes the checksum of one header copy in place.
func fixCsum(area []byte) {
	sum := checksum(area)
	copy(area[offCsum:offCsum+64], make([]byte, 64))
	copy(area[offCsum:], sum[:])
}

func binaryHeaderSizeOf(t testing.TB, img []byte) uint64 {
	h, err := ParseHeader(img[:BinaryHeaderSize])
	if err != nil {
		t.Fatal(err)
	}
	return h.HdrSize
}

// editJSON applies fn to the decoded metadata of img and returns the re-encoded JSON.
func editJSON(t testing.TB, img []byte, fn func(m map[string]any)) []byte {
	t.Helper()
	v, err := Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(v.MetadataJSON()))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func obj(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

func TestDamagedCopies(t *testing.T) {
	good := readTestdata(t, "pbkdf2-sha256.luks2")
	const hs = 16384
	flip := func(off int) []byte { b := bytes.Clone(good); b[off] ^= 0x40; return b }
	tests := []struct {
		name    string
		img     []byte
		wantErr func(error) bool
		check   func(r Report) bool
	}{
		{"healthy", good, nil, func(r Report) bool { return r.Healthy() && !r.UsedSecondary }},
		{"primary json flipped", flip(5000), nil, func(r Report) bool {
			var pe *ParseError
			return errors.As(r.Primary.Err, &pe) && pe.Field == "csum" && r.Secondary.OK() && r.UsedSecondary
		}},
		{"primary checksum flipped", flip(offCsum + 3), nil, func(r Report) bool { return r.Primary.Err != nil && r.UsedSecondary }},
		{"secondary json flipped", flip(hs + 5000), nil, func(r Report) bool { return r.Secondary.Err != nil && r.Primary.OK() && !r.UsedSecondary }},
		{"primary binary header zeroed", func() []byte { b := bytes.Clone(good); clear(b[:4096]); return b }(), nil,
			func(r Report) bool { return r.Primary.Err != nil && r.UsedSecondary && r.Secondary.Offset == hs }},
		{"both copies damaged", func() []byte { b := flip(5000); b[hs+5000] ^= 1; return b }(),
			func(err error) bool { var pe *ParseError; return errors.As(err, &pe) && !errors.Is(err, ErrNotLUKS2) }, nil},
		{"zeros", make([]byte, len(good)), func(err error) bool { return errors.Is(err, ErrNotLUKS2) }, nil},
		{"luks1 magic", func() []byte { b := make([]byte, len(good)); copy(b, "LUKS\xba\xbe\x00\x01"); return b }(),
			func(err error) bool { return errors.Is(err, ErrNotLUKS2) }, nil},
		{"secondary stale", reseal(t, good, []int{1}, nil, func(h *Header) { h.SeqID-- }), nil,
			func(r Report) bool { return r.Secondary.Stale && !r.UsedSecondary && !r.Healthy() }},
		{"secondary newer", reseal(t, good, []int{1}, nil, func(h *Header) { h.SeqID++ }), nil,
			func(r Report) bool { return r.Primary.Stale && r.UsedSecondary }},
		{"same seqid, different metadata", reseal(t, good, []int{1}, append(bytes.TrimSuffix(editJSON(t, good, func(m map[string]any) {}), []byte("}")), []byte(`,"x":1}`)...), nil),
			nil, func(r Report) bool { return r.Secondary.Differ && !r.UsedSecondary }},
		{"version 3", reseal(t, good, []int{0, 1}, nil, nil), nil, nil}, // placeholder replaced below
		{"hdr_offset lies", reseal(t, good, []int{0}, nil, func(h *Header) { h.HdrOffset = 4096 }), nil,
			func(r Report) bool { return r.Primary.Err != nil && r.UsedSecondary }},
		{"csum_alg sha1", func() []byte { b := bytes.Clone(good); copy(b[offCsumAlg:], "sha1\x00\x00"); return b }(), nil,
			func(r Report) bool {
				var pe *ParseError
				return errors.As(r.Primary.Err, &pe) && pe.Field == "csum_alg"
			}},
		{"unterminated label", func() []byte {
			b := bytes.Clone(good)
			copy(b[offLabel:offLabel+48], bytes.Repeat([]byte("a"), 48))
			return b
		}(), nil,
			func(r Report) bool { var pe *ParseError; return errors.As(r.Primary.Err, &pe) && pe.Field == "label" }},
		{"bad hdr_size", func() []byte { b := bytes.Clone(good); b[offHdrSize+6] = 0x50; return b }(), nil,
			func(r Report) bool { return r.Primary.Err != nil && r.UsedSecondary }},
		{"primary hdr_size lies (valid size)", func() []byte { b := bytes.Clone(good); b[offHdrSize+6] = 0x80; return b }(), nil,
			func(r Report) bool { return r.Primary.Err != nil && r.UsedSecondary && r.Secondary.Offset == hs }},
		{"garbage after JSON", func() []byte { b := bytes.Clone(good); b[hs-1] = 'x'; fixCsum(b[:hs]); return b }(), nil,
			func(r Report) bool { return r.Primary.Err != nil }},
	}
	// Version 3 in both copies, checksums valid: not something we read.
	ver := bytes.Clone(good)
	ver[offVersion+1], ver[hs+offVersion+1] = 3, 3
	tests[11] = struct {
		name    string
		img     []byte
		wantErr func(error) bool
		check   func(r Report) bool
	}{"version 3", ver, func(err error) bool { var pe *ParseError; return errors.As(err, &pe) && pe.Field == "version" }, nil}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Open(bytes.NewReader(tc.img))
			if tc.wantErr != nil {
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("got error %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !tc.check(v.Report()) {
				t.Fatalf("report %+v", v.Report())
			}
			// Whichever copy is used, the volume still unlocks.
			k, err := v.OpenKeyslot([]byte("kat passphrase"), 0)
			if err != nil {
				t.Fatal(err)
			}
			k.Destroy()
		})
	}
}

// TestRefusedMetadata forges metadata (with valid checksums, as an attacker can) and checks each
// refusal is the typed error it should be.
func TestRefusedMetadata(t *testing.T) {
	good := readTestdata(t, "pbkdf2-sha256.luks2")
	unsupported := func(err error) bool {
		var ue *UnsupportedError
		return errors.As(err, &ue) && errors.Is(err, ErrUnsupported)
	}
	parseErr := func(err error) bool { var pe *ParseError; return errors.As(err, &pe) }
	tests := []struct {
		name     string
		edit     func(m map[string]any)
		openErr  func(error) bool // nil: Open succeeds
		slotErr  func(error) bool // checked on OpenKeyslot(slot 0) when Open succeeds
		anyFails bool             // OpenAnyKeyslot must fail with ErrWrongPassphrase
	}{
		{"segment cipher_null", func(m map[string]any) { obj(m, "segments", "0")["encryption"] = "cipher_null-ecb" }, unsupported, nil, false},
		{"segment unknown cipher", func(m map[string]any) { obj(m, "segments", "0")["encryption"] = "serpent-xts-plain64" }, unsupported, nil, false},
		{"segment integrity", func(m map[string]any) {
			obj(m, "segments", "0")["integrity"] = map[string]any{"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}
		}, unsupported, nil, false},
		{"segment linear", func(m map[string]any) { obj(m, "segments", "0")["type"] = "linear" }, unsupported, nil, false},
		{"requirements", func(m map[string]any) {
			obj(m, "config")["requirements"] = map[string]any{"mandatory": []any{"online-reencrypt-v2"}}
		}, unsupported, nil, false},
		{"unknown requirements key", func(m map[string]any) { obj(m, "config")["requirements"] = map[string]any{"optional": []any{"x"}} }, unsupported, nil, false},
		{"empty requirements accepted", func(m map[string]any) { obj(m, "config")["requirements"] = map[string]any{"mandatory": []any{}} }, nil, nil, false},
		{"keyslot area cipher_null", func(m map[string]any) { obj(m, "keyslots", "0", "area")["encryption"] = "cipher_null-ecb" }, nil, unsupported, true},
		{"keyslot kdf scrypt", func(m map[string]any) { obj(m, "keyslots", "0", "kdf")["type"] = "scrypt" }, nil, unsupported, true},
		{"keyslot af hash md5", func(m map[string]any) { obj(m, "keyslots", "0", "af")["hash"] = "md5" }, nil, unsupported, true},
		{"keyslot unbound", func(m map[string]any) { obj(m, "digests", "0")["segments"] = []any{} }, nil, func(err error) bool { return err != nil && strings.Contains(err.Error(), "not bound") }, true},
		{"keyslot priority ignore", func(m map[string]any) { obj(m, "keyslots", "0")["priority"] = 0 }, nil, func(err error) bool { return err == nil }, true},
		{"keyslot area outside", func(m map[string]any) { obj(m, "keyslots", "0", "area")["offset"] = "4096" }, parseErr, nil, false},
		{"keyslot area too small", func(m map[string]any) { obj(m, "keyslots", "0", "area")["size"] = "4096" }, parseErr, nil, false},
		{"non-canonical integer", func(m map[string]any) { obj(m, "keyslots", "0", "area")["offset"] = "032768" }, parseErr, nil, false},
		{"integer as number", func(m map[string]any) { obj(m, "keyslots", "0", "area")["offset"] = 32768 }, parseErr, nil, false},
		{"json_size mismatch", func(m map[string]any) { obj(m, "config")["json_size"] = "4096" }, parseErr, nil, false},
		{"digest names missing keyslot", func(m map[string]any) { obj(m, "digests", "0")["keyslots"] = []any{"0", "7"} }, parseErr, nil, false},
		{"token names missing keyslot", func(m map[string]any) {
			obj(m, "tokens")["0"] = map[string]any{"type": "keyward", "keyslots": []any{"3"}}
		}, parseErr, nil, false},
		{"bad keyslot id", func(m map[string]any) { obj(m, "keyslots")["01"] = obj(m, "keyslots", "0") }, parseErr, nil, false},
		{"argon2 memory bomb", func(m map[string]any) {
			obj(m, "keyslots", "0")["kdf"] = map[string]any{"type": "argon2id", "time": 4, "memory": 1 << 30, "cpus": 4, "salt": "AAAA"}
		}, parseErr, nil, false},
		{"missing config", func(m map[string]any) { delete(m, "config") }, parseErr, nil, false},
		{"sector size 1000", func(m map[string]any) { obj(m, "segments", "0")["sector_size"] = 1000 }, parseErr, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := reseal(t, good, []int{0, 1}, editJSON(t, good, tc.edit), nil)
			v, err := Open(bytes.NewReader(img))
			if tc.openErr != nil {
				if err == nil || !tc.openErr(err) {
					t.Fatalf("Open: got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if tc.slotErr != nil {
				k, err := v.OpenKeyslot([]byte("kat passphrase"), 0)
				k.Destroy()
				if !tc.slotErr(err) {
					t.Fatalf("OpenKeyslot: got %v", err)
				}
			}
			if tc.anyFails {
				if _, _, err := v.OpenAnyKeyslot([]byte("kat passphrase")); err != ErrWrongPassphrase {
					t.Fatalf("OpenAnyKeyslot: got %v", err)
				}
			}
		})
	}
}

func TestErrorsCarryNoSecrets(t *testing.T) {
	v, err := Open(bytes.NewReader(readTestdata(t, "pbkdf2-sha256.luks2")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.OpenKeyslot([]byte("hunter2-secret"), 0)
	if err != ErrWrongPassphrase || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v", err)
	}
}

func TestMapping(t *testing.T) {
	v, err := Open(bytes.NewReader(readTestdata(t, "sector4096-token.hdr")))
	if err != nil {
		t.Fatal(err)
	}
	_, seg := v.DataSegment()
	dev := int64(seg.Offset) + 10*4096 + 1000 // a partial trailing sector is not mapped
	m, err := v.Mapping(dev)
	if err != nil {
		t.Fatal(err)
	}
	if m.Cipher != "aes-xts-plain64" || m.Offset != seg.Offset/512 || m.Length != 80 || m.SectorSize != 4096 || m.IVOffset != 0 {
		t.Fatalf("%+v", m)
	}
	if _, err := v.Mapping(int64(seg.Offset)); err == nil {
		t.Fatal("device without data accepted")
	}
	flagged := reseal(t, readTestdata(t, "sector4096-token.hdr"), []int{0, 1}, editJSON(t, readTestdata(t, "sector4096-token.hdr"), func(m map[string]any) {
		obj(m, "config")["flags"] = []any{"allow-discards", "no-read-workqueue", "some-future-flag"}
	}), nil)
	v, err = Open(bytes.NewReader(flagged))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := v.Mapping(dev); strings.Join(m.Options, ",") != "allow_discards,no_read_workqueue" {
		t.Fatalf("options %v", m.Options)
	}
}

func TestFindKeywardToken(t *testing.T) {
	img := readTestdata(t, "sector4096-token.hdr")
	img = reseal(t, img, []int{0, 1}, editJSON(t, img, func(m map[string]any) {
		tk := obj(m, "tokens")
		tk["3"] = map[string]any{"type": "keyward", "keyslots": []any{"0"}, "scope": "boot:volume/kat", "version": 4}
		tk["5"] = map[string]any{"type": "keyward", "keyslots": []any{"0"}, "scope": "boot:volume/other", "version": 9}
		tk["6"] = map[string]any{"type": "systemd-tpm2", "keyslots": []any{"0"}}
	}), nil)
	v, err := Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		scope   string
		wantID  int
		wantErr error
	}{
		{"boot:volume/kat", 3, nil},
		{"boot:volume/other", 5, nil},
		{"", 5, nil},
		{"boot:volume/none", 0, ErrNoToken},
	}
	for _, tc := range tests {
		id, tok, err := v.FindKeywardToken(tc.scope)
		if !errors.Is(err, tc.wantErr) || err == nil && (id != tc.wantID || tok.Keyslots[0] != 0) {
			t.Errorf("scope %q: id %d tok %+v err %v", tc.scope, id, tok, err)
		}
	}
	bad := reseal(t, img, []int{0, 1}, editJSON(t, img, func(m map[string]any) {
		obj(m, "tokens")["7"] = map[string]any{"type": "keyward", "keyslots": []any{"0"}, "version": "x"}
	}), nil)
	v, _ = Open(bytes.NewReader(bad))
	if _, _, err := v.FindKeywardToken(""); err == nil {
		t.Error("a malformed keyward token went unnoticed")
	}
}

func TestRewriteRepairs(t *testing.T) {
	good := readTestdata(t, "pbkdf2-sha256.luks2")
	for _, off := range []int{5000, 16384 + 5000} {
		dev := &memDev{b: bytes.Clone(good)}
		dev.b[off] ^= 1
		v, err := Open(dev)
		if err != nil || v.Report().Healthy() {
			t.Fatalf("damage at %d not reported: %v", off, err)
		}
		seq := v.Header().SeqID
		if err := v.Rewrite(dev); err != nil {
			t.Fatal(err)
		}
		v, err = Open(dev)
		if err != nil || !v.Report().Healthy() || v.Header().SeqID != seq+1 {
			t.Fatalf("after Rewrite: %+v %v", v.Report(), err)
		}
		k, err := v.OpenKeyslot([]byte("kat passphrase"), 0)
		if err != nil {
			t.Fatal(err)
		}
		k.Destroy()
	}
}
