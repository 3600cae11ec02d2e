package columns

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/keyward/keyward/colcrypt/analyze"
	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/proxy"
)

// copyState follows one COPY between the client and a table with protected columns. What the
// statement fixes (format, delimiter, quote, each column's key name) is worked out once here, not
// per row.
type copyState struct {
	req  *proxy.Request
	cp   *analyze.Copy    // nil: no protected column, pass everything
	cols map[int]*protCol // protected fields by index
	csv  bool
	d    byte // delimiter
	q, e byte // csv quote and escape

	fields [][]byte // the current row's raw fields (reused from row to row)
	val    []byte   // the current field's canonical or rendered value (reused)
	buf    []byte   // COPY FROM: bytes of an incomplete row
	row    int      // rows seen (for HEADER)
	done   bool     // the end-of-data marker was seen
}

func (ss *session) copyFor(req *proxy.Request, from bool) *copyState {
	st := &copyState{req: req}
	if req == nil || req.SQL == "" {
		return st
	}
	plan, _ := ss.plan(req.SQL)
	if plan.Action != analyze.Rewrite {
		return st
	}
	for _, s := range plan.Statements {
		if s.Copy != nil && s.Copy.From == from && len(s.Copy.Columns) > 0 {
			cp := s.Copy
			st.cp = cp
			// One protCol per column for the whole COPY: its pointer keys the session's cipher
			// cache (ss.opens), so the rows after the first find their cipher there.
			st.cols = make(map[int]*protCol, len(cp.Columns))
			for _, c := range cp.Columns {
				p := c.Column
				st.cols[c.Index] = &protCol{prot: p, key: keyCol(p), typ: p.Type, aad: p.QualifiedName()}
			}
			st.csv = cp.Format == "csv"
			st.d = delim(cp)
			st.q, st.e = csvChars(cp)
			break
		}
	}
	return st
}

func copyData(dst, payload []byte) []byte {
	dst = append(dst, 'd')
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)+4))
	return append(dst, payload...)
}

// copyIn encrypts the protected fields of COPY FROM STDIN rows. CopyData messages need not align
// with rows: an incomplete row is held until its end arrives (or CopyDone).
func (ss *session) copyIn(m *proxy.FrontendMessage) proxy.Verdict {
	if m.Copy == nil {
		return proxy.Pass()
	}
	if ss.cin == nil || ss.cin.req != m.Copy {
		ss.cin = ss.copyFor(m.Copy, true)
	}
	st := ss.cin
	if st.cp == nil {
		return proxy.Pass()
	}
	switch m.Type {
	case 'f':
		ss.cin = nil
		return proxy.Pass()
	case 'c':
		var out []byte
		if len(st.buf) > 0 && !st.done {
			payload, _, err := ss.copyRows(st, st.buf, true)
			if err != nil {
				ss.cin = nil
				return proxy.Refuse(ss.errResp(err))
			}
			if len(payload) > 0 {
				out = copyData(out, payload)
			}
		}
		ss.cin = nil
		if out == nil {
			return proxy.Pass()
		}
		return proxy.Replace(append(out, m.Raw...))
	}
	data := m.Body()
	if st.done {
		return proxy.Pass()
	}
	in := data
	if len(st.buf) > 0 {
		st.buf = append(st.buf, data...)
		in = st.buf
	}
	payload, rest, err := ss.copyRows(st, in, false)
	if err != nil {
		ss.cin = nil
		return proxy.Refuse(ss.errResp(err))
	}
	st.buf = append(st.buf[:0:0], rest...)
	if len(payload) == 0 {
		return proxy.Replace(nil)
	}
	return proxy.Replace(copyData(nil, payload))
}

// copyRows rewrites the complete rows of in and returns them and the incomplete tail (all of it is
// a row when final).
func (ss *session) copyRows(st *copyState, in []byte, final bool) (out, rest []byte, err error) {
	for len(in) > 0 {
		end := rowEnd(in, st.csv, st.q, st.e)
		var line []byte
		var eol []byte
		switch {
		case end >= 0:
			line, eol = in[:end], in[end:end+1]
			in = in[end+1:]
		case final:
			line, in = in, nil
		default:
			return out, in, nil
		}
		if len(line) > 0 && line[len(line)-1] == '\r' {
			eol = append([]byte{'\r'}, eol...)
			line = line[:len(line)-1]
		}
		if string(line) == `\.` {
			st.done = true
			out = append(out, line...)
			out = append(out, eol...)
			out = append(out, in...)
			return out, nil, nil
		}
		st.row++
		if st.row == 1 && st.cp.Header {
			out = append(append(out, line...), eol...)
			continue
		}
		out, err = ss.encryptRow(out, st, line)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, eol...)
	}
	return out, nil, nil
}

