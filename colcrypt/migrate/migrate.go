package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/config"
)

// Keys is what migrations need from the key layer; *colkeys.Keys implements it.
type Keys interface {
	Sealer(ctx context.Context, identity string, col colkeys.Column) (colkeys.Sealer, error)
	Open(ctx context.Context, identity string, col colkeys.Column, env, dst []byte) ([]byte, error)
}

var _ Keys = (*colkeys.Keys)(nil)

// Sentinels callers branch on.
var (
	ErrNoPrimaryKey   = errors.New("migrate: table has no primary key (batches and resumption need one)")
	ErrNotConfigured  = errors.New("migrate: column is not configured in colcrypt.yaml")
	ErrNotFound       = errors.New("migrate: no such table or column")
	ErrBusy           = errors.New("migrate: another encrypt-column or rewrap is running on this column")
	ErrConfigChanged  = errors.New("migrate: mode, scope or type differ from the interrupted run's")
	ErrNotBytea       = errors.New("migrate: column is not bytea")
	ErrAlreadyDone    = errors.New("migrate: column is already encrypted")
	ErrUnsupported    = errors.New("migrate: not supported")
	ErrSwapIncomplete = errors.New("migrate: shadow column disagrees with the original")
)

// DependentsError lists objects that depend on a column encrypt-column would drop.
type DependentsError struct {
	Column  string   // schema.table.column
	Objects []string // as pg_describe_object prints them ("index employees_ssn_idx")
}

func (e *DependentsError) Error() string {
	return fmt.Sprintf("migrate: %s is used by %s; drop or change them first (they would keep or act on plaintext)",
		e.Column, strings.Join(e.Objects, ", "))
}

// VerifyError reports values that did not read back as the original. It carries counts only:
// values and keys are user data.
type VerifyError struct {
	Column     string
	Checked    int64
	Mismatches int64
	FirstErr   error // the first failure to open, if that was the cause (wraps envelope.ErrOpen)
}

func (e *VerifyError) Error() string {
	s := fmt.Sprintf("migrate: verification of %s failed: %d of %d values do not read back as the original", e.Column, e.Mismatches, e.Checked)
	if e.FirstErr != nil {
		s += ": " + e.FirstErr.Error()
	}
	return s
}

func (e *VerifyError) Unwrap() error { return e.FirstErr }

// Phases reported through Progress.
const (
	PhaseCopy    = "copy"
	PhaseCatchUp = "catch-up"
	PhaseVerify  = "verify"
	PhaseSwap    = "swap"
	PhaseRewrap  = "rewrap"
)

// Progress is reported after every batch.
type Progress struct {
	Phase   string
	Done    int64 // rows done in this phase (copy: including those done by earlier, interrupted runs)
	Total   int64 // rows expected in this phase (an estimate when others write meanwhile); 0: unknown
	Batches int   // batches committed by this run
}

// Defaults.
const (
	DefaultBatchSize   = 1000
	DefaultLockTimeout = 5 * time.Second
	lockAttempts       = 5
	maxCatchUpPasses   = 10
)

// Options configures EncryptColumn and Rewrap.
type Options struct {
	// Conn is a direct connection to PostgreSQL as a role that owns the table. It is used by one
	// migration at a time and left open.
	Conn *pgx.Conn
	// Keys seals and opens; Identity is who it acts for ("db:<role>").
	Keys     Keys
	Identity string
	// Column is the colcrypt.yaml entry (FindColumn).
	Column config.Column
	// BatchSize rows per transaction (default DefaultBatchSize); Rate caps rows per second (0: no cap).
	BatchSize int
	Rate      float64
	// VerifySample: 0 verifies every value; n > 0 a random sample of n.
	VerifySample int
	// LockTimeout bounds waiting for the table lock of DDL steps (default DefaultLockTimeout).
	LockTimeout time.Duration
	// Progress, if set, is called after every batch (from the calling goroutine).
	Progress func(Progress)
	// BeforeCommit, if set, is called inside every copy or rewrap batch's transaction just before
	// COMMIT with the number of batches this run has committed so far; a non-nil error aborts the
	// run (the batch rolls back). For crash tests.
	BeforeCommit func(batches int) error
}

