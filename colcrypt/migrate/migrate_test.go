package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/colkeys/colkeystest"
	"github.com/keyward/keyward/colcrypt/coltype"
	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/migrate"
	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/testenv"
)

const identity = "db:keyward" // testenv's ordinary role is "keyward"

type env struct {
	pg    *testenv.PG
	stack *colkeystest.Stack
	keys  *colkeys.Keys
}

func setup(t *testing.T) *env {
	t.Helper()
	pg := testenv.Postgres(t)
	st := colkeystest.Start(t)
	k := colkeys.New(colkeys.Config{Agent: st.Client, TTL: 200 * time.Millisecond})
	t.Cleanup(k.Close)
	return &env{pg: pg, stack: st, keys: k}
}

func (e *env) conn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.pg.UserDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func col(table, column, typ, mode, scope string) config.Column {
	return config.Column{Table: table, Column: column, Type: typ, Mode: mode, Scope: scope}
}

var errCrash = errors.New("injected crash")

// checkEncrypted asserts that every value of table.column is an envelope, that it opens to
// want[id] (nil: NULL) and that the ids are exactly want's.
func checkEncrypted(t *testing.T, e *env, c *pgx.Conn, cc config.Column, typ coltype.Type, want map[int64]*string) {
	t.Helper()
	ctx := context.Background()
	table := migrate.NormalizeTable(cc.Table)
	ck := colkeys.Column{Table: table, Name: cc.Column, Scope: cc.Scope, Mode: cc.Mode}
	rows, err := c.Query(ctx, fmt.Sprintf(`SELECT id, %s FROM %s`, cc.Column, table), pgx.QueryExecModeDescribeExec)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64][]byte{}
	for rows.Next() {
		var id int64
		var v []byte
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		got[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	bad := 0
	for id, w := range want {
		v, ok := got[id]
		switch {
		case !ok:
			t.Errorf("row %d lost", id)
			bad++
		case w == nil && v != nil:
			t.Errorf("row %d: want NULL, got a value", id)
			bad++
		case w == nil:
		case v == nil:
			t.Errorf("row %d: NULL, want a value", id)
			bad++
		case !bytes.HasPrefix(v, []byte("KW\x01")):
			t.Errorf("row %d: not an envelope in the direct view", id)
			bad++
		default:
			plain, err := e.keys.Open(ctx, identity, ck, v, nil)
			if err != nil {
				t.Errorf("row %d: %v", id, err)
				bad++
				continue
			}
			wc, err := coltype.Canonical(typ, coltype.TextFormat, []byte(*w), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(plain, wc) {
				t.Errorf("row %d: decrypts to another value", id)
				bad++
			}
		}
		if bad > 10 {
			t.Fatal("too many bad rows")
		}
	}
}

func strp(s string) *string { return &s }

// TestMigrate runs every scenario against one Postgres and key stack (starting them takes most of
// the time). Each scenario starts from an empty schema; the rotation comes last.
func TestMigrate(t *testing.T) {
	e := setup(t)
	t.Run("EncryptColumnCrashResumeConcurrentWrites", func(t *testing.T) { testEncryptColumnCrashResumeConcurrentWrites(t, e) })
	t.Run("EncryptColumnTypesAndModes", func(t *testing.T) { testEncryptColumnTypesAndModes(t, e) })
	t.Run("EncryptColumnRefusals", func(t *testing.T) { testEncryptColumnRefusals(t, e) })
	t.Run("Check", func(t *testing.T) { testCheck(t, e) })
	t.Run("VerificationCatchesSwappedValues", func(t *testing.T) { testVerificationCatchesSwappedValues(t, e) })
	t.Run("LockRetry", func(t *testing.T) { testLockRetry(t, e) })
	t.Run("Throttle", func(t *testing.T) { testThrottle(t, e) })
	t.Run("VerifySample", func(t *testing.T) { testVerifySample(t, e) })
	t.Run("RewrapAfterRotation", func(t *testing.T) { testRewrapAfterRotation(t, e) })
}

// fresh drops what earlier scenarios left.
func fresh(t *testing.T, e *env) {
	t.Helper()
	c := e.conn(t)
	exec(t, c, `DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA IF EXISTS hr CASCADE`)
}

// TestEncryptColumnCrashResumeConcurrentWrites converts 20k rows: the first run dies inside its
// sixth batch, the second resumes while another session inserts, updates, deletes and nulls rows.
func testEncryptColumnCrashResumeConcurrentWrites(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE employees (id bigint PRIMARY KEY, name text, ssn text NOT NULL DEFAULT '' , salary numeric)`)
	exec(t, c, `ALTER TABLE employees ALTER COLUMN ssn DROP DEFAULT`)
	exec(t, c, `INSERT INTO employees SELECT g, 'n' || g, lpad(g::text, 9, '0'), g * 10 FROM generate_series(1, 20000) g`)
	want := map[int64]*string{}
	for i := int64(1); i <= 20000; i++ {
		want[i] = strp(fmt.Sprintf("%09d", i))
	}
	cc := col("employees", "ssn", "text", "deterministic", "payroll:employees.ssn")
	o := migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: cc, BatchSize: 1000,
		BeforeCommit: func(n int) error {
			if n == 5 {
				return errCrash
			}
			return nil
		}}
	if _, err := migrate.EncryptColumn(ctx, o); !errors.Is(err, errCrash) {
		t.Fatalf("first run: %v, want the injected crash", err)
	}
	var sealed int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM employees WHERE ssn__kw IS NOT NULL`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if sealed != 5000 {
		t.Fatalf("%d rows sealed after the crash, want the 5 committed batches (5000)", sealed)
	}

	// Resuming with another mode would mix two kinds of envelopes in one column.
	changed := o
	changed.Column.Mode = "randomized"
	if _, err := migrate.EncryptColumn(ctx, changed); !errors.Is(err, migrate.ErrConfigChanged) {
		t.Fatalf("resume with another mode: %v, want ErrConfigChanged", err)
	}

	// A writer on its own connection while the second run goes on.
	w := e.conn(t)
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes int
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(1, 2))
		next := int64(20001)
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := r.Int64N(20000) + 1
			v := fmt.Sprintf("w%08d", r.IntN(1e8))
			var err error
			var apply func()
			switch r.IntN(3) {
			case 0:
				_, err = w.Exec(ctx, `UPDATE employees SET ssn = $1 WHERE id = $2`, v, id)
				apply = func() {
					if _, ok := want[id]; ok {
						want[id] = strp(v)
					}
				}
			case 1:
				n := next
				_, err = w.Exec(ctx, `INSERT INTO employees (id, name, ssn) VALUES ($1, 'new', $2)`, n, v)
				apply = func() { want[n] = strp(v); next++ }
			case 2:
				_, err = w.Exec(ctx, `DELETE FROM employees WHERE id = $1`, id)
				apply = func() { delete(want, id) }
			}
			if err != nil {
				// After the swap the column is bytea: plaintext writes fail, which is the point.
				return
			}
			mu.Lock()
			apply()
			writes++
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	o.BeforeCommit = nil
	o.BatchSize = 500
	var phases []string
	o.Progress = func(p migrate.Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}
	res, err := migrate.EncryptColumn(ctx, o)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	t.Logf("result %+v, phases %v, concurrent writes %d", *res, phases, writes)
	if !res.Resumed {
		t.Error("second run did not report a resume")
	}
	if writes == 0 {
		t.Fatal("the writer made no write during the run")
	}
	if res.Verified == 0 {
		t.Error("nothing verified")
	}
	checkEncrypted(t, e, c, cc, coltype.Text, want)

	// The column is bytea and NOT NULL, the shadow and trigger are gone, the guard refuses plaintext.
	var typ string
	var notNull bool
	if err := c.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute WHERE attrelid = 'employees'::regclass AND attname = 'ssn'`).Scan(&typ, &notNull); err != nil {
		t.Fatal(err)
	}
	if typ != "bytea" || !notNull {
		t.Errorf("ssn is %s not null=%v, want bytea NOT NULL", typ, notNull)
	}
	var leftovers int
	c.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = 'employees'::regclass AND attname = 'ssn__kw' AND NOT attisdropped)
		+ (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'employees'::regclass)`).Scan(&leftovers)
	if leftovers != 0 {
		t.Errorf("shadow column or trigger left behind (%d)", leftovers)
	}
	_, err = c.Exec(ctx, `UPDATE employees SET ssn = 'plain'::bytea WHERE id = (SELECT min(id) FROM employees)`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23514" {
		t.Errorf("plaintext write after the swap: %v, want a check violation", err)
	}
	var validated bool
	if err := c.QueryRow(ctx, `SELECT convalidated FROM pg_constraint WHERE conrelid = 'employees'::regclass AND conname = $1`,
		migrate.EnvelopeConstraint("ssn")).Scan(&validated); err != nil || !validated {
		t.Errorf("envelope constraint: validated=%v %v", validated, err)
	}
	var state string
	c.QueryRow(ctx, `SELECT state FROM keyward_migrations WHERE table_name = 'public.employees' AND column_name = 'ssn'`).Scan(&state)
	if state != "done" {
		t.Errorf("progress state %q", state)
	}
	if _, err := migrate.EncryptColumn(ctx, o); !errors.Is(err, migrate.ErrAlreadyDone) {
		t.Errorf("third run: %v, want ErrAlreadyDone", err)
	}
	// A plaintext column of the same name later is a new conversion, not "already done".
	exec(t, c, `ALTER TABLE employees DROP COLUMN ssn; ALTER TABLE employees ADD COLUMN ssn text; UPDATE employees SET ssn = 'again'`)
	o.BatchSize = 5000
	if res, err := migrate.EncryptColumn(ctx, o); err != nil || res.Resumed || res.Rows == 0 {
		t.Errorf("conversion of a re-created column: %+v %v", res, err)
	}
}

