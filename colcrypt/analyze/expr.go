package analyze

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/keyward/keyward/colcrypt/coltype"
	pg "github.com/pganalyze/pg_query_go/v6"
)

type ctxKind uint8

const (
	cValue  ctxKind = iota // inside an expression: a protected column there is refused with reason
	cTarget                // a select list item: a bare protected column is fine
	cPred                  // a condition (WHERE, ON, HAVING, FILTER, and AND/OR/NOT below one)
)

type ctx struct {
	kind   ctxKind
	reason string
}

var (
	targetCtx = ctx{kind: cTarget, reason: "an expression on it in the select list cannot be computed by the database"}
	predCtx   = ctx{kind: cPred, reason: "using it as a condition cannot be computed by the database"}
)

func valueCtx(what string) ctx {
	return ctx{kind: cValue, reason: what + " on it cannot be computed by the database"}
}

// expr checks an expression in context c.
func (a *analyzer) expr(n *pg.Node, sc *scope, c ctx) {
	switch x := n.GetNode().(type) {
	case nil:
	case *pg.Node_ColumnRef:
		if p := a.columnRef(x.ColumnRef, sc); p != nil && c.kind != cTarget {
			a.refuse(p, c.reason)
		}
	case *pg.Node_AConst, *pg.Node_ParamRef, *pg.Node_SetToDefault, *pg.Node_SqlvalueFunction:
	case *pg.Node_TypeCast:
		a.expr(x.TypeCast.Arg, sc, valueCtx("a cast to "+typeName(x.TypeCast.TypeName)))
	case *pg.Node_AExpr:
		a.aExpr(n, x.AExpr, sc, c)
	case *pg.Node_BoolExpr:
		cc := c
		if c.kind != cPred {
			cc = valueCtx(strings.TrimSuffix(x.BoolExpr.Boolop.String(), "_EXPR"))
		}
		for _, arg := range x.BoolExpr.Args {
			a.expr(arg, sc, cc)
		}
	case *pg.Node_NullTest:
		// IS [NOT] NULL is computed on ciphertext as well as on plaintext (NULL stays NULL).
		if cr := x.NullTest.Arg.GetColumnRef(); cr != nil {
			a.columnRef(cr, sc)
			return
		}
		a.expr(x.NullTest.Arg, sc, valueCtx("IS NULL on an expression of it"))
	case *pg.Node_FuncCall:
		a.funcCall(x.FuncCall, sc)
	case *pg.Node_SubLink:
		a.subLink(x.SubLink, sc)
	case *pg.Node_List:
		for _, it := range x.List.Items {
			a.expr(it, sc, c)
		}
	default:
		what := describe(n)
		walk(n.ProtoReflect(), func(child *pg.Node) bool {
			switch child.GetNode().(type) {
			case *pg.Node_SelectStmt, *pg.Node_InsertStmt, *pg.Node_UpdateStmt, *pg.Node_DeleteStmt:
				outs, _ := a.query(child, sc)
				if p := firstProtected(outs); p != nil {
					a.refuse(p, what+" over a subquery returning it cannot be computed by the database")
				}
			default:
				a.expr(child, sc, valueCtx(what))
			}
			return false
		})
	}
}

func describe(n *pg.Node) string {
	switch n.GetNode().(type) {
	case *pg.Node_CaseExpr, *pg.Node_CaseWhen:
		return "CASE"
	case *pg.Node_CoalesceExpr:
		return "COALESCE"
	case *pg.Node_MinMaxExpr:
		return "GREATEST/LEAST"
	case *pg.Node_RowExpr:
		return "a ROW constructor"
	case *pg.Node_AArrayExpr:
		return "an ARRAY constructor"
	case *pg.Node_AIndirection:
		return "a subscript or field access"
	case *pg.Node_CollateClause:
		return "COLLATE"
	case *pg.Node_BooleanTest:
		return "IS TRUE/FALSE/UNKNOWN"
	case *pg.Node_ResTarget:
		return "a named argument"
	}
	return "the expression " + stmtName(n)
}

