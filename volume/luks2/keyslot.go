package luks2

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sort"
	"strconv"

	"golang.org/x/crypto/argon2"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/volume/luks2/internal/af"
	"github.com/keyward/keyward/volume/luks2/internal/pbkdf2"
	"github.com/keyward/keyward/volume/luks2/internal/sectorcipher"
)

// hashFunc maps the specification's hash names to constructors; nil means unsupported. sha1 stays
// because LUKS1-converted volumes use it for their digest and cryptsetup for old AF hashes; it is
// used only inside PBKDF2/HMAC and the AF diffusion, where its collision weakness does not apply.
func hashFunc(name string) func() hash.Hash {
	switch name {
	case "sha1":
		return sha1.New
	case "sha256":
		return sha256.New
	case "sha512":
		return sha512.New
	}
	return nil
}

// usable checks that keyslot slot can be opened by this package and is bound to a data segment,
// returning its digest.
func (v *Volume) usable(slot int) (Keyslot, Digest, error) {
	ks, ok := v.meta.Keyslots[slot]
	if !ok {
		return ks, Digest{}, fmt.Errorf("%w: %d", ErrNoKeyslot, slot)
	}
	field := "keyslot " + strconv.Itoa(slot)
	if ks.Type != "luks2" {
		return ks, Digest{}, &UnsupportedError{Feature: field + " type", Value: ks.Type}
	}
	switch ks.KDF.Type {
	case "pbkdf2":
		if hashFunc(ks.KDF.Hash) == nil {
			return ks, Digest{}, &UnsupportedError{Feature: field + " kdf hash", Value: ks.KDF.Hash}
		}
	case "argon2i", "argon2id":
	default:
		return ks, Digest{}, &UnsupportedError{Feature: field + " kdf", Value: ks.KDF.Type}
	}
	if ks.AF.Type != "luks1" {
		return ks, Digest{}, &UnsupportedError{Feature: field + " af", Value: ks.AF.Type}
	}
	if hashFunc(ks.AF.Hash) == nil {
		return ks, Digest{}, &UnsupportedError{Feature: field + " af hash", Value: ks.AF.Hash}
	}
	if ks.Area.Type != "raw" {
		return ks, Digest{}, &UnsupportedError{Feature: field + " area", Value: ks.Area.Type}
	}
	// The keyslot area cipher matters as much as the segment's: with cipher_null the stored
	// material does not depend on the passphrase, so a forged keyslot would open with any
	// passphrase and hand us a volume key of the forger's choosing.
	if !sectorcipher.Supported(ks.Area.Encryption, ks.Area.KeySize) {
		return ks, Digest{}, &UnsupportedError{Feature: field + " area encryption",
			Value: fmt.Sprintf("%s/%d", ks.Area.Encryption, 8*ks.Area.KeySize)}
	}
	did, ok := v.meta.DigestFor(slot)
	if !ok {
		return ks, Digest{}, fmt.Errorf("luks2: keyslot %d has no digest", slot)
	}
	d := v.meta.Digests[did]
	seg, _ := v.DataSegment()
	if !slices.Contains(d.Segments, seg) {
		// An unbound keyslot holds some key, but not the data segment's.
		return ks, Digest{}, fmt.Errorf("luks2: keyslot %d is not bound to data segment %d", slot, seg)
	}
	return ks, d, nil
}

// OpenKeyslot derives the keyslot key from passphrase, decrypts and merges keyslot slot and checks
// the result against the volume key digest. Any authentication failure returns ErrWrongPassphrase.
// The caller owns the returned key and must Destroy it.
//
// Only this one keyslot is tried, so a caller that knows which keyslot it enrolled never runs the
// (deliberately slow) KDF of the others.
func (v *Volume) OpenKeyslot(passphrase []byte, slot int) (*memsafe.Key, error) {
	ks, d, err := v.usable(slot)
	if err != nil {
		return nil, err
	}
	return v.openKeyslot(passphrase, ks, d)
}

// OpenAnyKeyslot tries every usable keyslot in cryptsetup's order (priority high, then normal, each
// by id; priority "ignore" is skipped) and returns the volume key and the keyslot that opened.
// Keyslots this package does not support are skipped; if none opens, the error is
// ErrWrongPassphrase.
func (v *Volume) OpenAnyKeyslot(passphrase []byte) (*memsafe.Key, int, error) {
	ids := sortedKeys(v.meta.Keyslots)
	sort.SliceStable(ids, func(i, j int) bool {
		return v.meta.Keyslots[ids[i]].Priority > v.meta.Keyslots[ids[j]].Priority
	})
	for _, id := range ids {
		if v.meta.Keyslots[id].Priority == 0 {
			continue
		}
		ks, d, err := v.usable(id)
		if err != nil {
			continue
		}
		k, err := v.openKeyslot(passphrase, ks, d)
		if err == nil {
			return k, id, nil
		}
		if !errors.Is(err, ErrWrongPassphrase) {
			return nil, 0, err
		}
	}
	return nil, 0, ErrWrongPassphrase
}

