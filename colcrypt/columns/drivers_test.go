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
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/testenv"
)

// The driver tests run real client programs (psycopg2, pgjdbc, node-postgres when present) against the
// proxy. Each driver writes rows 1..6 (base+i) of table drv with the same values except t_text, and row 7
// with every protected column NULL; it reads them back, looks each row up by its deterministic t_text and
// checks the values itself. The Go side then reads the rows through the proxy (pgx, text results) and
// checks the stored values in PostgreSQL are envelopes.

// drvCols are the protected columns of table drv: column, declared type, mode.
var drvCols = [][3]string{
	{"t_text", "text", "deterministic"},
	{"t_num", "numeric", "randomized"},
	{"t_date", "date", "deterministic"},
	{"t_jsonb", "jsonb", "randomized"},
	{"t_bytea", "bytea", "deterministic"},
	{"t_uuid", "uuid", "deterministic"},
	{"t_bool", "bool", "randomized"},
	{"t_tstz", "timestamptz", "deterministic"},
}

// drvWant is each column's text form through the proxy (TimeZone UTC) for rows 1..6; t_text is
// drvText(driver, i). The drivers write -12.50; numeric is stored at its minimal scale (see
// colcrypt/coltype), so it reads back as -12.5.
var drvWant = map[string]string{
	"t_num": "-12.5", "t_date": "2024-01-02", "t_jsonb": `{"a": 1, "b": ["x", null]}`, "t_bytea": `\x00ff01`,
	"t_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "t_bool": "t", "t_tstz": "2024-06-01 12:00:00+00",
}

func drvText(driver string, i int) string { return fmt.Sprintf("%s héllo 'q' \\ #%d", driver, i) }

const drvPython = `
import sys, json, datetime, decimal, uuid
import psycopg2, psycopg2.extras
psycopg2.extras.register_uuid()
dsn, base, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = psycopg2.connect(dsn)
conn.autocommit = True
cur = conn.cursor()
U = uuid.UUID('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')
TS = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
D = datetime.date(2024, 1, 2)
J = {"a": 1, "b": ["x", None]}
def text(i): return "%s héllo 'q' \\ #%d" % (name, i)
ins = "INSERT INTO drv (id, tag, t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
for i in range(1, 7):
    # psycopg2 interpolates client-side: '...'::date, '\x00ff01'::bytea, -12.50, an untyped string for jsonb.
    cur.execute(ins, (base+i, name, text(i), decimal.Decimal('-12.50'), D, json.dumps(J), psycopg2.Binary(b'\x00\xff\x01'), U, True, TS))
cur.execute(ins, (base+7, name, None, None, None, None, None, None, None, None))
sel = "SELECT id, t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz FROM drv WHERE t_text = %s"
for i in range(1, 7):
    cur.execute(sel, (text(i),))
    rows = cur.fetchall()
    assert len(rows) == 1, ("lookup", i, rows)
    r = rows[0]
    got = (r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8])
    want = (base+i, text(i), decimal.Decimal('-12.50'), D, J, b'\x00\xff\x01', U, True, TS)
    assert got == want, ("row", i, got, want)
    assert str(r[2]) == '-12.5', r[2]  # numeric is stored at its minimal scale (coltype docs)
cur.execute("SELECT t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz FROM drv WHERE id = %s", (base+7,))
assert cur.fetchall() == [(None,)*8]
cur.execute("SELECT count(*) FROM drv WHERE tag = %s AND t_uuid = %s AND t_date = %s AND t_bytea = %s", (name, U, D, psycopg2.Binary(b'\x00\xff\x01')))
assert cur.fetchone()[0] == 6
print("OK")
`

