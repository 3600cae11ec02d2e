package coltype

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/jackc/pgx/v5/pgtype"
)

// ConversionError reports a value of one type that cannot be stored in a column of another, as
// PostgreSQL would refuse it (no assignment cast, or out of range). It does not contain the value.
type ConversionError struct {
	From, To Type
	Reason   string
}

func (e *ConversionError) Error() string {
	return fmt.Sprintf("cannot store a value of type %s in a column of type %s: %s", e.From.SQLName(), e.To.SQLName(), e.Reason)
}

func convErr(from, to Type, reason string) error {
	return &ConversionError{From: from, To: to, Reason: reason}
}

// Convert turns the canonical encoding of a value of type from into the canonical encoding of the
// same value in type to, following PostgreSQL's assignment casts (what INSERT and UPDATE apply
// when an expression's type differs from the column's): integers, numeric and float8 convert to each
// other with PostgreSQL's rounding and range checks, date and timestamps convert through the
// session's TimeZone, every type converts to text and varchar through its output function, json
// text converts to jsonb, and everything else is refused with a *ConversionError.
func Convert(to, from Type, canon []byte, s *Session) ([]byte, error) {
	return appendConvert(nil, to, from, canon, s)
}

func appendConvert(dst []byte, to, from Type, canon []byte, s *Session) ([]byte, error) {
	if to == from || (isTextual(to) && isTextual(from)) {
		return append(dst, canon...), nil
	}
	if isTextual(to) {
		if from == Bool { // the bool -> text cast is booltext, not boolout
			if len(canon) == 1 && canon[0] == 1 {
				return append(dst, "true"...), nil
			}
			return append(dst, "false"...), nil
		}
		return AppendRender(dst, from, TextFormat, canon, s)
	}
	switch {
	case isInt(from) && isInt(to):
		v, _ := readInt(from, canon)
		return appendIntChecked(dst, from, to, v)
	case isInt(from) && to == Numeric:
		v, _ := readInt(from, canon)
		d := decimalFromInt(v)
		return d.appendBinary(dst), nil
	case isInt(from) && to == Float8:
		v, _ := readInt(from, canon)
		return appendFloat8(dst, float64(v)), nil
	case from == Numeric && (isInt(to) || to == Float8):
		d, reason := parseNumericBinary(canon)
		if reason != "" {
			return dst, corrupt(from, reason)
		}
		d.normalize()
		if to == Float8 {
			return appendFloat8FromDecimal(dst, &d, from)
		}
		if d.special != 0 {
			return dst, convErr(from, to, "cannot convert NaN or infinity to an integer")
		}
		v, ok := d.roundToInt64()
		if !ok {
			return dst, convErr(from, to, to.SQLName()+" out of range")
		}
		return appendIntChecked(dst, from, to, v)
	case from == Float8 && (isInt(to) || to == Numeric):
		if len(canon) != 8 {
			return dst, corrupt(from, "wrong length")
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(canon))
		if to == Numeric {
			return appendNumericFromFloat8(dst, f), nil
		}
		r := math.RoundToEven(f) // float8 -> integer casts use rint
		if math.IsNaN(r) || r < -9223372036854775808.0 || r >= 9223372036854775808.0 {
			return dst, convErr(from, to, to.SQLName()+" out of range")
		}
		return appendIntChecked(dst, from, to, int64(r))
	case from == Date && (to == Timestamp || to == Timestamptz):
		if len(canon) != 4 {
			return dst, corrupt(from, "wrong length")
		}
		switch d := int32(binary.BigEndian.Uint32(canon)); d {
		case datePosInfinity:
			return appendInt64(dst, tsPosInfinity), nil
		case dateNegInfinity:
			return appendInt64(dst, tsNegInfinity), nil
		default:
			v := int64(d) * usPerDay
			if to == Timestamptz {
				v = localToUTC(s.location(), v)
			}
			if !validTimestamp(v) {
				return dst, convErr(from, to, "date out of range for timestamp")
			}
			return appendInt64(dst, v), nil
		}
	case (from == Timestamp || from == Timestamptz) && (to == Timestamp || to == Timestamptz || to == Date):
		if len(canon) != 8 {
			return dst, corrupt(from, "wrong length")
		}
		v := int64(binary.BigEndian.Uint64(canon))
		if v == tsPosInfinity || v == tsNegInfinity {
			if to == Date {
				if v == tsPosInfinity {
					return appendDate(dst, datePosInfinity), nil
				}
				return appendDate(dst, dateNegInfinity), nil
			}
			return appendInt64(dst, v), nil
		}
		switch {
		case from == Timestamptz: // to local wall time
			v += offsetAt(s.location(), v) * usPerSec
		case to == Timestamptz: // from local wall time
			v = localToUTC(s.location(), v)
		}
		if to == Date {
			return appendDate(dst, int32(floorDiv(v, usPerDay))), nil
		}
		if !validTimestamp(v) {
			return dst, convErr(from, to, "timestamp out of range")
		}
		return appendInt64(dst, v), nil
	}
	return dst, &ConversionError{From: from, To: to, Reason: "PostgreSQL has no assignment cast between these types"}
}

func appendDate(dst []byte, d int32) []byte { return binary.BigEndian.AppendUint32(dst, uint32(d)) }