// TestEncryptColumnTypesAndModes converts columns of several declared types in each mode, with a
// composite primary key and NULLs, and checks each value against the original.
func testEncryptColumnTypesAndModes(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE SCHEMA hr`)
	exec(t, c, `CREATE TABLE hr.staff (region int, id bigint, salary numeric, born timestamptz, note text, tags jsonb, PRIMARY KEY (region, id))`)
	exec(t, c, `INSERT INTO hr.staff SELECT g % 3, g, CASE WHEN g % 7 = 0 THEN NULL ELSE g * 1.50 END,
		'2024-01-02 03:04:05+02'::timestamptz + g * interval '1 hour', 'note ' || g, jsonb_build_object('g', g, 'x', 1.50)
		FROM generate_series(1, 700) g`)
	cases := []struct {
		name string
		cc   config.Column
		typ  coltype.Type
		text string // the original value as text, in UTC
	}{
		{"numeric randomized", col("hr.staff", "salary", "numeric", "randomized", "payroll:staff.salary"), coltype.Numeric, "salary::text"},
		{"timestamptz deterministic", col("hr.staff", "born", "timestamptz", "deterministic", "payroll:staff.born"), coltype.Timestamptz, "born::text"},
		{"text hsm", col("hr.staff", "note", "text", "hsm", "vault:staff.note"), coltype.Text, "note"},
		{"jsonb randomized", col("hr.staff", "tags", "jsonb", "randomized", "payroll:staff.tags"), coltype.JSONB, "tags::text"},
	}
	exec(t, c, `SET TimeZone = 'UTC'`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Expected values keyed by region*1e6+id.
			rows, err := c.Query(ctx, `SELECT region, id, `+tc.text+` FROM hr.staff`, pgx.QueryExecModeDescribeExec)
			if err != nil {
				t.Fatal(err)
			}
			want := map[[2]int64]*string{}
			for rows.Next() {
				var r, id int64
				var v *string
				if err := rows.Scan(&r, &id, &v); err != nil {
					t.Fatal(err)
				}
				want[[2]int64{r, id}] = v
			}
			res, err := migrate.EncryptColumn(ctx, migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: tc.cc, BatchSize: 128})
			if err != nil {
				t.Fatal(err)
			}
			if res.Rows == 0 {
				t.Fatal("no rows sealed")
			}
			ck := colkeys.Column{Table: "hr.staff", Name: tc.cc.Column, Scope: tc.cc.Scope, Mode: tc.cc.Mode}
			rows, err = c.Query(ctx, `SELECT region, id, `+tc.cc.Column+` FROM hr.staff`, pgx.QueryExecModeDescribeExec)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rows.Next() {
				var r, id int64
				var v []byte
				if err := rows.Scan(&r, &id, &v); err != nil {
					t.Fatal(err)
				}
				n++
				w := want[[2]int64{r, id}]
				if (w == nil) != (v == nil) {
					t.Fatalf("row %d/%d: NULL mismatch", r, id)
				}
				if w == nil {
					continue
				}
				plain, err := e.keys.Open(ctx, identity, ck, v, nil)
				if err != nil {
					t.Fatalf("row %d/%d: %v", r, id, err)
				}
				wc, err := coltype.Canonical(tc.typ, coltype.TextFormat, []byte(*w), nil)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(plain, wc) {
					t.Fatalf("row %d/%d decrypts to another value", r, id)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if n != len(want) {
				t.Fatalf("%d rows, want %d", n, len(want))
			}
		})
	}
}

func testEncryptColumnRefusals(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE nopk (a text, b text)`)
	exec(t, c, `CREATE TABLE indexed (id int PRIMARY KEY, ssn text)`)
	exec(t, c, `CREATE INDEX indexed_ssn ON indexed (ssn)`)
	exec(t, c, `CREATE TABLE viewed (id int PRIMARY KEY, ssn text)`)
	exec(t, c, `CREATE VIEW viewed_v AS SELECT ssn FROM viewed`)
	exec(t, c, `CREATE TABLE busy (id int PRIMARY KEY, ssn text)`)
	exec(t, c, `CREATE TABLE pkcol (ssn text PRIMARY KEY)`)
	scope := "payroll:x"
	cases := []struct {
		name  string
		cc    config.Column
		want  error
		wantS string
	}{
		{"no primary key", col("nopk", "a", "text", "randomized", scope), migrate.ErrNoPrimaryKey, ""},
		{"index on the column", col("indexed", "ssn", "text", "randomized", scope), nil, "index indexed_ssn"},
		{"view on the column", col("viewed", "ssn", "text", "randomized", scope), nil, "view viewed_v"},
		{"no such table", col("nothere", "ssn", "text", "randomized", scope), migrate.ErrNotFound, ""},
		{"no such column", col("indexed", "nothere", "text", "randomized", scope), migrate.ErrNotFound, ""},
		{"primary key column", col("pkcol", "ssn", "text", "randomized", scope), migrate.ErrUnsupported, ""},
		{"busy", col("busy", "ssn", "text", "randomized", scope), migrate.ErrBusy, ""},
	}
	// Another session holds busy.ssn's lock.
	other := e.conn(t)
	exec(t, other, `SELECT pg_advisory_lock(hashtextextended('keyward-migrate:public.busy.ssn', 0))`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := migrate.EncryptColumn(ctx, migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: tc.cc})
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if tc.wantS != "" {
				var de *migrate.DependentsError
				if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.wantS) {
					t.Fatalf("%v, want a DependentsError naming %q", err, tc.wantS)
				}
			}
		})
	}
	// A refused run changed nothing.
	var cols int
	c.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attname LIKE '%\_\_kw' AND NOT attisdropped`).Scan(&cols)
	if cols != 0 {
		t.Errorf("%d shadow columns left by refused runs", cols)
	}
	cfg := &config.Config{Columns: []config.Column{col("public.employees", "ssn", "text", "randomized", scope)}}
	if _, err := migrate.FindColumn(cfg, "employees", "ssn"); err != nil {
		t.Errorf("FindColumn: %v", err)
	}
	if _, err := migrate.FindColumn(cfg, "employees", "name"); !errors.Is(err, migrate.ErrNotConfigured) {
		t.Errorf("FindColumn of an unconfigured column: %v", err)
	}
}

// TestRewrapAfterRotation encrypts, rotates the keyring, rewraps, and checks versions and values.
func testRewrapAfterRotation(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE employees (id bigint PRIMARY KEY, ssn text)`)
	exec(t, c, `INSERT INTO employees SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'ssn-' || g END FROM generate_series(1, 3000) g`)
	want := map[int64]*string{}
	for i := int64(1); i <= 3000; i++ {
		if i%10 != 0 {
			want[i] = strp(fmt.Sprintf("ssn-%d", i))
		} else {
			want[i] = nil
		}
	}
	cc := col("employees", "ssn", "text", "deterministic", "payroll:employees.ssn")
	o := migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: cc, BatchSize: 400}
	res, err := migrate.EncryptColumn(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 1 {
		t.Fatalf("sealed with version %d, want 1", res.Version)
	}
	versions := func() map[int64]int64 {
		m := map[int64]int64{}
		rows, _ := c.Query(ctx, `SELECT get_byte(ssn, 7), count(*) FROM employees WHERE ssn IS NOT NULL GROUP BY 1`)
		for rows.Next() {
			var v, n int64
			rows.Scan(&v, &n)
			m[v] = n
		}
		return m
	}
	if res.Verified != 2700 {
		t.Errorf("encrypt verified %d values, want 2700", res.Verified)
	}
	e.stack.Rotate(t, "payroll")
	waitVersion(t, e, colkeys.Column{Table: "public.employees", Name: "ssn", Scope: cc.Scope, Mode: cc.Mode}, 2)
	// Half of the rewrap, then a crash, then the rest.
	o.BeforeCommit = func(n int) error {
		if n == 3 {
			return errCrash
		}
		return nil
	}
	if res, err := migrate.Rewrap(ctx, o); !errors.Is(err, errCrash) {
		t.Fatalf("first rewrap: %+v %v", res, err)
	}
	if v := versions(); v[1] == 0 || v[2] != 1200 {
		t.Fatalf("after the crash: versions %v, want 1200 at v2 and the rest at v1", v)
	}
	o.BeforeCommit = nil
	res, err = migrate.Rewrap(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rewrap %+v", *res)
	if !res.Resumed || res.Version != 2 || res.Remaining != 0 || res.Rows != 2700-1200 || res.Verified != 2700 {
		t.Errorf("result %+v", *res)
	}
	if v := versions(); len(v) != 1 || v[2] != 2700 {
		t.Fatalf("versions after rewrap %v, want all 2700 at v2", v)
	}
	checkEncrypted(t, e, c, cc, coltype.Text, want)
	// Idempotent: nothing left to do.
	res, err = migrate.Rewrap(ctx, o)
	if err != nil || res.Rows != 0 {
		t.Fatalf("second rewrap: %+v %v", res, err)
	}
	// A plaintext column is refused.
	exec(t, c, `CREATE TABLE plain (id int PRIMARY KEY, ssn text)`)
	o.Column = col("plain", "ssn", "text", "deterministic", "payroll:x")
	if _, err := migrate.Rewrap(ctx, o); !errors.Is(err, migrate.ErrNotBytea) {
		t.Errorf("rewrap of a text column: %v", err)
	}
}

// waitVersion waits until the caches (agent, colkeys) serve version v as the newest.
func waitVersion(t *testing.T, e *env, ck colkeys.Column, v uint32) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		e.keys.Forget()
		s, err := e.keys.Sealer(context.Background(), identity, ck)
		if err == nil && s.Version() == v {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("newest version never became %d: %v", v, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func testCheck(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE employees (id bigint PRIMARY KEY, ssn text, note text, raw bytea)`)
	exec(t, c, `INSERT INTO employees SELECT g, 's' || g, 'n' || g, 'plain'::bytea FROM generate_series(1, 50) g`)
	ssn := col("public.employees", "ssn", "text", "deterministic", "payroll:employees.ssn")
	if _, err := migrate.EncryptColumn(ctx, migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: ssn}); err != nil {
		t.Fatal(err)
	}
	ping := func(ctx context.Context) error {
		_, err := e.stack.Client.Status(ctx)
		if errors.Is(err, client.ErrDenied) { // it answered
			return nil
		}
		return err
	}
	dead := client.New(filepath.Join(t.TempDir(), "nothing.sock"))
	defer dead.Close()
	deadAgent := func(ctx context.Context) error {
		_, err := dead.Status(ctx)
		return err
	}
	cases := []struct {
		name     string
		cols     []config.Column
		identity string
		ping     func(context.Context) error
		problems []string // substrings, one per expected problem
	}{
		{"good", []config.Column{ssn}, identity, ping, nil},
		{"missing column", []config.Column{ssn, col("employees", "nothere", "text", "randomized", "payroll:x")}, identity, nil, []string{"no such table or column"}},
		{"plaintext column", []config.Column{col("employees", "note", "text", "randomized", "payroll:x")}, identity, nil, []string{"not bytea"}},
		{"bytea holding plaintext", []config.Column{col("employees", "raw", "bytea", "randomized", "payroll:x")}, identity, nil, []string{"not envelopes"}},
		{"wrong scope", []config.Column{col("employees", "ssn", "text", "deterministic", "payroll:other")}, identity, nil, []string{"another scope", "does not open"}},
		{"identity without keys", []config.Column{ssn}, "db:carol", nil, []string{"no encryption key"}},
		{"twice", []config.Column{ssn, ssn}, identity, nil, []string{"twice"}},
		{"agent unreachable", []config.Column{ssn}, identity, deadAgent, []string{"key agent unreachable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := migrate.Check(ctx, &config.Config{Columns: tc.cols}, migrate.CheckOptions{Conn: c, Keys: e.keys, Identity: tc.identity, Ping: tc.ping})
			if err != nil {
				t.Fatal(err)
			}
			out := rep.String()
			if rep.Problems() != len(tc.problems) {
				t.Fatalf("%d problems, want %d:\n%s", rep.Problems(), len(tc.problems), out)
			}
			for _, p := range tc.problems {
				if !strings.Contains(out, p) {
					t.Errorf("report does not mention %q:\n%s", p, out)
				}
			}
		})
	}
}

// testVerificationCatchesSwappedValues swaps two sealed shadow values between rows (both open: only
// the comparison with the original can tell), and expects the run to stop before the swap, the
// original column untouched, and a re-run to re-seal the two rows and finish.
func testVerificationCatchesSwappedValues(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE employees (id int PRIMARY KEY, ssn text)`)
	exec(t, c, `INSERT INTO employees SELECT g, 'ssn-' || g FROM generate_series(1, 300) g`)
	cc := col("employees", "ssn", "text", "randomized", "payroll:employees.ssn")
	o := migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: cc, BatchSize: 100,
		BeforeCommit: func(n int) error {
			if n == 2 {
				return errCrash // rows 1..200 sealed
			}
			return nil
		}}
	if _, err := migrate.EncryptColumn(ctx, o); !errors.Is(err, errCrash) {
		t.Fatalf("first run: %v", err)
	}
	exec(t, c, `UPDATE employees e SET ssn__kw = o.ssn__kw FROM employees o WHERE (e.id, o.id) IN ((10, 20), (20, 10))`)
	o.BeforeCommit = nil
	_, err := migrate.EncryptColumn(ctx, o)
	var ve *migrate.VerifyError
	if !errors.As(err, &ve) || ve.Mismatches != 2 || ve.Checked != 300 {
		t.Fatalf("second run: %v, want a VerifyError with 2 mismatches of 300", err)
	}
	var typ string
	c.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'employees'::regclass AND attname = 'ssn'`,
		pgx.QueryExecModeDescribeExec).Scan(&typ)
	if typ != "text" {
		t.Fatalf("ssn is %s after a failed verification, want the original text column", typ)
	}
	res, err := migrate.EncryptColumn(ctx, o)
	if err != nil {
		t.Fatalf("third run: %v", err)
	}
	if res.Rows != 2 {
		t.Errorf("third run sealed %d values, want the 2 reset ones", res.Rows)
	}
	want := map[int64]*string{}
	for i := int64(1); i <= 300; i++ {
		want[i] = strp(fmt.Sprintf("ssn-%d", i))
	}
	checkEncrypted(t, e, c, cc, coltype.Text, want)
}

// testLockRetry holds a lock on the table across the prepare and checks the run waits for it
// (lock_timeout, retries) instead of failing or queueing forever.
func testLockRetry(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE employees (id int PRIMARY KEY, ssn text)`)
	exec(t, c, `INSERT INTO employees SELECT g, 'ssn-' || g FROM generate_series(1, 50) g`)
	holder := e.conn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE employees IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		at := time.Now()
		tx.Rollback(ctx)
		released <- at // after the rollback: holder is free for the main goroutine again
	}()
	cc := col("employees", "ssn", "text", "randomized", "payroll:employees.ssn")
	res, err := migrate.EncryptColumn(ctx, migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: cc, LockTimeout: 200 * time.Millisecond})
	end := time.Now()
	if err != nil {
		t.Fatalf("run with a held lock: %v", err)
	}
	if at := <-released; end.Before(at) {
		t.Errorf("finished in %v, before the lock was released", res.Elapsed)
	}
	if res.Rows != 50 {
		t.Errorf("%d rows sealed", res.Rows)
	}
	// A lock held longer than every retry: a clear lock error, nothing changed.
	exec(t, c, `CREATE TABLE other (id int PRIMARY KEY, ssn text)`)
	tx, err = holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE other IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	o := migrate.Options{Conn: c, Keys: e.keys, Identity: identity, Column: col("other", "ssn", "text", "randomized", "payroll:x"), LockTimeout: 50 * time.Millisecond}
	cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_, err = migrate.EncryptColumn(cctx, o)
	var pe *pgconn.PgError
	if !(errors.As(err, &pe) && pe.Code == "55P03") && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run against a lock never released: %v", err)
	}
}

