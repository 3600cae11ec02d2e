package coltype

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// typeMod is a cast's type modifier: varchar(n), numeric(p[,s]), timestamp[tz](p). The column itself
// has none (it is bytea), so modifiers matter only in explicit casts of literals, where PostgreSQL
// applies them to the value: varchar(n) truncates, numeric(p,s) rounds and checks the precision,
// timestamp(p) rounds the fraction.
type typeMod struct {
	n     int // number of arguments, 0 for none
	a, b  int
	float bool // float(p): only chooses float4 or float8
}

var noMod = typeMod{}

// splitTypeMod splits "numeric(10,2)", "timestamp(3) with time zone", "float(53)" into the base
// type name and the modifier.
func splitTypeMod(n string) (string, typeMod, error) {
	open := strings.IndexByte(n, '(')
	if open < 0 {
		return n, noMod, nil
	}
	end := strings.IndexByte(n, ')')
	if end < open {
		return "", noMod, errors.New("malformed type modifier")
	}
	base := strings.TrimSpace(n[:open] + n[end+1:])
	base = strings.Join(strings.Fields(base), " ")
	var m typeMod
	for _, arg := range strings.Split(n[open+1:end], ",") {
		v, err := strconv.Atoi(strings.TrimSpace(arg))
		if err != nil || v < 0 {
			return "", noMod, errors.New("malformed type modifier")
		}
		if m.n == 0 {
			m.a = v
		} else {
			m.b = v
		}
		m.n++
	}
	if m.n > 2 {
		return "", noMod, errors.New("too many type modifiers")
	}
	if base == "float" {
		m.float = true
	}
	return base, m, nil
}

// scale is a numeric modifier's scale (numeric(p) has scale 0).
func (m typeMod) scale() int {
	if m.n == 2 {
		return m.b
	}
	return 0
}

// check validates the modifier for the type, as PostgreSQL's typmodin functions do.
func (m typeMod) check(t Type) error {
	if m.n == 0 {
		return nil
	}
	switch {
	case m.float:
		if m.n != 1 || m.a < 1 || m.a > 53 {
			return errors.New("precision for type float must be between 1 and 53")
		}
		if m.a <= 24 {
			return errors.New("float(p) with p <= 24 is real, which is not a column type")
		}
		return nil
	case t == Varchar && m.n == 1 && m.a >= 1:
		return nil
	case t == Numeric:
		if m.a < 1 || m.a > 1000 || (m.n == 2 && m.b > m.a) {
			return errors.New("numeric precision must be between 1 and 1000 and scale at most the precision")
		}
		return nil
	case (t == Timestamp || t == Timestamptz) && m.n == 1:
		return nil // PostgreSQL reduces a precision above 6 to 6 with a warning
	}
	return fmt.Errorf("type modifier not supported for %s", t.SQLName())
}

// apply coerces a canonical value of type t to the modifier.
func (m typeMod) apply(t Type, canon []byte) ([]byte, error) {
	if m.n == 0 || m.float {
		return canon, nil
	}
	switch t {
	case Varchar: // an explicit cast truncates to n characters
		n, i := 0, 0
		for i < len(canon) && n < m.a {
			_, size := utf8.DecodeRune(canon[i:])
			i += size
			n++
		}
		return canon[:i], nil
	case Numeric:
		scale := 0
		if m.n == 2 {
			scale = m.b
		}
		return roundNumeric(canon, m.a, scale)
	case Timestamp, Timestamptz:
		return roundTimestamp(canon, min(m.a, 6))
	}
	return canon, nil
}

// roundNumeric is apply_typmod: round half away from zero to scale digits, then refuse a value with
// more than precision-scale digits before the point.
func roundNumeric(canon []byte, precision, scale int) ([]byte, error) {
	d, reason := parseNumericBinary(canon)
	if reason != "" {
		return nil, corrupt(Numeric, reason)
	}
	d.normalize()
	if d.special == numPInf || d.special == numNInf {
		return nil, &ValueError{Type: Numeric, Format: -1, Reason: fmt.Sprintf("numeric field overflow: a field with precision %d, scale %d cannot hold an infinite value", precision, scale)}
	}
	if d.special == 0 && d.dscale() > scale {
		keep := len(d.digits) - (d.dscale() - scale) // digits kept
		roundUp := keep >= 0 && keep < len(d.digits) && d.digits[keep] >= '5'
		if keep < 0 {
			keep, roundUp = 0, false
		}
		digits := append([]byte(nil), d.digits[:keep]...)
		if roundUp {
			i := len(digits) - 1
			for ; i >= 0 && digits[i] == '9'; i-- {
				digits[i] = '0'
			}
			if i >= 0 {
				digits[i]++
			} else {
				digits = append([]byte{'1'}, digits...)
			}
		}
		d.digits, d.exp = digits, -scale
		d.normalize()
	}
	if d.special == 0 && len(d.digits) > 0 && d.intDigits() > precision-scale {
		return nil, &ValueError{Type: Numeric, Format: -1, Reason: fmt.Sprintf("numeric field overflow: a field with precision %d, scale %d must round to an absolute value less than 10^%d", precision, scale, precision-scale)}
	}
	return d.appendBinary(nil), nil
}

// numericWithScale prints a canonical numeric with exactly scale fractional digits, as numeric_out
// prints a value of type numeric(p, scale).
func numericWithScale(canon []byte, scale int) ([]byte, error) {
	d, reason := parseNumericBinary(canon)
	if reason != "" {
		return nil, corrupt(Numeric, reason)
	}
	d.normalize()
	if d.special == 0 {
		if len(d.digits) == 0 {
			d.digits, d.exp = []byte{'0'}, 0
		}
		for d.dscale() < scale {
			d.digits = append(d.digits, '0')
			d.exp--
		}
	}
	return d.appendText(nil), nil
}

// roundTimestamp is AdjustTimestampForTypmod: round half away from zero (that is, from 2000-01-01)
// to p fractional digits.
func roundTimestamp(canon []byte, p int) ([]byte, error) {
	if len(canon) != 8 {
		return nil, corrupt(Timestamp, "wrong length")
	}
	v := int64(uint64(canon[0])<<56 | uint64(canon[1])<<48 | uint64(canon[2])<<40 | uint64(canon[3])<<32 |
		uint64(canon[4])<<24 | uint64(canon[5])<<16 | uint64(canon[6])<<8 | uint64(canon[7]))
	if v == tsPosInfinity || v == tsNegInfinity {
		return canon, nil
	}
	scale := int64(1)
	for range 6 - p {
		scale *= 10
	}
	offset := scale / 2
	if v >= 0 {
		v = (v + offset) / scale * scale
	} else {
		v = -((-v + offset) / scale * scale)
	}
	return appendInt64(nil, v), nil
}
