package backend

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/keyward/keyward/keyagent/backend/internal/kwp"
	"github.com/keyward/keyward/keyagent/kdf"
	"github.com/keyward/keyward/memsafe"
)

// Backup blob format, version 1 (all integers big-endian):
//
//	offset  size  field
//	0       4     magic "KWBK"
//	4       1     format version, 0x01
//	5       1     content type, 0x01 = derived data key
//	6       2     scope length S (1..kdf.MaxScopeLen)
//	8       S     scope, UTF-8, a valid kdf scope
//	8+S     4     keyring version (>= 1)
//	12+S    2     key size in bits (256 or 512)
//	14+S    3     KCV of the data key (kdf.KCV)
//	17+S    W     AES-KWP (RFC 5649) under the customer's AES-256 key of: bytes 0..17+S (the header above)
//	              followed by the data key; W = 8 + roundup8(17+S+bits/8)
//
// The header is repeated inside the wrapped part so that it is authenticated: a blob whose visible
// scope or version was edited does not restore. The wrapped part extends to the end of the blob, so there
// are no trailing bytes by construction; a wrapped part of the wrong length is a ParseError. A customer
// can open a blob without Keyward: `tail -c +$((18+S))` then `openssl enc -d -id-aes256-wrap-pad -K <hex>
// -iv A65959A6`, and the last bits/8 bytes are the key.
const (
	backupMagic       = "KWBK"
	backupVersion     = 1
	backupTypeDataKey = 1
)

// ParseError is a malformed backup blob (or BYOK bundle).
type ParseError struct {
	What   string // "backup" or "bundle"
	Offset int
	Msg    string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("malformed %s at byte %d: %s", e.What, e.Offset, e.Msg)
}

// Is makes every ParseError match ErrBadInput.
func (e *ParseError) Is(target error) bool { return target == ErrBadInput }

// BackupHeader is the public part of a backup blob.
type BackupHeader struct {
	Scope   string
	Version int
	Bits    int
	KCV     string
}

// ParseBackup parses a blob's header without unwrapping it; it returns the header and the wrapped part.
func ParseBackup(blob []byte) (BackupHeader, []byte, error) {
	perr := func(off int, format string, a ...any) error {
		return &ParseError{What: "backup", Offset: off, Msg: fmt.Sprintf(format, a...)}
	}
	var h BackupHeader
	if len(blob) < 8 {
		return h, nil, perr(len(blob), "truncated header")
	}
	if string(blob[:4]) != backupMagic {
		return h, nil, perr(0, "not a Keyward backup (bad magic)")
	}
	if blob[4] != backupVersion {
		return h, nil, perr(4, "unknown format version %d", blob[4])
	}
	if blob[5] != backupTypeDataKey {
		return h, nil, perr(5, "unknown content type %d", blob[5])
	}
	s := int(binary.BigEndian.Uint16(blob[6:8]))
	if s == 0 || s > kdf.MaxScopeLen {
		return h, nil, perr(6, "scope length %d out of range", s)
	}
	if len(blob) < 17+s {
		return h, nil, perr(len(blob), "truncated header")
	}
	h.Scope = string(blob[8 : 8+s])
	if _, err := kdf.ParseScope(h.Scope); err != nil {
		return h, nil, perr(8, "%v", err)
	}
	v := binary.BigEndian.Uint32(blob[8+s:])
	if v == 0 || v > 1<<31-1 {
		return h, nil, perr(8+s, "keyring version %d out of range", v)
	}
	h.Version = int(v)
	h.Bits = int(binary.BigEndian.Uint16(blob[12+s:]))
	if kdf.CheckBits(h.Bits) != nil {
		return h, nil, perr(12+s, "key size %d bits not supported", h.Bits)
	}
	h.KCV = hex.EncodeToString(blob[14+s : 17+s])
	wrapped := blob[17+s:]
	if want := 8 + (17+s+h.Bits/8+7)&^7; len(wrapped) != want {
		return h, nil, perr(17+s, "wrapped part is %d bytes, want %d", len(wrapped), want)
	}
	return h, wrapped, nil
}

func checkWrapKey(wrapKey *memsafe.Key) error {
	if wrapKey == nil || wrapKey.Len() != 32 {
		return fmt.Errorf("%w: the backup key must be a raw 32-byte AES-256 key", ErrBadInput)
	}
	return nil
}