func opName(names []*pg.Node) string {
	if len(names) == 0 {
		return "?"
	}
	return names[len(names)-1].GetString_().GetSval()
}

func (a *analyzer) aExpr(n *pg.Node, x *pg.A_Expr, sc *scope, c ctx) {
	op := opName(x.Name)
	var what string
	switch x.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
		if c.kind == cPred && x.Lexpr != nil && (op == "=" || op == "<>" || op == "!=") {
			a.compare(x, sc)
			return
		}
		switch op {
		case "<", ">", "<=", ">=":
			what = "the range comparison " + op
		case "~~", "~~*", "!~~", "!~~*", "~", "~*", "!~", "!~*":
			what = "pattern matching (" + op + ")"
		default:
			what = "the operator " + op
		}
	case pg.A_Expr_Kind_AEXPR_DISTINCT, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		if c.kind == cPred {
			a.compare(x, sc)
			return
		}
		what = "IS DISTINCT FROM"
	case pg.A_Expr_Kind_AEXPR_IN:
		if c.kind == cPred {
			a.inList(x, sc)
			return
		}
		what = "IN"
	case pg.A_Expr_Kind_AEXPR_LIKE:
		what = "LIKE"
	case pg.A_Expr_Kind_AEXPR_ILIKE:
		what = "ILIKE"
	case pg.A_Expr_Kind_AEXPR_SIMILAR:
		what = "SIMILAR TO"
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		what = "the range comparison BETWEEN"
	case pg.A_Expr_Kind_AEXPR_OP_ANY:
		what = op + " ANY (array)"
	case pg.A_Expr_Kind_AEXPR_OP_ALL:
		what = op + " ALL (array)"
	case pg.A_Expr_Kind_AEXPR_NULLIF:
		what = "NULLIF"
	default:
		what = "the operator " + op
	}
	cc := valueCtx(what)
	a.expr(x.Lexpr, sc, cc)
	a.expr(x.Rexpr, sc, cc)
}

// protectedOperand returns the protected column an operand is, if it is a bare reference to one.
func (a *analyzer) protectedOperand(n *pg.Node, sc *scope) *Protected {
	if cr := n.GetColumnRef(); cr != nil {
		return a.columnRef(cr, sc)
	}
	return nil
}

func compareDesc(x *pg.A_Expr) (desc string, negated bool) {
	switch x.Kind {
	case pg.A_Expr_Kind_AEXPR_DISTINCT:
		return "IS DISTINCT FROM", true
	case pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		return "IS NOT DISTINCT FROM", false
	case pg.A_Expr_Kind_AEXPR_IN:
		if opName(x.Name) == "<>" {
			return "NOT IN", true
		}
		return "IN", false
	}
	if op := opName(x.Name); op != "=" {
		return "inequality (" + op + ")", true
	}
	return "equality (=)", false
}

// searchable refuses searching a column that is not deterministic.
func (a *analyzer) searchable(p *Protected, x *pg.A_Expr) {
	if p.Mode != Deterministic {
		desc, _ := compareDesc(x)
		a.refuse(p, desc+" on it cannot be computed by the database (only deterministic columns can be searched)")
	}
}

