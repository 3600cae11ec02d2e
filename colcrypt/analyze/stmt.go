package analyze

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

func (a *analyzer) with(w *pg.WithClause, sc *scope) {
	if w == nil {
		return
	}
	for _, n := range w.Ctes {
		c := n.GetCommonTableExpr()
		if c == nil {
			continue
		}
		entry := &cte{name: c.Ctename}
		if w.Recursive {
			// Visible (with unknown columns) to its own body; a recursive body is a UNION, whose
			// protected outputs are refused anyway.
			sc.ctes = append(sc.ctes, entry)
		}
		outs, exact := a.query(c.Ctequery, sc)
		entry.cols, entry.known = renamed(outs, c.Aliascolnames), exact
		if !w.Recursive {
			sc.ctes = append(sc.ctes, entry)
		}
	}
}

func renamed(outs []outCol, names []*pg.Node) []outCol {
	if len(names) == 0 {
		return outs
	}
	outs = append([]outCol(nil), outs...)
	for i, n := range names {
		if i < len(outs) && n.GetString_() != nil {
			outs[i].name = n.GetString_().Sval
		}
	}
	return outs
}

func (a *analyzer) selectStmt(s *pg.SelectStmt, parent *scope) (outs []outCol, exact bool) {
	if s == nil {
		return nil, true
	}
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	if s.Op != pg.SetOperation_SETOP_NONE && s.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		lo, le := a.selectStmt(s.Larg, sc)
		ro, re := a.selectStmt(s.Rarg, sc)
		op := strings.TrimPrefix(s.Op.String(), "SETOP_")
		for _, o := range append(append([]outCol(nil), lo...), ro...) {
			if o.prot != nil {
				a.refuse(o.prot, op+" with it in the result cannot be decrypted by the proxy (PostgreSQL does not say which column a combined result comes from)")
			}
		}
		outs, exact = lo, le && re
		osc := &scope{parent: sc, rels: []*rel{{cols: outs, known: exact}}}
		a.orderBy(s.SortClause, osc, outs, exact)
		a.expr(s.LimitCount, sc, valueCtx("LIMIT"))
		a.expr(s.LimitOffset, sc, valueCtx("OFFSET"))
		return outs, exact
	}
	if len(s.ValuesLists) > 0 {
		width := 0
		for _, row := range s.ValuesLists {
			items := row.GetList().GetItems()
			width = max(width, len(items))
			for _, it := range items {
				a.expr(it, sc, valueCtx("a VALUES list"))
			}
		}
		for i := 0; i < width; i++ {
			outs = append(outs, outCol{name: "column" + itoa(i+1)})
		}
		a.orderBy(s.SortClause, &scope{parent: sc, rels: []*rel{{cols: outs, known: true}}}, outs, true)
		a.expr(s.LimitCount, sc, valueCtx("LIMIT"))
		a.expr(s.LimitOffset, sc, valueCtx("OFFSET"))
		return outs, true
	}
	for _, f := range s.FromClause {
		a.fromItem(f, sc)
	}
	a.expr(s.WhereClause, sc, predCtx)
	outs, exact = a.targets(s.TargetList, sc)
	for _, g := range s.GroupClause {
		a.groupItem(g, sc, outs, exact, "GROUP BY")
	}
	a.expr(s.HavingClause, sc, predCtx)
	for _, w := range s.WindowClause {
		a.window(w.GetWindowDef(), sc)
	}
	if len(s.DistinctClause) > 0 {
		if len(s.DistinctClause) == 1 && s.DistinctClause[0].GetNode() == nil {
			for _, o := range outs {
				a.checkGroup(o.prot, "SELECT DISTINCT")
			}
		} else {
			for _, d := range s.DistinctClause {
				a.groupItem(d, sc, outs, exact, "DISTINCT ON")
			}
		}
	}
	a.orderBy(s.SortClause, sc, outs, exact)
	a.expr(s.LimitCount, sc, valueCtx("LIMIT"))
	a.expr(s.LimitOffset, sc, valueCtx("OFFSET"))
	if s.IntoClause != nil {
		if p := firstProtected(outs); p != nil {
			a.refuse(p, "SELECT INTO would copy its ciphertext into a new column the proxy does not know")
		}
	}
	return outs, exact
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func (a *analyzer) fromItem(n *pg.Node, sc *scope) {
	switch x := n.GetNode().(type) {
	case *pg.Node_RangeVar:
		sc.rels = append(sc.rels, a.rangeVar(x.RangeVar, sc, false))
	case *pg.Node_RangeSubselect:
		outs, exact := a.query(x.RangeSubselect.Subquery, sc)
		r := &rel{cols: outs, known: exact}
		if al := x.RangeSubselect.Alias; al != nil {
			r.name = al.Aliasname
			r.renameColumns(al.Colnames)
		}
		sc.rels = append(sc.rels, r)
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		first := len(sc.rels)
		a.fromItem(j.Larg, sc)
		mid := len(sc.rels)
		a.fromItem(j.Rarg, sc)
		left, right := sc.rels[first:mid], sc.rels[mid:]
		for _, u := range j.UsingClause {
			name := u.GetString_().GetSval()
			for _, r := range sc.rels[first:] {
				if p, _ := r.lookup(name); p != nil {
					a.refuse(p, "JOIN USING compares it with another column, which cannot be computed by the database (each column's ciphertext is bound to that column)")
				}
			}
		}
		if j.IsNatural {
			a.naturalJoin(left, right)
		}
		if len(j.UsingClause) > 0 || j.IsNatural {
			sc.merged = true
		}
		a.expr(j.Quals, sc, predCtx)
		if al := j.Alias; al != nil {
			r := &rel{name: al.Aliasname, known: true}
			for _, s := range sc.rels[first:] {
				r.cols = append(r.cols, s.columns()...)
				r.known = r.known && s.known
			}
			r.renameColumns(al.Colnames)
			sc.rels = append(sc.rels, r)
		}
	case *pg.Node_RangeFunction:
		f := x.RangeFunction
		walk(f.ProtoReflect(), func(c *pg.Node) bool {
			a.expr(c, sc, valueCtx("a function in FROM"))
			return false
		})
		r := &rel{}
		if f.Alias != nil {
			r.name = f.Alias.Aliasname
		} else if len(f.Functions) > 0 {
			if items := f.Functions[0].GetList().GetItems(); len(items) > 0 {
				if fc := items[0].GetFuncCall(); fc != nil {
					r.name = funcName(fc)
				}
			}
		}
		sc.rels = append(sc.rels, r)
	case *pg.Node_RangeTableSample:
		a.fromItem(x.RangeTableSample.Relation, sc)
		for _, arg := range x.RangeTableSample.Args {
			a.expr(arg, sc, valueCtx("TABLESAMPLE"))
		}
		a.expr(x.RangeTableSample.Repeatable, sc, valueCtx("TABLESAMPLE"))
	case nil:
	default:
		walk(n.ProtoReflect(), func(c *pg.Node) bool {
			if c.GetRangeVar() != nil {
				a.fromItem(c, sc)
				return false
			}
			a.expr(c, sc, valueCtx("this FROM item"))
			return false
		})
		sc.rels = append(sc.rels, &rel{name: aliasOf(n)})
	}
}

