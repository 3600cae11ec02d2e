package coltype

import (
	"bytes"
	"cmp"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonbVersion is the first byte of jsonb's binary wire format (jsonb_send / jsonb_recv).
const jsonbVersion = 1

// maxJSONDepth bounds nesting so a hostile document cannot exhaust the stack.
const maxJSONDepth = 6400

type jsonValue struct {
	kind byte   // '{', '[', '"', '0' (number), 't', 'f', 'n'
	text []byte // string contents (decoded) or the normalized number
	elem []jsonValue
	keys [][]byte // object keys, parallel to elem
}

type jsonParser struct {
	s     []byte
	i     int
	depth int
	err   string
}

func (p *jsonParser) fail(reason string) {
	if p.err == "" {
		p.err = reason + " at byte " + strconv.Itoa(p.i)
	}
}

func (p *jsonParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value() jsonValue {
	p.ws()
	if p.i >= len(p.s) {
		p.fail("unexpected end of input")
		return jsonValue{}
	}
	switch c := p.s[p.i]; {
	case c == '{' || c == '[':
		p.depth++
		if p.depth > maxJSONDepth {
			p.fail("nesting too deep")
			return jsonValue{}
		}
		defer func() { p.depth-- }()
		if c == '{' {
			return p.object()
		}
		return p.array()
	case c == '"':
		return jsonValue{kind: '"', text: p.str()}
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case bytes.HasPrefix(p.s[p.i:], []byte("true")):
		p.i += 4
		return jsonValue{kind: 't'}
	case bytes.HasPrefix(p.s[p.i:], []byte("false")):
		p.i += 5
		return jsonValue{kind: 'f'}
	case bytes.HasPrefix(p.s[p.i:], []byte("null")):
		p.i += 4
		return jsonValue{kind: 'n'}
	}
	p.fail("unexpected token")
	return jsonValue{}
}

func (p *jsonParser) object() jsonValue {
	v := jsonValue{kind: '{'}
	p.i++ // {
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return v
	}
	for p.err == "" {
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			p.fail("expected an object key")
			break
		}
		k := p.str()
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			p.fail(`expected ":"`)
			break
		}
		p.i++
		e := p.value()
		v.keys, v.elem = append(v.keys, k), append(v.elem, e)
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			break
		}
		p.fail(`expected "," or "}"`)
	}
	return v
}

func (p *jsonParser) array() jsonValue {
	v := jsonValue{kind: '['}
	p.i++ // [
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return v
	}
	for p.err == "" {
		v.elem = append(v.elem, p.value())
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == ']' {
			p.i++
			break
		}
		p.fail(`expected "," or "]"`)
	}
	return v
}

// str reads a JSON string at p.i (on the opening quote) and returns its decoded UTF-8 contents.
func (p *jsonParser) str() []byte {
	p.i++
	var out []byte
	for p.err == "" {
		if p.i >= len(p.s) {
			p.fail("unterminated string")
			break
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return out
		case c < 0x20:
			p.fail("control character in string must be escaped")
		case c == '\\':
			p.i++
			if p.i >= len(p.s) {
				p.fail("unterminated string")
				break
			}
			e := p.s[p.i]
			p.i++
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := p.hex4()
				if utf16.IsSurrogate(r) {
					if r >= 0xdc00 || p.i+1 >= len(p.s) || p.s[p.i] != '\\' || p.s[p.i+1] != 'u' {
						p.fail("invalid Unicode surrogate pair")
						break
					}
					p.i += 2
					r = utf16.DecodeRune(r, p.hex4())
					if r == utf8.RuneError {
						p.fail("invalid Unicode surrogate pair")
						break
					}
				}
				if r == 0 {
					p.fail(`\u0000 cannot be converted to text`)
					break
				}
				out = utf8.AppendRune(out, r)
			default:
				p.i--
				p.fail("invalid escape sequence")
			}
		default:
			r, size := utf8.DecodeRune(p.s[p.i:])
			if r == utf8.RuneError && size <= 1 {
				p.fail("invalid byte sequence for encoding UTF8")
				break
			}
			out = append(out, p.s[p.i:p.i+size]...)
			p.i += size
		}
	}
	return out
}

