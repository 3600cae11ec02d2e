package analyze

import (
	"fmt"
	"strings"

	"github.com/keyward/keyward/colcrypt/coltype"
)

// memCatalog is the analyzer's input as data: tables by schema and name.
type memCatalog map[[2]string]*Table

func (m memCatalog) Table(schema, name string) (*Table, bool) {
	t, ok := m[[2]string{schema, name}]
	return t, ok
}

func prot(t coltype.Type, m Mode, scope string) *Protection {
	return &Protection{Type: t, Mode: m, Scope: scope}
}

func testCatalog() memCatalog {
	tables := []*Table{
		{Schema: "public", Name: "employees", Columns: []Column{
			{Name: "id", Attnum: 1},
			{Name: "name", Attnum: 2},
			{Name: "ssn", Attnum: 3, Protection: prot(coltype.Text, Deterministic, "payroll:employees.ssn")},
			{Name: "salary", Attnum: 4, Protection: prot(coltype.Numeric, Randomized, "payroll:employees.salary")},
			{Name: "note", Attnum: 5, Protection: prot(coltype.Text, HSM, "vault:employees.note")},
			{Name: "dept_id", Attnum: 6},
			{Name: "hired", Attnum: 7, Protection: prot(coltype.Date, Deterministic, "payroll:employees.hired")},
		}},
		{Schema: "public", Name: "departments", Columns: []Column{
			{Name: "id", Attnum: 1}, {Name: "name", Attnum: 2}, {Name: "ssn", Attnum: 3},
		}},
		{Schema: "hr", Name: "people", Columns: []Column{
			{Name: "id", Attnum: 1},
			{Name: "email", Attnum: 2, Protection: prot(coltype.Text, Deterministic, "hr:people.email")},
			{Name: "badge", Attnum: 3, Protection: prot(coltype.Bytea, Randomized, "hr:people.badge")},
		}},
	}
	m := memCatalog{}
	for _, t := range tables {
		m[[2]string{t.Schema, t.Name}] = t
	}
	return m
}

// show renders a plan's edits with readable placeholders instead of envelopes:
// {W:column=value::cast} for a Write value, {M:column=value} for a Match value.
func show(sql string, p *Plan) string {
	reps := make([]Replacement, 0, len(p.Edits))
	for _, e := range p.Edits {
		var sb strings.Builder
		for _, part := range e.Parts {
			if part.Value == nil {
				sb.WriteString(part.Text)
				continue
			}
			v := part.Value
			r := "W"
			if v.Role == Match {
				r = "M"
			}
			fmt.Fprintf(&sb, "{%s:%s=%s", r, v.Column.Column, v.Literal.Value)
			if v.Literal.Cast != "" {
				sb.WriteString("::" + v.Literal.Cast)
			}
			sb.WriteString("}")
		}
		reps = append(reps, Replacement{Start: e.Start, End: e.End, Text: sb.String()})
	}
	return Apply(sql, reps...)
}
