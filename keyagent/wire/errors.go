package wire

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Code classifies a failed request.
type Code uint8

// Error codes.
const (
	CodeDenied      Code = 1 // policy or grants refuse the request
	CodeNotFound    Code = 2 // unknown keyring, scope or version
	CodeUnavailable Code = 3 // upstream or HSM unreachable; retry later
	CodeBadRequest  Code = 4 // malformed or unsupported request
	CodeInternal    Code = 5 // anything else; details are in the server's log
)

// Sentinels that Err maps codes to, so callers can use errors.Is whether the
// error came from this process or over the wire.
var (
	ErrDenied      = errors.New("denied")
	ErrNotFound    = errors.New("not found")
	ErrUnavailable = errors.New("unavailable")
	ErrBadRequest  = errors.New("bad request")
	ErrInternal    = errors.New("internal error")
)

func (c Code) valid() bool { return c >= CodeDenied && c <= CodeInternal }

func (c Code) sentinel() error {
	switch c {
	case CodeDenied:
		return ErrDenied
	case CodeNotFound:
		return ErrNotFound
	case CodeUnavailable:
		return ErrUnavailable
	case CodeBadRequest:
		return ErrBadRequest
	}
	return ErrInternal
}

func (c Code) String() string {
	if c.valid() {
		return c.sentinel().Error()
	}
	return fmt.Sprintf("Code(%d)", uint8(c))
}

// ErrorResponse reports a failed request. Message is for people and never
// holds key material.
type ErrorResponse struct {
	Code    Code
	Message string
}

func (*ErrorResponse) Type() Type { return TypeErrorResponse }

func (m *ErrorResponse) Encode(dst []byte) ([]byte, error) {
	if !m.Code.valid() {
		return dst, invalidf(TypeErrorResponse, "code %d", m.Code)
	}
	dst, start := appendHeader(dst, TypeErrorResponse)
	dst = append(dst, byte(m.Code))
	var err error
	if dst, err = appendStr(dst, TypeErrorResponse, "message", m.Message, false); err != nil {
		return dst[:start], err
	}
	return finish(dst, start, TypeErrorResponse)
}

func (m *ErrorResponse) Decode(body []byte) error {
	d := decoder{b: body, t: TypeErrorResponse}
	d.begin()
	off := d.off
	code := Code(d.u8())
	if d.err == nil && !code.valid() {
		d.failAt(off, ErrMalformed, fmt.Sprintf("code %d", code))
	}
	msg := d.str("message", false)
	if err := d.done(); err != nil {
		return err
	}
	*m = ErrorResponse{Code: code, Message: msg}
	return nil
}

// Err returns the error the response stands for: a *RemoteError that
// errors.Is matches against the code's sentinel (ErrDenied, ...).
func (m *ErrorResponse) Err() error {
	return &RemoteError{Code: m.Code, Message: m.Message}
}

// RemoteError is an ErrorResponse turned into a Go error.
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Code.String() + ": " + e.Message
}

// Is matches the sentinel of the error's code.
func (e *RemoteError) Is(target error) bool { return target == e.Code.sentinel() }

// WireCode implements Coder, so a RemoteError relayed by the agent keeps its
// code.
func (e *RemoteError) WireCode() Code { return e.Code }

// Coder is implemented by errors that know their wire code. ErrorFrom uses
// it before it looks at the sentinels.
type Coder interface {
	WireCode() Code
}

// ErrorFrom turns err into the response a server sends for it:
//
//   - an error in the chain implementing Coder (a *RemoteError relayed from
//     the key service, say) gives its code and message;
//   - errors.Is ErrDenied, ErrNotFound, ErrUnavailable, ErrBadRequest give
//     their code with err's text as the message, less a leading "denied: "
//     (the code says it; RemoteError.Error puts it back);
//   - context.DeadlineExceeded and context.Canceled give Unavailable;
//   - a *ParseError gives BadRequest;
//   - anything else gives Internal with the message "internal error": its
//     text may describe server internals, and belongs in the server's log.
//
// Messages are cut to MaxStringLen bytes of valid UTF-8. ErrorFrom(nil) is
// nil.
func ErrorFrom(err error) *ErrorResponse {
	if err == nil {
		return nil
	}
	var coder Coder
	var pe *ParseError
	code, msg := CodeInternal, "internal error"
	switch {
	case errors.As(err, &coder) && coder.WireCode().valid():
		code, msg = coder.WireCode(), err.Error()
		if re, ok := coder.(*RemoteError); ok {
			msg = re.Message
		}
	case errors.Is(err, ErrDenied):
		code, msg = CodeDenied, trimCode(err, ErrDenied)
	case errors.Is(err, ErrNotFound):
		code, msg = CodeNotFound, trimCode(err, ErrNotFound)
	case errors.Is(err, ErrUnavailable):
		code, msg = CodeUnavailable, trimCode(err, ErrUnavailable)
	case errors.Is(err, ErrBadRequest):
		code, msg = CodeBadRequest, trimCode(err, ErrBadRequest)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		code, msg = CodeUnavailable, err.Error()
	case errors.As(err, &pe):
		code, msg = CodeBadRequest, err.Error()
	}
	return &ErrorResponse{Code: code, Message: clip(msg)}
}

// trimCode drops the sentinel's own text from the front of err's message,
// so that fmt.Errorf("%w: x", ErrDenied) travels as "x" with CodeDenied.
func trimCode(err, sentinel error) string {
	msg := err.Error()
	if msg == sentinel.Error() {
		return ""
	}
	return strings.TrimPrefix(msg, sentinel.Error()+": ")
}

func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxStringLen {
		return s
	}
	s = s[:MaxStringLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