// compare handles col = v, col <> v, col IS [NOT] DISTINCT FROM v (either side) in a condition.
//
// The whole comparison is rewritten so that it matches every live key version:
//
//	col = 'x'                      -> (col IN (<env v1>, <env v2>))
//	col <> 'x'                     -> (col NOT IN (<env v1>, <env v2>))
//	col IS NOT DISTINCT FROM 'x'   -> (COALESCE(col IN (<envs>), false))
//	col IS DISTINCT FROM 'x'       -> (COALESCE(col NOT IN (<envs>), true))
//	col = $1                       -> (col = ANY($1::bytea[]))
//	col <> $1                      -> (col <> ALL($1::bytea[]))
//	col IS NOT DISTINCT FROM $1    -> (col = ANY($1::bytea[]) IS TRUE OR (col IS NULL AND $1::bytea[] IS NULL))
//	col IS DISTINCT FROM $1        -> (NOT (... the same ...))
//
// Comparisons with NULL are left alone (they are NULL, or IS [NOT] NULL, on ciphertext too).
func (a *analyzer) compare(x *pg.A_Expr, sc *scope) {
	lp := a.protectedOperand(x.Lexpr, sc)
	rp := a.protectedOperand(x.Rexpr, sc)
	desc, negated := compareDesc(x)
	if lp == nil && rp == nil {
		cc := valueCtx(desc)
		a.expr(x.Lexpr, sc, cc)
		a.expr(x.Rexpr, sc, cc)
		return
	}
	if lp != nil && rp != nil {
		a.refuse(lp, "comparing it with another column cannot be computed by the database (each column's ciphertext is bound to that column)")
	}
	col, colNode, other := lp, x.Lexpr, x.Rexpr
	if col == nil {
		col, colNode, other = rp, x.Rexpr, x.Lexpr
	}
	a.searchable(col, x)
	o := a.operand(other, col)
	switch o.kind {
	case opNull:
		if o.castNull {
			a.nullEdit(other)
		}
		return
	case opLiteral, opParam:
	default:
		a.refuseOperand(col, other, sc, "comparing it with")
	}
	cs, ce, ok1 := a.operandExtent(colNode)
	os, oe, ok2 := a.operandExtent(other)
	if !ok1 || !ok2 {
		a.refuse(col, "the comparison could not be located in the statement text")
	}
	colText := a.sql[cs:ce]
	var parts []Part
	if o.kind == opLiteral {
		v := a.newValue(col, Match, o, other)
		in, dflt := " IN (", "false"
		if negated {
			in, dflt = " NOT IN (", "true"
		}
		if x.Kind == pg.A_Expr_Kind_AEXPR_OP {
			parts = []Part{{Text: "(" + colText + in}, {Value: v}, {Text: "))"}}
		} else {
			parts = []Part{{Text: "(COALESCE(" + colText + in}, {Value: v}, {Text: "), " + dflt + "))"}}
		}
	} else {
		pt := a.bindParam(o, col, Match)
		arr := pt + "::bytea[]"
		switch {
		case x.Kind == pg.A_Expr_Kind_AEXPR_OP && !negated:
			parts = []Part{{Text: "(" + colText + " = ANY(" + arr + "))"}}
		case x.Kind == pg.A_Expr_Kind_AEXPR_OP:
			parts = []Part{{Text: "(" + colText + " <> ALL(" + arr + "))"}}
		default:
			same := colText + " = ANY(" + arr + ") IS TRUE OR (" + colText + " IS NULL AND " + arr + " IS NULL)"
			if negated {
				parts = []Part{{Text: "(NOT (" + same + "))"}}
			} else {
				parts = []Part{{Text: "(" + same + ")"}}
			}
		}
	}
	a.addEdit(min(cs, os), max(ce, oe), parts)
}