func (p *jsonParser) hex4() rune {
	if p.i+4 > len(p.s) {
		p.fail(`"\u" must be followed by four hexadecimal digits`)
		return 0
	}
	var r rune
	for _, c := range p.s[p.i : p.i+4] {
		d, ok := unhexDigit(c)
		if !ok {
			p.fail(`"\u" must be followed by four hexadecimal digits`)
			return 0
		}
		r = r<<4 | rune(d)
	}
	p.i += 4
	return r
}

// number reads a JSON number (RFC 8259 grammar) and normalizes it as numeric: jsonb stores numbers
// as numeric, and compares them numerically ({"a":1.0} = {"a":1}).
func (p *jsonParser) number() jsonValue {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.s) && p.s[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		p.fail("invalid number")
		return jsonValue{}
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if digits() == 0 {
			p.fail("invalid number")
			return jsonValue{}
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			p.fail("invalid number")
			return jsonValue{}
		}
	}
	if p.i < len(p.s) && (p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.s[p.i] == '.' || p.s[p.i] >= 'a' && p.s[p.i] <= 'z' || p.s[p.i] >= 'A' && p.s[p.i] <= 'Z') {
		p.fail("invalid number") // "01", "1.2.3", "1x"
		return jsonValue{}
	}
	d, reason := parseDecimal(p.s[start:p.i])
	if reason != "" {
		p.fail(reason)
		return jsonValue{}
	}
	d.normalize()
	if reason := d.checkLimits(); reason != "" {
		p.fail(reason)
		return jsonValue{}
	}
	return jsonValue{kind: '0', text: d.appendText(nil)}
}

// appendJSONB writes jsonb's text output: object keys ordered by length then bytes (jsonb's own
// order), the last of duplicate keys kept, ", " and ": " separators.
func appendJSONB(dst []byte, v *jsonValue) []byte {
	switch v.kind {
	case '{':
		idx := make([]int, len(v.keys))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			ka, kb := v.keys[a], v.keys[b]
			if c := cmp.Compare(len(ka), len(kb)); c != 0 {
				return c
			}
			return bytes.Compare(ka, kb)
		})
		dst = append(dst, '{')
		first := true
		for n, i := range idx {
			if n+1 < len(idx) && bytes.Equal(v.keys[i], v.keys[idx[n+1]]) {
				continue // a later duplicate wins
			}
			if !first {
				dst = append(dst, ", "...)
			}
			first = false
			dst = appendJSONString(dst, v.keys[i])
			dst = append(dst, ": "...)
			dst = appendJSONB(dst, &v.elem[i])
		}
		return append(dst, '}')
	case '[':
		dst = append(dst, '[')
		for i := range v.elem {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = appendJSONB(dst, &v.elem[i])
		}
		return append(dst, ']')
	case '"':
		return appendJSONString(dst, v.text)
	case '0':
		return append(dst, v.text...)
	case 't':
		return append(dst, "true"...)
	case 'f':
		return append(dst, "false"...)
	}
	return append(dst, "null"...)
}

// appendJSONString is PostgreSQL's escape_json.
func appendJSONString(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch c {
		case '\b':
			dst = append(dst, `\b`...)
		case '\f':
			dst = append(dst, `\f`...)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		case '"':
			dst = append(dst, `\"`...)
		case '\\':
			dst = append(dst, `\\`...)
		default:
			if c < 0x20 {
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
			} else {
				dst = append(dst, c)
			}
		}
	}
	return append(dst, '"')
}

// canonicalJSONB is jsonb's binary send format (version byte 1, then the text) of the normalized
// document, which is exactly what PostgreSQL would print for it, with numbers at their minimal scale.
func canonicalJSONB(dst []byte, format int16, src []byte) ([]byte, error) {
	if format == BinaryFormat {
		if len(src) == 0 || src[0] != jsonbVersion {
			return dst, valueErr(JSONB, format, "unsupported jsonb version number")
		}
		src = src[1:]
	}
	p := jsonParser{s: src}
	v := p.value()
	p.ws()
	if p.err == "" && p.i != len(p.s) {
		p.fail("unexpected data after the document")
	}
	if p.err != "" {
		return dst, valueErr(JSONB, format, "%s", p.err)
	}
	dst = append(dst, jsonbVersion)
	return appendJSONB(dst, &v), nil
}

func renderJSONB(dst []byte, format int16, canon []byte) ([]byte, error) {
	if len(canon) == 0 || canon[0] != jsonbVersion {
		return dst, corrupt(JSONB, "missing version byte")
	}
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	return append(dst, canon[1:]...), nil
}
