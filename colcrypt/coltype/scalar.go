package coltype

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/big"
	"strconv"
	"unicode/utf8"
)

// ---- text, varchar ----

// PostgreSQL stores text in the database encoding; Keyward requires client_encoding UTF8 (the proxy
// checks the ParameterStatus), so valid UTF-8 without NUL is exactly what Postgres would accept.
func canonicalText(dst []byte, t Type, format int16, src []byte) ([]byte, error) {
	if !utf8.Valid(src) {
		return dst, valueErr(t, format, "invalid byte sequence for encoding UTF8")
	}
	if bytes.IndexByte(src, 0) >= 0 {
		return dst, valueErr(t, format, "text cannot contain NUL (0x00) bytes")
	}
	return append(dst, src...), nil
}

// ---- int2, int4, int8 ----

func intBounds(t Type) (size int, lo, hi int64) {
	switch t {
	case Int2:
		return 2, math.MinInt16, math.MaxInt16
	case Int4:
		return 4, math.MinInt32, math.MaxInt32
	}
	return 8, math.MinInt64, math.MaxInt64
}

// parseIntText is pg_strtoint16/32/64 of PostgreSQL 15: white space, a sign, decimal digits.
func parseIntText(t Type, s []byte) (int64, *ValueError) {
	_, lo, hi := intBounds(t)
	s = trimSpace(s)
	neg := false
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) == 0 {
		return 0, valueErr(t, TextFormat, "invalid syntax")
	}
	// Accumulate negatively so the minimum value parses.
	var v int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, valueErr(t, TextFormat, "invalid syntax")
		}
		d := int64(c - '0')
		if v < (lo+d)/10 {
			return 0, valueErr(t, TextFormat, "value out of range")
		}
		v = v*10 - d
	}
	if !neg {
		if v < -hi {
			return 0, valueErr(t, TextFormat, "value out of range")
		}
		v = -v
	}
	return v, nil
}

func appendInt(dst []byte, t Type, v int64) []byte {
	switch t {
	case Int2:
		return binary.BigEndian.AppendUint16(dst, uint16(v))
	case Int4:
		return binary.BigEndian.AppendUint32(dst, uint32(v))
	}
	return binary.BigEndian.AppendUint64(dst, uint64(v))
}

func readInt(t Type, b []byte) (int64, bool) {
	size, _, _ := intBounds(t)
	if len(b) != size {
		return 0, false
	}
	switch t {
	case Int2:
		return int64(int16(binary.BigEndian.Uint16(b))), true
	case Int4:
		return int64(int32(binary.BigEndian.Uint32(b))), true
	}
	return int64(binary.BigEndian.Uint64(b)), true
}

func canonicalInt(dst []byte, t Type, format int16, src []byte) ([]byte, error) {
	if format == BinaryFormat {
		size, _, _ := intBounds(t)
		if len(src) != size {
			return dst, valueErr(t, format, "%d bytes, want %d", len(src), size)
		}
		return append(dst, src...), nil
	}
	v, err := parseIntText(t, src)
	if err != nil {
		return dst, err
	}
	return appendInt(dst, t, v), nil
}

func renderInt(dst []byte, t Type, format int16, canon []byte) ([]byte, error) {
	v, ok := readInt(t, canon)
	if !ok {
		return dst, corrupt(t, "wrong length")
	}
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	return strconv.AppendInt(dst, v, 10), nil
}

// ---- float8 ----

// canonicalNaN is the one NaN bit pattern stored: PostgreSQL considers all NaNs equal.
const canonicalNaN = 0x7ff8000000000000

func appendFloat8(dst []byte, f float64) []byte {
	bits := math.Float64bits(f)
	switch {
	case f != f:
		bits = canonicalNaN
	case f == 0:
		bits = 0 // -0 = 0 in PostgreSQL, so one encoding
	}
	return binary.BigEndian.AppendUint64(dst, bits)
}

// parseFloat8Text follows float8in: strtod syntax with surrounding white space, NaN and
// [+-]Infinity / [+-]inf in any case; overflow, and underflow to zero of a non-zero input, are errors.
func parseFloat8Text(s []byte) (float64, *ValueError) {
	s = trimSpace(s)
	if len(s) == 0 || bytes.IndexByte(s, '_') >= 0 {
		return 0, valueErr(Float8, TextFormat, "invalid syntax")
	}
	if equalFold(s, "-nan") || equalFold(s, "+nan") { // strtod takes a signed NaN; Go does not
		return math.NaN(), nil
	}
	f, err := strconv.ParseFloat(string(s), 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, valueErr(Float8, TextFormat, "value out of range for type double precision")
		}
		return 0, valueErr(Float8, TextFormat, "invalid syntax")
	}
	if f == 0 && hasNonZeroMantissa(s) {
		return 0, valueErr(Float8, TextFormat, "value out of range for type double precision (underflow)")
	}
	return f, nil
}