// inList handles col [NOT] IN (v, ...) in a condition: literals (and NULLs) become one IN list of
// every value's envelopes under every live version; each parameter becomes = ANY($n::bytea[]).
func (a *analyzer) inList(x *pg.A_Expr, sc *scope) {
	items := x.Rexpr.GetList().GetItems()
	col := a.protectedOperand(x.Lexpr, sc)
	if col == nil {
		cc := valueCtx("IN")
		a.expr(x.Lexpr, sc, cc)
		for _, it := range items {
			if p := a.protectedOperand(it, sc); p != nil {
				a.refuse(p, "comparing it with another column cannot be computed by the database (each column's ciphertext is bound to that column)")
			}
			a.expr(it, sc, cc)
		}
		return
	}
	a.searchable(col, x)
	if len(items) == 0 {
		a.refuse(col, "an empty IN list cannot be rewritten")
	}
	_, negated := compareDesc(x)
	var lits []Part
	var params []string
	for _, it := range items {
		o := a.operand(it, col)
		switch o.kind {
		case opNull:
			if len(lits) > 0 {
				lits = append(lits, Part{Text: ", "})
			}
			lits = append(lits, Part{Text: "NULL"})
		case opLiteral:
			if len(lits) > 0 {
				lits = append(lits, Part{Text: ", "})
			}
			lits = append(lits, Part{Value: a.newValue(col, Match, o, it)})
		case opParam:
			params = append(params, a.bindParam(o, col, Match))
		default:
			a.refuseOperand(col, it, sc, "comparing it with")
		}
	}
	cs, ce, ok := a.operandExtent(x.Lexpr)
	_, le, ok2 := a.extent(items[len(items)-1])
	j := -1
	if ok2 {
		j = a.closeParenAfter(le)
	}
	if !ok || j < 0 {
		a.refuse(col, "the IN list could not be located in the statement text")
	}
	colText := a.sql[cs:ce]
	in, anyAll, join := " IN (", " = ANY(", " OR "
	if negated {
		in, anyAll, join = " NOT IN (", " <> ALL(", " AND "
	}
	parts := []Part{{Text: "("}}
	first := true
	sep := func() {
		if !first {
			parts = append(parts, Part{Text: join})
		}
		first = false
	}
	if len(lits) > 0 {
		sep()
		parts = append(parts, Part{Text: colText + in})
		parts = append(parts, lits...)
		parts = append(parts, Part{Text: ")"})
	}
	for _, pt := range params {
		sep()
		parts = append(parts, Part{Text: colText + anyAll + pt + "::bytea[])"})
	}
	parts = append(parts, Part{Text: ")"})
	a.addEdit(cs, a.toks[j].end, parts)
}

// refuseOperand refuses a value the proxy cannot encrypt, naming the most useful reason.
func (a *analyzer) refuseOperand(col *Protected, n *pg.Node, sc *scope, verb string) {
	if cr := n.GetColumnRef(); cr != nil {
		a.refuse(col, verb+" another column cannot be computed by the database (each column's ciphertext is bound to that column)")
	}
	if n.GetSetToDefault() != nil {
		a.refuse(col, verb+" DEFAULT is not valid")
	}
	a.refuse(col, verb+" an expression cannot be encrypted by the proxy (only constants, parameters and NULL, possibly cast)")
}

func (a *analyzer) funcCall(f *pg.FuncCall, sc *scope) {
	name := funcName(f)
	if name == "count" && len(f.Args) == 1 && (len(f.Funcname) == 1 || opName(f.Funcname[:1]) == "pg_catalog") {
		if p := a.protectedOperand(f.Args[0], sc); p != nil {
			if f.AggDistinct {
				a.checkGroup(p, "count(DISTINCT)")
			}
		} else {
			a.expr(f.Args[0], sc, valueCtx("count() of an expression"))
		}
	} else {
		for _, arg := range f.Args {
			a.expr(arg, sc, valueCtx("the function "+name+"()"))
		}
	}
	a.orderBy(f.AggOrder, sc, nil, true)
	a.expr(f.AggFilter, sc, predCtx)
	a.window(f.Over, sc)
}

func (a *analyzer) subLink(s *pg.SubLink, sc *scope) {
	switch s.SubLinkType {
	case pg.SubLinkType_EXISTS_SUBLINK:
		a.query(s.Subselect, sc)
		return
	case pg.SubLinkType_EXPR_SUBLINK, pg.SubLinkType_ARRAY_SUBLINK, pg.SubLinkType_MULTIEXPR_SUBLINK:
		outs, _ := a.query(s.Subselect, sc)
		if p := firstProtected(outs); p != nil {
			a.refuse(p, "a subquery returning it as a value cannot be decrypted or encrypted by the proxy")
		}
		return
	}
	// x IN (SELECT ...), x op ANY/ALL (SELECT ...)
	if p := a.protectedOperand(s.Testexpr, sc); p != nil {
		a.refuse(p, "comparing it with a subquery cannot be computed by the database")
	}
	a.expr(s.Testexpr, sc, valueCtx("comparing with a subquery"))
	outs, _ := a.query(s.Subselect, sc)
	if p := firstProtected(outs); p != nil {
		a.refuse(p, "comparing it with a subquery cannot be computed by the database")
	}
}

