package analyze

import (
	"fmt"
	"sort"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Analyze plans one statement text: a simple-protocol Query (one or more statements) or the text
// of an extended-protocol Parse (one statement, with $n parameters). It never fails: text the
// parser rejects is passed through (PostgreSQL answers with its own syntax error, and nothing
// runs), and anything touching a protected column that the analyzer does not understand is refused.
//
// The result depends only on sql, the catalog's answers and opts, so callers cache it by text (and
// drop the cache when the catalog or the search_path changes). EXECUTE is the one exception: its
// binding depends on the session's PREPAREd statements, and is done by Execute.Bind.
func Analyze(sql string, cat Catalog, opts Options) (plan *Plan) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return &Plan{Action: Pass}
	}
	path := opts.SearchPath
	if len(path) == 0 {
		path = []string{"public"}
	}
	a := &analyzer{sql: sql, cat: cat, path: path, tables: map[[2]string]*Table{}}
	if !a.needsAnalysis(tree) {
		return &Plan{Action: Pass}
	}
	defer func() {
		if r := recover(); r != nil {
			rp, ok := r.(refusalPanic)
			if !ok {
				panic(r)
			}
			plan = &Plan{Action: Refuse, Refusal: rp.r}
		}
	}()
	a.params = map[int]*Param{}
	a.consumed = map[int]bool{}
	for _, raw := range tree.Stmts {
		start := int(raw.StmtLocation)
		end := len(sql)
		if raw.StmtLen > 0 {
			end = start + int(raw.StmtLen)
		}
		a.stmt = &Statement{Start: start, End: end}
		a.statement(raw.Stmt)
		a.checkParams(raw.Stmt, a.params)
		a.stmts = append(a.stmts, *a.stmt)
	}
	if len(a.edits) == 0 && len(a.params) == 0 && !a.work {
		return &Plan{Action: Pass}
	}
	sort.SliceStable(a.edits, func(i, j int) bool { return a.edits[i].Start < a.edits[j].Start })
	for i := 1; i < len(a.edits); i++ {
		if a.edits[i].Start < a.edits[i-1].End {
			a.refuseAll("the statement could not be rewritten safely (overlapping edits)")
		}
	}
	return &Plan{Action: Rewrite, Statements: a.stmts, Edits: a.edits, Values: a.values, Params: sortedParams(a.params)}
}

func sortedParams(m map[int]*Param) []Param {
	ps := make([]Param, 0, len(m))
	for _, p := range m {
		ps = append(ps, *p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].N < ps[j].N })
	return ps
}

type refusalPanic struct{ r *Refusal }

type analyzer struct {
	sql    string
	cat    Catalog
	path   []string
	toks   []token
	tables map[[2]string]*Table

	edits    []Edit
	values   []*Value
	params   map[int]*Param
	consumed map[int]bool // locations of ParamRefs bound to a protected column
	protRefs int          // references to protected columns seen so far
	work     bool         // COPY, PREPARE, EXECUTE or DEALLOCATE bookkeeping for the caller
	stmt     *Statement
	stmts    []Statement
}

// refuse aborts the analysis. Refusals unwind with a private panic recovered in Analyze, which
// keeps every handler a plain walk; any other panic is a bug and is not recovered.
func (a *analyzer) refuse(c *Protected, reason string) {
	panic(refusalPanic{refusal(c, reason)})
}

func (a *analyzer) refuseTable(t *Table, reason string) {
	panic(refusalPanic{&Refusal{Table: t.Schema + "." + t.Name, Reason: reason}})
}

func (a *analyzer) refuseAll(reason string) {
	panic(refusalPanic{&Refusal{Reason: reason}})
}

// lookup resolves a table name with the search path; nil when the catalog does not know it.
func (a *analyzer) lookup(schema, name string) *Table {
	if schema != "" {
		return a.table(schema, name)
	}
	for _, s := range a.path {
		if t := a.table(s, name); t != nil {
			return t
		}
	}
	return nil
}

func (a *analyzer) table(schema, name string) *Table {
	k := [2]string{schema, name}
	if t, ok := a.tables[k]; ok {
		return t
	}
	t, ok := a.cat.Table(schema, name)
	if !ok {
		t = nil
	}
	a.tables[k] = t
	return t
}

