package analyze

import (
	"fmt"

	"github.com/keyward/keyward/colcrypt/coltype"
)

// Mode is how a protected column is encrypted. It decides what the database can still compute on
// the column: equality (and so IN, GROUP BY, DISTINCT, equality joins on the same column) only for
// Deterministic; nothing but IS NULL and count for the others.
type Mode uint8

// The modes. The zero Mode is invalid so a forgotten field is caught.
const (
	Randomized    Mode = iota + 1 // AES-256-GCM, random nonce
	Deterministic                 // AES-SIV: equal plaintexts give equal ciphertexts (per key version)
	HSM                           // AES-256-GCM inside the HSM: randomized as far as SQL is concerned
)

// String is the config spelling ("randomized", "deterministic", "hsm").
func (m Mode) String() string {
	switch m {
	case Randomized:
		return "randomized"
	case Deterministic:
		return "deterministic"
	case HSM:
		return "hsm"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses the config spelling of a mode.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "randomized":
		return Randomized, nil
	case "deterministic":
		return Deterministic, nil
	case "hsm":
		return HSM, nil
	}
	return 0, fmt.Errorf("analyze: unknown mode %q (want randomized, deterministic or hsm)", s)
}

// Protection is the configuration of one protected column.
type Protection struct {
	Type  coltype.Type // what clients see
	Mode  Mode
	Scope string // key scope, e.g. "payroll:employees.ssn"
}

// Column is one live column of a table (dropped columns are left out).
type Column struct {
	Name       string // as stored in pg_attribute (case preserved)
	Attnum     int16
	Protection *Protection // nil for a plaintext column
}

// Table is a table as the catalog describes it.
type Table struct {
	Schema, Name string
	// Columns in attnum order: the order of `INSERT INTO t VALUES (...)`, `SELECT *` and COPY
	// without a column list.
	Columns []Column
}

// Protected reports whether the table has at least one protected column.
func (t *Table) Protected() bool {
	for i := range t.Columns {
		if t.Columns[i].Protection != nil {
			return true
		}
	}
	return false
}

func (t *Table) column(name string) *Column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// Catalog resolves table names; the proxy implements it from live catalog lookups. It is the
// analyzer's only view of the database.
//
// Table returns the table named schema.name, if it exists. Names are passed as PostgreSQL stores
// them (unquoted identifiers already folded to lower case by the parser). A Catalog should know every
// table; one that knows only the tables with protected columns still gives correct answers (an
// unknown table's columns are taken to be plaintext, and an unqualified column that a protected
// table has is that table's column, or PostgreSQL would reject the statement as ambiguous), but
// then an unqualified name that PostgreSQL would resolve to an unknown table in an inner query level
// may be taken for a protected column of an outer level and refused: the error is on the safe side.
type Catalog interface {
	Table(schema, name string) (*Table, bool)
}

// Options are the session settings analysis depends on.
type Options struct {
	// SearchPath resolves unqualified table names, in order ("$user" already substituted by the
	// caller). Empty means ["public"]. pg_temp and pg_catalog are not searched implicitly: a
	// temporary table shadowing a protected one is treated as the protected one (the safe side).
	SearchPath []string
}

// Protected identifies a protected column in a plan.
type Protected struct {
	Schema, Table, Column string
	Attnum                int16
	Protection
}

// QualifiedName is "schema.table.column", the name envelopes bind as associated data.
func (p *Protected) QualifiedName() string { return p.Schema + "." + p.Table + "." + p.Column }

func (p *Protected) same(q *Protected) bool {
	return p.Schema == q.Schema && p.Table == q.Table && p.Column == q.Column
}

func protectedOf(t *Table, c *Column) *Protected {
	if c == nil || c.Protection == nil {
		return nil
	}
	return &Protected{Schema: t.Schema, Table: t.Name, Column: c.Name, Attnum: c.Attnum, Protection: *c.Protection}
}
