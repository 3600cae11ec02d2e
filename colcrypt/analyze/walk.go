package analyze

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// walk calls fn for every Node in the subtree of m (m itself excluded), depth first; fn returns
// false to skip a node's children. It goes through every message field, so node types the analyzer
// has no case for are still searched (for table names and parameters): what is not understood is
// seen, not skipped.
func walk(m protoreflect.Message, fn func(n *pg.Node) bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Kind() != protoreflect.MessageKind {
				return true
			}
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkMsg(l.Get(i).Message(), fn)
			}
		case fd.IsMap():
		case fd.Kind() == protoreflect.MessageKind:
			walkMsg(v.Message(), fn)
		}
		return true
	})
}

func walkMsg(m protoreflect.Message, fn func(n *pg.Node) bool) {
	if n, ok := m.Interface().(*pg.Node); ok {
		if n.Node == nil || !fn(n) {
			return
		}
	}
	walk(m, fn)
}

// walkNode walks n and its subtree.
func walkNode(n *pg.Node, fn func(n *pg.Node) bool) {
	if n == nil || n.Node == nil {
		return
	}
	walkMsg(n.ProtoReflect(), fn)
}

// rangeVars calls fn for every RangeVar in the subtree (they are held both in Nodes and directly
// as fields, as in InsertStmt.Relation); fn returns false to stop.
func rangeVars(n *pg.Node, fn func(rv *pg.RangeVar) bool) {
	if n == nil {
		return
	}
	var visit func(m protoreflect.Message) bool
	visit = func(m protoreflect.Message) bool {
		if rv, ok := m.Interface().(*pg.RangeVar); ok && !fn(rv) {
			return false
		}
		cont := true
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
				return true
			}
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len() && cont; i++ {
					cont = visit(l.Get(i).Message())
				}
				return cont
			}
			cont = visit(v.Message())
			return cont
		})
		return cont
	}
	visit(n.ProtoReflect())
}
