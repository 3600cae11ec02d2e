package luks2

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/volume/luks2/internal/af"
	"github.com/keyward/keyward/volume/luks2/internal/sectorcipher"
)

// Write order, and why it is safe to interrupt at any byte.
//
// Adding a keyslot:
//  1. The split, encrypted key material goes to a region of the keyslots area that no keyslot in
//     either header copy references. A torn write there changes nothing any header points at.
//  2. The secondary copy is rewritten with seqid+1. Torn, its checksum fails and the intact primary
//     (old seqid, old keyslots) is used. Whole, it wins on seqid and holds the old keyslots too.
//  3. The primary copy is rewritten with the same seqid+1. Torn, the secondary (new, complete) wins.
//
// Removing a keyslot runs the header steps first and only then wipes the area: until both copies
// are written, one of them may still point at the material, so it must stay intact until then.
//
// Between steps the writer is synced when it can be (an *os.File can), so the kernel cannot reorder
// step 3 before step 2 on the way to the disk. Every header copy is checked by Open on the way back
// in (both are re-read after the write).
//
// The caller must hold the device exclusively: nothing here locks against a concurrent cryptsetup.

// KeyslotParams chooses how a new keyslot is built.
type KeyslotParams struct {
	// Slot is the keyslot id to use, or -1 for the lowest free one.
	Slot int
	// KDF: Type "pbkdf2" with Hash (default sha256) and Iterations, or "argon2i"/"argon2id" with
	// Time, Memory (KiB) and CPUs. Salt is ignored: a fresh 32-byte salt is drawn.
	KDF KDF
	// HighPriority makes cryptsetup (and OpenAnyKeyslot) try this keyslot before normal ones.
	HighPriority bool
}

// Keyslot layout constants for new keyslots: those cryptsetup uses.
const (
	newStripes     = 4000
	newAFHash      = "sha256"
	newAreaCipher  = "aes-xts-plain64"
	newAreaKeySize = 64
	areaAlign      = 4096
)

// KeywardToken is the LUKS2 token Keyward enrolls next to its keyslot:
// {"type":"keyward","keyslots":["N"],"scope":"...","version":N}.
type KeywardToken struct {
	Keyslots []int
	Scope    string
	Version  int
}

// TokenTypeKeyward is the token type Keyward writes.
const TokenTypeKeyward = "keyward"

type jsonKeywardToken struct {
	Type     string   `json:"type"`
	Keyslots []string `json:"keyslots"`
	Scope    string   `json:"scope"`
	Version  int      `json:"version"`
}

// KeywardTokens returns the tokens of type "keyward", by token id. A token of that type that does
// not decode is reported as an error rather than skipped, so a damaged enrollment is visible.
func (v *Volume) KeywardTokens() (map[int]KeywardToken, error) {
	out := map[int]KeywardToken{}
	for id, t := range v.meta.Tokens {
		if t.Type != TokenTypeKeyward {
			continue
		}
		var jt jsonKeywardToken
		if err := json.Unmarshal(t.Raw, &jt); err != nil || jt.Scope == "" {
			return nil, perr(-1, "tokens."+strconv.Itoa(id), "malformed keyward token")
		}
		out[id] = KeywardToken{Keyslots: t.Keyslots, Scope: jt.Scope, Version: jt.Version}
	}
	return out, nil
}

// FindKeywardToken returns the keyward token for scope with the highest version (the newest
// enrollment, which is the one `volumectl rotate` leaves behind), or ErrNoToken. An empty scope
// matches any keyward token.
func (v *Volume) FindKeywardToken(scope string) (int, KeywardToken, error) {
	toks, err := v.KeywardTokens()
	if err != nil {
		return 0, KeywardToken{}, err
	}
	best := -1
	for _, id := range sortedKeys(toks) {
		t := toks[id]
		if scope != "" && t.Scope != scope || len(t.Keyslots) == 0 {
			continue
		}
		if best < 0 || t.Version > toks[best].Version {
			best = id
		}
	}
	if best < 0 {
		return 0, KeywardToken{}, fmt.Errorf("%w: no keyward token for scope %q", ErrNoToken, scope)
	}
	return best, toks[best], nil
}

