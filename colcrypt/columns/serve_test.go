package columns_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/testenv"
)

// TestServeBinary runs the built `colcrypt serve` with protected columns in its config.
func TestServeBinary(t *testing.T) {
	bin := testenv.Binary(t, "colcrypt")
	e := newEnv(t, bin)
	dir := t.TempDir()
	pw := filepath.Join(dir, "catalog.pw")
	if err := os.WriteFile(pw, []byte(e.pg.SuperPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(port int, extra string) string {
		f := filepath.Join(dir, fmt.Sprintf("colcrypt-%d.yaml", port))
		body := fmt.Sprintf(`version: 1
listen: 127.0.0.1:%d
upstream: {host: 127.0.0.1, port: %d, tls: disable}
agent: {socket: %s}
catalog: {database: %s, user: %s, password_file: catalog.pw}
columns:
  - {table: public.employees, column: ssn, type: text, mode: deterministic, scope: "payroll:employees.ssn"}
  - {table: public.employees, column: salary, type: numeric, mode: randomized, scope: "payroll:employees.salary"}
  - {table: public.employees, column: note, type: text, mode: hsm, scope: "vault:employees.note"}
%s`, port, e.pg.Port, e.st.Agent.Socket, e.pg.Database, e.pg.SuperUser, extra)
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}

	t.Run("start-up errors name the column", func(t *testing.T) {
		for _, c := range []struct{ extra, want string }{
			{`  - {table: public.employees, column: name, type: text, mode: randomized, scope: "payroll:x"}` + "\n", `colcrypt-1.yaml:10: columns[3]: column public.employees.name must be bytea`},
			{`  - {table: public.employees, column: nope, type: text, mode: randomized, scope: "payroll:x"}` + "\n", `column public.employees.nope does not exist`},
			{`  - {table: public.nosuch, column: a, type: text, mode: randomized, scope: "payroll:x"}` + "\n", `table public.nosuch does not exist`},
		} {
			cmd := exec.Command(bin, "serve", "--config", config(1, c.extra))
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("serve with a bad column: %v\n%s\nwant %q", err, out, c.want)
			}
		}
	})

	port := testenv.FreePort(t)
	cmd := exec.Command(bin, "serve", "--config", config(port, "on_denied: null\n"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("colcrypt serve did not listen: %s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := e.pg.Psql(t, e.userDSN(addr), "-A", "-t",
		"-c", `INSERT INTO employees (id, name, ssn, salary, note) VALUES (1, 'ann', '123-45-6789', 1234.5, 'secret note')`,
		"-c", `SELECT name, ssn, salary, note FROM employees WHERE ssn = '123-45-6789'`)
	if err != nil || !strings.Contains(out, "ann|123-45-6789|1234.5|secret note") {
		t.Fatalf("psql through colcrypt serve: %v\n%s\n%s", err, out, logs.String())
	}
	out, err = e.pg.Psql(t, e.dsn(addr, "carol", rolePassword), "-A", "-t", "-c", `SELECT name, ssn, note FROM employees`)
	if err != nil || !strings.Contains(out, "ann||") {
		t.Fatalf("carol (on_denied: null): %v\n%s", err, out)
	}
	direct := connect(t, e.pg.UserDSN(), pgx.QueryExecModeSimpleProtocol)
	var ssn, note []byte
	if err := direct.QueryRow(context.Background(), `SELECT ssn, note FROM employees WHERE id = 1`).Scan(&ssn, &note); err != nil ||
		!bytes.HasPrefix(ssn, []byte("KW\x01\x02")) || !bytes.HasPrefix(note, []byte("KW\x01\x03")) {
		t.Fatalf("stored: %q %q %v", ssn, note, err)
	}
}
