package coltype

import (
	"encoding/binary"
	"strconv"
)

// decimal is an exact decimal number: digits × 10^exp, or a special value. After normalize, digits
// has no leading or trailing '0' (zero is empty digits, not negative), which makes it the canonical
// form: two decimals are equal numbers exactly when their normalized fields are equal.
type decimal struct {
	special byte   // 0, or one of numNaN, numPInf, numNInf
	neg     bool   // sign of a finite number
	digits  []byte // ASCII '0'..'9'
	exp     int
}

const (
	numNaN  = 1
	numPInf = 2
	numNInf = 3

	// PostgreSQL's binary numeric sign words.
	numericPos  = 0x0000
	numericNeg  = 0x4000
	numericNaN  = 0xC000
	numericPInf = 0xD000
	numericNInf = 0xF000

	// Limits of PostgreSQL's numeric type (numeric.c): digits before the point, display scale, and
	// the exponent accepted in text input.
	numericMaxWeightDigits = 131072
	numericMaxDscale       = 0x3FFF
	numericMaxInputExp     = 1 << 20 // far beyond every limit above; only keeps the parse from overflowing
)

func (d *decimal) normalize() {
	if d.special != 0 {
		d.neg, d.digits, d.exp = false, nil, 0
		return
	}
	i := 0
	for i < len(d.digits) && d.digits[i] == '0' {
		i++
	}
	d.digits = d.digits[i:]
	j := len(d.digits)
	for j > 0 && d.digits[j-1] == '0' {
		j--
	}
	d.exp += len(d.digits) - j
	d.digits = d.digits[:j]
	if len(d.digits) == 0 {
		d.neg, d.exp = false, 0
	}
}

// dscale is the number of fractional digits of a normalized decimal.
func (d *decimal) dscale() int { return max(0, -d.exp) }

// intDigits is the number of digits before the decimal point.
func (d *decimal) intDigits() int { return len(d.digits) + d.exp }

func (d *decimal) checkLimits() string {
	if d.special != 0 || len(d.digits) == 0 {
		return ""
	}
	if d.intDigits() > numericMaxWeightDigits {
		return "value overflows numeric format"
	}
	if d.dscale() > numericMaxDscale {
		return "value overflows numeric format (more than 16383 digits after the decimal point)"
	}
	return ""
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func trimSpace(s []byte) []byte {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// parseDecimal parses PostgreSQL numeric text input (numeric_in, PostgreSQL 15): surrounding white
// space, a sign, digits with an optional point, an optional exponent, or NaN / [+-]Infinity / [+-]inf.
// It returns a reason on failure. The result is not normalized.
func parseDecimal(s []byte) (decimal, string) {
	s = trimSpace(s)
	var d decimal
	switch {
	case equalFold(s, "nan"):
		return decimal{special: numNaN}, ""
	case equalFold(s, "infinity"), equalFold(s, "+infinity"), equalFold(s, "inf"), equalFold(s, "+inf"):
		return decimal{special: numPInf}, ""
	case equalFold(s, "-infinity"), equalFold(s, "-inf"):
		return decimal{special: numNInf}, ""
	}
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		d.neg = s[i] == '-'
		i++
	}
	digits := make([]byte, 0, len(s))
	sawDigit, sawPoint := false, false
	frac := 0
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits = append(digits, c)
			sawDigit = true
			if sawPoint {
				frac++
			}
			continue
		case c == '.' && !sawPoint:
			sawPoint = true
			continue
		}
		break
	}
	if !sawDigit {
		return d, "invalid syntax"
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		for i < len(s) && isSpace(s[i]) { // PostgreSQL 15 reads the exponent with strtol, which skips white space
			i++
		}
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if exp = exp*10 + int(s[i]-'0'); exp > numericMaxInputExp {
				return d, "exponent out of range"
			}
			i++
		}
		if i == start {
			return d, "invalid syntax"
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(s) {
		return d, "invalid syntax"
	}
	d.digits, d.exp = digits, exp-frac
	return d, ""
}

// appendText appends PostgreSQL's numeric_out form of a normalized decimal: no exponent, the
// fractional digits the value has (no trailing zeros after normalize).
func (d *decimal) appendText(dst []byte) []byte {
	switch d.special {
	case numNaN:
		return append(dst, "NaN"...)
	case numPInf:
		return append(dst, "Infinity"...)
	case numNInf:
		return append(dst, "-Infinity"...)
	}
	if len(d.digits) == 0 {
		return append(dst, '0')
	}
	if d.neg {
		dst = append(dst, '-')
	}
	n := d.intDigits()
	switch {
	case d.exp >= 0:
		dst = append(dst, d.digits...)
		for range d.exp {
			dst = append(dst, '0')
		}
	case n > 0:
		dst = append(dst, d.digits[:n]...)
		dst = append(dst, '.')
		dst = append(dst, d.digits[n:]...)
	default:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, d.digits...)
	}
	return dst
}

