package columns_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
	// What follows the header StartColcrypt writes (version, listen, upstream, agent).
	body := fmt.Sprintf(`catalog: {database: %s, user: %s, password_file: %s}
columns:
  - {table: public.employees, column: ssn, type: text, mode: deterministic, scope: "payroll:employees.ssn"}
  - {table: public.employees, column: salary, type: numeric, mode: randomized, scope: "payroll:employees.salary"}
  - {table: public.employees, column: note, type: text, mode: hsm, scope: "vault:employees.note"}
`, e.pg.Database, e.pg.SuperUser, pw)
	config := func(port int, extra string) string {
		f := filepath.Join(dir, fmt.Sprintf("colcrypt-%d.yaml", port))
		head := fmt.Sprintf("version: 1\nlisten: 127.0.0.1:%d\nupstream: {host: 127.0.0.1, port: %d, tls: disable}\nagent: {socket: %s}\n",
			port, e.pg.Port, e.st.Agent.Socket)
		if err := os.WriteFile(f, []byte(head+body+extra), 0o600); err != nil {
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

	cc := testenv.StartColcrypt(t, testenv.ColcryptOptions{PG: e.pg, Agent: e.st.Agent, Extra: body + "on_denied: null\n"})
	addr := cc.Addr
	out, err := e.pg.Psql(t, e.userDSN(addr), "-A", "-t",
		"-c", `INSERT INTO employees (id, name, ssn, salary, note) VALUES (1, 'ann', '123-45-6789', 1234.5, 'secret note')`,
		"-c", `SELECT name, ssn, salary, note FROM employees WHERE ssn = '123-45-6789'`)
	if err != nil || !strings.Contains(out, "ann|123-45-6789|1234.5|secret note") {
		t.Fatalf("psql through colcrypt serve: %v\n%s\n%s", err, out, cc.Log())
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