// rowEnd finds the newline that ends the first row of b (-1: not there yet); q and e are the csv
// quote and escape as csvChars gives them.
func rowEnd(b []byte, csv bool, q, e byte) int {
	if !csv {
		return scanText(b, '\n')
	}
	return scanCSV(b, '\n', q, e)
}

func delim(cp *analyze.Copy) byte {
	if cp.Delimiter != "" {
		return cp.Delimiter[0]
	}
	if cp.Format == "csv" {
		return ','
	}
	return '\t'
}

// scanText returns the index of the first stop byte of a text-format row that is not escaped by a
// backslash (-1: none). An escaped character, even a newline, is data.
func scanText(b []byte, stop byte) int {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case stop:
			return i
		}
	}
	return -1
}

// scanCSV returns the index of the first stop byte of csv data outside quotes (-1: none), with
// quote q and escape e as PostgreSQL's COPY reads them.
func scanCSV(b []byte, stop, q, e byte) int {
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case in && c == e && e != q && i+1 < len(b) && (b[i+1] == q || b[i+1] == e):
			i++
		case in && c == q:
			if e == q && i+1 < len(b) && b[i+1] == q {
				i++
			} else {
				in = false
			}
		case !in && c == q:
			in = true
		case !in && c == stop:
			return i
		}
	}
	return -1
}

// splitText appends the fields of a text-format row to dst.
func splitText(dst [][]byte, line []byte, d byte) [][]byte {
	return split(dst, line, func(b []byte) int { return scanText(b, d) })
}

// splitCSV appends the raw fields of a csv row (quotes kept) to dst.
func splitCSV(dst [][]byte, line []byte, d, q, e byte) [][]byte {
	return split(dst, line, func(b []byte) int { return scanCSV(b, d, q, e) })
}

// split appends the pieces of line cut at every delimiter next finds to out.
func split(out [][]byte, line []byte, next func([]byte) int) [][]byte {
	for {
		i := next(line)
		if i < 0 {
			return append(out, line)
		}
		out = append(out, line[:i])
		line = line[i+1:]
	}
}

// unquoteCSV returns a csv field's value and whether any of it was quoted.
func unquoteCSV(raw []byte, q, e byte) ([]byte, bool) {
	if bytes.IndexByte(raw, q) < 0 {
		return raw, false
	}
	var out []byte
	in := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case in && c == e && i+1 < len(raw) && (raw[i+1] == q || raw[i+1] == e) && (e != q || raw[i+1] == q):
			out = append(out, raw[i+1])
			i++
		case c == q:
			in = !in
		default:
			out = append(out, c)
		}
	}
	return out, true
}

// unescapeText decodes a text-format COPY field.
func unescapeText(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			out = append(out, c)
			continue
		}
		i++
		switch c = raw[i]; c {
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
		case 'v':
			out = append(out, '\v')
		case 'x':
			v, n := 0, 0
			for n < 2 && i+1 < len(raw) && isHex(raw[i+1]) {
				v = v*16 + unhex(raw[i+1])
				i++
				n++
			}
			if n == 0 {
				out = append(out, 'x')
			} else {
				out = append(out, byte(v))
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v, n := int(c-'0'), 1
			for n < 3 && i+1 < len(raw) && raw[i+1] >= '0' && raw[i+1] <= '7' {
				v = v*8 + int(raw[i+1]-'0')
				i++
				n++
			}
			out = append(out, byte(v))
		default:
			out = append(out, c)
		}
	}
	return out
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}

// escapeText encodes a value for a text-format COPY field.
func escapeText(dst, v []byte, d byte) []byte {
	for _, c := range v {
		switch c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\v':
			dst = append(dst, '\\', 'v')
		default:
			if c == d {
				dst = append(dst, '\\', c)
			} else {
				dst = append(dst, c)
			}
		}
	}
	return dst
}

func contains(list []int, i int) bool {
	for _, x := range list {
		if x == i {
			return true
		}
	}
	return false
}

func csvChars(cp *analyze.Copy) (q, e byte) {
	q, e = '"', '"'
	if cp.Quote != "" {
		q = cp.Quote[0]
	}
	if cp.Escape != "" {
		e = cp.Escape[0]
	} else {
		e = q
	}
	return q, e
}

// split cuts a row into its raw fields (valid until the next row).
func (st *copyState) split(line []byte) [][]byte {
	if st.csv {
		st.fields = splitCSV(st.fields[:0], line, st.d, st.q, st.e)
	} else {
		st.fields = splitText(st.fields[:0], line, st.d)
	}
	return st.fields
}