// hasNonZeroMantissa reports whether a decimal float literal has a non-zero digit before its exponent.
func hasNonZeroMantissa(s []byte) bool {
	for _, c := range s {
		switch {
		case c == 'e' || c == 'E' || c == 'p' || c == 'P':
			return false
		case c >= '1' && c <= '9':
			return true
		}
	}
	return false
}

func canonicalFloat8(dst []byte, format int16, src []byte) ([]byte, error) {
	if format == BinaryFormat {
		if len(src) != 8 {
			return dst, valueErr(Float8, format, "%d bytes, want 8", len(src))
		}
		return appendFloat8(dst, math.Float64frombits(binary.BigEndian.Uint64(src))), nil
	}
	f, err := parseFloat8Text(src)
	if err != nil {
		return dst, err
	}
	return appendFloat8(dst, f), nil
}

// appendFloat8Text is float8out with extra_float_digits > 0 (the default since PostgreSQL 12): the
// shortest string that reads back exactly, in fixed notation when the decimal exponent is in
// [-4, 15) and in exponent notation (at least two exponent digits) otherwise.
func appendFloat8Text(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		return append(dst, '0')
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	if math.Abs(f) >= 1<<53 && onRoundingBoundary(f, e) {
		e = pgShortestStrict(buf[:0], f, e)
	}
	x := bytes.IndexByte(e, 'e')
	exp, _ := strconv.Atoi(string(e[x+1:]))
	if exp < -4 || exp >= 15 { // always the case after pgShortestStrict, as |f| >= 2^53 there
		return append(dst, e...)
	}
	return strconv.AppendFloat(dst, f, 'f', -1, 64)
}

// onRoundingBoundary reports whether the decimal s lies exactly half an ulp from f. Go's shortest
// formatting accepts such a decimal when f's mantissa is even (it does read back as f, by
// round-half-even); PostgreSQL's Ryu does not, and prints one more digit. Only |f| >= 2^53 can hit
// this: below, a midpoint needs more than 17 significant digits, more than any shortest form has.
func onRoundingBoundary(f float64, s []byte) bool {
	d, ok := new(big.Rat).SetString(string(s))
	if !ok {
		return false
	}
	fr := new(big.Rat).SetFloat64(f)
	diff := new(big.Rat).Sub(d, fr)
	if diff.Sign() == 0 {
		return false
	}
	frac, exp := math.Frexp(math.Abs(f))
	gap := math.Ldexp(1, exp-53) // the ulp above |f|
	if (diff.Sign() < 0) == (f > 0) && frac == 0.5 {
		gap /= 2 // below a power of two the spacing halves
	}
	diff.Abs(diff)
	diff.Mul(diff, big.NewRat(2, 1))
	return diff.Cmp(new(big.Rat).SetFloat64(gap)) == 0
}

// pgShortestStrict is the shortest correctly rounded form of f that lies strictly inside its
// rounding interval (Ryu without accepting the bounds).
func pgShortestStrict(dst []byte, f float64, shortest []byte) []byte {
	sig := 0
	for _, c := range shortest {
		if c == 'e' {
			break
		}
		if c >= '0' && c <= '9' {
			sig++
		}
	}
	for prec := sig; prec <= 17; prec++ { // prec digits after the point: prec+1 significant
		e := strconv.AppendFloat(dst[:0], f, 'e', prec, 64)
		if back, err := strconv.ParseFloat(string(e), 64); err == nil && back == f && !onRoundingBoundary(f, e) {
			// Drop trailing zeros of the mantissa.
			x := bytes.IndexByte(e, 'e')
			m := bytes.TrimRight(e[:x], "0")
			m = bytes.TrimSuffix(m, []byte("."))
			return append(append(dst[:0:0], m...), e[x:]...)
		}
	}
	return shortest
}

func renderFloat8(dst []byte, format int16, canon []byte) ([]byte, error) {
	if len(canon) != 8 {
		return dst, corrupt(Float8, "wrong length")
	}
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	return appendFloat8Text(dst, math.Float64frombits(binary.BigEndian.Uint64(canon))), nil
}

// ---- bool ----

// parseBoolText is parse_bool_with_len: any unique prefix of true/false/yes/no, on, off (at least "of"),
// 1 and 0, case-insensitive, with surrounding white space.
func parseBoolText(s []byte) (bool, bool) {
	s = trimSpace(s)
	if len(s) == 0 {
		return false, false
	}
	prefixOf := func(word string, minLen int) bool {
		return len(s) >= minLen && len(s) <= len(word) && equalFold(s, word[:len(s)])
	}
	switch {
	case prefixOf("true", 1), prefixOf("yes", 1), prefixOf("on", 2), len(s) == 1 && s[0] == '1':
		return true, true
	case prefixOf("false", 1), prefixOf("no", 1), prefixOf("off", 2), len(s) == 1 && s[0] == '0':
		return false, true
	}
	return false, false
}

