package analyze

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

func (a *analyzer) copyStmt(s *pg.CopyStmt) {
	var cp Copy
	var cols []*Protected
	var names []string
	if s.Query != nil {
		// COPY (query) TO: the proxy decrypts the fields at the positions reported.
		outs, exact := a.query(s.Query, nil)
		p := firstProtected(outs)
		if p == nil {
			return
		}
		if !exact {
			a.refuse(p, "COPY (query) TO: the proxy cannot tell which fields hold it (list the columns explicitly)")
		}
		for _, o := range outs {
			cols = append(cols, o.prot)
			names = append(names, o.name)
		}
	} else {
		if s.Relation == nil {
			return
		}
		t := a.lookup(s.Relation.Schemaname, s.Relation.Relname)
		if t == nil || !t.Protected() {
			return
		}
		cp.Schema, cp.Table = t.Schema, t.Name
		if len(s.Attlist) > 0 {
			for _, n := range s.Attlist {
				name := n.GetString_().GetSval()
				c := t.column(name)
				if c == nil {
					return // PostgreSQL reports the unknown column
				}
				cols = append(cols, protectedOf(t, c))
				names = append(names, name)
			}
		} else {
			for i := range t.Columns {
				cols = append(cols, protectedOf(t, &t.Columns[i]))
				names = append(names, t.Columns[i].Name)
			}
		}
		if s.WhereClause != nil {
			sc := &scope{rels: []*rel{{name: t.Name, schema: t.Schema, table: t, known: true}}}
			a.expr(s.WhereClause, sc, predCtx)
		}
	}
	var first *Protected
	for i, p := range cols {
		if p != nil {
			if first == nil {
				first = p
			}
			cp.Columns = append(cp.Columns, CopyColumn{Index: i, Column: p})
		}
	}
	if first == nil {
		return
	}
	a.protRefs++
	if s.Filename != "" || s.IsProgram {
		if s.IsFrom {
			a.refuse(first, "COPY FROM a server file or program would store plaintext in it (use COPY FROM STDIN through the proxy)")
		}
		return // the server writes ciphertext to its own file; nothing reaches the client
	}
	cp.From = s.IsFrom
	cp.NumColumns = len(cols)
	a.copyOptions(&cp, s.Options, names, first)
	a.stmt.Copy = &cp
	a.work = true
}

func (a *analyzer) copyOptions(cp *Copy, opts []*pg.Node, names []string, first *Protected) {
	cp.Format = "text"
	var delim, null, quote, escape *string
	positions := func(arg *pg.Node) ([]int, bool) {
		if arg.GetAStar() != nil {
			return nil, true
		}
		var ps []int
		for _, it := range arg.GetList().GetItems() {
			name := it.GetString_().GetSval()
			for i, n := range names {
				if n == name {
					ps = append(ps, i)
				}
			}
		}
		return ps, false
	}
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		str := defString(d.Arg)
		switch d.Defname {
		case "format":
			cp.Format = strings.ToLower(str)
		case "delimiter":
			delim = &str
		case "null":
			null = &str
		case "quote":
			quote = &str
		case "escape":
			escape = &str
		case "default":
			cp.Default, cp.HasDefault = str, true
		case "encoding":
			cp.Encoding = str
		case "header":
			switch strings.ToLower(str) {
			case "match":
				cp.Header, cp.HeaderMatch = true, true
			case "", "true", "on", "1", "yes":
				cp.Header = true
			}
		case "force_not_null":
			cp.ForceNotNull, _ = positions(d.Arg)
		case "force_null":
			cp.ForceNull, _ = positions(d.Arg)
		case "force_quote":
			cp.ForceQuote, cp.ForceQuoteAll = positions(d.Arg)
		case "freeze", "on_error", "log_verbosity", "oids":
		default:
			a.refuse(first, "COPY option "+d.Defname+" is not supported for it")
		}
	}
	switch cp.Format {
	case "text":
		cp.Delimiter, cp.Null = "\t", `\N`
	case "csv":
		cp.Delimiter, cp.Null, cp.Quote = ",", "", `"`
	case "binary":
		a.refuse(first, "binary COPY is not supported for it (use text or csv format)")
	default:
		a.refuse(first, "COPY format "+cp.Format+" is not supported for it")
	}
	if delim != nil {
		cp.Delimiter = *delim
	}
	if null != nil {
		cp.Null = *null
	}
	if quote != nil {
		cp.Quote = *quote
	}
	cp.Escape = cp.Quote
	if escape != nil {
		cp.Escape = *escape
	}
}

