package coltype

import (
	"fmt"
	"strings"
	"time"
)

// Session holds the session settings that change how values are read or written as text. The zero
// value (and a nil *Session) means TimeZone UTC and DateStyle ISO.
type Session struct {
	// TimeZone is the session's TimeZone (from ParameterStatus): it interprets timestamptz input
	// without an offset and renders timestamptz text. nil means UTC.
	TimeZone *time.Location
	// DateStyle is the session's DateStyle as reported ("ISO, MDY"). Text output follows it (ISO,
	// SQL, Postgres and German styles, day/month order); text input is ISO 8601 whatever it says.
	DateStyle string
}

func (s *Session) location() *time.Location {
	if s == nil || s.TimeZone == nil {
		return time.UTC
	}
	return s.TimeZone
}

// Output styles of DateStyle.
const (
	styleISO = iota
	styleSQL
	stylePostgres
	styleGerman
)

// dateStyle parses the DateStyle setting as PostgreSQL reports it ("ISO, MDY", "SQL, DMY",
// "Postgres, MDY", "German, DMY"): the output style and whether the day comes before the month.
func (s *Session) dateStyle(t Type) (style int, dmy bool, err error) {
	if s == nil || strings.TrimSpace(s.DateStyle) == "" {
		return styleISO, false, nil
	}
	style = -1
	// This runs for every date and timestamp rendered as text, so it does not allocate: Cut rather
	// than Split, and the words upper-cased in a stack buffer ("Postgres" and "German" as reported).
	var upper [16]byte
	for rest, more := s.DateStyle, true; more && style != -2; {
		var part string
		part, rest, more = strings.Cut(rest, ",")
		word := upper[:0] // stays empty (not understood) when longer than any DateStyle word
		if part = strings.TrimSpace(part); len(part) <= len(upper) {
			for i := 0; i < len(part); i++ {
				c := part[i]
				if 'a' <= c && c <= 'z' {
					c -= 'a' - 'A'
				}
				word = append(word, c)
			}
		}
		switch string(word) {
		case "ISO":
			style = styleISO
		case "SQL":
			style = styleSQL
		case "POSTGRES":
			style = stylePostgres
		case "GERMAN":
			style = styleGerman
		case "DMY", "EURO", "EUROPEAN":
			dmy = true
		case "MDY", "US", "NONEURO", "NONEUROPEAN", "YMD":
		default:
			style = -2
		}
	}
	if style < 0 {
		return 0, false, &ValueError{Type: t, Format: TextFormat, Reason: fmt.Sprintf("DateStyle %q is not understood", s.DateStyle), Err: ErrUnsupported}
	}
	return style, dmy, nil
}

// CorruptError reports canonical bytes that do not decode. Canonical bytes come out of an
// authenticated envelope, so this means a bug, or a value sealed for another declared type (the
// column's type changed in the config without re-encrypting).
type CorruptError struct {
	Type   Type
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("stored value is not a canonical %s: %s", e.Type.SQLName(), e.Reason)
}

func corrupt(t Type, reason string) error { return &CorruptError{Type: t, Reason: reason} }

// Canonical parses a value as a client sends it (format 0 text, 1 binary, in the wire encoding of type
// t) and returns its canonical encoding. See the package documentation for each type's encoding.
func Canonical(t Type, format int16, src []byte, s *Session) ([]byte, error) {
	return AppendCanonical(nil, t, format, src, s)
}

// AppendCanonical is Canonical appending to dst. On error dst is returned unchanged.
func AppendCanonical(dst []byte, t Type, format int16, src []byte, s *Session) ([]byte, error) {
	if format != TextFormat && format != BinaryFormat {
		return dst, fmt.Errorf("coltype: format code %d: want 0 (text) or 1 (binary)", format)
	}
	switch t {
	case Text, Varchar:
		return canonicalText(dst, t, format, src)
	case Int2, Int4, Int8:
		return canonicalInt(dst, t, format, src)
	case Numeric:
		return canonicalNumeric(dst, format, src)
	case Float8:
		return canonicalFloat8(dst, format, src)
	case Bool:
		return canonicalBool(dst, format, src)
	case Date:
		return canonicalDate(dst, format, src)
	case Timestamp, Timestamptz:
		return canonicalTimestamp(dst, t, format, src, s)
	case UUID:
		return canonicalUUID(dst, format, src)
	case JSONB:
		return canonicalJSONB(dst, format, src)
	case Bytea:
		return canonicalBytea(dst, format, src)
	}
	return dst, fmt.Errorf("coltype: invalid type %v", t)
}

// Render turns a canonical encoding back into the wire format the client asked for. Text output is
// PostgreSQL's own output for the type, in the session's TimeZone.
func Render(t Type, format int16, canonical []byte, s *Session) ([]byte, error) {
	return AppendRender(nil, t, format, canonical, s)
}

// AppendRender is Render appending to dst.
func AppendRender(dst []byte, t Type, format int16, canonical []byte, s *Session) ([]byte, error) {
	if format != TextFormat && format != BinaryFormat {
		return dst, fmt.Errorf("coltype: format code %d: want 0 (text) or 1 (binary)", format)
	}
	switch t {
	case Text, Varchar:
		return append(dst, canonical...), nil
	case Bytea:
		return renderBytea(dst, format, canonical)
	case Int2, Int4, Int8:
		return renderInt(dst, t, format, canonical)
	case Numeric:
		return renderNumeric(dst, format, canonical)
	case Float8:
		return renderFloat8(dst, format, canonical)
	case Bool:
		return renderBool(dst, format, canonical)
	case Date:
		return renderDate(dst, format, canonical, s)
	case Timestamp, Timestamptz:
		return renderTimestamp(dst, t, format, canonical, s)
	case UUID:
		return renderUUID(dst, format, canonical)
	case JSONB:
		return renderJSONB(dst, format, canonical)
	}
	return dst, fmt.Errorf("coltype: invalid type %v", t)
}

// LoadTimeZone resolves a TimeZone as PostgreSQL reports it in ParameterStatus: a tz database name
// ("Europe/Paris", "UTC", "EST5EDT"), or the POSIX form PostgreSQL reports after SET TIME ZONE with a
// number or interval ("<-03>+03" is three hours west of UTC: POSIX offsets count westward). Locations
// are cached.
func LoadTimeZone(name string) (*time.Location, error) {
	if strings.HasPrefix(name, "<") {
		end := strings.IndexByte(name, '>')
		if end < 0 {
			return nil, fmt.Errorf("coltype: time zone %q: unterminated <name>", name)
		}
		p := dtParser{s: name[end+1:]}
		sign := 1
		switch {
		case p.eat('-'):
			sign = -1
		case p.eat('+'):
		}
		off, ok := p.offset()
		if !ok || p.i != len(p.s) {
			return nil, fmt.Errorf("coltype: time zone %q: only fixed POSIX offsets are supported", name)
		}
		return time.FixedZone(name[1:end], -sign*off), nil
	}
	if l, err := zoneByName(name); err == nil {
		return l, nil
	}
	if l, ok := zoneCache.Load(name); ok {
		return l.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("coltype: time zone %q: %w", name, err)
	}
	zoneCache.Store(name, loc)
	return loc, nil
}