func (v *Volume) openKeyslot(passphrase []byte, ks Keyslot, d Digest) (*memsafe.Key, error) {
	// Every intermediate lives in a heap slice wiped on return; only the verified volume key moves
	// into locked memory (memsafe.FromBytes wipes its source).
	areaKey := make([]byte, ks.Area.KeySize)
	defer clear(areaKey)
	if err := deriveKDF(areaKey, passphrase, ks.KDF); err != nil {
		return nil, err
	}
	n := roundUp(uint64(ks.KeySize)*uint64(ks.AF.Stripes), 512)
	material := make([]byte, n)
	defer clear(material)
	if _, err := v.r.ReadAt(material, int64(ks.Area.Offset)); err != nil {
		return nil, fmt.Errorf("luks2: read keyslot area: %w", err)
	}
	c, err := sectorcipher.New(ks.Area.Encryption, areaKey)
	if err != nil {
		return nil, err
	}
	for i := uint64(0); i < n/512; i++ {
		s := material[i*512 : (i+1)*512]
		c.Decrypt(s, s, i)
	}
	vk := make([]byte, ks.KeySize)
	if err := af.Merge(vk, material, ks.AF.Stripes, hashFunc(ks.AF.Hash)); err != nil {
		clear(vk)
		return nil, err
	}
	ok, err := checkDigest(vk, d)
	if err != nil || !ok {
		clear(vk)
		if err != nil {
			return nil, err
		}
		return nil, ErrWrongPassphrase
	}
	return memsafe.FromBytes(vk)
}

// checkDigest compares PBKDF2(key) with the stored digest over the stored digest's length (20 bytes
// on volumes converted from LUKS1, 32 on native LUKS2), in constant time.
func checkDigest(key []byte, d Digest) (bool, error) {
	got := make([]byte, len(d.Digest))
	if err := pbkdf2.Key(got, key, d.Salt, d.Iterations, hashFunc(d.Hash)); err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, d.Digest) == 1, nil
}

// deriveKDF fills dst with the keyslot KDF of passphrase.
func deriveKDF(dst, passphrase []byte, k KDF) error {
	switch k.Type {
	case "pbkdf2":
		return pbkdf2.Key(dst, passphrase, k.Salt, k.Iterations, hashFunc(k.Hash))
	case "argon2i", "argon2id":
		prefaultHeap(int(k.Memory) * 1024)
		var out []byte
		if k.Type == "argon2i" {
			out = argon2.Key(passphrase, k.Salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(len(dst)))
		} else {
			out = argon2.IDKey(passphrase, k.Salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(len(dst)))
		}
		copy(dst, out)
		clear(out)
		return nil
	}
	return &UnsupportedError{Feature: "kdf", Value: k.Type}
}

// VerifyKey reports whether key is the volume key of the data segment (checked against its digest).
func (v *Volume) VerifyKey(key *memsafe.Key) (bool, error) {
	did, err := v.segmentDigestID()
	if err != nil {
		return false, err
	}
	d := v.meta.Digests[did]
	var ok bool
	err = key.Use(func(b []byte) error {
		var err error
		ok, err = checkDigest(b, d)
		return err
	})
	return ok, err
}

// DecryptSector reads data sector n of the data segment (sectors of the segment's sector_size,
// counted from the segment start) and decrypts it into dst, which must be exactly one sector long.
// The IV counts 512-byte units whatever the sector size (LUKS2 does not set dm-crypt's
// iv_large_sectors): iv = n*sector_size/512 + iv_tweak.
//
// It is meant for tests and recovery tools; the kernel does the bulk work after activation.
func (v *Volume) DecryptSector(key *memsafe.Key, n uint64, dst []byte) error {
	_, seg := v.DataSegment()
	ss := uint64(seg.SectorSize)
	if uint64(len(dst)) != ss {
		return fmt.Errorf("luks2: dst is %d bytes, the sector size is %d", len(dst), ss)
	}
	if !seg.Dynamic && (n+1)*ss > seg.Size {
		return fmt.Errorf("luks2: sector %d beyond the segment end", n)
	}
	if _, err := v.r.ReadAt(dst, int64(seg.Offset+n*ss)); err != nil {
		return fmt.Errorf("luks2: read sector %d: %w", n, err)
	}
	return key.Use(func(k []byte) error {
		c, err := sectorcipher.New(seg.Encryption, k)
		if err != nil {
			return &UnsupportedError{Feature: "segment encryption", Value: fmt.Sprintf("%s/%d", seg.Encryption, 8*len(k))}
		}
		c.Decrypt(dst, dst, n*ss/512+seg.IVTweak)
		return nil
	})
}
