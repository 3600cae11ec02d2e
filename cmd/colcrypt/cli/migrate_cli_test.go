package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/colkeys/colkeystest"
	"github.com/keyward/keyward/colcrypt/migrate"
	"github.com/keyward/keyward/testenv"
)

// migrateStack is Postgres, the key stack of colkeystest (a key service on SoftHSM and an agent
// that also serves the built colcrypt binary), and a colcrypt.yaml.
type migrateStack struct {
	pg     *testenv.PG
	ks     *colkeystest.Stack
	keys   *colkeys.Keys
	bin    string
	config string
	dir    string
	conn   *pgx.Conn
	pwfile string
}

func startMigrateStack(t *testing.T) *migrateStack {
	t.Helper()
	s := &migrateStack{dir: t.TempDir()}
	s.pg = testenv.Postgres(t)
	s.bin = testenv.Binary(t, "colcrypt")
	bin, _ := filepath.EvalSymlinks(s.bin)
	s.ks = colkeystest.Start(t, bin)
	s.keys = colkeys.New(colkeys.Config{Agent: s.ks.Client, TTL: 200 * time.Millisecond})
	t.Cleanup(s.keys.Close)
	s.pwfile = filepath.Join(s.dir, "pgpassword")
	if err := os.WriteFile(s.pwfile, []byte(s.pg.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.config, _ = s.writeConfig(t, ssnColumn)
	var err error
	s.conn, err = pgx.Connect(context.Background(), s.pg.UserDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close(context.Background()) })
	return s
}

const ssnColumn = `  - {table: public.employees, column: ssn, type: text, mode: deterministic, scope: "payroll:employees.ssn"}
`

// writeConfig writes a colcrypt.yaml with columns (YAML list items) and returns its path and the
// port it listens on.
func (s *migrateStack) writeConfig(t *testing.T, columns string) (string, int) {
	t.Helper()
	port := testenv.FreePort(t)
	p := filepath.Join(s.dir, fmt.Sprintf("colcrypt-%d.yaml", port))
	y := fmt.Sprintf(`version: 1
listen: 127.0.0.1:%d
upstream: {host: 127.0.0.1, port: %d, tls: disable}
agent: {socket: %s}
catalog: {database: %s, user: %s, password_file: %s}
log: {level: debug}
`, port, s.pg.Port, s.ks.Agent.Socket, s.pg.Database, s.pg.User, s.pwfile)
	if columns != "" {
		y += "columns:\n" + columns
	}
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, port
}

// serve starts `colcrypt serve` with config and returns a DSN through it.
func (s *migrateStack) serve(t *testing.T, config string, port int) (dsn string, stop func() string) {
	t.Helper()
	c := s.cmd(nil, "serve", "--config", config)
	var stderr bytes.Buffer
	var mu sync.Mutex
	c.Stderr = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return stderr.Write(b) })
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	log := func() string { mu.Lock(); defer mu.Unlock(); return stderr.String() }
	stop = func() string {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
		return log()
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("colcrypt serve did not listen:\n%s", log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return strings.Replace(s.pg.UserDSN(), fmt.Sprintf("%s:%d", s.pg.Host, s.pg.Port), addr, 1), stop
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// cmd runs the built binary (credentials come from the config's catalog section).
func (s *migrateStack) cmd(env []string, args ...string) *exec.Cmd {
	c := exec.Command(s.bin, args...)
	c.Env = append(os.Environ(), env...)
	return c
}

func (s *migrateStack) run(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	c := s.cmd(env, args...)
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err = c.Run()
	return o.String(), e.String(), err
}

func (s *migrateStack) count(t *testing.T, sql string) int64 {
	t.Helper()
	var n int64
	if err := s.conn.QueryRow(context.Background(), sql, pgx.QueryExecModeDescribeExec).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func killedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestMigrationBinary runs colcrypt encrypt-column, rewrap and check as built binaries: a 20k-row
// conversion killed twice (inside a batch, and from outside) and resumed while another session
// writes, then a rewrap after a key rotation, then check on a good and a bad config.
func TestMigrationBinary(t *testing.T) {
	t0 := time.Now()
	s := startMigrateStack(t)
	ctx := context.Background()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	step("stack started")
	const rows = 20000
	if _, err := s.conn.Exec(ctx, `CREATE TABLE employees (id bigint PRIMARY KEY, name text, ssn text);
		INSERT INTO employees SELECT g, 'n' || g, CASE WHEN g % 100 = 0 THEN NULL ELSE lpad(g::text, 9, '0') END FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	want := map[int64]*string{}
	for i := int64(1); i <= rows; i++ {
		if i%100 != 0 {
			v := fmt.Sprintf("%09d", i)
			want[i] = &v
		} else {
			want[i] = nil
		}
	}
	args := []string{"encrypt-column", "--config", s.config, "--table", "employees", "--column", "ssn", "--type", "text", "--batch", "1000"}

	// 1. Killed inside the fifth batch's transaction.
	_, stderr, err := s.run(t, []string{crashEnv + "=4"}, args...)
	if !killedBySignal(err) {
		t.Fatalf("first run: %v, want SIGKILL\n%s", err, stderr)
	}
	if n := s.count(t, `SELECT count(*) FROM employees WHERE ssn__kw IS NOT NULL`); n != 4*1000 {
		t.Fatalf("%d rows sealed after the kill, want the 4 committed batches' 4000 (minus NULLs none)", n)
	}
	if !strings.Contains(stderr, "colcrypt: copy") {
		t.Errorf("no progress lines on stderr:\n%s", stderr)
	}

	step("killed in a batch")
	// 2. Killed from outside while throttled.
	c := s.cmd(nil, append(args, "--rate", "4000", "--batch", "250")...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.count(t, `SELECT coalesce(max(rows_done), 0) FROM keyward_migrations`) < 8000 {
		if time.Now().After(deadline) {
			c.Process.Kill()
			t.Fatal("second run made no progress")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Process.Signal(syscall.SIGKILL)
	if err := c.Wait(); !killedBySignal(err) {
		t.Fatalf("second run: %v", err)
	}
	done := s.count(t, `SELECT rows_done FROM keyward_migrations`)
	if sealed := s.count(t, `SELECT count(*) FROM employees WHERE ssn__kw IS NOT NULL`); sealed != done {
		t.Fatalf("%d sealed, progress says %d: a batch was half-done", sealed, done)
	}

	step("killed from outside")
	// 3. Resumed to the end while another session writes through the proxy, which runs with a
	// configuration that does not list the column yet (it is not bytea until the swap).
	plainCfg, plainPort := s.writeConfig(t, "")
	proxyDSN, stopProxy := s.serve(t, plainCfg, plainPort)
	w, err := pgx.Connect(ctx, proxyDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	writes := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(3, 4))
		next := int64(rows + 1)
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := r.Int64N(rows) + 1
			v := fmt.Sprintf("w%08d", r.IntN(1e8))
			var err error
			var apply func()
			switch r.IntN(4) {
			case 0:
				_, err = w.Exec(ctx, `UPDATE employees SET ssn = $1 WHERE id = $2`, v, id)
				apply = func() {
					if _, ok := want[id]; ok {
						want[id] = &v
					}
				}
			case 1:
				_, err = w.Exec(ctx, `UPDATE employees SET ssn = NULL WHERE id = $1`, id)
				apply = func() {
					if _, ok := want[id]; ok {
						want[id] = nil
					}
				}
			case 2:
				n := next
				_, err = w.Exec(ctx, `INSERT INTO employees (id, name, ssn) VALUES ($1, 'new', $2)`, n, v)
				apply = func() { want[n] = &v; next++ }
			case 3:
				_, err = w.Exec(ctx, `DELETE FROM employees WHERE id = $1`, id)
				apply = func() { delete(want, id) }
			}
			if err != nil {
				return // the column became bytea: plaintext writes are refused from now on
			}
			mu.Lock()
			apply()
			writes++
			mu.Unlock()
			time.Sleep(500 * time.Microsecond)
		}
	}()
	stdout, stderr, err := s.run(t, nil, append(args, "--rate", "8000", "--batch", "500")...)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("third run: %v\n%s\n%s", err, stdout, stderr)
	}
	t.Logf("third run (%d concurrent writes):\n%s%s", writes, stdout, stderr)
	if !strings.Contains(stdout, "encrypted public.employees.ssn (resumed)") {
		t.Errorf("stdout: %s", stdout)
	}
	if writes < 10 {
		t.Fatalf("only %d concurrent writes", writes)
	}
	ck := colkeys.Column{Table: "public.employees", Name: "ssn", Scope: "payroll:employees.ssn", Mode: "deterministic"}
	s.checkValues(t, ck, want, 1)
	w.Close(ctx)
	stopProxy()

	// The proxy, restarted with the column configured, reads the originals back (the envelopes
	// name the column as the proxy does) and finds rows by equality on the deterministic column.
	encCfg, encPort := s.writeConfig(t, ssnColumn)
	proxyDSN, stopProxy = s.serve(t, encCfg, encPort)
	s.checkThroughProxy(t, proxyDSN, want)
	stopProxy()

	step("encrypted, read through the proxy")
	// 4. Rewrap after a rotation.
	s.ks.Rotate(t, "payroll")
	deadline = time.Now().Add(15 * time.Second)
	for {
		s.keys.Forget()
		sl, err := s.keys.Sealer(ctx, "db:keyward", ck)
		if err == nil && sl.Version() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("version 2 never became the newest: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	stdout, stderr, err = s.run(t, nil, "rewrap", "--config", s.config, "--table", "public.employees", "--column", "ssn", "--batch", "700")
	if err != nil {
		t.Fatalf("rewrap: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "to key version 2") || !strings.Contains(stdout, " 0 remaining") {
		t.Errorf("rewrap stdout: %s", stdout)
	}
	s.checkValues(t, ck, want, 2)

	step("rewrapped")
	// 5. check: the good config, then one with a column that does not exist and a plaintext one.
	stdout, _, err = s.run(t, nil, "check", "--config", s.config)
	if err != nil || !strings.Contains(stdout, "0 problem(s)") || !strings.Contains(stdout, "key versions [2]") || !strings.Contains(stdout, "key agent reachable") {
		t.Errorf("check of the good config: %v\n%s", err, stdout)
	}
	bad, _ := s.writeConfig(t, ssnColumn+
		"  - {table: public.employees, column: nothere, type: text, mode: randomized, scope: \"payroll:x\"}\n"+
		"  - {table: public.employees, column: name, type: text, mode: randomized, scope: \"payroll:y\"}\n")
	stdout, _, err = s.run(t, nil, "check", "--config", bad)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitError {
		t.Errorf("check of a bad config: %v, want exit %d", err, ExitError)
	}
	for _, w := range []string{"FAIL public.employees.nothere", "no such table or column", "FAIL public.employees.name", "not bytea", "2 problem(s)"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("check report does not say %q:\n%s", w, stdout)
		}
	}

	// Usage errors are config errors (exit 2) and name the problem.
	for _, a := range [][]string{
		{"encrypt-column", "--config", s.config, "--table", "employees"},
		{"encrypt-column", "--config", s.config, "--table", "employees", "--column", "name"},
		{"encrypt-column", "--config", s.config, "--table", "employees", "--column", "ssn", "--type", "int4"},
	} {
		_, stderr, err := s.run(t, nil, a...)
		if !errors.As(err, &ee) || ee.ExitCode() != ExitConfig {
			t.Errorf("%v: %v (%s), want exit %d", a, err, stderr, ExitConfig)
		}
	}
}

// checkThroughProxy reads every row through the proxy and looks a few up by value.
func (s *migrateStack) checkThroughProxy(t *testing.T, dsn string, want map[int64]*string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT id, ssn FROM employees`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]*string{}
	for rows.Next() {
		var id int64
		var v *string
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatalf("read through the proxy: %v", err)
		}
		got[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read through the proxy: %v", err)
	}
	bad := 0
	for id, w := range want {
		g, ok := got[id]
		if !ok || (w == nil) != (g == nil) || (w != nil && *w != *g) {
			t.Errorf("row %d through the proxy differs", id)
			if bad++; bad > 10 {
				t.Fatal("too many bad rows")
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d rows through the proxy, want %d", len(got), len(want))
	}
	n := 0
	for id, w := range want {
		if w == nil {
			continue
		}
		var found int64
		if err := c.QueryRow(ctx, `SELECT id FROM employees WHERE ssn = $1`, *w).Scan(&found); err != nil || found != id {
			t.Errorf("lookup by value through the proxy: id %d, %v; want %d", found, err, id)
		}
		if n++; n == 5 {
			break
		}
	}
}

// checkValues asserts the direct view holds only envelopes at key version v that open to want.
func (s *migrateStack) checkValues(t *testing.T, ck colkeys.Column, want map[int64]*string, v byte) {
	t.Helper()
	ctx := context.Background()
	rows, err := s.conn.Query(ctx, `SELECT id, ssn FROM employees`, pgx.QueryExecModeDescribeExec)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64][]byte{}
	for rows.Next() {
		var id int64
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		got[id] = b
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	bad := 0
	for id, w := range want {
		b, ok := got[id]
		var msg string
		switch {
		case !ok:
			msg = "lost"
		case (w == nil) != (b == nil):
			msg = "NULL mismatch"
		case w == nil:
		case !bytes.HasPrefix(b, []byte("KW\x01")) || len(b) < 12:
			msg = "not an envelope"
		case b[7] != v:
			msg = fmt.Sprintf("key version %d, want %d", b[7], v)
		default:
			p, err := s.keys.Open(ctx, "db:keyward", ck, b, nil)
			if err != nil {
				msg = err.Error()
			} else if string(p) != *w {
				msg = "decrypts to another value"
			}
		}
		if msg != "" {
			t.Errorf("row %d: %s", id, msg)
			if bad++; bad > 10 {
				t.Fatal("too many bad rows")
			}
		}
	}
}

func TestProgressBar(t *testing.T) {
	cases := []struct {
		name    string
		tty     bool
		updates []migrate.Progress
		want    []string // substrings, in order
		lines   int      // newline count
	}{
		{"terminal redraws one line per phase", true, []migrate.Progress{
			{Phase: migrate.PhaseCopy, Done: 0, Total: 100},
			{Phase: migrate.PhaseCopy, Done: 50, Total: 100},
			{Phase: migrate.PhaseCopy, Done: 100, Total: 100},
			{Phase: migrate.PhaseVerify, Done: 100, Total: 100},
		}, []string{"\r\033[Kcopy     [", "100/100 100%", "\n", "\r\033[Kverify"}, 2},
		{"log gets a line per phase change and at the end", false, []migrate.Progress{
			{Phase: migrate.PhaseCopy, Done: 0, Total: 100},
			{Phase: migrate.PhaseCopy, Done: 50, Total: 100},
			{Phase: migrate.PhaseCopy, Done: 100, Total: 100},
			{Phase: migrate.PhaseCopy, Done: 110, Total: 110},
			{Phase: migrate.PhaseCatchUp, Done: 3},
		}, []string{"colcrypt: copy     [......", "colcrypt: copy     [####", "100/100", "colcrypt: catch-up 3"}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			p := newProgressBar(&b)
			p.tty = tc.tty
			for _, u := range tc.updates {
				p.update(u)
			}
			p.finish()
			out := b.String()
			rest := out
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q after the earlier parts:\n%q", w, out)
				}
				rest = rest[i+len(w):]
			}
			if n := strings.Count(out, "\n"); n != tc.lines {
				t.Errorf("%d lines, want %d:\n%q", n, tc.lines, out)
			}
		})
	}
}
