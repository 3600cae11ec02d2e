package envelope

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Sizes of the format.
const (
	// HeaderSize is the fixed header in front of every body.
	HeaderSize = 12
	// FormatVersion is the only format version this package reads and writes.
	FormatVersion = 1
	// MaxOverhead is the most any alg adds to the plaintext's length.
	MaxOverhead = HeaderSize + gcmNonceSize + gcmTagSize

	gcmNonceSize = 12
	gcmTagSize   = 16
	sivSize      = 16
)

// Magic starts every envelope.
const Magic = "KW"

// Alg identifies how a body was sealed.
type Alg uint8

const (
	// AlgRandomized is AES-256-GCM with a random 96-bit nonce.
	AlgRandomized Alg = 1
	// AlgDeterministic is AES-SIV-CMAC-512 (RFC 5297).
	AlgDeterministic Alg = 2
	// AlgHSM is AES-256-GCM performed by the HSM (through the key agent); the body is the HSM's nonce,
	// ciphertext and tag.
	AlgHSM Alg = 3
)

func (a Alg) String() string {
	switch a {
	case AlgRandomized:
		return "randomized"
	case AlgDeterministic:
		return "deterministic"
	case AlgHSM:
		return "hsm"
	}
	return fmt.Sprintf("alg(%d)", uint8(a))
}

// overhead is the body's fixed size (everything but the ciphertext proper).
func (a Alg) overhead() int {
	switch a {
	case AlgRandomized, AlgHSM:
		return gcmNonceSize + gcmTagSize
	case AlgDeterministic:
		return sivSize
	}
	return 0
}

// Overhead is the number of bytes an envelope of this alg adds to the plaintext (header included).
func (a Alg) Overhead() int { return HeaderSize + a.overhead() }

// Header is the clear part of an envelope.
type Header struct {
	Alg         Alg
	KeyVersion  uint32
	Fingerprint [4]byte
}

// Fingerprint returns the 4-byte scope fingerprint written in every header sealed for scope.
func Fingerprint(scope string) [4]byte {
	h := sha256.New()
	h.Write([]byte("keyward-scope-v1\x00"))
	h.Write([]byte(scope))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return [4]byte(sum[:4])
}

// AppendBinary appends the 12-byte header to dst.
func (h Header) AppendBinary(dst []byte) ([]byte, error) {
	if err := h.check(); err != nil {
		return dst, err
	}
	dst = append(dst, Magic[0], Magic[1], FormatVersion, byte(h.Alg))
	dst = binary.BigEndian.AppendUint32(dst, h.KeyVersion)
	return append(dst, h.Fingerprint[:]...), nil
}

func (h Header) check() error {
	if h.Alg.overhead() == 0 {
		return &ParseError{Offset: 3, Field: "alg", Reason: fmt.Sprintf("unknown alg %d", uint8(h.Alg))}
	}
	if h.KeyVersion == 0 {
		return &ParseError{Offset: 4, Field: "key version", Reason: "key version 0 does not exist"}
	}
	return nil
}

// ParseHeader parses the header of the envelope env and checks that env is long enough to be an
// envelope of its alg. It does not authenticate anything: use it to choose the key version to open
// with, or to tell an envelope from a value that was never encrypted.
func ParseHeader(env []byte) (Header, error) {
	if len(env) < HeaderSize {
		return Header{}, &ParseError{Offset: len(env), Field: "header", Reason: fmt.Sprintf("%d bytes, want at least %d", len(env), HeaderSize)}
	}
	if env[0] != Magic[0] || env[1] != Magic[1] {
		return Header{}, &ParseError{Offset: 0, Field: "magic", Reason: "not an envelope (no \"KW\" magic)"}
	}
	if env[2] != FormatVersion {
		return Header{}, &ParseError{Offset: 2, Field: "format version", Reason: fmt.Sprintf("unknown format version %d", env[2])}
	}
	h := Header{
		Alg:         Alg(env[3]),
		KeyVersion:  binary.BigEndian.Uint32(env[4:8]),
		Fingerprint: [4]byte(env[8:12]),
	}
	if err := h.check(); err != nil {
		return Header{}, err
	}
	if least := HeaderSize + h.Alg.overhead(); len(env) < least {
		return Header{}, &ParseError{Offset: len(env), Field: "body", Reason: fmt.Sprintf("%d bytes, a %s envelope has at least %d", len(env), h.Alg, least)}
	}
	return h, nil
}

// ParseError reports a malformed envelope. It names the field and byte offset, never content.
type ParseError struct {
	Offset int
	Field  string
	Reason string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("envelope: %s at byte %d: %s", e.Field, e.Offset, e.Reason)
}