func testThrottle(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE employees (id int PRIMARY KEY, ssn text)`)
	exec(t, c, `INSERT INTO employees SELECT g, 'ssn-' || g FROM generate_series(1, 600) g`)
	var reports []migrate.Progress
	o := migrate.Options{Conn: c, Keys: e.keys, Identity: identity, BatchSize: 100, Rate: 600,
		Column:   col("employees", "ssn", "text", "randomized", "payroll:employees.ssn"),
		Progress: func(p migrate.Progress) { reports = append(reports, p) }}
	res, err := migrate.EncryptColumn(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	// 600 rows at 600 rows/s: the last batch may not start before 5/6 s.
	if res.Elapsed < 800*time.Millisecond {
		t.Errorf("600 rows at 600 rows/s took %v", res.Elapsed)
	}
	var copies int
	for _, p := range reports {
		if p.Phase == migrate.PhaseCopy && p.Total != 600 {
			t.Errorf("copy progress total %d, want 600", p.Total)
		}
		if p.Phase == migrate.PhaseCopy {
			copies++
		}
	}
	if copies != 7 { // the start and one per batch
		t.Errorf("%d copy progress reports, want 7", copies)
	}
}

// testVerifySample verifies a random sample, not every value, in encrypt-column and in rewrap.
func testVerifySample(t *testing.T, e *env) {
	fresh(t, e)
	c := e.conn(t)
	ctx := context.Background()
	exec(t, c, `CREATE TABLE employees (id int PRIMARY KEY, ssn text)`)
	exec(t, c, `INSERT INTO employees SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'ssn-' || g END FROM generate_series(1, 1000) g`)
	want := map[int64]*string{}
	for i := int64(1); i <= 1000; i++ {
		if i%10 != 0 {
			want[i] = strp(fmt.Sprintf("ssn-%d", i))
		} else {
			want[i] = nil
		}
	}
	cc := col("employees", "ssn", "text", "deterministic", "payroll:employees.ssn")
	o := migrate.Options{Conn: c, Keys: e.keys, Identity: identity, BatchSize: 100, VerifySample: 50, Column: cc}
	res, err := migrate.EncryptColumn(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified < 1 || res.Verified > 50 {
		t.Errorf("encrypt verified %d values, want a sample of at most 50", res.Verified)
	}
	checkEncrypted(t, e, c, cc, coltype.Text, want)
	res, err = migrate.Rewrap(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 0 || res.Remaining != 0 || res.Verified < 1 || res.Verified > 50 {
		t.Errorf("rewrap without a rotation: %d rewrapped, %d remaining, %d verified; want 0, 0 and a sample of at most 50",
			res.Rows, res.Remaining, res.Verified)
	}
}