// needsAnalysis is the fast path: a text that names no table with a protected column (and has no
// PREPARE/EXECUTE/DEALLOCATE the caller must track) passes without further work.
func (a *analyzer) needsAnalysis(tree *pg.ParseResult) bool {
	found := false
	for _, raw := range tree.Stmts {
		switch s := raw.Stmt.GetNode().(type) {
		case *pg.Node_PrepareStmt, *pg.Node_ExecuteStmt, *pg.Node_DeallocateStmt:
			return true
		case *pg.Node_DiscardStmt:
			if s.DiscardStmt.Target == pg.DiscardMode_DISCARD_ALL {
				return true
			}
		case *pg.Node_VariableSetStmt:
			if setsSearchPath(s.VariableSetStmt) {
				return true
			}
		}
		rangeVars(raw.Stmt, func(rv *pg.RangeVar) bool {
			if t := a.lookup(rv.Schemaname, rv.Relname); t != nil && t.Protected() {
				found = true
			}
			return !found
		})
		if found {
			return true
		}
	}
	return false
}

// touchedTable returns a protected table the subtree names, or nil.
func (a *analyzer) touchedTable(n *pg.Node) *Table {
	var hit *Table
	rangeVars(n, func(rv *pg.RangeVar) bool {
		if t := a.lookup(rv.Schemaname, rv.Relname); t != nil && t.Protected() {
			hit = t
		}
		return hit == nil
	})
	return hit
}

// checkParams refuses a statement in which a parameter bound to a protected column is also used
// somewhere else: it would be bound to ciphertext there, or to plaintext here.
func (a *analyzer) checkParams(n *pg.Node, params map[int]*Param) {
	if len(params) == 0 {
		return
	}
	walkNode(n, func(n *pg.Node) bool {
		if pr := n.GetParamRef(); pr != nil {
			if p := params[int(pr.Number)]; p != nil && !a.consumed[int(pr.Location)] {
				a.refuse(p.Column, fmt.Sprintf("parameter $%d is bound to it and also used elsewhere in the statement; pass the value as two parameters", pr.Number))
			}
		}
		return true
	})
}

