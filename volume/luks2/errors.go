package luks2

import (
	"errors"
	"fmt"
)

// Sentinels callers branch on.
var (
	// ErrNotLUKS2 means neither header copy carries a LUKS2 magic and version (a LUKS1 volume, a
	// filesystem, random data).
	ErrNotLUKS2 = errors.New("luks2: not a LUKS2 volume")

	// ErrWrongPassphrase is the one error for every authentication failure: a wrong passphrase, a
	// damaged keyslot area, a digest mismatch. It carries no detail on purpose, so that nothing about
	// the key or the failing step leaks through it.
	ErrWrongPassphrase = errors.New("luks2: wrong passphrase or damaged keyslot")

	// ErrUnsupported is wrapped by every *UnsupportedError.
	ErrUnsupported = errors.New("luks2: unsupported")

	// ErrNoKeyslot means the keyslot (or token) asked for does not exist, or no free one is left.
	ErrNoKeyslot = errors.New("luks2: no such keyslot")

	// ErrNoToken means the token asked for does not exist.
	ErrNoToken = errors.New("luks2: no such token")

	// ErrNoSpace means the keyslots area has no free region large enough for a new keyslot.
	ErrNoSpace = errors.New("luks2: keyslots area full")
)

// ParseError reports a malformed header copy or metadata. Offset is the byte offset of the header
// copy on the device (-1 when the error is not tied to one copy).
type ParseError struct {
	Offset int64
	Field  string
	Reason string
}

func (e *ParseError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("luks2: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("luks2: header at %d: %s: %s", e.Offset, e.Field, e.Reason)
}

// UnsupportedError names a feature this package refuses: a cipher outside the allowlist, an
// integrity segment, a requirement flag, an unknown KDF. errors.Is(err, ErrUnsupported) holds.
type UnsupportedError struct {
	Feature string // e.g. "segment 0 encryption", "config requirements"
	Value   string // what the header said, e.g. "cipher_null-ecb"
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("luks2: unsupported %s %q", e.Feature, e.Value)
}

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

func perr(off int64, field, format string, args ...any) *ParseError {
	return &ParseError{Offset: off, Field: field, Reason: fmt.Sprintf(format, args...)}
}