func aliasOf(n *pg.Node) string {
	name := ""
	if tf := n.GetRangeTableFunc(); tf != nil && tf.Alias != nil {
		name = tf.Alias.Aliasname
	}
	if jt := n.GetJsonTable(); jt != nil && jt.Alias != nil {
		name = jt.Alias.Aliasname
	}
	return name
}

// naturalJoin refuses a NATURAL JOIN that would compare a protected column with a same-named
// column (or might, when a side's columns are unknown).
func (a *analyzer) naturalJoin(left, right []*rel) {
	names := func(rs []*rel) (map[string]bool, bool) {
		m := map[string]bool{}
		known := true
		for _, r := range rs {
			known = known && r.known
			for _, c := range r.columns() {
				m[c.name] = true
			}
		}
		return m, known
	}
	ln, lk := names(left)
	rn, rk := names(right)
	check := func(rs []*rel, other map[string]bool, otherKnown bool) {
		for _, r := range rs {
			for _, c := range r.columns() {
				if c.prot != nil && (other[c.name] || !otherKnown) {
					a.refuse(c.prot, "NATURAL JOIN compares it with another column, which cannot be computed by the database")
				}
			}
		}
	}
	check(left, rn, rk)
	check(right, ln, lk)
}

// targets analyzes a SELECT or RETURNING list and returns its output columns.
func (a *analyzer) targets(list []*pg.Node, sc *scope) (outs []outCol, exact bool) {
	exact = true
	for _, t := range list {
		rt := t.GetResTarget()
		if rt == nil || rt.Val == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil {
			if names, star := refNames(cr); star {
				rels := a.starRels(cr, sc)
				if rels == nil || (len(names) == 0 && sc.merged) {
					exact = false
				}
				for _, r := range rels {
					outs = append(outs, r.columns()...)
					exact = exact && r.known
					if r.protected() != nil {
						a.protRefs++
					}
				}
				continue
			} else {
				name := rt.Name
				if name == "" && len(names) > 0 {
					name = names[len(names)-1]
				}
				outs = append(outs, outCol{name: name, prot: a.columnRef(cr, sc)})
				continue
			}
		}
		a.expr(rt.Val, sc, targetCtx)
		name := rt.Name
		if name == "" {
			name = figureName(rt.Val)
		}
		outs = append(outs, outCol{name: name})
	}
	return outs, exact
}

