// Package backend defines the key backend: the one small interface through which the key service (and the
// embedded agent) reaches keyrings, whatever stores them. Two implementations exist, each running the
// contract suite in backendtest: pkcs11 (any PKCS#11 HSM; SoftHSM2 in tests) and soft (a sealed file).
//
// # Key model
//
// A keyring is a named sequence of secret versions 1..n. A version is active (usable for everything),
// disabled (usable to decrypt or re-derive existing data, refused for new encryption) or destroyed (its
// secret is gone for good; the version number is never reused). Kinds:
//
//   - derive: a 256-bit HMAC-SHA256 key. Data keys are DK = kdf.Derive(HMAC(secret, ·), scope, bits), see
//     package kdf for the exact, stable definition. The secret itself never leaves the backend.
//   - hsm-aead: a 256-bit AES key used for AES-256-GCM inside the backend (Encrypt/Decrypt).
//
// # Guarantees
//
//   - Derivation is deterministic: the same keyring version and scope give the same data key in every
//     process and on every backend holding that secret (the key service keeps no state of its own).
//   - Data keys are returned only as *memsafe.Key; no error produced by a backend contains key material.
//   - Errors wrap the sentinels below so callers can branch with errors.Is.
//
// # Not guaranteed
//
//   - Backends do not authorize: the caller (the key service's grants, the agent's policy) decides who
//     may derive what.
//   - Version metadata changed by another process sharing the same store may be seen with a delay (see
//     each implementation's documentation).
//
// # Backup
//
// ExportBackup wraps a derived data key with AES-KWP (RFC 5649) under a customer key, in the format of
// MarshalBackup; RestoreBackup unwraps it and checks it. Keyring secrets themselves are not exportable
// (they are non-extractable in the HSM): they are backed up at the store level (HSM backup/cloning, or a
// copy of the sealed file, which stays encrypted under its passphrase), or kept by the customer as the
// original of a BYOK import. Asking for a keyring-level backup returns ErrUnsupported saying so.
package backend

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/memsafe"
)

// Sentinel errors; every backend error wraps one of them.
var (
	ErrNotFound    = errors.New("not found")           // unknown keyring, version, or a destroyed version
	ErrUnavailable = errors.New("backend unavailable") // HSM/session/store lost; retry later
	ErrExists      = errors.New("already exists")      // keyring name taken
	ErrDisabled    = errors.New("version disabled")    // a disabled version asked for encryption
	ErrUnsupported = errors.New("unsupported")         // the backend (or HSM) cannot do this
	ErrBadInput    = errors.New("bad input")           // malformed name, scope, bundle, size, kind, ...
)

// Kind is what a keyring's secret is for.
type Kind string

const (
	KindDerive  Kind = "derive"   // HMAC-SHA256 key for data-key derivation
	KindHSMAEAD Kind = "hsm-aead" // AES-256 key for AES-GCM inside the backend
)

// ParseKind validates a kind name.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindDerive, KindHSMAEAD:
		return k, nil
	}
	return "", fmt.Errorf("%w: unknown keyring kind %q (want derive or hsm-aead)", ErrBadInput, s)
}

// State is a version's life-cycle state.
type State string

const (
	StateActive    State = "active"
	StateDisabled  State = "disabled"
	StateDestroyed State = "destroyed"
)

// ParseState validates a state name.
func ParseState(s string) (State, error) {
	switch st := State(s); st {
	case StateActive, StateDisabled, StateDestroyed:
		return st, nil
	}
	return "", fmt.Errorf("%w: unknown version state %q", ErrBadInput, s)
}

// Version describes one keyring version (never its secret).
type Version struct {
	N       int
	State   State
	Created time.Time
}

// Keyring describes a keyring and all its versions, oldest first (destroyed ones included).
type Keyring struct {
	Name     string
	Kind     Kind
	Versions []Version
}

// Latest returns the newest active version.
func (k Keyring) Latest() (Version, bool) {
	for i := len(k.Versions) - 1; i >= 0; i-- {
		if k.Versions[i].State == StateActive {
			return k.Versions[i], true
		}
	}
	return Version{}, false
}

// Version returns version n.
func (k Keyring) Version(n int) (Version, bool) {
	for _, v := range k.Versions {
		if v.N == n {
			return v, true
		}
	}
	return Version{}, false
}

// Wrapping names a BYOK bundle format (the names the cloud KMS import procedures use).
type Wrapping string

