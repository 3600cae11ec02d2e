package columns_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

var execModes = []pgx.QueryExecMode{
	pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
	pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
}

func pgErr(err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

func wantCode(t *testing.T, err error, code string, contains ...string) {
	t.Helper()
	pe := pgErr(err)
	if pe == nil || pe.Code != code {
		t.Fatalf("error %v, want SQLSTATE %s", err, code)
	}
	for _, c := range contains {
		if !strings.Contains(pe.Message, c) {
			t.Fatalf("error %q does not mention %q", pe.Message, c)
		}
	}
}

func TestColumns(t *testing.T) {
	e := newEnv(t)
	addr := e.proxyFor(t, "error")
	ctx := context.Background()
	direct := connect(t, e.pg.UserDSN(), pgx.QueryExecModeSimpleProtocol)

	t.Run("types round trip", func(t *testing.T) {
		ts := time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC)
		uuid := [16]byte{0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
		for mi, mode := range execModes {
			t.Run(mode.String(), func(t *testing.T) {
				c := connect(t, e.userDSN(addr), mode)
				id := 100 + mi
				_, err := c.Exec(ctx, `INSERT INTO typed (id, t_text, t_varchar, t_int2, t_int4, t_int8, t_numeric, t_float8, t_bool,
					t_date, t_timestamp, t_timestamptz, t_uuid, t_jsonb, t_bytea)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
					id, "héllo 'world'", "v", int16(-7), int32(42), int64(1)<<40, pgtype.Numeric{Int: big.NewInt(1250), Exp: -2, Valid: true},
					1.5, true, time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), ts, ts, "12345678-0102-0304-0506-0708090a0b0c", `{"b": ["x"], "a": 1}`, []byte{0, 1, 2, 0xff})
				if err != nil {
					t.Fatalf("insert: %v", err)
				}
				var (
					s, v         string
					i2           int16
					i4           int32
					i8           int64
					num          pgtype.Numeric
					f8           float64
					b            bool
					d, tsv, tstz time.Time
					u            [16]byte
					j            map[string]any
					by           []byte
				)
				err = c.QueryRow(ctx, `SELECT t_text, t_varchar, t_int2, t_int4, t_int8, t_numeric, t_float8, t_bool, t_date, t_timestamp,
					t_timestamptz, t_uuid, t_jsonb, t_bytea FROM typed WHERE id = $1`, id).
					Scan(&s, &v, &i2, &i4, &i8, &num, &f8, &b, &d, &tsv, &tstz, &u, &j, &by)
				if err != nil {
					t.Fatalf("select: %v", err)
				}
				f, _ := num.Float64Value()
				if s != "héllo 'world'" || v != "v" || i2 != -7 || i4 != 42 || i8 != 1<<40 || f.Float64 != 12.5 || f8 != 1.5 || !b ||
					!d.Equal(time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)) || !tsv.Equal(ts) || !tstz.Equal(ts) || u != uuid ||
					j["a"] != float64(1) || !bytes.Equal(by, []byte{0, 1, 2, 0xff}) {
					t.Fatalf("read back %q %q %d %d %d %v %v %v %v %v %v %x %v %x", s, v, i2, i4, i8, f, f8, b, d, tsv, tstz, u, j, by)
				}
				// Deterministic lookups by parameter on every type.
				var n int
				if err := c.QueryRow(ctx, `SELECT count(*) FROM typed WHERE t_text = $1 AND t_int8 = $2 AND t_uuid = $3 AND t_date = $4 AND id = $5`,
					"héllo 'world'", int64(1)<<40, "12345678-0102-0304-0506-0708090a0b0c", time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), id).Scan(&n); err != nil || n != 1 {
					t.Fatalf("lookup: %d, %v", n, err)
				}
			})
		}
	})

	t.Run("every type, text and binary, byte for byte as PostgreSQL", func(t *testing.T) {
		// Each value is written through the proxy as a literal and read back in both formats; the
		// bytes must be what PostgreSQL itself sends for the same value of the declared type.
		values := map[string]string{
			"text": `'tëxt \ ''q'''`, "varchar": "'var'", "int2": "-32768", "int4": "2147483647", "int8": "-9000000000",
			"numeric": "-123.456", "float8": "3.14159e-7", "bool": "false", "date": "'1999-12-31'",
			"timestamp": "'2024-02-29 23:59:59.5'", "timestamptz": "'2024-06-01 12:00:00+05:30'",
			"uuid": "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "jsonb": `'{"z": null, "a": [1, "x"]}'`, "bytea": `'\xdeadbeef'`,
		}
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeSimpleProtocol)
		cols, lits := []string{"id"}, []string{"500"}
		for _, typ := range typeCols {
			cols = append(cols, "t_"+typ)
			lits = append(lits, values[typ])
		}
		if _, err := c.Exec(ctx, `INSERT INTO typed (`+strings.Join(cols, ", ")+`) VALUES (`+strings.Join(lits, ", ")+`)`); err != nil {
			t.Fatalf("insert: %v", err)
		}
		ext := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		directExt := connect(t, e.pg.UserDSN(), pgx.QueryExecModeCacheStatement)
		for _, format := range []int16{pgx.TextFormatCode, pgx.BinaryFormatCode} {
			for _, typ := range typeCols {
				var want, got []byte
				rows, err := directExt.Query(ctx, `SELECT (`+values[typ]+`)::`+typ, pgx.QueryResultFormats{format})
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					want = bytes.Clone(rows.RawValues()[0])
				}
				if rows.Err() != nil {
					t.Fatal(rows.Err())
				}
				rows, err = ext.Query(ctx, `SELECT t_`+typ+` FROM typed WHERE id = $1`, pgx.QueryResultFormats{format}, 500)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					got = bytes.Clone(rows.RawValues()[0])
					if oid := rows.FieldDescriptions()[0].DataTypeOID; oid == 17 && typ != "bytea" {
						t.Fatalf("%s: field still typed bytea", typ)
					}
				}
				if rows.Err() != nil {
					t.Fatal(rows.Err())
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s in format %d: proxy sent %q, PostgreSQL sends %q", typ, format, got, want)
				}
			}
		}
	})

	t.Run("psql literals and text output", func(t *testing.T) {
		out, err := e.pg.Psql(t, e.userDSN(addr), "-A", "-t", "-c",
			`INSERT INTO typed (id, t_text, t_int4, t_numeric, t_float8, t_bool, t_date, t_timestamptz, t_uuid, t_jsonb, t_bytea)
			 VALUES (1, 'psql', -5, 12.50, 1e3, true, '2024-01-02'::date, '2024-01-02 03:04:05+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": [1, 2], "a": 1.50}', '\x00ff'::bytea)`,
			"-c", `SET TimeZone = 'UTC'`,
			"-c", `SELECT t_text, t_int4, t_numeric, t_float8, t_bool, t_date, t_timestamptz, t_uuid, t_jsonb, t_bytea FROM typed WHERE id = 1`,
			"-c", `SELECT id FROM typed WHERE t_text = 'psql' AND t_int4 = -5 AND t_numeric = 12.5 AND t_jsonb = '{"a": 1.5, "b": [1,2]}'`)
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		want := "psql|-5|12.5|1000|t|2024-01-02|2024-01-02 01:04:05+00|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{\"a\": 1.5, \"b\": [1, 2]}|\\x00ff\n1"
		if !strings.Contains(out, want) {
			t.Fatalf("psql output:\n%s\nwant it to contain:\n%s", out, want)
		}
	})

	t.Run("direct connection sees envelopes only", func(t *testing.T) {
		rows, err := direct.Query(ctx, `SELECT t_text, t_int4, t_bytea FROM typed UNION ALL SELECT ssn, salary, note FROM employees`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var a, b, c []byte
			if err := rows.Scan(&a, &b, &c); err != nil {
				t.Fatal(err)
			}
			for _, v := range [][]byte{a, b, c} {
				if v != nil && !bytes.HasPrefix(v, []byte("KW\x01")) {
					t.Fatalf("stored value is not an envelope: %q", v)
				}
			}
			n++
		}
		if rows.Err() != nil || n == 0 {
			t.Fatalf("%d rows, %v", n, rows.Err())
		}
	})

	t.Run("employees: modes, lookups, RETURNING, refusals", func(t *testing.T) {
		for mi, mode := range execModes {
			c := connect(t, e.userDSN(addr), mode)
			base := 1000 * (mi + 1)
			var ret string
			err := c.QueryRow(ctx, `INSERT INTO employees (id, name, ssn, salary, note) VALUES ($1, 'ann', $2, $3, $4) RETURNING ssn`,
				base, fmt.Sprintf("ssn-%d", base), "1234.50", "hsm note").Scan(&ret)
			if err != nil || ret != fmt.Sprintf("ssn-%d", base) {
				t.Fatalf("%s: insert returning %q, %v", mode, ret, err)
			}
			if _, err := c.Exec(ctx, fmt.Sprintf(`INSERT INTO employees (id, name, ssn, salary, note) VALUES (%d, 'bo', 'ssn-%d', 99, 'literal note'), (%d, 'cy', 'ssn-%d', -1.5, NULL)`,
				base+1, base+1, base+2, base+2)); err != nil {
				t.Fatalf("%s: multi-row literal insert: %v", mode, err)
			}
			var name, note string
			var sal float64
			if err := c.QueryRow(ctx, `SELECT name, salary, note FROM employees WHERE ssn = $1`, fmt.Sprintf("ssn-%d", base+1)).Scan(&name, &sal, &note); err != nil ||
				name != "bo" || sal != 99 || note != "literal note" {
				t.Fatalf("%s: lookup by param: %q %v %q %v", mode, name, sal, note, err)
			}
			var n int
			if err := c.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM employees WHERE ssn IN ('ssn-%d', 'ssn-%d', 'nope')`, base, base+2)).Scan(&n); err != nil || n != 2 {
				t.Fatalf("%s: IN literals: %d %v", mode, n, err)
			}
			if _, err := c.Exec(ctx, `UPDATE employees SET salary = $1, note = 'updated' WHERE ssn = $2`, "2000", fmt.Sprintf("ssn-%d", base)); err != nil {
				t.Fatalf("%s: update: %v", mode, err)
			}
			if err := c.QueryRow(ctx, `SELECT salary::text FROM employees WHERE id = $1`, base).Scan(&ret); err == nil {
				t.Fatalf("%s: a cast of a randomized column was not refused", mode)
			}
			if _, err := c.Exec(ctx, `INSERT INTO employees (id, name, ssn) VALUES ($1, 'dup', $2) ON CONFLICT (ssn) DO UPDATE SET name = 'upserted'`, base+50, fmt.Sprintf("ssn-%d", base)); err != nil {
				t.Fatalf("%s: on conflict: %v", mode, err)
			}
			if err := c.QueryRow(ctx, `SELECT name, salary FROM employees WHERE ssn = $1`, fmt.Sprintf("ssn-%d", base)).Scan(&name, &sal); err != nil || name != "upserted" || sal != 2000 {
				t.Fatalf("%s: after update/upsert: %q %v %v", mode, name, sal, err)
			}
		}
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		refused := []struct{ name, sql, col string }{
			{"order by randomized", `SELECT id FROM employees ORDER BY salary`, "salary"},
			{"range on randomized", `SELECT id FROM employees WHERE salary > 10`, "salary"},
			{"like on deterministic", `SELECT id FROM employees WHERE ssn LIKE 'x%'`, "ssn"},
			{"insert select from plaintext", `INSERT INTO employees (id, ssn) SELECT id + 90000, name FROM plain`, "ssn"},
			{"function on value", `INSERT INTO employees (id, ssn) VALUES (77777, upper('x'))`, "ssn"},
			{"binary copy", `COPY employees FROM STDIN (FORMAT binary)`, ""},
		}
		for _, r := range refused {
			_, err := c.Exec(ctx, r.sql)
			pe := pgErr(err)
			if pe == nil || pe.Code != "0A000" || !strings.Contains(pe.Message, r.col) {
				t.Fatalf("%s: %v, want 0A000 naming %s", r.name, err, r.col)
			}
			var one int
			if err := c.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
				t.Fatalf("%s: session not usable after the refusal: %v", r.name, err)
			}
		}
	})

	t.Run("on_denied", func(t *testing.T) {
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		if _, err := c.Exec(ctx, `INSERT INTO employees (id, name, ssn, salary) VALUES (5, 'eve', 'ssn-5', 5000)`); err != nil {
			t.Fatal(err)
		}
		bob := connect(t, e.dsn(addr, "bob", rolePassword), pgx.QueryExecModeCacheStatement)
		var sal float64
		if err := bob.QueryRow(ctx, `SELECT salary FROM employees WHERE id = 5`).Scan(&sal); err != nil || sal != 5000 {
			t.Fatalf("bob reads salary (decrypt grant): %v %v", sal, err)
		}
		_, err := bob.Exec(ctx, `INSERT INTO employees (id, salary) VALUES (6, 1)`)
		wantCode(t, err, "42501", "public.employees.salary")
		var s string
		err = bob.QueryRow(ctx, `SELECT ssn FROM employees WHERE id = 5`).Scan(&s)
		wantCode(t, err, "42501", "public.employees.ssn")
		if err := bob.QueryRow(ctx, `SELECT name FROM employees WHERE id = 5`).Scan(&s); err != nil || s != "eve" {
			t.Fatalf("bob after denial: %q %v", s, err)
		}

		nullAddr := e.proxyFor(t, "null")
		carol := connect(t, e.dsn(nullAddr, "carol", rolePassword), pgx.QueryExecModeSimpleProtocol)
		var ssn, salary *string
		if err := carol.QueryRow(ctx, `SELECT ssn, salary::text FROM employees WHERE id = 5`).Scan(&ssn, &salary); err == nil {
			t.Fatal("cast not refused")
		}
		if err := carol.QueryRow(ctx, `SELECT ssn, name FROM employees WHERE id = 5`).Scan(&ssn, &s); err != nil || ssn != nil || s != "eve" {
			t.Fatalf("carol with on_denied null: %v %q %v", ssn, s, err)
		}

		ctAddr := e.proxyFor(t, "ciphertext")
		carol2 := connect(t, e.dsn(ctAddr, "carol", rolePassword), pgx.QueryExecModeCacheStatement)
		var raw []byte
		if err := carol2.QueryRow(ctx, `SELECT ssn FROM employees WHERE id = 5`).Scan(&raw); err != nil || !bytes.HasPrefix(raw, []byte("KW\x01")) {
			t.Fatalf("carol with on_denied ciphertext: %q %v", raw, err)
		}
	})

	t.Run("tampered values are errors", func(t *testing.T) {
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		if _, err := c.Exec(ctx, `INSERT INTO employees (id, name, ssn, salary) VALUES (7, 'tam', 'ssn-7', 7)`); err != nil {
			t.Fatal(err)
		}
		cases := map[string]string{
			"flipped byte": `UPDATE employees SET salary = set_byte(salary, length(salary) - 1, get_byte(salary, length(salary) - 1) # 1) WHERE id = 7`,
			"truncated":    `UPDATE employees SET salary = substring(salary from 1 for length(salary) - 2) WHERE id = 7`,
			"other column": `UPDATE employees SET salary = (SELECT t_numeric FROM typed WHERE t_numeric IS NOT NULL LIMIT 1) WHERE id = 7`,
			"plaintext":    `UPDATE employees SET salary = '7'::bytea WHERE id = 7`,
		}
		for name, sql := range cases {
			if _, err := direct.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var sal float64
			err := c.QueryRow(ctx, `SELECT salary FROM employees WHERE id = 7`).Scan(&sal)
			wantCode(t, err, "XX001", "public.employees.salary")
			// restore
			if _, err := c.Exec(ctx, `UPDATE employees SET salary = 7 WHERE id = 7`); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("copy", func(t *testing.T) {
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		text := "20\tcopy-a\tssn-c20\t100.5\tn\\tote\n21\tcopy-b\t\\N\t\\N\t\\N\n"
		if _, err := c.PgConn().CopyFrom(ctx, strings.NewReader(text), `COPY employees (id, name, ssn, salary, note) FROM STDIN`); err != nil {
			t.Fatalf("copy text: %v", err)
		}
		// One byte per CopyData message: rows straddle messages.
		split := "23\tsplit\tssn-c23\t7\tsplit note\n24\tsplit2\tssn-c24\t8\t\\N"
		if _, err := c.PgConn().CopyFrom(ctx, iotest.OneByteReader(strings.NewReader(split)), `COPY employees (id, name, ssn, salary, note) FROM STDIN`); err != nil {
			t.Fatalf("copy in one-byte messages: %v", err)
		}
		var sn string
		if err := c.QueryRow(ctx, `SELECT note FROM employees WHERE ssn = 'ssn-c23'`).Scan(&sn); err != nil || sn != "split note" {
			t.Fatalf("after split copy: %q %v", sn, err)
		}
		csv := "id,name,ssn,salary,note\n22,\"copy,c\",\"ssn,22\",3,\"multi\nline\"\n"
		if _, err := c.PgConn().CopyFrom(ctx, strings.NewReader(csv), `COPY employees (id, name, ssn, salary, note) FROM STDIN (FORMAT csv, HEADER)`); err != nil {
			t.Fatalf("copy csv: %v", err)
		}
		var note string
		var sal float64
		if err := c.QueryRow(ctx, `SELECT note, salary FROM employees WHERE ssn = 'ssn,22'`).Scan(&note, &sal); err != nil || note != "multi\nline" || sal != 3 {
			t.Fatalf("after csv copy: %q %v %v", note, sal, err)
		}
		var buf bytes.Buffer
		if _, err := c.PgConn().CopyTo(ctx, &buf, `COPY (SELECT id, name, ssn, salary, note FROM employees WHERE id IN (20, 21) ORDER BY id) TO STDOUT`); err != nil {
			t.Fatalf("copy to: %v", err)
		}
		if buf.String() != text {
			t.Fatalf("copy to text:\n%q\nwant\n%q", buf.String(), text)
		}
		buf.Reset()
		if _, err := c.PgConn().CopyTo(ctx, &buf, `COPY employees (id, name, ssn, salary, note) TO STDOUT (FORMAT csv)`); err != nil {
			t.Fatalf("copy to csv: %v", err)
		}
		if !strings.Contains(buf.String(), "22,\"copy,c\",\"ssn,22\",3,\"multi\nline\"\n") {
			t.Fatalf("copy to csv:\n%s", buf.String())
		}
		var raw []byte
		if err := direct.QueryRow(ctx, `SELECT note FROM employees WHERE id = 20`).Scan(&raw); err != nil || !bytes.HasPrefix(raw, []byte("KW\x01\x03")) {
			t.Fatalf("copied hsm value stored as %q, %v", raw, err)
		}
		// psql's \copy is COPY FROM STDIN fed line by line.
		dir := t.TempDir()
		file := dir + "/rows.csv"
		if err := os.WriteFile(file, []byte("40,ssn-psql,40\n41,,\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755)
		out, err := e.pg.Psql(t, e.userDSN(addr), "-A", "-t", "-c", `\copy employees (id, ssn, salary) from '`+file+`' csv`,
			"-c", `SELECT id, salary FROM employees WHERE ssn = 'ssn-psql'`, "-c", `\copy (SELECT ssn, salary FROM employees WHERE id IN (40, 41) ORDER BY id) to stdout csv`)
		if err != nil || !strings.Contains(out, "40|40\nssn-psql,40\n,\n") {
			t.Fatalf("psql \\copy: %v\n%s", err, out)
		}
	})

	t.Run("rotation", func(t *testing.T) {
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		if _, err := c.Exec(ctx, `INSERT INTO employees (id, name, ssn, salary) VALUES (30, 'old', 'rot-1', 30)`); err != nil {
			t.Fatal(err)
		}
		e.st.Rotate(t, "payroll")
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, err := c.Exec(ctx, `DELETE FROM employees WHERE id = 31`); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, `INSERT INTO employees (id, name, ssn, salary) VALUES (31, 'new', 'rot-2', 31)`); err != nil {
				t.Fatal(err)
			}
			var env []byte
			if err := direct.QueryRow(ctx, `SELECT ssn FROM employees WHERE id = 31`).Scan(&env); err != nil {
				t.Fatal(err)
			}
			if env[7] == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("new values still sealed with key version %d", env[7])
			}
			time.Sleep(300 * time.Millisecond)
		}
		rows, err := c.Query(ctx, `SELECT name, salary FROM employees WHERE ssn IN ('rot-1', 'rot-2') ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var n string
			var s float64
			if err := rows.Scan(&n, &s); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%s %v", n, s))
		}
		if rows.Err() != nil || strings.Join(got, ",") != "old 30,new 31" {
			t.Fatalf("mixed versions: %v %v", got, rows.Err())
		}
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM employees WHERE ssn = $1 OR ssn = $2`, "rot-1", "rot-2").Scan(&n); err != nil || n != 2 {
			t.Fatalf("parameter lookups across versions: %d %v", n, err)
		}
	})

	t.Run("sql prepare, cursors, pipelines, describe", func(t *testing.T) {
		out, err := e.pg.Psql(t, e.userDSN(addr), "-A", "-t",
			"-c", `PREPARE ins (int, text, text) AS INSERT INTO employees (id, name, ssn, salary) VALUES ($1, $2, $3, 50)`,
			"-c", `EXECUTE ins(60, 'prep', 'ssn-60')`,
			"-c", `PREPARE sel (text) AS SELECT name, salary FROM employees WHERE ssn = $1`,
			"-c", `EXECUTE sel('ssn-60')`,
			"-c", `BEGIN; DECLARE cur CURSOR FOR SELECT ssn, salary FROM employees WHERE id = 60; FETCH 1 FROM cur; COMMIT;`,
			"-c", `SELECT e.name, t.t_text FROM employees e JOIN typed t ON t.id = 1 WHERE e.ssn = 'ssn-60'`,
			"-c", `WITH x AS (SELECT ssn AS s FROM employees WHERE id = 60) SELECT s AS alias FROM x`)
		want := "prep|50\nssn-60|50\nprep|psql\nssn-60"
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("psql: %v\n%s\nwant %q", err, out, want)
		}
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		// A pipeline with a refused statement in the middle: the others run, the session stays usable.
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO employees (id, name, ssn) VALUES (61, 'batch', 'ssn-61')`)
		b.Queue(`SELECT id FROM employees ORDER BY salary`)
		err = c.SendBatch(ctx, b).Close()
		wantCode(t, err, "0A000", "salary")
		var name string
		if err := c.QueryRow(ctx, `SELECT name FROM employees WHERE ssn = $1`, "ssn-61").Scan(&name); err == nil {
			t.Fatalf("the implicit transaction of the failed pipeline was committed (%q)", name)
		}
		// Describe only: declared types in ParameterDescription and RowDescription.
		sd, err := c.Prepare(ctx, "d1", `SELECT ssn, salary, note FROM employees WHERE ssn = $1 AND id = $2`)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(sd.ParamOIDs) != "[25 23]" || sd.Fields[0].DataTypeOID != 25 || sd.Fields[1].DataTypeOID != 1700 || sd.Fields[2].DataTypeOID != 25 {
			t.Fatalf("described params %v fields %v", sd.ParamOIDs, sd.Fields)
		}
		// hsm column denied (on_denied: error): the agent's answer to a probe, before any row.
		carol := connect(t, e.dsn(addr, "carol", rolePassword), pgx.QueryExecModeCacheStatement)
		err = carol.QueryRow(ctx, `SELECT note FROM employees LIMIT 1`).Scan(new(string))
		wantCode(t, err, "42501", "public.employees.note")
		_, err = carol.Exec(ctx, `INSERT INTO employees (id, note) VALUES (62, $1)`, "x")
		wantCode(t, err, "42501", "public.employees.note")
	})

	t.Run("search_path is followed", func(t *testing.T) {
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeSimpleProtocol)
		if _, err := c.Exec(ctx, `SET search_path TO pg_catalog`); err != nil {
			t.Fatal(err)
		}
		// employees is not on the path: PostgreSQL's own error, nothing encrypted or refused by us.
		_, err := c.Exec(ctx, `INSERT INTO employees (id, ssn) VALUES (90, 'sp')`)
		wantCode(t, err, "42P01")
		if _, err := c.Exec(ctx, `RESET search_path`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `INSERT INTO employees (id, ssn) VALUES (90, 'sp')`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `BEGIN; SET LOCAL search_path TO pg_catalog; COMMIT`); err != nil {
			t.Fatal(err)
		}
		var ssn string
		if err := c.QueryRow(ctx, `SELECT ssn FROM employees WHERE ssn = 'sp'`).Scan(&ssn); err != nil || ssn != "sp" {
			t.Fatalf("after SET LOCAL: %q %v", ssn, err)
		}
	})

	t.Run("driver-declared parameter types", func(t *testing.T) {
		// pgjdbc declares setString as varchar and setInt as int4 (binary) whatever the column is.
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeCacheStatement)
		pc := c.PgConn()
		if _, err := pc.Prepare(ctx, "jdbc_ins", `INSERT INTO employees (id, name, ssn, salary) VALUES ($1, 'jdbc', $2, $3)`, []uint32{23, 1043, 23}); err != nil {
			t.Fatal(err)
		}
		i4 := func(v int32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
		res := pc.ExecPrepared(ctx, "jdbc_ins", [][]byte{i4(70), []byte("ssn-70"), i4(4200)}, []int16{1, 0, 1}, nil).Read()
		if res.Err != nil {
			t.Fatalf("typed insert: %v", res.Err)
		}
		sd, err := pc.Prepare(ctx, "jdbc_sel", `SELECT salary FROM employees WHERE ssn = $1`, []uint32{1043})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(sd.ParamOIDs) != "[1043]" || sd.Fields[0].DataTypeOID != 1700 {
			t.Fatalf("described %v %v", sd.ParamOIDs, sd.Fields)
		}
		res = pc.ExecPrepared(ctx, "jdbc_sel", [][]byte{[]byte("ssn-70")}, []int16{0}, []int16{0}).Read()
		if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "4200" {
			t.Fatalf("lookup by a varchar parameter: %q %v", res.Rows, res.Err)
		}
		// A value the declared type cannot hold is the client's error, not a stored value.
		res = pc.ExecPrepared(ctx, "jdbc_ins", [][]byte{i4(71), {0xff, 0xfe}, i4(1)}, []int16{1, 0, 1}, nil).Read()
		wantCode(t, res.Err, "22P02", "public.employees.ssn")
	})

	t.Run("ddl refreshes the catalog", func(t *testing.T) {
		c := connect(t, e.userDSN(addr), pgx.QueryExecModeSimpleProtocol)
		// Same name, new table OID, columns in another order: positional INSERT and reads must follow.
		if _, err := c.Exec(ctx, `DROP TABLE secrets; CREATE TABLE secrets (id int PRIMARY KEY, b bytea, a bytea)`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `INSERT INTO secrets VALUES (1, 'bee', 'ay')`); err != nil {
			t.Fatal(err)
		}
		var a, b string
		var id int
		if err := c.QueryRow(ctx, `SELECT * FROM secrets`).Scan(&id, &b, &a); err != nil || a != "ay" || b != "bee" {
			t.Fatalf("after DDL: a=%q b=%q %v", a, b, err)
		}
		var raw []byte
		if err := direct.QueryRow(ctx, `SELECT a FROM secrets`).Scan(&raw); err != nil || !bytes.HasPrefix(raw, []byte("KW\x01")) {
			t.Fatalf("stored after DDL: %q %v", raw, err)
		}
	})
}