// figureName approximates PostgreSQL's FigureColname for unprotected outputs; only used to
// resolve names of derived columns, which are plaintext whatever their name.
func figureName(n *pg.Node) string {
	switch x := n.GetNode().(type) {
	case *pg.Node_FuncCall:
		return funcName(x.FuncCall)
	case *pg.Node_TypeCast:
		if name := figureName(x.TypeCast.Arg); name != "?column?" {
			return name
		}
		if tn := x.TypeCast.TypeName; tn != nil && len(tn.Names) > 0 {
			return tn.Names[len(tn.Names)-1].GetString_().GetSval()
		}
	case *pg.Node_CaseExpr:
		return "case"
	}
	return "?column?"
}

func funcName(f *pg.FuncCall) string {
	if len(f.Funcname) == 0 {
		return ""
	}
	return f.Funcname[len(f.Funcname)-1].GetString_().GetSval()
}

func outByName(outs []outCol, name string) (outCol, bool) {
	for _, o := range outs {
		if o.name == name {
			return o, true
		}
	}
	return outCol{}, false
}

// position resolves "GROUP BY 2" / "ORDER BY 2".
func (a *analyzer) position(c *pg.A_Const, outs []outCol, exact bool, what string) bool {
	iv := c.GetIval()
	if iv == nil {
		return false
	}
	if !exact {
		if p := firstProtected(outs); p != nil {
			a.refuse(p, what+" by position cannot be checked against it (the select list is not fully known)")
		}
		return true
	}
	if i := int(iv.Ival); i >= 1 && i <= len(outs) {
		if what == "ORDER BY" && outs[i-1].prot != nil {
			a.refuse(outs[i-1].prot, "ORDER BY on it cannot be computed by the database")
		}
		a.checkGroup(outs[i-1].prot, what)
	}
	return true
}

func (a *analyzer) checkGroup(p *Protected, what string) {
	if p != nil && p.Mode != Deterministic {
		a.refuse(p, what+" on it cannot be computed by the database (only deterministic columns can be grouped)")
	}
}