func defString(n *pg.Node) string {
	switch x := n.GetNode().(type) {
	case *pg.Node_String_:
		return x.String_.Sval
	case *pg.Node_Boolean:
		return strconv.FormatBool(x.Boolean.Boolval)
	case *pg.Node_Integer:
		return strconv.Itoa(int(x.Integer.Ival))
	case *pg.Node_Float:
		return x.Float.Fval
	}
	return ""
}

// prepareStmt analyzes PREPARE name [(types)] AS stmt. The inner statement's edits are edits of
// this text; its parameters are the EXECUTE's arguments, so they are reported in Prepare and not as
// the text's own parameters. Declared types of protected parameters become bytea / bytea[].
func (a *analyzer) prepareStmt(s *pg.PrepareStmt) {
	outer := a.params
	a.params = map[int]*Param{}
	a.statement(s.Query)
	a.checkParams(s.Query, a.params)
	inner := a.params
	a.params = outer
	for n, p := range inner {
		if n-1 >= len(s.Argtypes) {
			continue
		}
		tn := s.Argtypes[n-1].GetTypeName()
		if tn == nil {
			continue
		}
		i := a.tokAt(int(tn.Location))
		if a.word(i, "setof") || len(tn.ArrayBounds) > 0 {
			a.refuse(p.Column, "the PREPARE declares an array or set type for its parameter $"+strconv.Itoa(n))
		}
		j := a.typeNameEnd(i)
		if j >= 0 && len(tn.Typmods) > 0 {
			j = a.matchParen(j + 1)
		}
		if i < 0 || j < 0 {
			a.refuse(p.Column, "the PREPARE's parameter types could not be located in the statement text")
		}
		typ := "bytea"
		if p.Role == Match {
			typ = "bytea[]"
		}
		a.addEdit(a.toks[i].start, a.toks[j].end, []Part{{Text: typ}})
	}
	a.stmt.Prepare = &Prepare{Name: s.Name, Params: sortedParams(inner)}
	a.work = true
}

func (a *analyzer) executeStmt(s *pg.ExecuteStmt) {
	x := &Execute{Name: s.Name}
	for _, n := range s.Params {
		arg := Arg{Kind: ArgOther}
		if st, e, ok := a.extent(n); ok {
			arg.Start, arg.End = st, e
		}
		if o := a.operand(n, nil); arg.End > 0 {
			switch o.kind {
			case opNull:
				arg.Kind = ArgNull
			case opLiteral:
				arg.Kind, arg.Literal = ArgLiteral, o.lit
			}
		}
		x.Args = append(x.Args, arg)
	}
	a.stmt.Execute = x
	a.work = true
}

// alterTable refuses changes the proxy's encryption could not follow: a protected column's type,
// default or generation, and constraints that compute on its ciphertext.
func (a *analyzer) alterTable(s *pg.AlterTableStmt) {
	if s.Relation == nil {
		return
	}
	t := a.lookup(s.Relation.Schemaname, s.Relation.Relname)
	if t == nil || !t.Protected() {
		return
	}
	for _, n := range s.Cmds {
		cmd := n.GetAlterTableCmd()
		if cmd == nil {
			continue
		}
		p := protectedOf(t, t.column(cmd.Name))
		switch cmd.Subtype {
		case pg.AlterTableType_AT_SetNotNull, pg.AlterTableType_AT_DropNotNull, pg.AlterTableType_AT_SetStatistics,
			pg.AlterTableType_AT_SetStorage, pg.AlterTableType_AT_SetCompression, pg.AlterTableType_AT_SetOptions,
			pg.AlterTableType_AT_ResetOptions, pg.AlterTableType_AT_DropColumn:
			continue
		case pg.AlterTableType_AT_AddConstraint:
			if c := cmd.Def.GetConstraint(); c != nil {
				a.constraint(t, c)
			}
			continue
		case pg.AlterTableType_AT_AddColumn:
			continue
		}
		if p != nil {
			a.refuse(p, "ALTER TABLE "+strings.TrimPrefix(cmd.Subtype.String(), "AT_")+" on it is not supported through the proxy (its encryption would not follow the change)")
		}
	}
}

