package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits of the protocol.
const (
	// MaxFrameSize caps a frame's length field (type byte and body).
	MaxFrameSize = 1 << 20
	// HeaderSize is the length and type bytes in front of every body.
	HeaderSize = 5
	// MaxStringLen caps every str field (scopes, identities, messages).
	MaxStringLen = 4096
	// MaxStatusFields caps the fields of a StatusResponse.
	MaxStatusFields = 256
	// Version is the body version this package writes and accepts.
	Version = 1
)

// Type is a frame type. Responses have the high bit set.
type Type uint8

// Frame types.
const (
	TypeKeyRequest         Type = 0x01
	TypeHSMEncryptRequest  Type = 0x02
	TypeHSMDecryptRequest  Type = 0x03
	TypeStatusRequest      Type = 0x04
	TypePurgeRequest       Type = 0x05
	TypeOK                 Type = 0x80
	TypeKeyResponse        Type = 0x81
	TypeHSMEncryptResponse Type = 0x82
	TypeHSMDecryptResponse Type = 0x83
	TypeStatusResponse     Type = 0x84
	TypeErrorResponse      Type = 0xFF
)

var typeNames = map[Type]string{
	TypeKeyRequest:         "KeyRequest",
	TypeHSMEncryptRequest:  "HSMEncryptRequest",
	TypeHSMDecryptRequest:  "HSMDecryptRequest",
	TypeStatusRequest:      "StatusRequest",
	TypePurgeRequest:       "PurgeRequest",
	TypeOK:                 "OK",
	TypeKeyResponse:        "KeyResponse",
	TypeHSMEncryptResponse: "HSMEncryptResponse",
	TypeHSMDecryptResponse: "HSMDecryptResponse",
	TypeStatusResponse:     "StatusResponse",
	TypeErrorResponse:      "ErrorResponse",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("Type(0x%02x)", uint8(t))
}

// Known reports whether t is a frame type of this protocol.
func (t Type) Known() bool { _, ok := typeNames[t]; return ok }

// IsResponse reports whether t is sent by servers.
func (t Type) IsResponse() bool { return t&0x80 != 0 }

// New returns a new zero message of type t, or nil for an unknown type.
func New(t Type) Message {
	switch t {
	case TypeKeyRequest:
		return new(KeyRequest)
	case TypeHSMEncryptRequest:
		return new(HSMEncryptRequest)
	case TypeHSMDecryptRequest:
		return new(HSMDecryptRequest)
	case TypeStatusRequest:
		return new(StatusRequest)
	case TypePurgeRequest:
		return new(PurgeRequest)
	case TypeOK:
		return new(OK)
	case TypeKeyResponse:
		return new(KeyResponse)
	case TypeHSMEncryptResponse:
		return new(HSMEncryptResponse)
	case TypeHSMDecryptResponse:
		return new(HSMDecryptResponse)
	case TypeStatusResponse:
		return new(StatusResponse)
	case TypeErrorResponse:
		return new(ErrorResponse)
	}
	return nil
}

// Message is one protocol message.
//
// Encode appends the whole frame (length, type and body) to dst, after
// checking the fields; Decode parses a body (what follows the type byte) and
// replaces every field of the message.
type Message interface {
	Type() Type
	Encode(dst []byte) ([]byte, error)
	Decode(body []byte) error
}

// Reasons wrapped by *ParseError, for callers that branch on them.
var (
	ErrFrameTooLarge  = errors.New("frame too large")
	ErrUnknownType    = errors.New("unknown frame type")
	ErrUnknownVersion = errors.New("unknown version")
	ErrTruncated      = errors.New("truncated")
	ErrTrailingBytes  = errors.New("trailing bytes")
	ErrMalformed      = errors.New("malformed field")
)

// ErrInvalidMessage is returned by Encode for a message whose fields break
// the protocol's rules (an empty scope, a 100-bit key, a string too long).
var ErrInvalidMessage = errors.New("wire: invalid message")