// AddKeyslot adds a keyslot for volumeKey (checked against the volume's digest first) that opens with
// passphrase, and returns its id. See the write order above.
func (v *Volume) AddKeyslot(w io.WriterAt, volumeKey *memsafe.Key, passphrase []byte, p KeyslotParams) (int, error) {
	slot, _, err := v.addKeyslot(w, volumeKey, passphrase, p, nil)
	return slot, err
}

// AddKeywardKeyslot adds a keyslot as AddKeyslot does and, in the same header update, a keyward
// token naming it with scope and version. It returns the keyslot and token ids.
func (v *Volume) AddKeywardKeyslot(w io.WriterAt, volumeKey *memsafe.Key, passphrase []byte, p KeyslotParams, scope string, version int) (slot, token int, err error) {
	if scope == "" {
		return 0, 0, errors.New("luks2: empty token scope")
	}
	return v.addKeyslot(w, volumeKey, passphrase, p, &KeywardToken{Scope: scope, Version: version})
}

func (v *Volume) addKeyslot(w io.WriterAt, volumeKey *memsafe.Key, passphrase []byte, p KeyslotParams, tok *KeywardToken) (int, int, error) {
	ok, err := v.VerifyKey(volumeKey)
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		return 0, 0, errors.New("luks2: the given key is not this volume's key")
	}
	slot := p.Slot
	if slot < 0 {
		if slot = firstFree(v.meta.Keyslots, maxKeyslots); slot < 0 {
			return 0, 0, fmt.Errorf("%w: all %d keyslots in use", ErrNoKeyslot, maxKeyslots)
		}
	} else if _, used := v.meta.Keyslots[slot]; used || slot >= maxKeyslots {
		return 0, 0, fmt.Errorf("luks2: keyslot %d is in use or out of range", slot)
	}
	kdf, err := newKDF(p.KDF)
	if err != nil {
		return 0, 0, err
	}
	keySize := volumeKey.Len()
	matLen := keySize * newStripes
	areaSize := roundUp(uint64(matLen), areaAlign)
	off, err := v.freeArea(areaSize)
	if err != nil {
		return 0, 0, err
	}

	// 1. Key material into unreferenced space.
	area := make([]byte, areaSize)
	defer clear(area) // holds the split key in the clear until encrypted
	if err := v.sealMaterial(area, matLen, volumeKey, passphrase, kdf); err != nil {
		return 0, 0, err
	}
	if _, err := w.WriteAt(area, int64(off)); err != nil {
		return 0, 0, fmt.Errorf("luks2: write keyslot area: %w", err)
	}
	if err := syncIfCan(w); err != nil {
		return 0, 0, err
	}

	// 2-3. Metadata, both copies.
	e, err := v.edit()
	if err != nil {
		return 0, 0, err
	}
	jk := map[string]any{
		"type":     "luks2",
		"key_size": keySize,
		"af":       map[string]any{"type": "luks1", "stripes": newStripes, "hash": newAFHash},
		"area": map[string]any{"type": "raw", "offset": u64(off), "size": u64(areaSize),
			"encryption": newAreaCipher, "key_size": newAreaKeySize},
		"kdf": kdfJSON(kdf),
	}
	if p.HighPriority {
		jk["priority"] = 2
	}
	if err := e.set("keyslots", slot, jk); err != nil {
		return 0, 0, err
	}
	did, err := v.segmentDigestID()
	if err != nil {
		return 0, 0, err
	}
	if err := e.editRefs("digests", did, func(ids []int) []int { return append(ids, slot) }); err != nil {
		return 0, 0, err
	}
	tokID := -1
	if tok != nil {
		if tokID = firstFree(v.meta.Tokens, maxTokens); tokID < 0 {
			return 0, 0, fmt.Errorf("%w: all %d tokens in use", ErrNoToken, maxTokens)
		}
		if err := e.set("tokens", tokID, jsonKeywardToken{Type: TokenTypeKeyward,
			Keyslots: []string{strconv.Itoa(slot)}, Scope: tok.Scope, Version: tok.Version}); err != nil {
			return 0, 0, err
		}
	}
	if err := v.commit(w, e); err != nil {
		return 0, 0, err
	}
	return slot, tokID, nil
}