func (a *analyzer) constraint(t *Table, c *pg.Constraint) {
	switch c.Contype {
	case pg.ConstrType_CONSTR_PRIMARY, pg.ConstrType_CONSTR_UNIQUE:
		for _, k := range c.Keys {
			if p := protectedOf(t, t.column(k.GetString_().GetSval())); p != nil && p.Mode != Deterministic {
				a.refuse(p, "a unique constraint on it cannot be enforced by the database (only deterministic columns compare equal)")
			}
		}
		return
	case pg.ConstrType_CONSTR_FOREIGN:
		for _, k := range c.FkAttrs {
			if p := protectedOf(t, t.column(k.GetString_().GetSval())); p != nil {
				a.refuse(p, "a foreign key on it compares it with another column, which cannot be computed by the database")
			}
		}
		return
	}
	if p := a.mentions(t, c.RawExpr, c.WhereClause); p != nil {
		a.refuse(p, "a constraint computing on it cannot be enforced by the database")
	}
	for _, e := range c.Exclusions {
		if p := a.mentions(t, e); p != nil {
			a.refuse(p, "an exclusion constraint on it cannot be enforced by the database")
		}
	}
}

// mentions returns a protected column of t named by any column reference (or index element) in the
// subtrees.
func (a *analyzer) mentions(t *Table, ns ...*pg.Node) *Protected {
	var hit *Protected
	for _, n := range ns {
		walkNode(n, func(n *pg.Node) bool {
			if hit != nil {
				return false
			}
			var name string
			if cr := n.GetColumnRef(); cr != nil {
				if names, _ := refNames(cr); len(names) > 0 {
					name = names[len(names)-1]
				}
			} else if ie := n.GetIndexElem(); ie != nil {
				name = ie.Name
			}
			if name != "" {
				hit = protectedOf(t, t.column(name))
			}
			return hit == nil
		})
	}
	return hit
}

func (a *analyzer) renameStmt(s *pg.RenameStmt) {
	if s.Relation == nil {
		return
	}
	t := a.lookup(s.Relation.Schemaname, s.Relation.Relname)
	if t == nil || !t.Protected() {
		return
	}
	switch s.RenameType {
	case pg.ObjectType_OBJECT_TABLE:
		a.refuseTable(t, "renaming it would make its encrypted values unreadable (they are bound to schema.table.column)")
	case pg.ObjectType_OBJECT_COLUMN:
		if p := protectedOf(t, t.column(s.Subname)); p != nil {
			a.refuse(p, "renaming it would make its encrypted values unreadable (they are bound to schema.table.column)")
		}
	}
}

// indexStmt allows plain indexes (a btree on a deterministic column serves equality search) and
// refuses expressions and partial-index predicates on protected columns.
func (a *analyzer) indexStmt(s *pg.IndexStmt) {
	if s.Relation == nil {
		return
	}
	t := a.lookup(s.Relation.Schemaname, s.Relation.Relname)
	if t == nil || !t.Protected() {
		return
	}
	for _, n := range s.IndexParams {
		ie := n.GetIndexElem()
		if ie == nil {
			continue
		}
		if p := a.mentions(t, ie.Expr); p != nil {
			a.refuse(p, "an index on an expression of it cannot be computed by the database")
		}
		if p := protectedOf(t, t.column(ie.Name)); p != nil && s.Unique && p.Mode != Deterministic {
			a.refuse(p, "a unique index on it cannot be enforced by the database (only deterministic columns compare equal)")
		}
	}
	if p := a.mentions(t, s.WhereClause); p != nil {
		a.refuse(p, "a partial index predicate on it cannot be computed by the database")
	}
}
