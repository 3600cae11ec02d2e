package columns

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/colcrypt/analyze"
	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/config"
)

const byteaOID = 17

// protCol is one configured column as the live catalog places it.
type protCol struct {
	aad  string // "schema.table.column"
	prot *analyze.Protected
	key  colkeys.Column
	typ  coltype.Type
}

type attrKey struct {
	rel    uint32
	attnum int16
}

// snapshot is one immutable view of the catalog: the tables with protected columns.
type snapshot struct {
	gen    uint64
	tables map[string]*analyze.Table // "schema.name"
	attrs  map[attrKey]*protCol
}

func (s *snapshot) Table(schema, name string) (*analyze.Table, bool) {
	t, ok := s.tables[schema+"."+name]
	return t, ok
}

var _ analyze.Catalog = (*snapshot)(nil)

// catalog keeps the snapshot fresh from a side connection to the upstream.
type catalog struct {
	connString string
	cols       []config.Column
	cfgPath    string

	mu   sync.Mutex // serializes reloads and the connection
	conn *pgx.Conn
	cur  atomic.Pointer[snapshot]

	dirty    atomic.Bool
	gen      uint64
	database string // the database the columns are configured for (set by the first load)
}

// splitTable splits "schema.table" ("public" when unqualified).
func splitTable(s string) (schema, table string) {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return "public", s
}

func (c *catalog) connect(ctx context.Context) (*pgx.Conn, error) {
	if c.conn != nil && !c.conn.IsClosed() {
		return c.conn, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, c.connString)
	if err != nil {
		return nil, fmt.Errorf("catalog connection: %w", err)
	}
	c.conn = conn
	return conn, nil
}

// load reads the catalog and checks every configured column: it exists and is bytea.
func (c *catalog) load(ctx context.Context) (*snapshot, error) {
	return c.reload(ctx, false)
}

// reload reads the catalog; with onlyDirty, a reload another session finished while this one
// waited for the lock is not repeated.
func (c *catalog) reload(ctx context.Context, onlyDirty bool) (*snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.cur.Load(); onlyDirty && cur != nil && !c.dirty.Load() {
		return cur, nil
	}
	// Cleared before reading, so DDL that lands while we read marks the view stale again.
	c.dirty.Store(false)
	ok := false
	defer func() {
		if !ok {
			c.dirty.Store(true)
		}
	}()
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, col := range c.cols {
		s, t := splitTable(col.Table)
		names[s+"."+t] = true
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := conn.Query(qctx, `SELECT c.oid, n.nspname, c.relname, a.attname, a.attnum, a.atttypid
		FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
		WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		  AND n.nspname || '.' || c.relname = ANY($1)
		ORDER BY c.oid, a.attnum`, list)
	if err != nil {
		conn.Close(ctx)
		c.conn = nil
		return nil, fmt.Errorf("catalog query: %w", err)
	}
	type attr struct {
		rel    uint32
		name   string
		attnum int16
		typ    uint32
	}
	byTable := map[string][]attr{}
	for rows.Next() {
		var a attr
		var schema, rel string
		if err := rows.Scan(&a.rel, &schema, &rel, &a.name, &a.attnum, &a.typ); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog query: %w", err)
		}
		byTable[schema+"."+rel] = append(byTable[schema+"."+rel], a)
	}
	if err := rows.Err(); err != nil {
		conn.Close(ctx)
		c.conn = nil
		return nil, fmt.Errorf("catalog query: %w", err)
	}

	if c.database == "" {
		if err := conn.QueryRow(qctx, `SELECT current_database()`).Scan(&c.database); err != nil {
			return nil, fmt.Errorf("catalog query: %w", err)
		}
	}
	c.gen++
	snap := &snapshot{gen: c.gen, tables: map[string]*analyze.Table{}, attrs: map[attrKey]*protCol{}}
	for i, col := range c.cols {
		schema, table := splitTable(col.Table)
		full := schema + "." + table
		where := fmt.Sprintf("columns[%d]", i)
		if col.Line > 0 {
			where = fmt.Sprintf("%s:%d: %s", c.cfgPath, col.Line, where)
		}
		attrs, ok := byTable[full]
		if !ok {
			return nil, fmt.Errorf("%s: table %s does not exist in the database", where, full)
		}
		t := snap.tables[full]
		if t == nil {
			t = &analyze.Table{Schema: schema, Name: table}
			for _, a := range attrs {
				t.Columns = append(t.Columns, analyze.Column{Name: a.name, Attnum: a.attnum})
			}
			snap.tables[full] = t
		}
		var found *analyze.Column
		var rel uint32
		for j := range attrs {
			if attrs[j].name == col.Column {
				found, rel = &t.Columns[j], attrs[j].rel
				if attrs[j].typ != byteaOID {
					return nil, fmt.Errorf("%s: column %s.%s must be bytea in PostgreSQL to hold envelopes (it is type OID %d)", where, full, col.Column, attrs[j].typ)
				}
			}
		}
		if found == nil {
			return nil, fmt.Errorf("%s: column %s.%s does not exist in the database", where, full, col.Column)
		}
		typ, err := coltype.ParseType(col.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		mode, err := analyze.ParseMode(col.Mode)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if _, err := colkeys.AlgFor(col.Mode); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		found.Protection = &analyze.Protection{Type: typ, Mode: mode, Scope: col.Scope}
		pc := &protCol{
			prot: &analyze.Protected{Schema: schema, Table: table, Column: col.Column, Attnum: found.Attnum, Protection: *found.Protection},
			key:  colkeys.Column{Table: full, Name: col.Column, Scope: col.Scope, Mode: col.Mode},
			aad:  full + "." + col.Column,
			typ:  typ,
		}
		snap.attrs[attrKey{rel, found.Attnum}] = pc
	}
	c.cur.Store(snap)
	ok = true
	return snap, nil
}

// snapshot returns the current view, reloading it first when DDL made it stale. A failed reload keeps
// the old view (the error is returned for logging): its protected columns are still protected.
func (c *catalog) snapshot(ctx context.Context) (*snapshot, error) {
	if c.dirty.Load() {
		if s, err := c.reload(ctx, true); err != nil {
			return c.cur.Load(), err
		} else {
			return s, nil
		}
	}
	return c.cur.Load(), nil
}

func (c *catalog) invalidate() { c.dirty.Store(true) }

func (c *catalog) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close(context.Background())
		c.conn = nil
	}
}
