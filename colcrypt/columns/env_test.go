package columns_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/colkeys/colkeystest"
	"github.com/keyward/keyward/colcrypt/columns"
	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/proxy"
	"github.com/keyward/keyward/testenv"
)

// env is one Postgres, one key stack and a key cache shared by the proxies of a test.
type env struct {
	pg   *testenv.PG
	st   *colkeystest.Stack
	keys *colkeys.Keys
	cols []config.Column
}

// typeCols are the columns of table "typed": one per declared type, all deterministic.
var typeCols = []string{"text", "varchar", "int2", "int4", "int8", "numeric", "float8", "bool", "date",
	"timestamp", "timestamptz", "uuid", "jsonb", "bytea"}

const rolePassword = "role-pw"

func newEnv(t *testing.T, alsoExe ...string) *env {
	t.Helper()
	e := &env{pg: testenv.Postgres(t)}
	e.st = colkeystest.Start(t, alsoExe...)
	e.keys = colkeys.New(colkeys.Config{Agent: e.st.Client, TTL: 300 * time.Millisecond})
	t.Cleanup(e.keys.Close)
	var typed []string
	for _, c := range typeCols {
		typed = append(typed, "t_"+c+" bytea")
		e.cols = append(e.cols, config.Column{Table: "public.typed", Column: "t_" + c, Type: c, Mode: "deterministic", Scope: "payroll:typed." + c})
	}
	e.cols = append(e.cols,
		config.Column{Table: "public.employees", Column: "ssn", Type: "text", Mode: "deterministic", Scope: "payroll:employees.ssn"},
		config.Column{Table: "public.employees", Column: "salary", Type: "numeric", Mode: "randomized", Scope: "payroll:employees.salary"},
		config.Column{Table: "public.employees", Column: "note", Type: "text", Mode: "hsm", Scope: "vault:employees.note"},
		config.Column{Table: "public.secrets", Column: "a", Type: "text", Mode: "randomized", Scope: "payroll:secrets.a"},
		config.Column{Table: "public.secrets", Column: "b", Type: "text", Mode: "randomized", Scope: "payroll:secrets.b"},
		config.Column{Table: "public.bench_enc", Column: "a", Type: "text", Mode: "randomized", Scope: "payroll:bench.a"},
		config.Column{Table: "public.bench_enc", Column: "b", Type: "text", Mode: "randomized", Scope: "payroll:bench.b"},
	)
	e.pg.Exec(t, fmt.Sprintf(`
		CREATE ROLE bob LOGIN PASSWORD '%[1]s'; CREATE ROLE carol LOGIN PASSWORD '%[1]s';
		SET ROLE %[2]s;
		CREATE TABLE employees (id int PRIMARY KEY, name text, ssn bytea, salary bytea, note bytea);
		CREATE UNIQUE INDEX employees_ssn ON employees (ssn);
		CREATE TABLE typed (id int PRIMARY KEY, %[3]s);
		CREATE TABLE secrets (id int PRIMARY KEY, a bytea, b bytea);
		CREATE TABLE plain (id int PRIMARY KEY, a text, b text);
		CREATE TABLE bench_enc (id int, a bytea, b bytea);
		CREATE TABLE bench_plain (id int, a text, b text);
		GRANT ALL ON ALL TABLES IN SCHEMA public TO bob, carol;`, rolePassword, e.pg.User, strings.Join(typed, ", ")))
	return e
}

// proxyFor starts an in-process proxy with the column layer and returns its address.
func (e *env) proxyFor(t *testing.T, onDenied string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ic, err := columns.New(ctx, columns.Config{Columns: e.cols, OnDenied: onDenied, Keys: e.keys,
		CatalogDSN: e.pg.SuperDSN(), Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.New(proxy.Config{UpstreamAddr: fmt.Sprintf("%s:%d", e.pg.Host, e.pg.Port), UpstreamTLS: proxy.TLSDisable,
		StartupTimeout: 10 * time.Second, Interceptor: ic, ShutdownTimeout: time.Second})
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done; ic.Close() })
	return ln.Addr().String()
}

// dsn is a URL for user through the proxy at addr.
func (e *env) dsn(addr, user, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: addr, Path: "/" + e.pg.Database,
		RawQuery: "sslmode=disable"}
	return u.String()
}

func (e *env) userDSN(addr string) string { return e.dsn(addr, e.pg.User, e.pg.Password) }

func connect(t *testing.T, dsn string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
