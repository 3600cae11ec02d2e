package analyze

import (
	"sort"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// The parse tree gives each node the byte offset where it starts, never where it ends. Extents of
// the few node shapes the analyzer edits (constants, casts, parameters, column references) are
// found in the token stream of the same text from PostgreSQL's own scanner, so string escapes,
// dollar quoting, comments and string continuation are read exactly as the server reads them.

type token struct {
	start, end int
	kind       pg.Token
}

// tokens scans the text on first use (statements that need no edit never pay for it).
func (a *analyzer) tokens() []token {
	if a.toks != nil {
		return a.toks
	}
	res, err := pg.Scan(a.sql)
	if err != nil {
		a.refuseAll("the statement text could not be scanned")
	}
	a.toks = make([]token, 0, len(res.Tokens))
	for _, t := range res.Tokens {
		if t.Token == pg.Token_SQL_COMMENT || t.Token == pg.Token_C_COMMENT {
			continue
		}
		a.toks = append(a.toks, token{int(t.Start), int(t.End), t.Token})
	}
	return a.toks
}

// tokAt returns the index of the token starting at byte pos, or -1.
func (a *analyzer) tokAt(pos int) int {
	ts := a.tokens()
	i := sort.Search(len(ts), func(i int) bool { return ts[i].start >= pos })
	if i < len(ts) && ts[i].start == pos {
		return i
	}
	return -1
}

// tokAfter returns the index of the first token starting at or after pos (len when none).
func (a *analyzer) tokAfter(pos int) int {
	ts := a.tokens()
	return sort.Search(len(ts), func(i int) bool { return ts[i].start >= pos })
}

func (a *analyzer) text(i int) string {
	t := a.toks[i]
	return a.sql[t.start:t.end]
}

func (a *analyzer) isTok(i int, kind pg.Token) bool {
	return i >= 0 && i < len(a.toks) && a.toks[i].kind == kind
}

// word reports whether token i is the (unquoted) word w.
func (a *analyzer) word(i int, w string) bool {
	if i < 0 || i >= len(a.toks) {
		return false
	}
	s := a.text(i)
	return len(s) == len(w) && strings.EqualFold(s, w)
}

// extent returns the byte range of a constant, parameter, cast of one, signed number or column
// reference; ok is false for any other shape (the caller refuses).
func (a *analyzer) extent(n *pg.Node) (start, end int, ok bool) {
	switch {
	case n.GetAConst() != nil:
		c := n.GetAConst()
		i := a.tokAt(int(c.Location))
		if i < 0 {
			return 0, 0, false
		}
		if a.isTok(i, pg.Token_ASCII_45) || a.isTok(i, pg.Token_ASCII_43) { // sign folded in by the parser
			if i+1 >= len(a.toks) {
				return 0, 0, false
			}
			return a.toks[i].start, a.toks[i+1].end, true
		}
		if a.word(i+1, "uescape") {
			return 0, 0, false
		}
		return a.toks[i].start, a.toks[i].end, true
	case n.GetParamRef() != nil:
		i := a.tokAt(int(n.GetParamRef().Location))
		if !a.isTok(i, pg.Token_PARAM) {
			return 0, 0, false
		}
		return a.toks[i].start, a.toks[i].end, true
	case n.GetAExpr() != nil: // unary sign
		e := n.GetAExpr()
		i := a.tokAt(int(e.Location))
		if e.Lexpr != nil || i < 0 || e.Rexpr == nil {
			return 0, 0, false
		}
		_, end, ok := a.extent(e.Rexpr)
		return a.toks[i].start, end, ok
	case n.GetTypeCast() != nil:
		tc := n.GetTypeCast()
		if tc.TypeName == nil || tc.Arg == nil {
			return 0, 0, false
		}
		as, ae, ok := a.extent(tc.Arg)
		if !ok {
			return 0, 0, false
		}
		loc := int(tc.Location)
		if loc < 0 { // DATE '2024-01-02': the type name comes first
			return int(tc.TypeName.Location), ae, int(tc.TypeName.Location) < as
		}
		i := a.tokAt(loc)
		if a.isTok(i, pg.Token_CAST) { // CAST(arg AS type)
			j := a.matchParen(i + 1)
			if j < 0 {
				return 0, 0, false
			}
			return a.toks[i].start, a.toks[j].end, true
		}
		if !a.isTok(i, pg.Token_TYPECAST) {
			return 0, 0, false
		}
		j := a.typeNameEnd(a.tokAt(int(tc.TypeName.Location)))
		if j < 0 {
			return 0, 0, false
		}
		return as, a.toks[j].end, true
	case n.GetColumnRef() != nil:
		i := a.tokAt(int(n.GetColumnRef().Location))
		if i < 0 {
			return 0, 0, false
		}
		j := i
		for a.isTok(j+1, pg.Token_ASCII_46) && j+2 < len(a.toks) {
			j += 2
		}
		return a.toks[i].start, a.toks[j].end, true
	}
	return 0, 0, false
}

// operandExtent is extent widened over parentheses that enclose exactly the operand, as in
// "(ssn) = 'x'": a rewrite of the whole comparison must not leave one of them behind.
func (a *analyzer) operandExtent(n *pg.Node) (start, end int, ok bool) {
	start, end, ok = a.extent(n)
	if !ok {
		return
	}
	for {
		i := a.tokAt(start)
		j := a.tokAfter(end)
		if i <= 0 || j >= len(a.toks) || !a.isTok(i-1, pg.Token_ASCII_40) || !a.isTok(j, pg.Token_ASCII_41) {
			return
		}
		if a.matchParen(i-1) != j {
			return
		}
		start, end = a.toks[i-1].start, a.toks[j].end
	}
}

// matchParen returns the index of the ')' matching the '(' at token i, or -1.
func (a *analyzer) matchParen(i int) int {
	if !a.isTok(i, pg.Token_ASCII_40) {
		return -1
	}
	depth := 0
	for j := i; j < len(a.toks); j++ {
		switch a.toks[j].kind {
		case pg.Token_ASCII_40:
			depth++
		case pg.Token_ASCII_41:
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// closeParenAfter returns the index of the first unmatched ')' at or after byte pos, or -1.
func (a *analyzer) closeParenAfter(pos int) int {
	depth := 0
	for j := a.tokAfter(pos); j < len(a.toks); j++ {
		switch a.toks[j].kind {
		case pg.Token_ASCII_40:
			depth++
		case pg.Token_ASCII_41:
			if depth == 0 {
				return j
			}
			depth--
		}
	}
	return -1
}

// typeNameEnd returns the index of the last token of a type name starting at token i. Only plain
// names are handled (the caller refuses type modifiers and array bounds before asking): the SQL
// standard's multi-word names and qualified names.
func (a *analyzer) typeNameEnd(i int) int {
	if i < 0 {
		return -1
	}
	switch {
	case a.word(i, "double") && a.word(i+1, "precision"):
		return i + 1
	case a.word(i, "national") && (a.word(i+1, "character") || a.word(i+1, "char")):
		if a.word(i+2, "varying") {
			return i + 2
		}
		return i + 1
	case a.word(i, "character") || a.word(i, "char") || a.word(i, "nchar") || a.word(i, "bit"):
		if a.word(i+1, "varying") {
			return i + 1
		}
		return i
	case a.word(i, "timestamp") || a.word(i, "time"):
		if (a.word(i+1, "with") || a.word(i+1, "without")) && a.word(i+2, "time") && a.word(i+3, "zone") {
			return i + 3
		}
		return i
	}
	j := i
	for a.isTok(j+1, pg.Token_ASCII_46) && j+2 < len(a.toks) {
		j += 2
	}
	return j
}