// SealBackup wraps the data key dk (derived for scope at version) under wrapKey.
func SealBackup(scope string, version int, dk, wrapKey *memsafe.Key) ([]byte, error) {
	if err := checkWrapKey(wrapKey); err != nil {
		return nil, err
	}
	if _, err := kdf.ParseScope(scope); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	bits := dk.Len() * 8
	if err := kdf.CheckBits(bits); err != nil || version < 1 {
		return nil, fmt.Errorf("%w: bad data key size or version", ErrBadInput)
	}
	kcv, err := kdf.KCV(dk)
	if err != nil {
		return nil, err
	}
	kcvb, _ := hex.DecodeString(kcv)
	hdr := []byte(backupMagic)
	hdr = append(hdr, backupVersion, backupTypeDataKey)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(scope)))
	hdr = append(hdr, scope...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(version))
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(bits))
	hdr = append(hdr, kcvb...)
	var wrapped []byte
	err = wrapKey.Use(func(kek []byte) error {
		return dk.Use(func(k []byte) error {
			pt := make([]byte, 0, len(hdr)+len(k))
			pt = append(append(pt, hdr...), k...)
			defer clear(pt)
			var err error
			wrapped, err = kwp.Wrap(kek, pt)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("seal backup: %w", err)
	}
	return append(hdr, wrapped...), nil
}

// OpenBackup parses and unwraps a blob under wrapKey and checks its KCV. Restored.Verified is false.
func OpenBackup(blob []byte, wrapKey *memsafe.Key) (Restored, error) {
	if err := checkWrapKey(wrapKey); err != nil {
		return Restored{}, err
	}
	h, wrapped, err := ParseBackup(blob)
	if err != nil {
		return Restored{}, err
	}
	hdr := blob[:len(blob)-len(wrapped)]
	var dk *memsafe.Key
	err = wrapKey.Use(func(kek []byte) error {
		pt, err := kwp.Unwrap(kek, wrapped)
		if err != nil {
			return fmt.Errorf("%w: backup does not open under this key (wrong key or corrupted blob)", ErrBadInput)
		}
		defer clear(pt)
		if len(pt) != len(hdr)+h.Bits/8 || subtle.ConstantTimeCompare(pt[:len(hdr)], hdr) != 1 {
			return fmt.Errorf("%w: backup header does not match its wrapped copy (edited blob)", ErrBadInput)
		}
		dk, err = memsafe.FromBytes(pt[len(hdr):])
		return err
	})
	if err != nil {
		return Restored{}, err
	}
	kcv, err := kdf.KCV(dk)
	if err != nil || kcv != h.KCV {
		dk.Destroy()
		return Restored{}, fmt.Errorf("%w: backup key check value mismatch", ErrBadInput)
	}
	return Restored{Scope: h.Scope, Version: h.Version, Bits: h.Bits, KCV: h.KCV, Key: dk}, nil
}

// Deriver is the part of Backend that backups need.
type Deriver interface {
	Derive(ctx context.Context, scope string, version int, bits int, forEncrypt bool) (*memsafe.Key, int, error)
}

// ExportBackup implements Backend.ExportBackup on top of d.Derive; backends delegate to it.
func ExportBackup(ctx context.Context, d Deriver, scope string, version, bits int, wrapKey *memsafe.Key) ([]byte, int, error) {
	if !strings.Contains(scope, ":") {
		return nil, 0, fmt.Errorf("%w: backup of keyring %q itself: keyring secrets are non-extractable; "+
			"back up the HSM (or the sealed store file) or keep the BYOK original; "+
			"data keys can be exported with a <keyring>:<name> scope", ErrUnsupported, scope)
	}
	if err := checkWrapKey(wrapKey); err != nil {
		return nil, 0, err
	}
	dk, v, err := d.Derive(ctx, scope, version, bits, false)
	if err != nil {
		return nil, 0, err
	}
	defer dk.Destroy()
	blob, err := SealBackup(scope, v, dk, wrapKey)
	return blob, v, err
}

// RestoreBackup implements Backend.RestoreBackup on top of d.Derive; backends delegate to it.
func RestoreBackup(ctx context.Context, d Deriver, blob []byte, wrapKey *memsafe.Key) (Restored, error) {
	r, err := OpenBackup(blob, wrapKey)
	if err != nil {
		return Restored{}, err
	}
	cur, _, err := d.Derive(ctx, r.Scope, r.Version, r.Bits, false)
	switch {
	case errors.Is(err, ErrNotFound):
		return r, nil // the keyring version is gone: the backup is all that is left
	case err != nil:
		r.Key.Destroy()
		return Restored{}, err
	}
	defer cur.Destroy()
	if !cur.Equal(r.Key) {
		r.Key.Destroy()
		return Restored{}, fmt.Errorf("%w: backup of %s@%d does not match the key this backend derives (another keyring with the same name?)",
			ErrBadInput, r.Scope, r.Version)
	}
	r.Verified = true
	return r, nil
}

// CheckName validates a keyring name, [a-z0-9][a-z0-9_.-]{0,62}.
func CheckName(name string) error {
	if err := kdf.CheckKeyring(name); err != nil {
		return fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	return nil
}

// CheckScope validates a scope and returns its parts.
func CheckScope(scope string) (kdf.Scope, error) {
	s, err := kdf.ParseScope(scope)
	if err != nil {
		return s, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	return s, nil
}

// SplitBundle splits a BYOK bundle, RSA-OAEP(ephemeral key) || AES-KWP(secret), for an RSA key of
// rsaBytes bytes, and checks the wrapped secret's length for kind: derive secrets are 32 to 64 bytes
// (HMAC-SHA256 keys shorter than 32 bytes would weaken the PRF), hsm-aead secrets exactly 32 bytes.
func SplitBundle(bundle []byte, rsaBytes int, kind Kind) (wrappedEph, wrappedSecret []byte, err error) {
	perr := func(off int, format string, a ...any) error {
		return &ParseError{What: "bundle", Offset: off, Msg: fmt.Sprintf(format, a...)}
	}
	minW, maxW := 40, 72
	if kind == KindHSMAEAD {
		maxW = 40
	}
	n := len(bundle) - rsaBytes
	switch {
	case n < minW || n > maxW || n%8 != 0:
		return nil, nil, perr(rsaBytes, "bundle is %d bytes: want %d bytes of RSA-OAEP then %d to %d bytes of AES-KWP (a %s secret of %d to %d bytes)",
			len(bundle), rsaBytes, minW, maxW, kind, minW-8, maxW-8)
	}
	return bundle[:rsaBytes], bundle[rsaBytes:], nil
}

// SecretSizeOK reports whether an unwrapped secret's length suits kind.
func SecretSizeOK(kind Kind, n int) bool {
	if kind == KindHSMAEAD {
		return n == 32
	}
	return n >= 32 && n <= 64
}
