package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/proxy"
)

// testInterceptor stands in for the column layer: it refuses anything mentioning "forbidden", and
// upper-cases the values of result columns named "secret", which needs the right request context
// (row description and result formats) for every DataRow.
type testInterceptor struct {
	t *testing.T

	mu       sync.Mutex
	roles    []string
	problems []string
	rows     int
}

func (ti *testInterceptor) Open(_ context.Context, s *proxy.Session) (proxy.Hooks, error) {
	ti.mu.Lock()
	ti.roles = append(ti.roles, s.Role)
	ti.mu.Unlock()
	if s.Param("server_version") == "" {
		ti.problem("no server_version ParameterStatus at Open")
	}
	return &testHooks{ti: ti}, nil
}

func (ti *testInterceptor) problem(format string, args ...any) {
	ti.mu.Lock()
	ti.problems = append(ti.problems, fmt.Sprintf(format, args...))
	ti.mu.Unlock()
}

func (ti *testInterceptor) check(t *testing.T) {
	t.Helper()
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if len(ti.problems) > 0 {
		t.Fatalf("interceptor saw %d problems, first: %s", len(ti.problems), ti.problems[0])
	}
}

type testHooks struct{ ti *testInterceptor }

var forbidden = &pgproto3.ErrorResponse{Code: "42501", Message: "colcrypt test: forbidden statement"}

func (h *testHooks) Frontend(m *proxy.FrontendMessage) proxy.Verdict {
	switch msg := m.Msg.(type) {
	case *pgproto3.Query:
		if strings.Contains(msg.String, "forbidden") {
			return proxy.Refuse(forbidden)
		}
	case *pgproto3.Parse:
		if strings.Contains(msg.Query, "forbidden") {
			return proxy.Refuse(forbidden)
		}
	case *pgproto3.Bind:
		if m.Statement == nil && msg.PreparedStatement != "bad" { // "bad" was refused on purpose
			h.ti.problem("Bind to unknown statement %q", msg.PreparedStatement)
		}
		for _, p := range msg.Parameters {
			if bytes.Contains(p, []byte("forbidden")) {
				return proxy.Refuse(forbidden)
			}
		}
	case *pgproto3.Execute:
		if m.Portal == nil {
			h.ti.problem("Execute of unknown portal %q", msg.Portal)
		}
	}
	if m.Type == 'd' {
		if m.Copy == nil {
			h.ti.problem("CopyData outside COPY")
		}
		if bytes.Contains(m.Body(), []byte("forbidden")) {
			return proxy.Refuse(forbidden)
		}
	}
	return proxy.Pass()
}

func (h *testHooks) Backend(m *proxy.BackendMessage) proxy.Verdict {
	if m.Type != 'D' {
		return proxy.Pass()
	}
	r := m.Request
	if r == nil || r.Fields == nil {
		h.ti.problem("DataRow without request context (request %+v)", r)
		return proxy.Pass()
	}
	var dr pgproto3.DataRow
	if err := dr.Decode(m.Body()); err != nil {
		h.ti.problem("decode DataRow: %v", err)
		return proxy.Pass()
	}
	if len(dr.Values) != len(r.Fields.Fields) {
		h.ti.problem("DataRow has %d values, description %d fields (sql %q)", len(dr.Values), len(r.Fields.Fields), r.SQL)
		return proxy.Pass()
	}
	h.ti.mu.Lock()
	h.ti.rows++
	h.ti.mu.Unlock()
	for _, v := range dr.Values {
		if bytes.Contains(v, []byte("tampered")) {
			// what the column layer does with a value that fails to decrypt
			return proxy.Refuse(&pgproto3.ErrorResponse{Code: "XX001", Message: "colcrypt test: value fails authentication"})
		}
	}
	changed := false
	for i, f := range r.Fields.Fields {
		if string(f.Name) == "secret" && dr.Values[i] != nil {
			// text and binary formats of text are the same bytes; anything else would need the codec.
			if f.DataTypeOID != 25 {
				h.ti.problem("secret column of type %d", f.DataTypeOID)
			}
			_ = r.Format(i)
			dr.Values[i] = bytes.ToUpper(dr.Values[i])
			changed = true
		}
	}
	if !changed {
		return proxy.Pass()
	}
	out, err := dr.Encode(nil)
	if err != nil {
		h.ti.problem("encode: %v", err)
		return proxy.Pass()
	}
	return proxy.Replace(out)
}

func (h *testHooks) Close() {}

