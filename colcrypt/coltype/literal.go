package coltype

import (
	"strings"
)

// LiteralKind is the kind of SQL constant the statement analyzer found.
type LiteralKind uint8

const (
	// StringLiteral is a quoted constant ('...', E'...', $$...$$): of unknown type until a cast or
	// the column gives it one.
	StringLiteral LiteralKind = iota + 1
	// NumberLiteral is a bare numeric constant (42, -42, 1.5, 1e3), with the sign the analyzer folded
	// into it.
	NumberLiteral
	// BoolLiteral is the keyword TRUE or FALSE.
	BoolLiteral
)

// Literal is a constant written for a protected column in SQL text, as psycopg2 and hand-written SQL
// produce them: '2024-01-02'::date, '\x00ff'::bytea, bare numbers (" -42"), untyped strings for jsonb.
type Literal struct {
	Kind LiteralKind
	// Value is the constant's value: a string's contents after unescaping (the analyzer undoes ''
	// and E'' escapes), a number as written, "true"/"false".
	Value string
	// Cast is the type name of an explicit cast applied to the constant ("date", "pg_catalog.int8",
	// "double precision"), "" when there is none.
	Cast string
}

// ParseLiteral returns the canonical encoding, for a column of declared type t, of a SQL constant,
// giving it the type PostgreSQL would: an untyped string takes the column's type; a number is
// integer, bigint or numeric by its form; a cast gives its type; and the result is converted to t
// with PostgreSQL's assignment casts (see Convert). A cast's type modifier (varchar(n),
// numeric(p,s), timestamp(p)) is applied to the value; casts to types outside the declared types, and
// other modifiers, are refused with an error wrapping ErrUnsupported.
func ParseLiteral(t Type, lit Literal, s *Session) ([]byte, error) {
	var src Type
	switch lit.Kind {
	case StringLiteral:
		src = t
	case BoolLiteral:
		src = Bool
	case NumberLiteral:
		src = numberType(lit.Value)
	default:
		return nil, &ValueError{Type: t, Format: -1, Reason: "unknown literal kind"}
	}
	if lit.Kind == NumberLiteral && lit.Cast == "" && src == Numeric && isTextual(t) {
		// numeric -> text prints the constant's own scale (1.50 stays "1.50"), which the canonical
		// numeric form has dropped: print it from the constant.
		return numericDisplayText(TextFormat, []byte(lit.Value))
	}
	var canon []byte
	var err error
	if lit.Cast != "" {
		cast, mod, err := castType(t, lit.Cast)
		if err != nil {
			return nil, err
		}
		if lit.Kind == StringLiteral {
			if canon, err = literalInput(cast, lit.Value, s); err != nil {
				return nil, err
			}
		} else {
			if canon, err = literalInput(src, lit.Value, s); err != nil {
				return nil, err
			}
			if canon, err = explicitCast(cast, src, canon, s); err != nil {
				return nil, err
			}
		}
		if canon, err = mod.apply(cast, canon); err != nil {
			return nil, err
		}
		if cast == Numeric && isTextual(t) {
			// numeric -> text prints the display scale, which canonical numeric has dropped: the
			// constant's own scale, or the scale of the cast's type modifier.
			if mod.n == 0 {
				return numericDisplayText(TextFormat, []byte(lit.Value))
			}
			return numericWithScale(canon, mod.scale())
		}
		src = cast
	} else if canon, err = literalInput(src, lit.Value, s); err != nil {
		return nil, err
	}
	return Convert(t, src, canon, s)
}

func literalInput(t Type, v string, s *Session) ([]byte, error) {
	c, err := Canonical(t, TextFormat, []byte(v), s)
	if ve, ok := err.(*ValueError); ok {
		ve.Format = -1
	}
	return c, err
}

// numberType is the type PostgreSQL's parser gives a numeric constant: integer when it fits in 32
// bits, bigint in 64, numeric otherwise or when it has a point or an exponent.
func numberType(v string) Type {
	v = strings.TrimSpace(v)
	if strings.ContainsAny(v, ".eE") {
		return Numeric
	}
	if _, err := parseIntText(Int4, []byte(v)); err == nil {
		return Int4
	}
	if _, err := parseIntText(Int8, []byte(v)); err == nil {
		return Int8
	}
	return Numeric
}

// castType resolves the name in an explicit cast, with its type modifier. json is read as jsonb
// (json -> jsonb is an assignment cast, and jsonb is the only JSON type a column can declare).
func castType(col Type, name string) (Type, typeMod, error) {
	n := strings.ToLower(strings.Join(strings.Fields(name), " "))
	n = strings.TrimPrefix(n, "pg_catalog.")
	if n == "json" {
		return JSONB, noMod, nil
	}
	base, mod, err := splitTypeMod(n)
	if err != nil {
		return 0, noMod, &ValueError{Type: col, Format: -1, Reason: "cast to " + name + ": " + err.Error(), Err: ErrUnsupported}
	}
	ct, err := ParseType(base)
	if err != nil {
		return 0, noMod, &ValueError{Type: col, Format: -1, Reason: "cast: " + strings.TrimPrefix(err.Error(), "coltype: "), Err: ErrUnsupported}
	}
	if err := mod.check(ct); err != nil {
		return 0, noMod, &ValueError{Type: col, Format: -1, Reason: "cast to " + name + ": " + err.Error(), Err: ErrUnsupported}
	}
	return ct, mod, nil
}

// explicitCast converts a number or bool constant for an explicit cast. Explicit casts allow what
// assignment allows plus int4 <-> bool (the only integer type PostgreSQL casts to and from bool).
func explicitCast(to, from Type, canon []byte, s *Session) ([]byte, error) {
	switch {
	case from == Int4 && to == Bool:
		v, _ := readInt(Int4, canon)
		if v != 0 {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	case from == Bool && to == Int4 && len(canon) == 1:
		return appendInt(nil, Int4, int64(canon[0])), nil
	}
	return Convert(to, from, canon, s)
}