// appendBinary appends PostgreSQL's numeric_send form of a normalized decimal: ndigits, weight, sign,
// dscale (int16 each) and base-10000 digits, with no leading or trailing zero digit words.
func (d *decimal) appendBinary(dst []byte) []byte {
	var sign uint16
	switch d.special {
	case numNaN:
		sign = numericNaN
	case numPInf:
		sign = numericPInf
	case numNInf:
		sign = numericNInf
	}
	if d.special != 0 || len(d.digits) == 0 {
		dst = binary.BigEndian.AppendUint16(dst, 0)
		dst = binary.BigEndian.AppendUint16(dst, 0)
		dst = binary.BigEndian.AppendUint16(dst, sign)
		return binary.BigEndian.AppendUint16(dst, 0)
	}
	if d.neg {
		sign = numericNeg
	}
	// Align the digits on groups of four around the decimal point.
	n := d.intDigits()
	pad := ((n % 4) + 4) % 4
	if pad != 0 {
		pad = 4 - pad
	}
	total := pad + len(d.digits)
	words := (total + 3) / 4
	weight := (n+pad)/4 - 1 // n+pad is a multiple of 4, so the division is exact
	dst = binary.BigEndian.AppendUint16(dst, uint16(words))
	dst = binary.BigEndian.AppendUint16(dst, uint16(int16(weight)))
	dst = binary.BigEndian.AppendUint16(dst, sign)
	dst = binary.BigEndian.AppendUint16(dst, uint16(d.dscale()))
	for w := range words {
		var v uint16
		for k := range 4 {
			pos := w*4 + k - pad
			c := byte('0')
			if pos >= 0 && pos < len(d.digits) {
				c = d.digits[pos]
			}
			v = v*10 + uint16(c-'0')
		}
		dst = binary.BigEndian.AppendUint16(dst, v)
	}
	return dst
}

// parseNumericBinary reads numeric_recv input. As PostgreSQL does, digits beyond dscale are
// truncated away.
func parseNumericBinary(b []byte) (decimal, string) {
	if len(b) < 8 {
		return decimal{}, "numeric header is shorter than 8 bytes"
	}
	ndigits := int(binary.BigEndian.Uint16(b[0:]))
	weight := int(int16(binary.BigEndian.Uint16(b[2:])))
	sign := binary.BigEndian.Uint16(b[4:])
	dscale := int(binary.BigEndian.Uint16(b[6:]))
	if len(b) != 8+2*ndigits {
		return decimal{}, "numeric length does not match its digit count"
	}
	switch sign {
	case numericNaN:
		return decimal{special: numNaN}, ""
	case numericPInf:
		return decimal{special: numPInf}, ""
	case numericNInf:
		return decimal{special: numNInf}, ""
	case numericPos, numericNeg:
	default:
		return decimal{}, "invalid sign in numeric value"
	}
	if dscale > numericMaxDscale {
		return decimal{}, "invalid scale in numeric value"
	}
	d := decimal{neg: sign == numericNeg, digits: make([]byte, 0, 4*ndigits)}
	for i := range ndigits {
		v := binary.BigEndian.Uint16(b[8+2*i:])
		if v >= 10000 {
			return decimal{}, "invalid digit in numeric value"
		}
		d.digits = append(d.digits, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
	}
	d.exp = (weight - ndigits + 1) * 4
	if d.exp < -dscale { // truncate digits hidden by dscale
		cut := -dscale - d.exp
		if cut >= len(d.digits) {
			d.digits = nil
		} else {
			d.digits = d.digits[:len(d.digits)-cut]
		}
		d.exp = -dscale
	}
	return d, ""
}

// parseNumericInput reads a numeric as a client sends it (numeric_in or numeric_recv input).
func parseNumericInput(format int16, src []byte) (decimal, error) {
	var d decimal
	var reason string
	if format == BinaryFormat {
		d, reason = parseNumericBinary(src)
	} else {
		d, reason = parseDecimal(src)
	}
	if reason != "" {
		return d, valueErr(Numeric, format, "%s", reason)
	}
	return d, nil
}

func canonicalNumeric(dst []byte, format int16, src []byte) ([]byte, error) {
	d, err := parseNumericInput(format, src)
	if err != nil {
		return dst, err
	}
	d.normalize()
	if reason := d.checkLimits(); reason != "" {
		return dst, valueErr(Numeric, format, "%s", reason)
	}
	return d.appendBinary(dst), nil
}

func renderNumeric(dst []byte, format int16, canon []byte) ([]byte, error) {
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	d, reason := parseNumericBinary(canon)
	if reason != "" {
		return dst, corrupt(Numeric, reason)
	}
	d.normalize()
	return d.appendText(dst), nil
}

// decimalFromInt converts an integer to a normalized decimal.
func decimalFromInt(v int64) decimal {
	d := decimal{neg: v < 0}
	u := uint64(v)
	if v < 0 {
		u = -u
	}
	d.digits = strconv.AppendUint(nil, u, 10)
	d.normalize()
	return d
}

// numericDisplayText is numeric_out of a numeric input before normalization: with the display scale
// the input had ("1.50" -> "1.50", "1.5e3" -> "1500", "-0.00" -> "0.00"). Only a numeric converted to
// text needs it; everywhere else the canonical form (minimal scale) is what is stored.
func numericDisplayText(format int16, src []byte) ([]byte, error) {
	d, err := parseNumericInput(format, src)
	if err != nil {
		return nil, err
	}
	if d.special != 0 {
		d.normalize()
		return d.appendText(nil), nil
	}
	if d.exp > numericMaxWeightDigits {
		return nil, valueErr(Numeric, format, "value overflows numeric format")
	}
	if d.exp > 0 { // an exponent leaves no fractional digits: the value is an integer
		for range d.exp {
			d.digits = append(d.digits, '0')
		}
		d.exp = 0
	}
	// Strip leading zeros of the integer part only.
	i := 0
	for i < len(d.digits)-max(1, -d.exp) && d.digits[i] == '0' {
		i++
	}
	d.digits = d.digits[i:]
	allZero := true
	for _, c := range d.digits {
		allZero = allZero && c == '0'
	}
	if allZero {
		d.neg = false
	}
	if r := d.checkLimits(); r != "" {
		return nil, valueErr(Numeric, format, "%s", r)
	}
	return d.appendText(nil), nil
}