// value decodes raw field i (unquoted or unescaped); null reports the NULL marker, as FORCE_NULL
// and FORCE_NOT_NULL (COPY FROM only) adjust it.
func (st *copyState) value(i int, raw []byte) (val []byte, null bool) {
	cp := st.cp
	if !st.csv {
		if string(raw) == cp.Null {
			return nil, true
		}
		return unescapeText(raw), false
	}
	v, quoted := unquoteCSV(raw, st.q, st.e)
	if string(v) != cp.Null {
		return v, false
	}
	if quoted {
		return v, contains(cp.ForceNull, i)
	}
	return v, !contains(cp.ForceNotNull, i)
}

// encryptRow appends line with its protected fields encrypted.
func (ss *session) encryptRow(out []byte, st *copyState, line []byte) ([]byte, error) {
	cp := st.cp
	cs := ss.csess()
	for i, raw := range st.split(line) {
		if i > 0 {
			out = append(out, st.d)
		}
		pc := st.cols[i]
		if pc == nil {
			out = append(out, raw...)
			continue
		}
		val, null := st.value(i, raw)
		if null {
			out = append(out, raw...)
			continue
		}
		if cp.HasDefault && string(val) == cp.Default {
			return nil, fmt.Errorf("column %s: COPY DEFAULT markers cannot be used with encrypted columns", pc.aad)
		}
		canon, err := coltype.AppendCanonical(st.val[:0], pc.typ, coltype.TextFormat, val, cs)
		if err != nil {
			return nil, &colErr{pc.aad, true, err}
		}
		st.val = canon
		envs, err := ss.seal(pc.prot, pc.key, analyze.Write, canon)
		if err != nil {
			return nil, err
		}
		if st.csv {
			out = append(out, `\x`...)
		} else {
			out = append(out, `\\x`...) // the text format's escape of one backslash
		}
		out = hex.AppendEncode(out, envs[0])
	}
	return out, nil
}

// copyOut decrypts the protected fields of COPY TO STDOUT rows: PostgreSQL sends one row per
// CopyData message.
func (ss *session) copyOut(m *proxy.BackendMessage) proxy.Verdict {
	if m.Request == nil {
		return proxy.Pass()
	}
	if ss.cout == nil || ss.cout.req != m.Request {
		ss.cout = ss.copyFor(m.Request, false)
	}
	st := ss.cout
	if st.cp == nil {
		return proxy.Pass()
	}
	st.row++
	if st.row == 1 && st.cp.Header {
		return proxy.Pass()
	}
	ss.tick()
	line := m.Body()
	var eol []byte
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line, eol = line[:n-1], line[n-1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line, eol = line[:n-1], line[n-1:]
			eol = []byte("\r\n")
		}
	}
	cp := st.cp
	d, q, e := st.d, st.q, st.e
	out := append(ss.rowBuf[:0], 'd', 0, 0, 0, 0)
	cs := ss.csess()
	for i, raw := range st.split(line) {
		if i > 0 {
			out = append(out, d)
		}
		pc := st.cols[i]
		if pc == nil {
			out = append(out, raw...)
			continue
		}
		val, null := st.value(i, raw)
		if null {
			out = append(out, raw...)
			continue
		}
		canon, err := ss.open(pc, val, coltype.TextFormat)
		if err != nil {
			if errors.Is(err, colkeys.ErrDenied) {
				switch ss.ic.onDenied {
				case DeniedNull:
					out = append(out, cp.Null...)
					continue
				case DeniedCiphertext:
					out = append(out, raw...)
					continue
				}
			}
			return proxy.Refuse(keyError(err, pc.aad, false))
		}
		text, err := coltype.AppendRender(st.val[:0], pc.typ, coltype.TextFormat, canon, cs)
		if err != nil {
			return proxy.Refuse(keyError(err, pc.aad, false))
		}
		st.val = text
		if !st.csv {
			out = escapeText(out, text, d)
			continue
		}
		needQuote := cp.ForceQuoteAll || contains(cp.ForceQuote, i) || string(text) == cp.Null ||
			bytes.IndexByte(text, d) >= 0 || bytes.IndexByte(text, q) >= 0 || bytes.ContainsAny(text, "\r\n") ||
			(len(text) > 0 && bytes.Equal(text, []byte(`\.`)))
		if !needQuote {
			out = append(out, text...)
			continue
		}
		out = append(out, q)
		for _, c := range text {
			if c == q || c == e {
				out = append(out, e)
			}
			out = append(out, c)
		}
		out = append(out, q)
	}
	out = append(out, eol...)
	binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
	ss.rowBuf = out // Replace does not retain it
	return proxy.Replace(out)
}
