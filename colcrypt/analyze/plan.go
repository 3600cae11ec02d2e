package analyze

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/keyward/keyward/colcrypt/coltype"
)

// Action is what the proxy does with a statement text.
type Action uint8

const (
	// Pass: forward the text as it is. No protected column is written or searched (results are
	// still decrypted from RowDescription, which does not depend on the analysis).
	Pass Action = iota
	// Rewrite: the plan has work for the proxy: Edits to render, Params to encrypt, COPY data to
	// encrypt or decrypt, or PREPARE/EXECUTE/DEALLOCATE bookkeeping (see Statements).
	Rewrite
	// Refuse: answer with an ErrorResponse built from the Refusal; send nothing to PostgreSQL.
	Refuse
)

func (a Action) String() string {
	switch a {
	case Pass:
		return "pass"
	case Rewrite:
		return "rewrite"
	case Refuse:
		return "refuse"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// SQLState is the SQLSTATE a refusal should carry: feature_not_supported. The statement is valid
// SQL; the proxy cannot run it on ciphertext.
const SQLState = "0A000"

// Refusal says why a statement is refused. Table and Column are empty when the refusal is not about
// one column (a parameter used two ways, say).
type Refusal struct {
	Table  string // "schema.table"
	Column string
	Mode   Mode
	Reason string
}

// Error is the ErrorResponse message, written for a DBA: "column public.employees.salary is
// encrypted (randomized): ORDER BY on it cannot be computed by the database".
func (r *Refusal) Error() string {
	if r.Column == "" {
		if r.Table != "" {
			return fmt.Sprintf("table %s has encrypted columns: %s", r.Table, r.Reason)
		}
		return "statement refused by colcrypt: " + r.Reason
	}
	return fmt.Sprintf("column %s.%s is encrypted (%s): %s", r.Table, r.Column, r.Mode, r.Reason)
}

// Role is what a value does to its column.
type Role uint8

const (
	// Write: the value is stored (INSERT, UPDATE SET, ON CONFLICT DO UPDATE SET): encrypt it once,
	// with the newest key version.
	Write Role = iota + 1
	// Match: the value is searched for (=, <>, IN, IS [NOT] DISTINCT FROM): encrypt it with every
	// live key version of the (deterministic) column.
	Match
)

func (r Role) String() string {
	switch r {
	case Write:
		return "write"
	case Match:
		return "match"
	}
	return "role(" + strconv.Itoa(int(r)) + ")"
}

// Value is one SQL constant the proxy must encrypt.
type Value struct {
	Column *Protected
	Role   Role
	// Literal is the constant as PostgreSQL reads it, ready for coltype.ParseLiteral(Column.Type, ...):
	// strings unescaped, numbers with their sign folded in, the explicit cast if any.
	Literal coltype.Literal
	// Start and End locate the constant (cast included) in the SQL text, for messages.
	Start, End int
}

// Part is a piece of an edit's replacement text: either Text, or (Value non-nil) the value's
// envelopes as bytea literals separated by ", " (one for Write, one per live key version for Match).
type Part struct {
	Text  string
	Value *Value
}

// Edit replaces SQL text [Start, End) with the concatenation of Parts.
type Edit struct {
	Start, End int
	Parts      []Part
}

// Param is a $n parameter bound to a protected column.
//
// Write parameters are bound as one envelope (bytea) and appear in the rewritten SQL as $n::bytea.
// Match parameters are bound as an array of envelopes, one per live key version (bytea[], text or
// binary array format), and the comparison is rewritten to `col = ANY($n::bytea[])` and the like;
// a NULL value is bound as a NULL array. In both cases the proxy declares the parameter in Parse
// with OID() (a client-declared type there would otherwise be kept by PostgreSQL), encrypts the
// client's value after converting it from the type the client declared (Cast is the type the
// statement cast it to, a hint when the client declared none), and reports the column's declared
// type in ParameterDescription.
type Param struct {
	N      int
	Column *Protected
	Role   Role
	Cast   string
}

// OID is the type to declare for the parameter in Parse: bytea (17) or bytea[] (1001).
func (p *Param) OID() uint32 {
	if p.Role == Match {
		return 1001
	}
	return 17
}

// Array reports whether the parameter is bound as an array of envelopes.
func (p *Param) Array() bool { return p.Role == Match }

// Plan is the analysis of one statement text (one or several statements).
type Plan struct {
	Action  Action
	Refusal *Refusal // Action == Refuse
	// The rest is set only when Action == Rewrite.
	Statements []Statement // every statement of the text, in order
	Edits      []Edit      // sorted by Start, non-overlapping
	Values     []*Value    // every value the edits use
	Params     []Param     // sorted by N
}

// Param returns the binding of $n, or nil.
func (p *Plan) Param(n int) *Param {
	for i := range p.Params {
		if p.Params[i].N == n {
			return &p.Params[i]
		}
	}
	return nil
}

// Statement describes one statement of the text beyond its edits.
type Statement struct {
	Start, End int // the statement's text, without the separating semicolon
	Copy       *Copy
	Prepare    *Prepare    // PREPARE name AS ...
	Execute    *Execute    // EXECUTE name(...)
	Deallocate *Deallocate // DEALLOCATE name | ALL, DISCARD ALL
	SearchPath *SearchPath // SET / RESET search_path, RESET ALL, DISCARD ALL
}

// SearchPath reports a change of search_path made by the statement. Plans depend on the search path
// (Options.SearchPath), and PostgreSQL does not report it to clients, so the caller follows these
// changes (or asks the server with SHOW search_path) before analyzing the session's next texts.
// Changes made by set_config() or by functions are not seen.
type SearchPath struct {
	Schemas []string // the new path as written ("$user" not substituted); nil when Default
	Default bool     // back to the server's default (SET ... TO DEFAULT, RESET, DISCARD ALL)
	Local   bool     // SET LOCAL: until the end of the current transaction
}

// Prepare is an SQL-level PREPARE. The caller keeps it per session, under Name (replacing any
// previous one), to bind later EXECUTEs with Execute.Bind. Declared parameter types of protected
// parameters are edited to bytea or bytea[] in the plan's Edits.
type Prepare struct {
	Name   string
	Params []Param // the inner statement's bindings, sorted by N
}

// Deallocate forgets SQL-level prepared statements: Name, or every one when All.
type Deallocate struct {
	Name string
	All  bool
}

// Execute is an SQL-level EXECUTE with its arguments, to be bound with the session's Prepare of
// the same name.
type Execute struct {
	Name string
	Args []Arg
}

// Arg is one argument of EXECUTE.
type Arg struct {
	Start, End int
	Kind       ArgKind
	Literal    coltype.Literal // Kind == ArgLiteral
}

// ArgKind classifies an EXECUTE argument.
type ArgKind uint8

const (
	ArgOther   ArgKind = iota // an expression the proxy cannot encrypt
	ArgLiteral                // a constant, possibly cast
	ArgNull                   // NULL (no encryption needed)
)

// Bind maps the EXECUTE's arguments through the prepared statement's bindings. It returns the edits
// to apply to the EXECUTE text (with Render, together with the plan's other edits), or a refusal when
// an argument for a protected parameter is not a constant. A nil p (a statement the caller did not
// see prepared) binds nothing.
func (x *Execute) Bind(p *Prepare) ([]Edit, *Refusal) {
	if p == nil {
		return nil, nil
	}
	var edits []Edit
	for i := range p.Params {
		prm := &p.Params[i]
		if prm.N > len(x.Args) {
			continue // PostgreSQL rejects the EXECUTE itself
		}
		arg := &x.Args[prm.N-1]
		switch arg.Kind {
		case ArgNull:
			continue
		case ArgOther:
			return nil, refusal(prm.Column, "the EXECUTE argument for it is an expression the proxy cannot encrypt (only constants and NULL)")
		}
		v := &Value{Column: prm.Column, Role: prm.Role, Literal: arg.Literal, Start: arg.Start, End: arg.End}
		parts := []Part{{Value: v}}
		if prm.Role == Match {
			parts = []Part{{Text: "ARRAY["}, {Value: v}, {Text: "]::bytea[]"}}
		}
		edits = append(edits, Edit{Start: arg.Start, End: arg.End, Parts: parts})
	}
	return edits, nil
}

// Copy describes a COPY between the client and a table with protected columns.
type Copy struct {
	From   bool // COPY ... FROM STDIN (else TO STDOUT)
	Schema string
	Table  string // "" for COPY (query) TO
	Format string // "text" or "csv" ("binary" is refused)
	// Options as PostgreSQL applies them, defaults filled in.
	Delimiter     string // "\t" (text) or "," (csv)
	Null          string // `\N` (text) or "" (csv)
	Quote         string // csv only: `"`
	Escape        string // csv only: Quote
	Header        bool
	HeaderMatch   bool   // HEADER MATCH
	Default       string // DEFAULT 'x' (PostgreSQL 16), "" when absent
	HasDefault    bool
	Encoding      string // ENCODING 'x', "" when absent
	ForceNotNull  []int  // csv FORCE_NOT_NULL columns, as positions (0-based) in the data
	ForceNull     []int  // csv FORCE_NULL columns, as positions
	ForceQuote    []int  // csv FORCE_QUOTE columns (COPY TO), as positions; nil with ForceQuoteAll
	ForceQuoteAll bool
	// NumColumns is the number of fields per row; Columns lists the protected ones.
	NumColumns int
	Columns    []CopyColumn
}

// CopyColumn is a protected field of a COPY row.
type CopyColumn struct {
	Index  int // 0-based field position in each row
	Column *Protected
}

// ByteaLiteral renders an envelope as a bytea SQL literal: '\x4b57...'::bytea. It assumes
// standard_conforming_strings = on (the default since PostgreSQL 9.1, and what the analyzer's
// parser assumes for the text it reads): the proxy must refuse sessions that turn it off.
func ByteaLiteral(b []byte) string {
	var sb strings.Builder
	writeByteaLiteral(&sb, b)
	return sb.String()
}

// writeByteaLiteral writes ByteaLiteral(b) to sb (Render writes each envelope straight into the
// statement text it builds).
func writeByteaLiteral(sb *strings.Builder, b []byte) {
	sb.Grow(len(b)*2 + 12)
	sb.WriteString(`'\x`)
	var buf [64]byte
	for len(b) > 0 {
		n := min(len(b), len(buf)/2)
		hex.Encode(buf[:], b[:n])
		sb.Write(buf[:2*n])
		b = b[n:]
	}
	sb.WriteString(`'::bytea`)
}

// Replacement is a plain text edit.
type Replacement struct {
	Start, End int
	Text       string
}

// Apply returns sql with each replacement's range replaced by its text. Replacements may come in any
// order but must not overlap and must lie within sql; Apply panics otherwise, as for an out-of-range
// slice (plans never produce such edits; Render checks before calling).
func Apply(sql string, reps ...Replacement) string {
	sorted := make([]Replacement, len(reps))
	copy(sorted, reps)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	// Built left to right into one buffer: the same result as editing right to left, in one copy.
	n := len(sql)
	for _, r := range sorted {
		n += len(r.Text) - (r.End - r.Start)
	}
	var sb strings.Builder
	sb.Grow(max(n, 0))
	pos := 0
	for _, r := range sorted {
		if r.Start < pos || r.End < r.Start || r.End > len(sql) {
			panic(fmt.Sprintf("analyze.Apply: bad or overlapping replacement [%d,%d) after %d in %d bytes", r.Start, r.End, pos, len(sql)))
		}
		sb.WriteString(sql[pos:r.Start])
		sb.WriteString(r.Text)
		pos = r.End
	}
	sb.WriteString(sql[pos:])
	return sb.String()
}

// ErrEdit is returned by Render for edits that do not fit the text, or a seal function that
// returns the wrong number of envelopes.
var ErrEdit = errors.New("analyze: invalid edit")

// Render applies edits to sql. seal returns the envelopes of a value: exactly one for a Write value,
// one per live key version (at least one) for a Match value. seal is called once per value; its
// errors are returned as they are.
func Render(sql string, edits []Edit, seal func(v *Value) ([][]byte, error)) (string, error) {
	reps := make([]Replacement, 0, len(edits))
	var sb strings.Builder
	for _, e := range edits {
		if e.Start < 0 || e.End < e.Start || e.End > len(sql) {
			return "", fmt.Errorf("%w: range [%d,%d) outside %d bytes", ErrEdit, e.Start, e.End, len(sql))
		}
		sb.Reset()
		for _, p := range e.Parts {
			if p.Value == nil {
				sb.WriteString(p.Text)
				continue
			}
			envs, err := seal(p.Value)
			if err != nil {
				return "", err
			}
			if len(envs) == 0 || (p.Value.Role == Write && len(envs) != 1) {
				return "", fmt.Errorf("%w: %d envelopes for a %s value of %s", ErrEdit, len(envs), p.Value.Role, p.Value.Column.QualifiedName())
			}
			for i, env := range envs {
				if i > 0 {
					sb.WriteString(", ")
				}
				writeByteaLiteral(&sb, env)
			}
		}
		text := sb.String()
		// Keep tokens apart: "$1WHERE" is valid input ($1 then WHERE) but "$1::byteaWHERE" is not.
		if text != "" && e.End < len(sql) && identByte(text[len(text)-1]) && identByte(sql[e.End]) {
			text += " "
		}
		if text != "" && e.Start > 0 && identByte(sql[e.Start-1]) && identByte(text[0]) {
			text = " " + text
		}
		reps = append(reps, Replacement{Start: e.Start, End: e.End, Text: text})
	}
	sort.SliceStable(reps, func(i, j int) bool { return reps[i].Start < reps[j].Start })
	for i := 1; i < len(reps); i++ {
		if reps[i].Start < reps[i-1].End {
			return "", fmt.Errorf("%w: overlapping edits at %d", ErrEdit, reps[i].Start)
		}
	}
	return Apply(sql, reps...), nil
}

// Render applies the plan's edits to sql (the text the plan was made from); see the function Render.
func (p *Plan) Render(sql string, seal func(v *Value) ([][]byte, error)) (string, error) {
	if p.Action != Rewrite || len(p.Edits) == 0 {
		return sql, nil
	}
	return Render(sql, p.Edits, seal)
}

func refusal(c *Protected, reason string) *Refusal {
	return &Refusal{Table: c.Schema + "." + c.Table, Column: c.Column, Mode: c.Mode, Reason: reason}
}

// identByte reports whether c can continue an identifier, keyword, number or parameter token.
func identByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}