func canonicalBool(dst []byte, format int16, src []byte) ([]byte, error) {
	var v, ok bool
	if format == BinaryFormat {
		// boolrecv: one byte, any non-zero value is true.
		v, ok = len(src) == 1 && src[0] != 0, len(src) == 1
	} else {
		v, ok = parseBoolText(src)
	}
	if !ok {
		return dst, valueErr(Bool, format, "invalid syntax")
	}
	if v {
		return append(dst, 1), nil
	}
	return append(dst, 0), nil
}

func renderBool(dst []byte, format int16, canon []byte) ([]byte, error) {
	if len(canon) != 1 || canon[0] > 1 {
		return dst, corrupt(Bool, "not 0 or 1")
	}
	if format == BinaryFormat {
		return append(dst, canon[0]), nil
	}
	if canon[0] == 1 {
		return append(dst, 't'), nil
	}
	return append(dst, 'f'), nil
}

// ---- uuid ----

// parseUUIDText is string_to_uuid: 32 hex digits in either case, optionally in braces, with an
// optional hyphen after any group of four digits (so the standard form, no hyphens at all, and
// "a0ee-bc99-..." all parse). No white space is allowed, as in PostgreSQL.
func parseUUIDText(s []byte) ([16]byte, bool) {
	var u [16]byte
	braces := len(s) > 0 && s[0] == '{'
	if braces {
		s = s[1:]
	}
	for i := range 16 {
		if len(s) < 2 {
			return u, false
		}
		hi, ok1 := unhexDigit(s[0])
		lo, ok2 := unhexDigit(s[1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[i] = hi<<4 | lo
		s = s[2:]
		if i%2 == 1 && i < 15 && len(s) > 0 && s[0] == '-' {
			s = s[1:]
		}
	}
	if braces {
		if len(s) == 0 || s[0] != '}' {
			return u, false
		}
		s = s[1:]
	}
	return u, len(s) == 0
}

func unhexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func canonicalUUID(dst []byte, format int16, src []byte) ([]byte, error) {
	if format == BinaryFormat {
		if len(src) != 16 {
			return dst, valueErr(UUID, format, "%d bytes, want 16", len(src))
		}
		return append(dst, src...), nil
	}
	u, ok := parseUUIDText(src)
	if !ok {
		return dst, valueErr(UUID, format, "invalid syntax")
	}
	return append(dst, u[:]...), nil
}

func renderUUID(dst []byte, format int16, canon []byte) ([]byte, error) {
	if len(canon) != 16 {
		return dst, corrupt(UUID, "wrong length")
	}
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	for i, b := range canon {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = hex.AppendEncode(dst, []byte{b})
	}
	return dst, nil
}

// ---- bytea ----

// parseByteaText is byteain: "\x" followed by hex digit pairs (white space allowed between pairs), or
// the escape format where "\\" is a backslash, "\ooo" an octal byte and every other byte stands for
// itself.
func parseByteaText(dst, s []byte) ([]byte, string) {
	if len(s) >= 2 && s[0] == '\\' && s[1] == 'x' {
		s = s[2:]
		for len(s) > 0 {
			if isSpace(s[0]) {
				s = s[1:]
				continue
			}
			hi, ok := unhexDigit(s[0])
			if !ok {
				return dst, "invalid hexadecimal digit"
			}
			if len(s) < 2 {
				return dst, "invalid hexadecimal data: odd number of digits"
			}
			lo, ok := unhexDigit(s[1])
			if !ok {
				return dst, "invalid hexadecimal digit"
			}
			dst = append(dst, hi<<4|lo)
			s = s[2:]
		}
		return dst, ""
	}
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			dst = append(dst, s[i])
			i++
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			dst = append(dst, '\\')
			i += 2
		case i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]):
			dst = append(dst, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 4
		default:
			return dst, "invalid escape sequence"
		}
	}
	return dst, ""
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func canonicalBytea(dst []byte, format int16, src []byte) ([]byte, error) {
	if format == BinaryFormat {
		return append(dst, src...), nil
	}
	start := len(dst)
	out, reason := parseByteaText(dst, src)
	if reason != "" {
		return out[:start], valueErr(Bytea, format, "%s", reason)
	}
	return out, nil
}

// renderBytea writes bytea_output = hex, the default since PostgreSQL 9.0 (bytea_output is not
// reported to clients, so the proxy cannot follow a session that changes it).
func renderBytea(dst []byte, format int16, canon []byte) ([]byte, error) {
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	dst = append(dst, '\\', 'x')
	return hex.AppendEncode(dst, canon), nil
}