type opKind uint8

const (
	opOther opKind = iota
	opNull
	opDefault
	opLiteral
	opParam
)

type operand struct {
	kind     opKind
	lit      coltype.Literal
	param    int
	paramLoc int
	cast     string
	castNull bool
}

// operand classifies a value written to or compared with protected column col (nil for EXECUTE
// arguments, whose column is not known yet).
func (a *analyzer) operand(n *pg.Node, col *Protected) operand {
	switch x := n.GetNode().(type) {
	case *pg.Node_AConst:
		return constOperand(x.AConst, "")
	case *pg.Node_ParamRef:
		return operand{kind: opParam, param: int(x.ParamRef.Number), paramLoc: int(x.ParamRef.Location)}
	case *pg.Node_SetToDefault:
		return operand{kind: opDefault}
	case *pg.Node_AExpr:
		return signed(x.AExpr, "")
	case *pg.Node_TypeCast:
		cast, ok := a.castName(x.TypeCast.TypeName, col)
		if !ok {
			return operand{}
		}
		switch arg := x.TypeCast.Arg.GetNode().(type) {
		case *pg.Node_AConst:
			o := constOperand(arg.AConst, cast)
			o.castNull = o.kind == opNull
			return o
		case *pg.Node_ParamRef:
			return operand{kind: opParam, param: int(arg.ParamRef.Number), paramLoc: int(arg.ParamRef.Location), cast: cast}
		case *pg.Node_AExpr:
			return signed(arg.AExpr, cast)
		}
	}
	return operand{}
}

func constOperand(c *pg.A_Const, cast string) operand {
	if c.Isnull {
		return operand{kind: opNull, cast: cast}
	}
	o := operand{kind: opLiteral, cast: cast}
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		o.lit = coltype.Literal{Kind: coltype.NumberLiteral, Value: strconv.FormatInt(int64(v.Ival.Ival), 10)}
	case *pg.A_Const_Fval:
		// The parser keeps non-decimal spellings (0x..., 1_000) of large numbers as written;
		// only plain decimal text is handed on.
		if strings.Trim(v.Fval.Fval, "0123456789.eE+-") != "" {
			return operand{}
		}
		o.lit = coltype.Literal{Kind: coltype.NumberLiteral, Value: v.Fval.Fval}
	case *pg.A_Const_Boolval:
		o.lit = coltype.Literal{Kind: coltype.BoolLiteral, Value: strconv.FormatBool(v.Boolval.Boolval)}
	case *pg.A_Const_Sval:
		o.lit = coltype.Literal{Kind: coltype.StringLiteral, Value: v.Sval.Sval}
	default: // bit strings
		return operand{}
	}
	o.lit.Cast = cast
	return o
}

// signed handles a sign the parser did not fold into the constant: -42::int8 is -(42::int8).
func signed(x *pg.A_Expr, cast string) operand {
	op := opName(x.Name)
	if x.Kind != pg.A_Expr_Kind_AEXPR_OP || x.Lexpr != nil || (op != "-" && op != "+") {
		return operand{}
	}
	var o operand
	switch r := x.Rexpr.GetNode().(type) {
	case *pg.Node_AConst:
		o = constOperand(r.AConst, cast)
	case *pg.Node_TypeCast:
		if cast != "" {
			return operand{}
		}
		c := r.TypeCast.Arg.GetAConst()
		if c == nil {
			return operand{}
		}
		o = constOperand(c, typeName(r.TypeCast.TypeName))
		if tn := r.TypeCast.TypeName; len(tn.Typmods) > 0 || len(tn.ArrayBounds) > 0 || tn.Setof || tn.PctType {
			return operand{}
		}
	default:
		return operand{}
	}
	if o.kind != opLiteral || o.lit.Kind != coltype.NumberLiteral {
		return operand{}
	}
	if op == "-" {
		if strings.HasPrefix(o.lit.Value, "-") {
			o.lit.Value = o.lit.Value[1:]
		} else {
			o.lit.Value = "-" + o.lit.Value
		}
	}
	return o
}