func TestInterceptor(t *testing.T) {
	pg := pgFor(t)
	ti := &testInterceptor{t: t}
	e := startProxy(t, pg, func(c *proxy.Config) { c.Interceptor = ti })
	ctx := ctxT(t, 60*time.Second)
	for _, m := range execModes {
		t.Run(m.name, func(t *testing.T) {
			c := connect(t, e.DSN(pg, pg.User, pg.Password, "default_query_exec_mode", m.name))
			for i := 0; i < 3; i++ {
				var s string
				var n int
				if err := c.QueryRow(ctx, "SELECT $1::text AS secret, 7 AS n", "abc").Scan(&s, &n); err != nil || s != "ABC" || n != 7 {
					t.Fatalf("rewritten row: %q %d %v", s, n, err)
				}
				// Refused: the client gets our error and the session stays usable.
				err := c.QueryRow(ctx, "SELECT 'forbidden'::text").Scan(&s)
				if errCode(err) != "42501" {
					t.Fatalf("refused statement: %v", err)
				}
				err = c.QueryRow(ctx, "SELECT $1::text", "forbidden value").Scan(&s)
				if errCode(err) != "42501" {
					t.Fatalf("refused parameter: %v", err)
				}
				if err := c.QueryRow(ctx, "SELECT 'x'::text AS secret").Scan(&s); err != nil || s != "X" {
					t.Fatalf("after refusal: %q %v", s, err)
				}
				// A server message refused mid-result: the query fails, the session goes on.
				rows, _ := c.Query(ctx, "SELECT v FROM (VALUES ('ok'), ('tampered'), ('ok2')) AS t(v)")
				for rows.Next() {
				}
				if errCode(rows.Err()) != "XX001" {
					t.Fatalf("refused DataRow: %v", rows.Err())
				}
				if err := c.QueryRow(ctx, "SELECT 'y'::text AS secret").Scan(&s); err != nil || s != "Y" {
					t.Fatalf("after a refused DataRow: %q %v", s, err)
				}
			}
			// Same results as PostgreSQL for a pipeline with an error in the middle.
			got, err := batchOutcome(ctx, c, "ib_"+m.name)
			if err != nil {
				t.Fatal(err)
			}
			direct := connect(t, pg.UserDSN()+"&default_query_exec_mode="+m.name)
			want, err := batchOutcome(ctx, direct, "ib_"+m.name)
			if err != nil || got != want {
				t.Fatalf("pipeline: proxy %s, direct %s (%v)", got, want, err)
			}
			// A refused statement in a pipeline behaves like a failing one: the implicit transaction
			// is rolled back and the rest is skipped.
			refusedBatch(t, ctx, c, "ir_"+m.name)
			// In an explicit transaction, a refusal fails the transaction, as an error would.
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT 'forbidden'"); errCode(err) != "42501" {
				t.Fatalf("refusal in tx: %v", err)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); errCode(err) != "25P02" {
				t.Fatalf("after refusal in tx: %v, want 25P02", err)
			}
			tx.Rollback(ctx)
			// Many rows, with and without a row description asked by the client.
			rows, err := c.Query(ctx, "SELECT 'row'||g AS secret, g FROM generate_series(1, 2000) g")
			if err != nil {
				t.Fatal(err)
			}
			k := 0
			for rows.Next() {
				var s string
				var g int
				if err := rows.Scan(&s, &g); err != nil || s != fmt.Sprintf("ROW%d", g) {
					t.Fatalf("row %d: %q %v", g, s, err)
				}
				k++
			}
			if rows.Err() != nil || k != 2000 {
				t.Fatalf("rows %d %v", k, rows.Err())
			}
		})
	}
	t.Run("copy", func(t *testing.T) {
		c := connect(t, e.DSN(pg, pg.User, pg.Password))
		if _, err := c.Exec(ctx, "CREATE TEMP TABLE icopy (v text)"); err != nil {
			t.Fatal(err)
		}
		_, err := c.PgConn().CopyFrom(ctx, strings.NewReader("a\nforbidden\nb\n"), "COPY icopy FROM STDIN")
		if errCode(err) != "42501" {
			t.Fatalf("refused COPY: %v", err)
		}
		tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("a\nb\n"), "COPY icopy FROM STDIN")
		if err != nil || tag.RowsAffected() != 2 {
			t.Fatalf("COPY after a refused one: %v %v", tag, err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM icopy").Scan(&n); err != nil || n != 2 {
			t.Fatalf("rows after refused COPY: %d %v", n, err)
		}
	})
	t.Run("psql", func(t *testing.T) {
		script := "SELECT 'a'::text AS secret, 1 AS n; SELECT 'forbidden';\nSELECT 2;\nBEGIN;\nSELECT 'forbidden';\nSELECT 3;\nROLLBACK;\n\\copy (SELECT 'z'::text AS secret) to stdout\n"
		out := psqlStdin(t, pg, e.DSN(pg, pg.User, pg.Password), script)
		for _, want := range []string{" A ", "colcrypt test: forbidden statement", "current transaction is aborted", "\nz\n"} {
			if !strings.Contains(out, want) {
				t.Fatalf("psql output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("pgbench", func(t *testing.T) {
		runPgbenchModes(t, pg, e.DSN(pg, pg.User, pg.Password))
	})
	ti.check(t)
	if ti.rows == 0 || len(ti.roles) == 0 || ti.roles[0] != pg.User {
		t.Fatalf("interceptor saw rows=%d roles=%v", ti.rows, ti.roles)
	}
}

func refusedBatch(t *testing.T, ctx context.Context, c *pgx.Conn, table string) {
	t.Helper()
	if _, err := c.Exec(ctx, "CREATE TEMP TABLE IF NOT EXISTS "+table+" (v int)"); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue("INSERT INTO " + table + " VALUES (1)")
	b.Queue("SELECT 'forbidden'")
	b.Queue("INSERT INTO " + table + " VALUES (2)")
	br := c.SendBatch(ctx, b)
	_, err1 := br.Exec()
	_, err2 := br.Exec()
	_, err3 := br.Exec()
	br.Close()
	if errCode(err2) != "42501" || err3 == nil {
		t.Fatalf("batch: %v / %v / %v", err1, err2, err3)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	// Extended modes send one Sync for the batch: the insert before the refusal is rolled back, like
	// PostgreSQL does with a failing statement. The simple protocol sends one Query per statement.
	if err1 == nil && n != 0 && !strings.HasPrefix(table, "ir_simple") {
		t.Fatalf("%d rows committed around a refused statement in one implicit transaction", n)
	}
}