const drvJava = `
import java.math.BigDecimal;
import java.sql.*;
import java.time.*;
import java.util.*;

public class Drv {
  static String text(String name, int i) { return name + " héllo 'q' \\ #" + i; }
  static void check(boolean ok, String what) { if (!ok) throw new AssertionError(what); }
  public static void main(String[] a) throws Exception {
    String url = a[0]; int base = Integer.parseInt(a[3]); String name = a[4];
    Properties p = new Properties();
    p.setProperty("user", a[1]); p.setProperty("password", a[2]);
    p.setProperty("prepareThreshold", "5");
    UUID u = UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    LocalDate d = LocalDate.of(2024, 1, 2);
    OffsetDateTime ts = OffsetDateTime.of(2024, 6, 1, 12, 0, 0, 0, ZoneOffset.UTC);
    byte[] by = {0, (byte) 0xff, 1};
    BigDecimal num = new BigDecimal("-12.50");
    try (Connection c = DriverManager.getConnection(url, p)) {
      try (PreparedStatement ins = c.prepareStatement("INSERT INTO drv (id, tag, t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
        for (int i = 1; i <= 7; i++) {
          ins.setInt(1, base + i);
          ins.setString(2, name);
          if (i == 7) {
            ins.setNull(3, Types.VARCHAR); ins.setNull(4, Types.NUMERIC); ins.setNull(5, Types.DATE);
            ins.setNull(6, Types.OTHER); ins.setNull(7, Types.BINARY); ins.setNull(8, Types.OTHER);
            ins.setNull(9, Types.BOOLEAN); ins.setNull(10, Types.TIMESTAMP_WITH_TIMEZONE);
          } else {
            ins.setString(3, text(name, i));
            ins.setBigDecimal(4, num);
            ins.setObject(5, d);
            ins.setObject(6, "{\"a\":1,\"b\":[\"x\",null]}", Types.OTHER);
            ins.setBytes(7, by);
            ins.setObject(8, u);
            ins.setBoolean(9, true);
            ins.setObject(10, ts);
          }
          check(ins.executeUpdate() == 1, "insert " + i);
        }
      }
      // Executed more than prepareThreshold times: a named server statement, binary results.
      try (PreparedStatement sel = c.prepareStatement("SELECT id, t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz FROM drv WHERE t_text = ?")) {
        for (int round = 0; round < 2; round++) {
          for (int i = 1; i <= 6; i++) {
            sel.setString(1, text(name, i));
            try (ResultSet r = sel.executeQuery()) {
              check(r.next(), "lookup " + i + " round " + round + ": no row");
              String at = " row " + i + " round " + round;
              check(r.getInt(1) == base + i, "id" + at + ": " + r.getInt(1));
              check(r.getString(2).equals(text(name, i)), "t_text" + at + ": " + r.getString(2));
              check(r.getBigDecimal(3).toPlainString().equals("-12.5"), "t_num" + at + ": " + r.getBigDecimal(3));
              check(r.getObject(4, LocalDate.class).equals(d), "t_date" + at + ": " + r.getObject(4));
              check(r.getString(5).equals("{\"a\": 1, \"b\": [\"x\", null]}"), "t_jsonb" + at + ": " + r.getString(5));
              check(Arrays.equals(r.getBytes(6), by), "t_bytea" + at + ": " + Arrays.toString(r.getBytes(6)));
              check(u.equals(r.getObject(7)), "t_uuid" + at + ": " + r.getObject(7));
              check(r.getBoolean(8), "t_bool" + at);
              check(r.getObject(9, OffsetDateTime.class).isEqual(ts), "t_tstz" + at + ": " + r.getObject(9));
              check(!r.next(), "lookup " + i + ": more than one row");
            }
          }
        }
      }
      try (PreparedStatement sel = c.prepareStatement("SELECT t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz FROM drv WHERE id = ?")) {
        sel.setInt(1, base + 7);
        try (ResultSet r = sel.executeQuery()) {
          check(r.next(), "null row");
          for (int k = 1; k <= 8; k++) { check(r.getObject(k) == null, "null row column " + k + ": " + r.getObject(k)); }
        }
      }
      try (PreparedStatement cnt = c.prepareStatement("SELECT count(*) FROM drv WHERE tag = ? AND t_uuid = ? AND t_date = ? AND t_bytea = ?")) {
        cnt.setString(1, name); cnt.setObject(2, u); cnt.setObject(3, d); cnt.setBytes(4, by);
        try (ResultSet r = cnt.executeQuery()) { r.next(); check(r.getInt(1) == 6, "count " + r.getInt(1)); }
      }
    }
    System.out.println("OK");
  }
}
`