// sealMaterial fills area[:matLen] with the AF-split volume key, then encrypts the sectors that hold
// it under the KDF of passphrase. The rest of the area is random, so a new keyslot area looks the
// same whatever was there before.
func (v *Volume) sealMaterial(area []byte, matLen int, volumeKey *memsafe.Key, passphrase []byte, kdf KDF) error {
	if _, err := rand.Read(area); err != nil {
		return err
	}
	err := volumeKey.Use(func(k []byte) error {
		return af.Split(area[:matLen], k, newStripes, hashFunc(newAFHash), rand.Reader)
	})
	if err != nil {
		return err
	}
	areaKey := make([]byte, newAreaKeySize)
	defer clear(areaKey)
	if err := deriveKDF(areaKey, passphrase, kdf); err != nil {
		return err
	}
	c, err := sectorcipher.New(newAreaCipher, areaKey)
	if err != nil {
		return err
	}
	for i := uint64(0); i < roundUp(uint64(matLen), 512)/512; i++ {
		s := area[i*512 : (i+1)*512]
		c.Encrypt(s, s, i)
	}
	return nil
}

func newKDF(k KDF) (KDF, error) {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return KDF{}, err
	}
	out := KDF{Type: k.Type, Salt: salt}
	switch k.Type {
	case "pbkdf2":
		out.Hash = k.Hash
		if out.Hash == "" {
			out.Hash = "sha256"
		}
		if hashFunc(out.Hash) == nil {
			return KDF{}, &UnsupportedError{Feature: "kdf hash", Value: out.Hash}
		}
		if k.Iterations < 1000 || k.Iterations > maxIterations {
			// 1000 is cryptsetup's floor; below it a low-entropy passphrase is too cheap to guess.
			return KDF{}, fmt.Errorf("luks2: pbkdf2 iterations %d (minimum 1000)", k.Iterations)
		}
		out.Iterations = k.Iterations
	case "argon2i", "argon2id":
		if k.Time < 1 || k.Memory < 32 || k.Memory > maxArgonMemory || k.CPUs < 1 || k.CPUs > maxArgonCPUs {
			return KDF{}, fmt.Errorf("luks2: argon2 time %d memory %d cpus %d out of range", k.Time, k.Memory, k.CPUs)
		}
		out.Time, out.Memory, out.CPUs = k.Time, k.Memory, k.CPUs
	default:
		return KDF{}, &UnsupportedError{Feature: "kdf", Value: k.Type}
	}
	return out, nil
}

func kdfJSON(k KDF) map[string]any {
	if k.Type == "pbkdf2" {
		return map[string]any{"type": k.Type, "hash": k.Hash, "iterations": k.Iterations, "salt": k.Salt}
	}
	return map[string]any{"type": k.Type, "time": k.Time, "memory": k.Memory, "cpus": k.CPUs, "salt": k.Salt}
}

// freeArea finds the lowest 4096-aligned region of size bytes in the keyslots area that no keyslot
// uses.
func (v *Volume) freeArea(size uint64) (uint64, error) {
	start := 2 * v.hdr.HdrSize
	end := start + v.meta.Config.KeyslotsSize
	off := roundUp(start, areaAlign)
	for _, u := range areaSpans(v.meta.Keyslots) {
		if off+size <= u.off {
			break
		}
		off = max(off, roundUp(u.end, areaAlign))
	}
	if off+size > end {
		return 0, fmt.Errorf("%w: no free %d-byte region", ErrNoSpace, size)
	}
	return off, nil
}

