package analyze

import (
	pg "github.com/pganalyze/pg_query_go/v6"
)

// outCol is an output column of a query: its name and, when it is a protected column passed
// through unchanged, that column. A protected column stays protected through subqueries, CTEs and
// aliases, as PostgreSQL's own column origin tracking (RowDescription) follows it.
type outCol struct {
	name string
	prot *Protected
}

// rel is a range table entry: a table, a subquery, a CTE, a function...
type rel struct {
	name   string // the name it is referenced by (alias or table name)
	schema string // set for unaliased tables: schema.table.column references
	table  *Table // a catalog table not renamed by an alias column list
	cols   []outCol
	known  bool // columns known: from the catalog or from analysis
}

func (r *rel) lookup(col string) (p *Protected, ok bool) {
	if r.table != nil {
		c := r.table.column(col)
		return protectedOf(r.table, c), c != nil
	}
	for i := range r.cols {
		if r.cols[i].name == col {
			return r.cols[i].prot, true
		}
	}
	return nil, false
}

// columns returns the rel's columns in order (for *).
func (r *rel) columns() []outCol {
	if r.table == nil {
		return r.cols
	}
	out := make([]outCol, len(r.table.Columns))
	for i := range r.table.Columns {
		c := &r.table.Columns[i]
		out[i] = outCol{name: c.Name, prot: protectedOf(r.table, c)}
	}
	return out
}

func (r *rel) protected() *Protected {
	for _, c := range r.columns() {
		if c.prot != nil {
			return c.prot
		}
	}
	return nil
}

func (r *rel) matches(qual []string) bool {
	switch len(qual) {
	case 1:
		return r.name == qual[0]
	case 2, 3: // [catalog.]schema.table
		return r.schema != "" && r.schema == qual[len(qual)-2] && r.name == qual[len(qual)-1]
	}
	return false
}

type cte struct {
	name  string
	cols  []outCol
	known bool
}

// scope is one query level: its FROM items, the CTEs it defines, and the enclosing level.
type scope struct {
	parent *scope
	rels   []*rel
	ctes   []*cte
	merged bool // a JOIN USING or NATURAL JOIN: * does not list columns in rel order
}

func (s *scope) findCTE(name string) *cte {
	for ; s != nil; s = s.parent {
		for i := len(s.ctes) - 1; i >= 0; i-- {
			if s.ctes[i].name == name {
				return s.ctes[i]
			}
		}
	}
	return nil
}

func refNames(cr *pg.ColumnRef) (names []string, star bool) {
	for _, f := range cr.Fields {
		switch {
		case f.GetString_() != nil:
			names = append(names, f.GetString_().Sval)
		case f.GetAStar() != nil:
			star = true
		}
	}
	return names, star
}

// resolve finds what a column reference names, as PostgreSQL does: the innermost query level
// where it is found. found is false for names the analyzer cannot place (a column of a function in
// FROM, an output alias, or an error PostgreSQL will report): they are not protected columns of any
// table in scope.
func (a *analyzer) resolve(cr *pg.ColumnRef, sc *scope) (p *Protected, found bool, whole *rel) {
	names, star := refNames(cr)
	if star {
		return nil, false, nil
	}
	for s := sc; s != nil; s = s.parent {
		if len(names) == 1 {
			hits := 0
			for _, r := range s.rels {
				if q, ok := r.lookup(names[0]); ok {
					hits++
					if p == nil {
						p = q
					}
				}
			}
			if hits > 0 {
				return p, true, nil
			}
			for _, r := range s.rels {
				if r.name == names[0] {
					return nil, true, r
				}
			}
			continue
		}
		if len(names) == 0 {
			return nil, false, nil
		}
		qual, col := names[:len(names)-1], names[len(names)-1]
		for _, r := range s.rels {
			if r.matches(qual) {
				q, _ := r.lookup(col)
				return q, true, nil
			}
		}
	}
	return nil, false, nil
}

// columnRef resolves a reference used as a value and counts protected ones. Whole-row references to
// a row with protected columns are refused everywhere: the row's text would carry ciphertext the
// proxy cannot find inside it.
func (a *analyzer) columnRef(cr *pg.ColumnRef, sc *scope) *Protected {
	if _, star := refNames(cr); star {
		for _, r := range a.starRels(cr, sc) {
			if p := r.protected(); p != nil {
				a.refuse(p, "a whole-row value (t.*) containing it cannot be decrypted by the proxy")
			}
		}
		return nil
	}
	p, _, whole := a.resolve(cr, sc)
	if whole != nil {
		if q := whole.protected(); q != nil {
			a.refuse(q, "a whole-row reference to its table cannot be decrypted by the proxy")
		}
		return nil
	}
	if p != nil {
		a.protRefs++
	}
	return p
}

// starRels returns the rels a * or t.* expands to.
func (a *analyzer) starRels(cr *pg.ColumnRef, sc *scope) []*rel {
	names, _ := refNames(cr)
	if len(names) == 0 {
		return sc.rels
	}
	for s := sc; s != nil; s = s.parent {
		for _, r := range s.rels {
			if r.matches(names) {
				return []*rel{r}
			}
		}
	}
	return nil
}

// rangeVar makes the rel of a table reference in FROM (or a DML target when target is set: those
// are never CTEs).
func (a *analyzer) rangeVar(rv *pg.RangeVar, sc *scope, target bool) *rel {
	r := &rel{name: rv.Relname}
	if c := sc.findCTE(rv.Relname); c != nil && rv.Schemaname == "" && !target {
		r.cols, r.known = c.cols, c.known
	} else if t := a.lookup(rv.Schemaname, rv.Relname); t != nil {
		r.table, r.schema, r.known = t, t.Schema, true
	}
	if al := rv.Alias; al != nil {
		r.name, r.schema = al.Aliasname, ""
		r.renameColumns(al.Colnames)
	}
	return r
}

// renameColumns applies an alias column list: t AS x(a, b) renames the first columns.
func (r *rel) renameColumns(names []*pg.Node) {
	if len(names) == 0 {
		return
	}
	cols := append([]outCol(nil), r.columns()...)
	r.table = nil
	for i, n := range names {
		if i < len(cols) && n.GetString_() != nil {
			cols[i].name = n.GetString_().Sval
		}
	}
	r.cols = cols
}