const drvNode = `
const { Client } = require('pg');
const [dsn, baseS, name] = process.argv.slice(1); // node -e: argv[0] is node, then the arguments
const base = Number(baseS);
const assert = require('assert');
const text = (i) => name + " héllo 'q' \\ #" + i;
(async () => {
  const c = new Client({ connectionString: dsn });
  await c.connect();
  const J = { a: 1, b: ['x', null] };
  const ts = new Date(Date.UTC(2024, 5, 1, 12));
  const by = Buffer.from([0, 255, 1]);
  const ins = 'INSERT INTO drv (id, tag, t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)';
  for (let i = 1; i <= 6; i++) {
    // Untyped text parameters; the Buffer goes as a binary parameter.
    await c.query(ins, [base + i, name, text(i), '-12.50', '2024-01-02', JSON.stringify(J), by, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, ts]);
  }
  await c.query(ins, [base + 7, name, null, null, null, null, null, null, null, null]);
  for (let i = 1; i <= 6; i++) {
    const r = await c.query('SELECT id, t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz FROM drv WHERE t_text = $1', [text(i)]);
    assert.strictEqual(r.rows.length, 1, 'lookup ' + i);
    const row = r.rows[0];
    assert.strictEqual(row.id, base + i);
    assert.strictEqual(row.t_text, text(i));
    assert.strictEqual(row.t_num, '-12.5');
    assert.strictEqual(row.t_date.getTime(), Date.UTC(2024, 0, 2));
    assert.deepStrictEqual(row.t_jsonb, J);
    assert.ok(Buffer.isBuffer(row.t_bytea) && row.t_bytea.equals(by), 't_bytea ' + row.t_bytea);
    assert.strictEqual(row.t_uuid, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
    assert.strictEqual(row.t_bool, true);
    assert.strictEqual(row.t_tstz.getTime(), ts.getTime());
  }
  const n = await c.query('SELECT t_text, t_num, t_date, t_jsonb, t_bytea, t_uuid, t_bool, t_tstz FROM drv WHERE id = $1', [base + 7]);
  assert.deepStrictEqual(Object.values(n.rows[0]), [null, null, null, null, null, null, null, null]);
  await c.end();
  console.log('OK');
})().catch((e) => { console.error(e); process.exit(1); });
`