// RemoveKeyslot removes keyslot slot from the metadata (and from the digest and every token that
// names it; a keyward token left without keyslots is removed too), then wipes its area. It refuses to
// remove the last keyslot that opens the data segment: that would lose the volume.
func (v *Volume) RemoveKeyslot(w io.WriterAt, slot int) error {
	ks, ok := v.meta.Keyslots[slot]
	if !ok {
		return fmt.Errorf("%w: %d", ErrNoKeyslot, slot)
	}
	did, err := v.segmentDigestID()
	if err != nil {
		return err
	}
	if d := v.meta.Digests[did]; slices.Equal(d.Keyslots, []int{slot}) {
		return fmt.Errorf("luks2: keyslot %d is the last one that opens the volume", slot)
	}
	e, err := v.edit()
	if err != nil {
		return err
	}
	delete(e.sec["keyslots"], strconv.Itoa(slot))
	drop := func(ids []int) []int { return slices.DeleteFunc(ids, func(i int) bool { return i == slot }) }
	for id, d := range v.meta.Digests {
		if slices.Contains(d.Keyslots, slot) {
			if err := e.editRefs("digests", id, drop); err != nil {
				return err
			}
		}
	}
	for id, t := range v.meta.Tokens {
		if !slices.Contains(t.Keyslots, slot) {
			continue
		}
		if t.Type == TokenTypeKeyward && len(t.Keyslots) == 1 {
			delete(e.sec["tokens"], strconv.Itoa(id))
			continue
		}
		if err := e.editRefs("tokens", id, drop); err != nil {
			return err
		}
	}
	if err := v.commit(w, e); err != nil {
		return err
	}
	// Only now that no copy references it: wipe the area (random, not zeros, as cryptsetup does, so
	// the wiped area reveals nothing about its former use).
	if ks.Area.Size > 0 {
		junk := make([]byte, ks.Area.Size)
		if _, err := rand.Read(junk); err != nil {
			return err
		}
		if _, err := w.WriteAt(junk, int64(ks.Area.Offset)); err != nil {
			return fmt.Errorf("luks2: wipe keyslot area: %w", err)
		}
		return syncIfCan(w)
	}
	return nil
}

// AddToken adds a token (a JSON object with a string "type" and a "keyslots" array of existing keyslot
// ids as strings) under the lowest free id, and returns that id. Token types starting with "luks2-"
// are cryptsetup's own and are refused.
func (v *Volume) AddToken(w io.WriterAt, token []byte) (int, error) {
	var jt jsonToken
	if err := json.Unmarshal(token, &jt); err != nil || jt.Type == nil {
		return 0, errors.New("luks2: token is not a JSON object with a string type")
	}
	if len(*jt.Type) >= 6 && (*jt.Type)[:6] == "luks2-" {
		return 0, fmt.Errorf("luks2: token type %q is reserved", *jt.Type)
	}
	ids, ok := parseIDs(jt.Keyslots, maxKeyslots)
	if !ok {
		return 0, errors.New("luks2: token keyslots must be distinct keyslot ids as strings")
	}
	for _, id := range ids {
		if _, ok := v.meta.Keyslots[id]; !ok {
			return 0, fmt.Errorf("%w: %d", ErrNoKeyslot, id)
		}
	}
	id := firstFree(v.meta.Tokens, maxTokens)
	if id < 0 {
		return 0, fmt.Errorf("%w: all %d tokens in use", ErrNoToken, maxTokens)
	}
	e, err := v.edit()
	if err != nil {
		return 0, err
	}
	if err := e.set("tokens", id, json.RawMessage(token)); err != nil {
		return 0, err
	}
	return id, v.commit(w, e)
}

// RemoveToken removes token id. Keyslots are left alone.
func (v *Volume) RemoveToken(w io.WriterAt, id int) error {
	if _, ok := v.meta.Tokens[id]; !ok {
		return fmt.Errorf("%w: %d", ErrNoToken, id)
	}
	e, err := v.edit()
	if err != nil {
		return err
	}
	delete(e.sec["tokens"], strconv.Itoa(id))
	return v.commit(w, e)
}

// Rewrite writes the metadata in use to both copies with seqid+1: the explicit repair of a damaged,
// stale or diverging copy that Open reports but never performs on its own.
func (v *Volume) Rewrite(w io.WriterAt) error {
	e, err := v.edit()
	if err != nil {
		return err
	}
	return v.commit(w, e)
}

// Backup copies the whole header area (both copies and the keyslots area, HeaderAreaSize bytes) to
// dst, as `cryptsetup luksHeaderBackup` does; `cryptsetup luksHeaderRestore` accepts the result.
func (v *Volume) Backup(dst io.Writer) (int64, error) {
	n, err := io.Copy(dst, io.NewSectionReader(v.r, 0, v.HeaderAreaSize()))
	if err != nil {
		return n, fmt.Errorf("luks2: header backup: %w", err)
	}
	return n, nil
}

// BackupToFile writes Backup to a new file at path (mode 0600, never overwriting: a backup taken
// before a write must not replace the last good one) and syncs it before returning.
func (v *Volume) BackupToFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("luks2: header backup: %w", err)
	}
	if _, err := v.Backup(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("luks2: header backup: %w", err)
	}
	return f.Close()
}

