package bind

import "errors"

// Sentinels callers branch on (besides client.ErrDenied, client.ErrUnavailable, client.ErrNotFound
// and luks2.ErrNotLUKS2, which are wrapped unchanged).
var (
	// ErrNoToken: the volume has no keyward token (it was never enrolled, or the token was removed).
	ErrNoToken = errors.New("no keyward token on the volume")

	// ErrWrongKey: the agent served a key, but the passphrase derived from it does not open the
	// keyslot the token names (another key version or scope than the one enrolled, or a damaged
	// keyslot).
	ErrWrongKey = errors.New("the agent's key does not open the keyward keyslot")

	// ErrBusy: a device-mapper mapping of that name already exists (the volume is probably unlocked
	// already), or the mapping to remove is still in use.
	ErrBusy = errors.New("device busy")

	// ErrEnrolled: the volume already has a keyward keyslot for that scope (use Rotate).
	ErrEnrolled = errors.New("volume already enrolled for this scope")

	// ErrRecovery: the existing passphrase given to Enroll opens no keyslot.
	ErrRecovery = errors.New("the existing passphrase opens no keyslot")
)