func typeName(tn *pg.TypeName) string {
	if tn == nil {
		return ""
	}
	var parts []string
	for _, n := range tn.Names {
		parts = append(parts, n.GetString_().GetSval())
	}
	return strings.Join(parts, ".")
}

// castName returns the name of a cast's type if a protected value may carry it: one of the
// declared types (or json), without type modifier or array bounds.
func (a *analyzer) castName(tn *pg.TypeName, col *Protected) (string, bool) {
	name := typeName(tn)
	ok := tn != nil && len(tn.Typmods) == 0 && len(tn.ArrayBounds) == 0 && !tn.Setof && !tn.PctType
	if ok && strings.TrimPrefix(name, "pg_catalog.") != "json" {
		_, err := coltype.ParseType(name)
		ok = err == nil
	}
	if !ok && col != nil {
		a.refuse(col, fmt.Sprintf("a value cast to %s cannot be encrypted for it (casts to the declared types only, without type modifiers)", strings.TrimPrefix(name, "pg_catalog.")))
	}
	return name, ok
}

func (a *analyzer) newValue(col *Protected, role Role, o operand, n *pg.Node) *Value {
	s, e, ok := a.extent(n)
	if !ok {
		a.refuse(col, "the value could not be located in the statement text")
	}
	v := &Value{Column: col, Role: role, Literal: o.lit, Start: s, End: e}
	a.values = append(a.values, v)
	return v
}

func (a *analyzer) addEdit(start, end int, parts []Part) {
	a.edits = append(a.edits, Edit{Start: start, End: end, Parts: parts})
}

// nullEdit turns NULL::text into a plain NULL, which PostgreSQL assigns to bytea.
func (a *analyzer) nullEdit(n *pg.Node) {
	if s, e, ok := a.extent(n); ok {
		a.addEdit(s, e, []Part{{Text: "NULL"}})
	}
}

// bindParam records that $n is bound to col with role, and returns "$n".
func (a *analyzer) bindParam(o operand, col *Protected, role Role) string {
	if p := a.params[o.param]; p != nil {
		if !p.Column.same(col) || p.Role != role {
			a.refuse(col, fmt.Sprintf("parameter $%d is bound both to %s (%s) and to %s (%s); pass the value as two parameters", o.param, p.Column.QualifiedName(), p.Role, col.QualifiedName(), role))
		}
		if p.Cast == "" {
			p.Cast = o.cast
		}
	} else {
		a.params[o.param] = &Param{N: o.param, Column: col, Role: role, Cast: o.cast}
	}
	a.consumed[o.paramLoc] = true
	return "$" + strconv.Itoa(o.param)
}

// writeValue handles a value stored into protected column col. sameOK allows SET col = col (and
// EXCLUDED.col, or the column of another row of the same table): the ciphertext stays in the
// column it was made for, where it still opens.
func (a *analyzer) writeValue(n *pg.Node, col *Protected, sc *scope, sameOK bool) {
	o := a.operand(n, col)
	switch o.kind {
	case opNull:
		if o.castNull {
			a.nullEdit(n)
		}
	case opDefault:
	case opLiteral:
		v := a.newValue(col, Write, o, n)
		a.addEdit(v.Start, v.End, []Part{{Value: v}})
	case opParam:
		s, e, ok := a.extent(n)
		if !ok {
			a.refuse(col, "the parameter could not be located in the statement text")
		}
		pt := a.bindParam(o, col, Write)
		a.addEdit(s, e, []Part{{Text: pt + "::bytea"}})
	default:
		if cr := n.GetColumnRef(); cr != nil && sameOK {
			if p := a.columnRef(cr, sc); p != nil && p.same(col) {
				return
			}
		}
		if sub := n.GetSubLink(); sub != nil {
			a.refuse(col, "the value written to it comes from a subquery, which the proxy cannot encrypt")
		}
		a.refuse(col, "the value written to it is an expression the proxy cannot encrypt (only constants, parameters, NULL and DEFAULT, possibly cast)")
	}
}