func (o *Options) defaults() error {
	if o.Conn == nil || o.Keys == nil {
		return errors.New("migrate: Options.Conn and Options.Keys are required")
	}
	if o.Identity == "" {
		return errors.New("migrate: Options.Identity is required")
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Rate < 0 {
		o.Rate = 0
	}
	return nil
}

// Result summarizes a run.
type Result struct {
	Column    string // schema.table.column
	Rows      int64  // values sealed by this run (encrypt: copy, catch-up and swap; rewrap: rewrapped)
	Batches   int
	Verified  int64 // values read back and compared
	Resumed   bool  // an interrupted run was continued
	Remaining int64 // rewrap: values still not at the newest header
	Version   uint32
	Elapsed   time.Duration
}

// NormalizeTable qualifies a table name with "public" when it has no schema, the way config entries
// and --table flags are compared.
func NormalizeTable(name string) string {
	if strings.Contains(name, ".") {
		return name
	}
	return "public." + name
}

// FindColumn returns the entry of cfg for table and column.
func FindColumn(cfg *config.Config, table, column string) (config.Column, error) {
	want := NormalizeTable(table)
	for _, c := range cfg.Columns {
		if NormalizeTable(c.Table) == want && c.Column == column {
			return c, nil
		}
	}
	return config.Column{}, fmt.Errorf("%w: %s.%s (add an entry under columns: with its type, mode and scope)", ErrNotConfigured, want, column)
}

// execer is a *pgx.Conn or a pgx.Tx.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// pkCol is one primary key column.
type pkCol struct{ name, typ string }

// target is a column resolved against the catalog.
type target struct {
	oid           uint32
	schema, table string
	col           string
	attnum        int16
	colType       string // format_type
	notNull       bool
	pk            []pkCol
	declared      coltype.Type
	ck            colkeys.Column

	qtable, qcol, qshadow, qprogress string
}

func (t *target) name() string { return t.schema + "." + t.table + "." + t.col }

func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

// resolve looks the configured column up in the catalog.
func resolve(ctx context.Context, conn *pgx.Conn, c config.Column) (*target, error) {
	t := &target{}
	var err error
	if t.declared, err = coltype.ParseType(c.Type); err != nil {
		return nil, fmt.Errorf("migrate: column %s.%s: %w", c.Table, c.Column, err)
	}
	if _, err := colkeys.AlgFor(c.Mode); err != nil {
		return nil, fmt.Errorf("migrate: column %s.%s: %w", c.Table, c.Column, err)
	}
	err = conn.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, c.Table).Scan(&t.oid, &t.schema, &t.table)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: table %s", ErrNotFound, c.Table)
	}
	if err != nil {
		return nil, fmt.Errorf("migrate: look up table %s: %w", c.Table, err)
	}
	err = conn.QueryRow(ctx, `SELECT attnum, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
		WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped`, t.oid, c.Column).Scan(&t.attnum, &t.colType, &t.notNull)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: column %s.%s.%s", ErrNotFound, t.schema, t.table, c.Column)
	}
	if err != nil {
		return nil, fmt.Errorf("migrate: look up column %s: %w", c.Column, err)
	}
	t.col = c.Column
	rows, err := conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord), pg_attribute a
		WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = i.indrelid AND a.attnum = k.attnum
		ORDER BY k.ord`, t.oid)
	if err != nil {
		return nil, fmt.Errorf("migrate: look up primary key: %w", err)
	}
	for rows.Next() {
		var p pkCol
		if err := rows.Scan(&p.name, &p.typ); err != nil {
			return nil, err
		}
		t.pk = append(t.pk, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate: look up primary key: %w", err)
	}
	t.ck = colkeys.Column{Table: t.schema + "." + t.table, Name: t.col, Scope: c.Scope, Mode: c.Mode}
	t.qtable = ident(t.schema, t.table)
	t.qcol = ident(t.col)
	t.qshadow = ident(t.shadowName())
	t.qprogress = ident(t.schema, "keyward_migrations")
	return t, nil
}

func (t *target) requirePK() error {
	if len(t.pk) == 0 {
		return fmt.Errorf("%w: %s.%s", ErrNoPrimaryKey, t.schema, t.table)
	}
	return nil
}

// keyset builds the parts of a keyset-paginated query: the ORDER BY list, the select list of the
// key as text, and the "after" predicate comparing the key with params $first.. (as text, cast to
// the key's types so the comparison uses the key's own ordering and its index).
func (t *target) keyset(first int) (order, text, after string) {
	var o, x []string
	for i, p := range t.pk {
		q := ident(p.name)
		o = append(o, q)
		// Aliased: a bare output name "id" would make ORDER BY id sort by the text.
		x = append(x, fmt.Sprintf("%s::text AS kw_key%d", q, i))
	}
	return strings.Join(o, ", "), strings.Join(x, ", "), t.keyCompare(">", first)
}

// keyCompare is the predicate "(key) op (params $first..)", the params given as text and cast to
// the key's types.
func (t *target) keyCompare(op string, first int) string {
	var l, r []string
	for i, p := range t.pk {
		l = append(l, ident(p.name))
		r = append(r, fmt.Sprintf("$%d::text::%s", first+i, p.typ))
	}
	return "(" + strings.Join(l, ", ") + ") " + op + " (" + strings.Join(r, ", ") + ")"
}

// keyOf copies the primary key, as text from index from of a raw row, out of the row.
func (t *target) keyOf(row [][]byte, from int) []string {
	key := make([]string, len(t.pk))
	for i := range key {
		key[i] = string(row[from+i])
	}
	return key
}

// lockKey is the advisory lock of a column, shared by encrypt-column and rewrap.
func (t *target) lock(ctx context.Context, conn *pgx.Conn) (unlock func(), err error) {
	key := "keyward-migrate:" + t.name()
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&ok); err != nil {
		return nil, fmt.Errorf("migrate: advisory lock: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrBusy, t.name())
	}
	return func() {
		// A fresh context: the caller's may be cancelled, and a lock left behind would block the
		// next run until this connection closes.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key)
	}, nil
}

// ensureProgressTable creates <schema>.keyward_migrations if needed.
func (t *target) ensureProgressTable(ctx context.Context, q execer) error {
	_, err := q.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.qprogress+` (
		table_name    text NOT NULL,
		column_name   text NOT NULL,
		kind          text NOT NULL,
		state         text NOT NULL,
		mode          text NOT NULL,
		scope         text NOT NULL,
		declared_type text NOT NULL,
		last_key      text[],
		rows_done     bigint NOT NULL DEFAULT 0,
		started_at    timestamptz NOT NULL DEFAULT now(),
		updated_at    timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (table_name, column_name, kind))`)
	if err != nil {
		return fmt.Errorf("migrate: create %s: %w", t.qprogress, err)
	}
	return nil
}

// progressRow is a row of keyward_migrations.
type progressRow struct {
	state, mode, scope, typ string
	lastKey                 []string
	done                    int64
}

func (t *target) readProgress(ctx context.Context, conn *pgx.Conn, kind string) (*progressRow, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.qprogress).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, nil
	}
	p := &progressRow{}
	err := conn.QueryRow(ctx, `SELECT state, mode, scope, declared_type, last_key, rows_done FROM `+t.qprogress+`
		WHERE table_name = $1 AND column_name = $2 AND kind = $3`, t.schema+"."+t.table, t.col, kind).
		Scan(&p.state, &p.mode, &p.scope, &p.typ, &p.lastKey, &p.done)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("migrate: read progress: %w", err)
	}
	return p, nil
}

// pacer throttles to a rate of rows per second over the whole run.
type pacer struct {
	rate  float64
	start time.Time
	rows  int64
}

func (p *pacer) wait(ctx context.Context, n int) error {
	p.rows += int64(n)
	if p.rate <= 0 {
		return nil
	}
	due := p.start.Add(time.Duration(float64(p.rows) / p.rate * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