func isTextual(t Type) bool { return t == Text || t == Varchar }
func isInt(t Type) bool     { return t == Int2 || t == Int4 || t == Int8 }

func appendIntChecked(dst []byte, from, to Type, v int64) ([]byte, error) {
	_, lo, hi := intBounds(to)
	if v < lo || v > hi {
		return dst, convErr(from, to, to.SQLName()+" out of range")
	}
	return appendInt(dst, to, v), nil
}

// roundToInt64 rounds half away from zero (numeric -> integer casts round, they do not truncate).
func (d *decimal) roundToInt64() (int64, bool) {
	if len(d.digits) == 0 {
		return 0, true
	}
	n := d.intDigits()
	if n > 19 {
		return 0, false
	}
	var u uint64 // at most 19 digits (+1): cannot overflow
	for i := 0; i < n; i++ {
		c := byte('0')
		if i < len(d.digits) {
			c = d.digits[i]
		}
		u = u*10 + uint64(c-'0')
	}
	if n >= 0 && n < len(d.digits) && d.digits[n] >= '5' {
		u++
	}
	if d.neg {
		if u > 1<<63 {
			return 0, false
		}
		return int64(-u), true
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// appendFloat8FromDecimal is numeric -> float8: the nearest double to the decimal (PostgreSQL goes
// through strtod, which rounds correctly, as does strconv).
func appendFloat8FromDecimal(dst []byte, d *decimal, from Type) ([]byte, error) {
	switch d.special {
	case numNaN:
		return appendFloat8(dst, math.NaN()), nil
	case numPInf:
		return appendFloat8(dst, math.Inf(1)), nil
	case numNInf:
		return appendFloat8(dst, math.Inf(-1)), nil
	}
	f, err := strconv.ParseFloat(string(d.appendText(nil)), 64)
	if err != nil {
		return dst, convErr(from, Float8, "value out of range for type double precision")
	}
	return appendFloat8(dst, f), nil
}

// appendNumericFromFloat8 is float8_numeric: the double printed with 15 significant digits
// (DBL_DIG), then read as numeric, so 0.1::float8::numeric is 0.1.
func appendNumericFromFloat8(dst []byte, f float64) []byte {
	var d decimal
	switch {
	case math.IsNaN(f):
		d.special = numNaN
	case math.IsInf(f, 1):
		d.special = numPInf
	case math.IsInf(f, -1):
		d.special = numNInf
	default:
		d, _ = parseDecimal(strconv.AppendFloat(nil, f, 'e', 14, 64))
	}
	d.normalize()
	return d.appendBinary(dst)
}

// Additional wire types a client may declare for a parameter bound to a protected column.
const (
	unknownOID = pgtype.UnknownOID
	jsonOID    = pgtype.JSONOID
	float4OID  = pgtype.Float4OID
	bpcharOID  = pgtype.BPCharOID
)

// CanonicalFromOID is Canonical for a parameter the client declared with type OID srcOID (in Parse),
// which may differ from the column's declared type t: pgjdbc sends setString as varchar and setInt as
// int4 whatever the column is. 0 and unknown (705) mean "the column's type", as in PostgreSQL. The
// value is read in the declared type's wire format and converted with Convert; json and float4 are
// accepted as sources too.
func CanonicalFromOID(t Type, srcOID uint32, format int16, src []byte, s *Session) ([]byte, error) {
	if srcOID == 0 || srcOID == unknownOID {
		return Canonical(t, format, src, s)
	}
	if from, ok := TypeForOID(srcOID); ok {
		if from == Numeric && isTextual(t) {
			return numericDisplayText(format, src) // keeps the parameter's scale, as numeric -> text does
		}
		c, err := Canonical(from, format, src, s)
		if err != nil {
			return nil, err
		}
		return Convert(t, from, c, s)
	}
	switch srcOID {
	case jsonOID: // json's text and binary formats are both the text
		if t != JSONB && !isTextual(t) {
			return nil, &ConversionError{From: JSONB, To: t, Reason: "json parameter for a column of another type"}
		}
		if t == JSONB {
			return Canonical(JSONB, TextFormat, src, s)
		}
		return Canonical(t, TextFormat, src, s)
	case float4OID:
		var f float32
		if format == BinaryFormat {
			if len(src) != 4 {
				return nil, valueErr(Float8, format, "float4 parameter of %d bytes, want 4", len(src))
			}
			f = math.Float32frombits(binary.BigEndian.Uint32(src))
		} else {
			f64, err := parseFloat8Text(src)
			if err != nil {
				return nil, err
			}
			f = float32(f64)
			if math.IsInf(float64(f), 0) && !math.IsInf(f64, 0) {
				return nil, valueErr(Float8, format, "value out of range for type real")
			}
		}
		return Convert(t, Float8, appendFloat8(nil, float64(f)), s)
	case bpcharOID: // character(n) -> text drops the trailing blanks
		if !isTextual(t) {
			return nil, &ConversionError{From: Text, To: t, Reason: "character parameter for a non-text column"}
		}
		return Canonical(t, format, bytes.TrimRight(src, " "), s)
	}
	return nil, fmt.Errorf("coltype: parameter type OID %d for a %s column: %w", srcOID, t, ErrUnsupported)
}
