package coltype

import (
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped by errors for inputs or session settings this package deliberately does not
// handle (a DateStyle other than ISO, 'now' as a timestamp, a time zone abbreviation, ...).
var ErrUnsupported = errors.New("not supported")

// ValueError reports a value that is not valid input for its type. It names the type, the wire format
// and the reason, and never contains the value: values are user data, and these errors reach logs.
type ValueError struct {
	Type   Type
	Format int16 // TextFormat or BinaryFormat; -1 for a SQL literal
	Reason string
	Err    error // ErrUnsupported, or nil
}

func (e *ValueError) Error() string {
	f := "text"
	switch e.Format {
	case BinaryFormat:
		f = "binary"
	case -1:
		f = "literal"
	}
	return fmt.Sprintf("invalid %s input for type %s: %s", f, e.Type.SQLName(), e.Reason)
}

func (e *ValueError) Unwrap() error { return e.Err }

func valueErr(t Type, format int16, format_ string, args ...any) *ValueError {
	return &ValueError{Type: t, Format: format, Reason: fmt.Sprintf(format_, args...)}
}

func unsupported(t Type, format int16, format_ string, args ...any) *ValueError {
	e := valueErr(t, format, format_, args...)
	e.Err = ErrUnsupported
	return e
}