func TestDrivers(t *testing.T) {
	e := newEnv(t)
	var decl []string
	for _, c := range drvCols {
		decl = append(decl, c[0]+" bytea")
		e.cols = append(e.cols, config.Column{Table: "public.drv", Column: c[0], Type: c[1], Mode: c[2], Scope: "payroll:drv." + c[0]})
	}
	e.pg.Exec(t, fmt.Sprintf(`SET ROLE %s; CREATE TABLE drv (id int PRIMARY KEY, tag text, %s)`, e.pg.User, strings.Join(decl, ", ")))
	addr := e.proxyFor(t, "error")
	host, port, _ := strings.Cut(addr, ":")
	dsn := e.userDSN(addr)

	run := func(t *testing.T, name string, base int, cmd *exec.Cmd) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
		c.Dir, c.Env = cmd.Dir, append(os.Environ(), append([]string{"TZ=UTC", "PGTZ=UTC"}, cmd.Env...)...)
		out, err := c.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "OK") {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		checkDrvRows(t, e, addr, name, base)
	}

	t.Run("psycopg2", func(t *testing.T) {
		py := testenv.Require(t, "/usr/bin/python3")
		if out, err := exec.Command(py, "-c", "import psycopg2").CombinedOutput(); err != nil {
			missing(t, "python3-psycopg2", string(out))
		}
		run(t, "psycopg2", 1000, exec.Command(py, "-c", drvPython, dsn, "1000", "psycopg2"))
	})

	t.Run("pgjdbc", func(t *testing.T) {
		const jar = "/usr/share/java/postgresql.jar"
		if _, err := os.Stat(jar); err != nil {
			missing(t, "libpostgresql-jdbc-java", err.Error())
		}
		javac, java := testenv.Require(t, "javac"), testenv.Require(t, "java")
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "Drv.java"), []byte(drvJava), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(javac, "-encoding", "UTF-8", "-cp", jar, "-d", dir, filepath.Join(dir, "Drv.java")).CombinedOutput(); err != nil {
			t.Fatalf("javac: %v\n%s", err, out)
		}
		url := fmt.Sprintf("jdbc:postgresql://%s:%s/%s?sslmode=disable", host, port, e.pg.Database)
		run(t, "pgjdbc", 2000, exec.Command(java, "-Dfile.encoding=UTF-8", "-Duser.timezone=UTC", "-cp", jar+string(os.PathListSeparator)+dir,
			"Drv", url, e.pg.User, e.pg.Password, "2000", "pgjdbc"))
	})

	t.Run("node-postgres", func(t *testing.T) {
		// .ci/deps.sh installs node-postgres from the npm registry into .ci/node (Debian's node-pg
		// conflicts with NodeSource's nodejs).
		node := testenv.Require(t, "node")
		root, err := testenv.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		nodePath := filepath.Join(root, ".ci", "node", "node_modules")
		probe := exec.Command(node, "-e", "require.resolve('pg')")
		probe.Env = append(os.Environ(), "NODE_PATH="+nodePath)
		if err := probe.Run(); err != nil {
			missing(t, "node-postgres", "npm pg in .ci/node: "+err.Error())
		}
		cmd := exec.Command(node, "-e", drvNode, dsn, "3000", "node-postgres")
		cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
		run(t, "node-postgres", 3000, cmd)
	})
}

// missing stops a driver subtest whose Debian package is not installed: a failure under CI (where
// .ci/deps.sh installs it), a skip elsewhere.
func missing(t *testing.T, pkg, detail string) {
	t.Helper()
	msg := fmt.Sprintf("%s not installed (%s): run `make deps` to install the test dependencies", pkg, lastLine(detail))
	if testenv.InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// checkDrvRows reads what a driver wrote through the proxy with pgx and checks PostgreSQL holds envelopes.
func checkDrvRows(t *testing.T, e *env, addr, driver string, base int) {
	t.Helper()
	ctx := context.Background()
	names := make([]string, len(drvCols))
	for i, c := range drvCols {
		names[i] = c[0]
	}
	list := strings.Join(names, ", ")

	c := connect(t, e.userDSN(addr)+"&timezone=UTC", pgx.QueryExecModeSimpleProtocol)
	rows, err := c.Query(ctx, `SELECT id, `+list+` FROM drv WHERE tag = $1 ORDER BY id`, driver)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
		raw := rows.RawValues()
		id := base + n
		if string(raw[0]) != fmt.Sprint(id) {
			t.Fatalf("row %d: id %q", n, raw[0])
		}
		for k, col := range names {
			got := raw[k+1]
			if n == 7 {
				if got != nil {
					t.Errorf("row %d %s: %q, want NULL", id, col, got)
				}
				continue
			}
			want := drvWant[col]
			if col == "t_text" {
				want = drvText(driver, n)
			}
			if string(got) != want {
				t.Errorf("row %d %s through the proxy: %q, want %q", id, col, got, want)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 7 {
		t.Fatalf("%d rows of %s, want 7", n, driver)
	}

	direct := connect(t, e.pg.UserDSN(), pgx.QueryExecModeCacheStatement)
	rows, err = direct.Query(ctx, `SELECT id, `+list+` FROM drv WHERE tag = $1 ORDER BY id`, driver)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int32
		vals := make([][]byte, len(names))
		dest := []any{&id}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		for k, v := range vals {
			if int(id) == base+7 {
				if v != nil {
					t.Errorf("stored %d %s: %x, want NULL", id, names[k], v)
				}
			} else if !bytes.HasPrefix(v, []byte("KW\x01")) {
				t.Errorf("stored %d %s is not an envelope: %x", id, names[k], v)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}