func (a *analyzer) groupItem(n *pg.Node, sc *scope, outs []outCol, exact bool, what string) {
	switch x := n.GetNode().(type) {
	case *pg.Node_ColumnRef:
		// GROUP BY prefers an input column; a bare name that is none refers to an output column.
		if names, star := refNames(x.ColumnRef); len(names) == 1 && !star {
			if _, found, whole := a.resolve(x.ColumnRef, sc); !found && whole == nil {
				if o, ok := outByName(outs, names[0]); ok {
					a.checkGroup(o.prot, what)
					return
				}
			}
		}
		a.checkGroup(a.columnRef(x.ColumnRef, sc), what)
		return
	case *pg.Node_AConst:
		if a.position(x.AConst, outs, exact, what) {
			return
		}
	case *pg.Node_GroupingSet:
		for _, c := range x.GroupingSet.Content {
			a.groupItem(c, sc, outs, exact, what)
		}
		return
	case *pg.Node_RowExpr: // GROUP BY ROLLUP ((a, b))
		for _, c := range x.RowExpr.Args {
			a.groupItem(c, sc, outs, exact, what)
		}
		return
	}
	a.expr(n, sc, valueCtx(what+" on an expression of it"))
}

func (a *analyzer) orderBy(items []*pg.Node, sc *scope, outs []outCol, exact bool) {
	for _, it := range items {
		sb := it.GetSortBy()
		if sb == nil {
			continue
		}
		switch x := sb.Node.GetNode().(type) {
		case *pg.Node_ColumnRef:
			// ORDER BY prefers an output column name over an input column.
			if names, star := refNames(x.ColumnRef); len(names) == 1 && !star {
				if o, ok := outByName(outs, names[0]); ok {
					if o.prot != nil {
						a.refuse(o.prot, "ORDER BY on it cannot be computed by the database")
					}
					continue
				}
			}
			if p := a.columnRef(x.ColumnRef, sc); p != nil {
				a.refuse(p, "ORDER BY on it cannot be computed by the database")
			}
			continue
		case *pg.Node_AConst:
			if a.position(x.AConst, outs, exact, "ORDER BY") {
				continue
			}
		}
		a.expr(sb.Node, sc, valueCtx("ORDER BY on an expression of it"))
	}
}

func (a *analyzer) window(w *pg.WindowDef, sc *scope) {
	if w == nil {
		return
	}
	for _, p := range w.PartitionClause {
		a.groupItem(p, sc, nil, true, "PARTITION BY")
	}
	a.orderBy(w.OrderClause, sc, nil, true)
	a.expr(w.StartOffset, sc, valueCtx("a window frame"))
	a.expr(w.EndOffset, sc, valueCtx("a window frame"))
}

// writeCtx is the context of a value assigned to a plaintext column.
var writeCtx = ctx{kind: cValue, reason: "copying it into another column cannot be done through the proxy (its ciphertext opens only in its own column)"}

