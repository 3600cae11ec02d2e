// Package kdf is Keyward's data-key derivation, the contract every component (and any third-party tool)
// recomputes. It is NIST SP 800-108 KDF in counter mode with HMAC-SHA256 as the PRF:
//
//	K(i) = HMAC(secret, uint32be(i) || "keyward-dk-v1" || 0x00 || scope || uint32be(L))   i = 1, 2, ...
//	DK   = first L bits of K(1) || K(2) || ...
//
// where scope is the full UTF-8 scope string (e.g. "payroll:employees.ssn") and L is 256 or 512 (512 for
// AES-SIV). The label "keyward-dk-v1" versions the construction; the 0x00 separator and the fixed-size L
// make every (scope, L) message unambiguous, so keys of different lengths or scopes are independent.
//
// The PRF is a function so that the secret can stay inside an HSM (C_Sign with CKM_SHA256_HMAC) or in
// locked memory (crypto/hmac, see HMACPRF). The key check value of a key is KCV(key) = hex of the first 3
// bytes of HMAC-SHA256(key, 32 zero bytes): it lets operators compare keys without revealing them, and
// reveals nothing useful about a full-entropy key.
//
// Guarantees: Derive is deterministic and returns the key only in a *memsafe.Key; the heap copies it
// makes of PRF output are wiped. Not guaranteed: the secrecy of PRF output buffers owned by the PRF
// implementation (an HSM's C_Sign result crosses the Go heap once; the PKCS#11 backend wipes it).
package kdf

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/keyward/keyward/memsafe"
)

// Label is the fixed context label of the derivation.
const Label = "keyward-dk-v1"

// MaxScopeLen bounds a scope string in bytes (keyring name, ':' and the name part).
const MaxScopeLen = 1024

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid")

// PRF is HMAC-SHA256 under a keyring secret: it returns the 32-byte MAC of msg. The caller of PRF wipes
// the returned slice after use.
type PRF func(msg []byte) ([]byte, error)

// Message returns the PRF input for block i of an L=bits derivation for scope.
func Message(i uint32, scope string, bits int) []byte {
	m := make([]byte, 0, 4+len(Label)+1+len(scope)+4)
	m = binary.BigEndian.AppendUint32(m, i)
	m = append(m, Label...)
	m = append(m, 0)
	m = append(m, scope...)
	m = binary.BigEndian.AppendUint32(m, uint32(bits))
	return m
}

// CheckBits accepts the supported output sizes, 256 and 512 bits.
func CheckBits(bits int) error {
	if bits != 256 && bits != 512 {
		return fmt.Errorf("%w: key size %d bits (want 256 or 512)", ErrInvalid, bits)
	}
	return nil
}

// Derive computes DK for scope with prf. The scope is validated with ParseScope.
func Derive(prf PRF, scope string, bits int) (*memsafe.Key, error) {
	if err := CheckBits(bits); err != nil {
		return nil, err
	}
	if _, err := ParseScope(scope); err != nil {
		return nil, err
	}
	n := bits / 8
	out := make([]byte, 0, n+sha256.Size)
	defer func() { clear(out[:cap(out)]) }()
	for i := uint32(1); len(out) < n; i++ {
		block, err := prf(Message(i, scope, bits))
		if err != nil {
			return nil, fmt.Errorf("derive block %d: %w", i, err)
		}
		if len(block) != sha256.Size {
			clear(block)
			return nil, fmt.Errorf("derive block %d: prf returned %d bytes, want %d", i, len(block), sha256.Size)
		}
		out = append(out, block...)
		clear(block)
	}
	return memsafe.FromBytes(out[:n]) // FromBytes wipes out[:n]; the defer wipes the rest
}

// HMACPRF returns a PRF computing HMAC-SHA256 under key. The key must stay alive while the PRF is used.
func HMACPRF(key *memsafe.Key) PRF {
	return func(msg []byte) ([]byte, error) {
		var sum []byte
		err := key.Use(func(k []byte) error {
			m := hmac.New(sha256.New, k)
			m.Write(msg)
			sum = m.Sum(nil)
			return nil
		})
		return sum, err
	}
}

// KCV returns the key check value of k: hex of the first 3 bytes of HMAC-SHA256(k, 32 zero bytes).
func KCV(k *memsafe.Key) (string, error) {
	mac, err := HMACPRF(k)(make([]byte, 32))
	if err != nil {
		return "", fmt.Errorf("kcv: %w", err)
	}
	return KCVFromMAC(mac), nil
}

// KCVFromMAC formats a KCV from HMAC-SHA256(key, 32 zero bytes) computed elsewhere (e.g. in an HSM).
func KCVFromMAC(mac []byte) string {
	if len(mac) < 3 {
		return ""
	}
	return hex.EncodeToString(mac[:3])
}

// Scope is a parsed scope "<keyring>:<name>".
type Scope struct {
	Keyring string
	Name    string
}

func (s Scope) String() string { return s.Keyring + ":" + s.Name }

// ParseScope validates a scope: a keyring name (see CheckKeyring), ':', and a non-empty name of valid
// UTF-8 without NUL or other control characters; at most MaxScopeLen bytes in all.
func ParseScope(s string) (Scope, error) {
	if len(s) > MaxScopeLen {
		return Scope{}, fmt.Errorf("%w: scope is %d bytes long (max %d)", ErrInvalid, len(s), MaxScopeLen)
	}
	ring, name, ok := strings.Cut(s, ":")
	if !ok {
		return Scope{}, fmt.Errorf("%w: scope %q is not <keyring>:<name>", ErrInvalid, s)
	}
	if err := CheckKeyring(ring); err != nil {
		return Scope{}, fmt.Errorf("scope %q: %w", s, err)
	}
	if name == "" {
		return Scope{}, fmt.Errorf("%w: scope %q has an empty name", ErrInvalid, s)
	}
	if !utf8.ValidString(name) {
		return Scope{}, fmt.Errorf("%w: scope %q is not valid UTF-8", ErrInvalid, s)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return Scope{}, fmt.Errorf("%w: scope %q contains a control character", ErrInvalid, s)
		}
	}
	return Scope{Keyring: ring, Name: name}, nil
}

// CheckKeyring validates a keyring name: [a-z0-9][a-z0-9_.-]{0,62}.
func CheckKeyring(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("%w: keyring name %q must be 1 to 63 characters", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("%w: keyring name %q must match [a-z0-9][a-z0-9_.-]{0,62}", ErrInvalid, name)
		}
	}
	return nil
}
