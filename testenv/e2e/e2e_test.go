// Package e2e runs the whole Keyward chain as separate processes built from cmd/: keyservice on a
// SoftHSM2 token -> keyagent (mutual TLS) -> colcrypt in front of a real PostgreSQL -> pgx and psql.
package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/testenv"
)

const policyTmpl = `version: 1
principals:
  colcrypt-proxy: {uid: 0, exe: %s, act_for: ["db:*"]}
roles:
  payroll: {grants: [{scopes: ["payroll:*"], ops: [encrypt, decrypt]}]}
  analyst: {grants: [{scopes: ["payroll:employees.salary"], ops: [decrypt]}]}
members:
  "db:alice":   [payroll]
  "db:bob":     [analyst]
  "db:kwsuper": [payroll]
cache: {ttl: 2s, offline_grace: 1h, max_keys: 64}
`

func TestWholeStack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the policy names uid 0 for the proxy; run as root (CI does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	pg := testenv.Postgres(t)
	pg.Exec(t, `CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw'`)
	setup, err := pgx.Connect(ctx, pg.SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE employees (id serial PRIMARY KEY, name text NOT NULL, ssn bytea, salary bytea)`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON employees TO alice, bob`,
		`GRANT USAGE ON SEQUENCE employees_id_seq TO alice, bob`,
	} {
		if _, err := setup.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	setup.Close(ctx)

	ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Keyrings: []string{"payroll"}})
	colcryptBin := testenv.Binary(t, "colcrypt")
	agent := testenv.StartAgent(t, testenv.AgentOptions{Policy: fmt.Sprintf(policyTmpl, colcryptBin), KeyServices: []*testenv.KeyService{ks}})
	pwFile := filepath.Join(testenv.SharedDir(t), "catalog.pw")
	os.WriteFile(pwFile, []byte(pg.SuperPassword+"\n"), 0o600)
	// agent.ttl 1s: the proxy re-asks the agent every second, so reads after the key service dies
	// really go through the agent's offline grace, not only through the proxy's own cache.
	proxy := testenv.StartColcrypt(t, testenv.ColcryptOptions{PG: pg, Extra: fmt.Sprintf(`agent: {socket: %s, ttl: 1s}
catalog: {database: %s, user: %s, password_file: %s}
columns:
  - {table: public.employees, column: ssn,    type: text,    mode: deterministic, scope: "payroll:employees.ssn"}
  - {table: public.employees, column: salary, type: numeric, mode: randomized,    scope: "payroll:employees.salary"}
on_denied: error
`, agent.Socket, pg.Database, pg.SuperUser, pwFile)})

	alice, err := pgx.Connect(ctx, proxy.DSN(pg, "alice", "alice-pw"))
	if err != nil {
		t.Fatalf("alice through the proxy: %v\n%s", err, proxy.Log())
	}
	defer alice.Close(ctx)
	rows := [][2]string{{"123-45-6789", "152000.5"}, {"987-65-4321", "148250"}}
	for i, r := range rows {
		if _, err := alice.Exec(ctx, `INSERT INTO employees (name, ssn, salary) VALUES ($1, $2, $3)`, fmt.Sprint("emp", i), r[0], r[1]); err != nil {
			t.Fatalf("insert through the proxy: %v\n%s", err, proxy.Log())
		}
	}
	// psql's simple protocol with literals, as psycopg2 would send them.
	if out, err := pg.Psql(t, proxy.DSN(pg, "alice", "alice-pw"), "-c", `INSERT INTO employees (name, ssn, salary) VALUES ('emp2', '555-12-3456', 99000)`); err != nil {
		t.Fatalf("psql insert: %v %s", err, out)
	}
	rows = append(rows, [2]string{"555-12-3456", "99000"})

	readAll := func(conn *pgx.Conn) ([][2]string, error) {
		r, err := conn.Query(ctx, `SELECT ssn, salary FROM employees ORDER BY id`, pgx.QueryResultFormats{pgx.TextFormatCode, pgx.TextFormatCode})
		if err != nil {
			return nil, err
		}
		var out [][2]string
		for r.Next() {
			vals, err := r.Values()
			if err != nil {
				return nil, err
			}
			out = append(out, [2]string{fmt.Sprint(vals[0]), fmt.Sprint(vals[1])})
		}
		return out, r.Err()
	}
	got, err := readAll(alice)
	if err != nil || len(got) != 3 {
		t.Fatalf("alice reads: %v %v", got, err)
	}
	for i := range rows {
		if got[i][0] != rows[i][0] {
			t.Fatalf("row %d ssn %q, want %q", i, got[i][0], rows[i][0])
		}
	}
	// psql sees plaintext too.
	out, err := pg.Psql(t, proxy.DSN(pg, "alice", "alice-pw"), "-t", "-A", "-c", `SELECT ssn, salary FROM employees WHERE ssn = '987-65-4321'`)
	if err != nil || strings.TrimSpace(out) != "987-65-4321|148250" {
		t.Fatalf("psql deterministic lookup: %q %v", out, err)
	}

	// Directly in Postgres: only envelopes.
	direct, err := pgx.Connect(ctx, pg.SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	dr, err := direct.Query(ctx, `SELECT ssn, salary FROM employees`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for dr.Next() {
		var ssn, salary []byte
		dr.Scan(&ssn, &salary)
		for _, v := range [][]byte{ssn, salary} {
			if !bytes.HasPrefix(v, []byte("KW\x01")) {
				t.Fatalf("a protected value in Postgres is not an envelope: %x", v[:min(len(v), 8)])
			}
			for _, r := range rows {
				if bytes.Contains(v, []byte(r[0])) {
					t.Fatal("plaintext found in the database")
				}
			}
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d rows directly", n)
	}

	// bob may read salaries, not SSNs.
	bob, err := pgx.Connect(ctx, proxy.DSN(pg, "bob", "bob-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close(ctx)
	var pgErr *pgconn.PgError
	if _, err := readAll(bob); !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "ssn") {
		t.Fatalf("bob reading ssn: want SQLSTATE 42501 naming ssn, got %v", err)
	}
	var salary string
	if err := bob.QueryRow(ctx, `SELECT salary FROM employees WHERE name = 'emp1'`, pgx.QueryResultFormats{pgx.TextFormatCode}).Scan(&salary); err != nil || salary != "148250" {
		t.Fatalf("bob reading salary: %q %v", salary, err)
	}

	// The key service dies: reads keep working from the agent's cache within its offline grace
	// (ttl 2s, grace 1h), also after the TTL.
	ks.Stop()
	time.Sleep(2500 * time.Millisecond)
	if got, err := readAll(alice); err != nil || len(got) != 3 {
		t.Fatalf("reads with the key service down, within the grace: %v %v", got, err)
	}
	fresh, err := pgx.Connect(ctx, proxy.DSN(pg, "alice", "alice-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close(ctx)
	if got, err := readAll(fresh); err != nil || len(got) != 3 {
		t.Fatalf("a new session with the key service down: %v %v", got, err)
	}
	audit, _ := os.ReadFile(agent.AuditFile)
	if !bytes.Contains(audit, []byte(`"upstream":"grace"`)) {
		t.Fatal("no key was served from the agent's offline grace: the test did not exercise it")
	}
}