func (a *analyzer) insertStmt(s *pg.InsertStmt, parent *scope) (outs []outCol, exact bool) {
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	target := a.rangeVar(s.Relation, sc, true)
	t := target.table
	// The columns written, in VALUES order.
	var cols []*Protected
	if len(s.Cols) > 0 {
		for _, c := range s.Cols {
			rt := c.GetResTarget()
			var p *Protected
			if t != nil && rt != nil {
				p = protectedOf(t, t.column(rt.Name))
				if p != nil && len(rt.Indirection) > 0 {
					a.refuse(p, "assigning to a subscript or field of it cannot be encrypted by the proxy")
				}
			}
			cols = append(cols, p)
		}
	} else if t != nil {
		for i := range t.Columns {
			cols = append(cols, protectedOf(t, &t.Columns[i]))
		}
	}
	sel := s.SelectStmt.GetSelectStmt()
	switch {
	case sel == nil: // DEFAULT VALUES
	case len(sel.ValuesLists) > 0 && sel.WithClause == nil && len(sel.SortClause) == 0 && sel.LimitCount == nil && sel.LimitOffset == nil:
		for _, row := range sel.ValuesLists {
			for i, it := range row.GetList().GetItems() {
				if i < len(cols) && cols[i] != nil {
					a.writeValue(it, cols[i], sc, false)
				} else {
					a.expr(it, sc, writeCtx)
				}
			}
		}
	default:
		outs, _ := a.selectStmt(sel, sc)
		for _, p := range cols {
			if p != nil {
				a.refuse(p, "INSERT ... SELECT would write values the proxy cannot encrypt (use INSERT ... VALUES with constants or parameters)")
			}
		}
		if p := firstProtected(outs); p != nil {
			a.refuse(p, "INSERT ... SELECT would copy its ciphertext into another column")
		}
	}
	tsc := &scope{parent: sc, rels: []*rel{target}}
	if oc := s.OnConflictClause; oc != nil {
		if inf := oc.Infer; inf != nil {
			for _, ie := range inf.IndexElems {
				el := ie.GetIndexElem()
				if el == nil {
					continue
				}
				if el.Name != "" && t != nil {
					if p := protectedOf(t, t.column(el.Name)); p != nil && p.Mode != Deterministic {
						a.refuse(p, "ON CONFLICT on it cannot be decided by the database (only deterministic columns can be compared)")
					}
				}
				a.expr(el.Expr, tsc, valueCtx("an index expression"))
			}
			a.expr(inf.WhereClause, tsc, predCtx)
		}
		excluded := &rel{name: "excluded", table: t, known: t != nil}
		usc := &scope{parent: sc, rels: []*rel{target, excluded}}
		a.assignments(oc.TargetList, t, usc)
		a.expr(oc.WhereClause, usc, predCtx)
	}
	return a.targets(s.ReturningList, tsc)
}

func (a *analyzer) updateStmt(s *pg.UpdateStmt, parent *scope) (outs []outCol, exact bool) {
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	target := a.rangeVar(s.Relation, sc, true)
	sc.rels = append(sc.rels, target)
	for _, f := range s.FromClause {
		a.fromItem(f, sc)
	}
	a.assignments(s.TargetList, target.table, sc)
	a.expr(s.WhereClause, sc, predCtx)
	return a.targets(s.ReturningList, sc)
}

func (a *analyzer) deleteStmt(s *pg.DeleteStmt, parent *scope) (outs []outCol, exact bool) {
	sc := &scope{parent: parent}
	a.with(s.WithClause, sc)
	sc.rels = append(sc.rels, a.rangeVar(s.Relation, sc, true))
	for _, f := range s.UsingClause {
		a.fromItem(f, sc)
	}
	a.expr(s.WhereClause, sc, predCtx)
	return a.targets(s.ReturningList, sc)
}

// assignments analyzes SET lists (UPDATE, ON CONFLICT DO UPDATE).
func (a *analyzer) assignments(list []*pg.Node, t *Table, sc *scope) {
	done := map[*pg.Node]bool{}
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		var p *Protected
		if t != nil {
			p = protectedOf(t, t.column(rt.Name))
		}
		if p != nil && len(rt.Indirection) > 0 {
			a.refuse(p, "assigning to a subscript or field of it cannot be encrypted by the proxy")
		}
		if mar := rt.Val.GetMultiAssignRef(); mar != nil {
			// SET (a, b) = (1, 2) | (SELECT ...)
			if row := mar.Source.GetRowExpr(); row != nil {
				if i := int(mar.Colno) - 1; i >= 0 && i < len(row.Args) {
					if p != nil {
						a.writeValue(row.Args[i], p, sc, true)
					} else {
						a.expr(row.Args[i], sc, writeCtx)
					}
				}
				continue
			}
			if p != nil {
				a.refuse(p, "assigning it from a subquery would write values the proxy cannot encrypt")
			}
			if !done[mar.Source] {
				done[mar.Source] = true
				a.expr(mar.Source, sc, writeCtx)
			}
			continue
		}
		if p != nil {
			a.writeValue(rt.Val, p, sc, true)
		} else {
			a.expr(rt.Val, sc, writeCtx)
		}
	}
}
