package backend

import "fmt"

// The helpers below hold the version semantics both backends share, so that they cannot drift apart.

// PickVersion resolves a requested version of ring: 0 is the newest active version; a destroyed or
// unknown version is ErrNotFound; a disabled version is ErrDisabled when forEncrypt.
func PickVersion(ring Keyring, version int, forEncrypt bool) (Version, error) {
	if version < 0 {
		return Version{}, fmt.Errorf("%w: version %d", ErrBadInput, version)
	}
	if version == 0 {
		v, ok := ring.Latest()
		if !ok {
			return Version{}, fmt.Errorf("keyring %q has no active version: %w", ring.Name, ErrNotFound)
		}
		return v, nil
	}
	v, ok := ring.Version(version)
	if !ok || v.State == StateDestroyed {
		return Version{}, fmt.Errorf("keyring %q version %d: %w", ring.Name, version, ErrNotFound)
	}
	if forEncrypt && v.State == StateDisabled {
		return Version{}, fmt.Errorf("keyring %q version %d: %w (usable for decryption only)", ring.Name, version, ErrDisabled)
	}
	return v, nil
}

// CheckTransition validates SetState on version v: disabled <-> active, and any live state -> destroyed.
func CheckTransition(ring Keyring, version int, to State) (Version, error) {
	if _, err := ParseState(string(to)); err != nil {
		return Version{}, err
	}
	v, ok := ring.Version(version)
	if !ok || v.State == StateDestroyed {
		return Version{}, fmt.Errorf("keyring %q version %d: %w", ring.Name, version, ErrNotFound)
	}
	return v, nil
}

// CheckKind refuses an operation on a keyring of another kind.
func CheckKind(ring Keyring, want Kind) error {
	if ring.Kind != want {
		return fmt.Errorf("%w: keyring %q is of kind %s, the operation needs %s", ErrBadInput, ring.Name, ring.Kind, want)
	}
	return nil
}

// CheckDecryptVersion validates an explicit version for Decrypt (0 is not allowed: the ciphertext's version
// must be known).
func CheckDecryptVersion(version int) error {
	if version < 1 {
		return fmt.Errorf("%w: decrypt needs the ciphertext's key version (>= 1), got %d", ErrBadInput, version)
	}
	return nil
}

// GCM sizes used by hsm-aead keyrings.
const (
	GCMNonceSize = 12
	GCMTagSize   = 16
)