func (a *analyzer) statement(n *pg.Node) {
	switch s := n.GetNode().(type) {
	case *pg.Node_SelectStmt:
		a.selectStmt(s.SelectStmt, nil)
	case *pg.Node_InsertStmt:
		a.insertStmt(s.InsertStmt, nil)
	case *pg.Node_UpdateStmt:
		a.updateStmt(s.UpdateStmt, nil)
	case *pg.Node_DeleteStmt:
		a.deleteStmt(s.DeleteStmt, nil)
	case *pg.Node_CopyStmt:
		a.copyStmt(s.CopyStmt)
	case *pg.Node_PrepareStmt:
		a.prepareStmt(s.PrepareStmt)
	case *pg.Node_ExecuteStmt:
		a.executeStmt(s.ExecuteStmt)
	case *pg.Node_DeallocateStmt:
		a.stmt.Deallocate = &Deallocate{Name: s.DeallocateStmt.Name, All: s.DeallocateStmt.Isall}
		a.work = true
	case *pg.Node_DiscardStmt:
		if s.DiscardStmt.Target == pg.DiscardMode_DISCARD_ALL {
			a.stmt.Deallocate = &Deallocate{All: true}
			a.stmt.SearchPath = &SearchPath{Default: true}
			a.work = true
		}
	case *pg.Node_VariableSetStmt:
		v := s.VariableSetStmt
		if !setsSearchPath(v) {
			return
		}
		sp := &SearchPath{Local: v.IsLocal, Default: v.Kind != pg.VariableSetKind_VAR_SET_VALUE}
		if !sp.Default {
			sp.Schemas = []string{}
			for _, arg := range v.Args {
				sp.Schemas = append(sp.Schemas, arg.GetAConst().GetSval().GetSval())
			}
		}
		a.stmt.SearchPath = sp
		a.work = true
	case *pg.Node_ExplainStmt:
		// EXPLAIN ANALYZE runs the statement, and a plain EXPLAIN would show the plaintext
		// constants in its plan: both get the statement's own edits and refusals.
		a.statement(s.ExplainStmt.Query)
	case *pg.Node_DeclareCursorStmt:
		a.statement(s.DeclareCursorStmt.Query)
	case *pg.Node_CreateTableAsStmt:
		before := a.protRefs
		outs, _ := a.query(s.CreateTableAsStmt.Query, nil)
		if p := firstProtected(outs); p != nil {
			a.refuse(p, "CREATE TABLE AS / SELECT INTO would copy its ciphertext into a new column the proxy does not know")
		}
		if s.CreateTableAsStmt.Objtype == pg.ObjectType_OBJECT_MATVIEW && a.protRefs > before {
			a.refuseAll("a materialized view over encrypted columns is not supported (it would bake their ciphertext into its definition)")
		}
	case *pg.Node_ViewStmt:
		before := a.protRefs
		outs, _ := a.query(s.ViewStmt.Query, nil)
		if a.protRefs > before || firstProtected(outs) != nil {
			a.refuseAll("a view over encrypted columns is not supported: writes and searches through the view would bypass the proxy")
		}
	case *pg.Node_AlterTableStmt:
		a.alterTable(s.AlterTableStmt)
	case *pg.Node_RenameStmt:
		a.renameStmt(s.RenameStmt)
	case *pg.Node_AlterObjectSchemaStmt:
		if rv := s.AlterObjectSchemaStmt.Relation; rv != nil {
			if t := a.lookup(rv.Schemaname, rv.Relname); t != nil && t.Protected() {
				a.refuseTable(t, "moving it to another schema would make its encrypted values unreadable (they are bound to schema.table.column)")
			}
		}
	case *pg.Node_IndexStmt:
		a.indexStmt(s.IndexStmt)
	case *pg.Node_TransactionStmt, *pg.Node_VariableShowStmt,
		*pg.Node_TruncateStmt, *pg.Node_VacuumStmt, *pg.Node_LockStmt, *pg.Node_DropStmt,
		*pg.Node_GrantStmt, *pg.Node_GrantRoleStmt, *pg.Node_CommentStmt, *pg.Node_ClusterStmt,
		*pg.Node_ReindexStmt, *pg.Node_FetchStmt, *pg.Node_ClosePortalStmt, *pg.Node_ListenStmt,
		*pg.Node_NotifyStmt, *pg.Node_UnlistenStmt, *pg.Node_CheckPointStmt, *pg.Node_CreateStmt,
		*pg.Node_ConstraintsSetStmt, *pg.Node_DoStmt, *pg.Node_CallStmt, *pg.Node_CreateTrigStmt,
		*pg.Node_RefreshMatViewStmt, *pg.Node_SecLabelStmt, *pg.Node_AlterOwnerStmt,
		*pg.Node_CreateSchemaStmt, *pg.Node_CreateSeqStmt, *pg.Node_AlterSeqStmt, *pg.Node_LoadStmt:
		// Nothing of these reads or writes a protected value through SQL text the proxy could
		// rewrite. (Server-side code, DO and CALL bodies, and triggers see ciphertext: see the
		// package documentation.)
	default:
		if t := a.touchedTable(n); t != nil {
			a.refuseTable(t, fmt.Sprintf("this kind of statement (%s) is not supported on a table with encrypted columns", stmtName(n)))
		}
	}
}

// query analyzes a statement that produces rows (a SELECT, or a data-modifying statement with
// RETURNING in a CTE) and returns its output columns; exact is false when their number or order
// is not known (a * over a table the catalog does not know, say).
func (a *analyzer) query(n *pg.Node, parent *scope) (outs []outCol, exact bool) {
	switch s := n.GetNode().(type) {
	case *pg.Node_SelectStmt:
		return a.selectStmt(s.SelectStmt, parent)
	case *pg.Node_InsertStmt:
		return a.insertStmt(s.InsertStmt, parent)
	case *pg.Node_UpdateStmt:
		return a.updateStmt(s.UpdateStmt, parent)
	case *pg.Node_DeleteStmt:
		return a.deleteStmt(s.DeleteStmt, parent)
	case nil:
		return nil, true
	}
	if t := a.touchedTable(n); t != nil {
		a.refuseTable(t, fmt.Sprintf("this kind of statement (%s) is not supported on a table with encrypted columns", stmtName(n)))
	}
	return nil, false
}

func firstProtected(outs []outCol) *Protected {
	for _, o := range outs {
		if o.prot != nil {
			return o.prot
		}
	}
	return nil
}

func stmtName(n *pg.Node) string {
	if n == nil || n.Node == nil {
		return "unknown"
	}
	name := fmt.Sprintf("%T", n.Node)
	const prefix = "*pg_query.Node_"
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		return name[len(prefix):]
	}
	return name
}

func setsSearchPath(v *pg.VariableSetStmt) bool {
	switch v.Kind {
	case pg.VariableSetKind_VAR_RESET_ALL:
		return true
	case pg.VariableSetKind_VAR_SET_VALUE, pg.VariableSetKind_VAR_SET_DEFAULT, pg.VariableSetKind_VAR_RESET:
		return v.Name == "search_path"
	}
	return false
}