const (
	// RSA-OAEP (SHA-1, MGF1-SHA-1) of an ephemeral AES-256 key, then AES-KWP of the secret.
	WrapRSAAESKeyWrapSHA1 Wrapping = "RSA_AES_KEY_WRAP_SHA_1"
	// RSA-OAEP (SHA-256, MGF1-SHA-256) of an ephemeral AES-256 key, then AES-KWP of the secret.
	WrapRSAAESKeyWrapSHA256 Wrapping = "RSA_AES_KEY_WRAP_SHA_256"
)

// ParseWrapping validates a wrapping name.
func ParseWrapping(s string) (Wrapping, error) {
	switch w := Wrapping(s); w {
	case WrapRSAAESKeyWrapSHA1, WrapRSAAESKeyWrapSHA256:
		return w, nil
	}
	return "", fmt.Errorf("%w: unknown wrapping %q (want %s or %s)", ErrBadInput, s,
		WrapRSAAESKeyWrapSHA1, WrapRSAAESKeyWrapSHA256)
}

// HashName is the OAEP (and MGF1) hash of w, "SHA-1" or "SHA-256", for messages.
func (w Wrapping) HashName() string {
	if w == WrapRSAAESKeyWrapSHA256 {
		return "SHA-256"
	}
	return "SHA-1"
}

// ImportKeyBits is the size of the BYOK import RSA key.
const ImportKeyBits = 3072

// Backend is a keyring store. Implementations are safe for concurrent use.
type Backend interface {
	// CreateKeyring creates a keyring with a fresh random version 1.
	CreateKeyring(ctx context.Context, name string, kind Kind) (Keyring, error)
	// Rotate adds a fresh random version, which becomes the newest active one.
	Rotate(ctx context.Context, name string) (Version, error)
	// Keyrings lists all keyrings, sorted by name.
	Keyrings(ctx context.Context) ([]Keyring, error)
	// Keyring describes one keyring.
	Keyring(ctx context.Context, name string) (Keyring, error)
	// SetState disables (StateDisabled), re-enables (StateActive) or destroys (StateDestroyed,
	// irreversible: the secret is deleted) a version. A destroyed version is ErrNotFound.
	SetState(ctx context.Context, name string, version int, s State) error
	// ImportPublicKey returns the RSA-3072 BYOK import public key, creating the key pair on first use.
	ImportPublicKey(ctx context.Context) (*rsa.PublicKey, error)
	// Import unwraps a BYOK bundle, RSA-OAEP(ephemeral AES-256 key) || AES-KWP(secret), inside the backend
	// into a new keyring (version 1) or a new version of an existing keyring of the same kind. It returns
	// the new version and the KCV (see kdf.KCV) of the imported secret.
	Import(ctx context.Context, name string, kind Kind, bundle []byte, w Wrapping) (Version, string, error)
	// Derive returns DK = kdf(keyring version, scope) of bits (256 or 512) bits and the version used.
	// version 0 means the newest active version. forEncrypt refuses disabled versions (ErrDisabled).
	Derive(ctx context.Context, scope string, version int, bits int, forEncrypt bool) (*memsafe.Key, int, error)
	// Encrypt seals plaintext with AES-256-GCM inside the backend under an hsm-aead keyring version
	// (0 = newest active; a disabled version is ErrDisabled). ct = nonce(12) || ciphertext || tag(16).
	Encrypt(ctx context.Context, ring string, version int, plaintext, aad []byte) (ct []byte, v int, err error)
	// Decrypt opens what Encrypt sealed, under version (>= 1; disabled versions allowed).
	Decrypt(ctx context.Context, ring string, version int, ct, aad []byte) ([]byte, error)
	// ExportBackup derives the data key for scope (version 0 = newest active) and wraps it under the
	// customer's AES-256 key wrapKey, in the MarshalBackup format. A keyring-level scope (no ':') is
	// ErrUnsupported: keyring secrets are non-extractable.
	ExportBackup(ctx context.Context, scope string, version int, bits int, wrapKey *memsafe.Key) (blob []byte, v int, err error)
	// RestoreBackup unwraps a backup blob under wrapKey, checks its KCV and, when the keyring version still
	// exists in this backend, that it re-derives to the same key.
	RestoreBackup(ctx context.Context, blob []byte, wrapKey *memsafe.Key) (Restored, error)
	// Close releases the backend and wipes the secrets it holds. Further calls fail with ErrUnavailable.
	Close() error
}

// Restored is a data key recovered from a backup.
type Restored struct {
	Scope   string
	Version int
	Bits    int
	KCV     string
	Key     *memsafe.Key // the caller owns it and must Destroy it
	// Verified is true when the keyring version still exists here and re-derived the same key.
	Verified bool
}