func (v *Volume) segmentDigestID() (int, error) {
	seg, _ := v.DataSegment()
	for _, id := range sortedKeys(v.meta.Digests) {
		if slices.Contains(v.meta.Digests[id].Segments, seg) {
			return id, nil
		}
	}
	return 0, fmt.Errorf("luks2: no digest for data segment %d", seg)
}

func firstFree[V any](m map[int]V, limit int) int {
	for i := 0; i < limit; i++ {
		if _, used := m[i]; !used {
			return i
		}
	}
	return -1
}

func syncIfCan(w io.WriterAt) error {
	if s, ok := w.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("luks2: sync: %w", err)
		}
	}
	return nil
}

// editor edits the metadata as raw JSON so that everything this package does not model (unknown
// token fields, keyslot fields cryptsetup may add later) survives a rewrite unchanged.
type editor struct {
	top map[string]json.RawMessage
	sec map[string]map[string]json.RawMessage // keyslots, tokens, digests
}

func (v *Volume) edit() (*editor, error) {
	e := &editor{sec: map[string]map[string]json.RawMessage{}}
	if err := json.Unmarshal(v.js, &e.top); err != nil {
		return nil, err
	}
	for _, s := range []string{"keyslots", "tokens", "digests"} {
		m := map[string]json.RawMessage{}
		if err := json.Unmarshal(e.top[s], &m); err != nil {
			return nil, err
		}
		e.sec[s] = m
	}
	return e, nil
}

func (e *editor) set(section string, id int, val any) error {
	b, err := json.Marshal(val)
	if err != nil {
		return err
	}
	e.sec[section][strconv.Itoa(id)] = b
	return nil
}

// editRefs rewrites the "keyslots" list of object id in section with fn.
func (e *editor) editRefs(section string, id int, fn func([]int) []int) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(e.sec[section][strconv.Itoa(id)], &obj); err != nil {
		return err
	}
	var ss []string
	if err := json.Unmarshal(obj["keyslots"], &ss); err != nil {
		return err
	}
	ids, ok := parseIDs(ss, maxKeyslots)
	if !ok {
		return perr(-1, section+"."+strconv.Itoa(id), "bad keyslot reference")
	}
	ids = fn(ids)
	slices.Sort(ids)
	ss = ss[:0]
	for _, i := range ids {
		ss = append(ss, strconv.Itoa(i))
	}
	if ss == nil {
		ss = []string{}
	}
	b, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	obj["keyslots"] = b
	return e.set(section, id, obj)
}

func (e *editor) marshal() ([]byte, error) {
	for s, m := range e.sec {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		e.top[s] = b
	}
	return json.Marshal(e.top)
}

// commit writes the edited metadata to both copies with seqid+1 (secondary first, see the write order
// above) and reloads the volume from its reader.
func (v *Volume) commit(w io.WriterAt, e *editor) error {
	js, err := e.marshal()
	if err != nil {
		return err
	}
	// The same validation Open applies: never write metadata we would refuse to read.
	if _, err := parseMetadata(js, v.hdr.HdrSize); err != nil {
		return fmt.Errorf("luks2: refusing to write invalid metadata: %w", err)
	}
	seq := max(v.report.Primary.SeqID, v.report.Secondary.SeqID, v.hdr.SeqID) + 1
	for _, secondary := range []bool{true, false} {
		h := v.hdr
		h.Secondary = secondary
		h.SeqID = seq
		i := 0
		if secondary {
			i = 1
			h.HdrOffset = h.HdrSize
		} else {
			h.HdrOffset = 0
		}
		h.Salt = v.salts[i]
		if h.Salt == [64]byte{} {
			if _, err := rand.Read(h.Salt[:]); err != nil {
				return err
			}
		}
		area, err := encodeArea(&h, js)
		if err != nil {
			return err
		}
		if _, err := w.WriteAt(area, int64(h.HdrOffset)); err != nil {
			return fmt.Errorf("luks2: write header copy at %d: %w", h.HdrOffset, err)
		}
		if err := syncIfCan(w); err != nil {
			return err
		}
	}
	nv, err := Open(v.r)
	if err != nil {
		return fmt.Errorf("luks2: re-read after write: %w", err)
	}
	if !nv.report.Healthy() || nv.hdr.SeqID != seq {
		return fmt.Errorf("luks2: re-read after write: header copies not both current (seqid %d, want %d)", nv.hdr.SeqID, seq)
	}
	*v = *nv
	return nil
}