// ParseError is a frame or body that does not follow the protocol. It never
// contains field contents.
type ParseError struct {
	Type   Type   // frame type, when known
	Offset int    // byte offset in the body (-1: in the frame header)
	Err    error  // one of ErrFrameTooLarge, ErrUnknownType, ... or io.ErrUnexpectedEOF
	Detail string // what was wrong, for people
}

func (e *ParseError) Error() string {
	where := fmt.Sprintf("body byte %d", e.Offset)
	if e.Offset < 0 {
		where = "frame header"
	}
	msg := fmt.Sprintf("wire: %s: %s: %v", e.Type, where, e.Err)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func (e *ParseError) Unwrap() error { return e.Err }

// appendHeader starts a frame; finish patches its length.
func appendHeader(dst []byte, t Type) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, byte(t), Version), start
}

func finish(dst []byte, start int, t Type) ([]byte, error) {
	n := len(dst) - start - 4
	if n > MaxFrameSize {
		return dst[:start], fmt.Errorf("%w: %s frame of %d bytes exceeds %d", ErrInvalidMessage, t, n, MaxFrameSize)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n))
	return dst, nil
}

func invalidf(t Type, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidMessage, t, fmt.Sprintf(format, args...))
}

func appendStr(dst []byte, t Type, field, s string, nonEmpty bool) ([]byte, error) {
	if nonEmpty && s == "" {
		return dst, invalidf(t, "empty %s", field)
	}
	if len(s) > MaxStringLen {
		return dst, invalidf(t, "%s is %d bytes (max %d)", field, len(s), MaxStringLen)
	}
	if !utf8.ValidString(s) {
		return dst, invalidf(t, "%s is not valid UTF-8", field)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...), nil
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// decoder reads a body. The first error sticks; later reads return zero
// values, so a Decode method reads every field and checks d.err once.
type decoder struct {
	b   []byte
	off int
	t   Type
	err *ParseError
}

// begin checks the version byte. A decoder is a value so that it stays on
// the stack: decoding a request allocates only its strings.
func (d *decoder) begin() {
	if v := d.u8(); d.err == nil && v != Version {
		d.failAt(0, ErrUnknownVersion, fmt.Sprintf("version %d", v))
	}
}

func (d *decoder) failAt(off int, err error, detail string) {
	if d.err == nil {
		d.err = &ParseError{Type: d.t, Offset: off, Err: err, Detail: detail}
	}
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.failAt(d.off, ErrTruncated, fmt.Sprintf("%s needs %d bytes, %d left", what, n, len(d.b)-d.off))
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1, "u8"); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2, "u16"); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4, "u32"); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) str(field string, nonEmpty bool) string {
	off := d.off
	n := int(d.u16())
	if d.err == nil && n > MaxStringLen {
		d.failAt(off, ErrMalformed, fmt.Sprintf("%s is %d bytes (max %d)", field, n, MaxStringLen))
	}
	p := d.take(n, field)
	if d.err != nil {
		return ""
	}
	if nonEmpty && n == 0 {
		d.failAt(off, ErrMalformed, "empty "+field)
		return ""
	}
	if !utf8.Valid(p) {
		d.failAt(off, ErrMalformed, field+" is not valid UTF-8")
		return ""
	}
	return string(p)
}

// bytes returns a copy: bodies live in a reused buffer that is wiped.
func (d *decoder) bytes(field string) []byte {
	n := d.u32()
	if d.err == nil && int64(n) > int64(len(d.b)-d.off) {
		d.failAt(d.off-4, ErrTruncated, fmt.Sprintf("%s needs %d bytes, %d left", field, n, len(d.b)-d.off))
		return nil
	}
	p := d.take(int(n), field)
	if d.err != nil {
		return nil
	}
	return append([]byte(nil), p...)
}

// done checks for trailing bytes and returns the first error.
func (d *decoder) done() error {
	if d.err == nil && d.off != len(d.b) {
		d.failAt(d.off, ErrTrailingBytes, fmt.Sprintf("%d bytes after the last field", len(d.b)-d.off))
	}
	if d.err != nil {
		return d.err
	}
	return nil
}
