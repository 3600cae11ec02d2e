package analyze

import (
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

var fuzzSeeds = []string{
	"SELECT 1",
	"INSERT INTO employees (id, ssn, salary, hired) VALUES (1, '123-45-6789', -42.5, '2024-01-02'::date)",
	"INSERT INTO employees VALUES (1, 'n', 's', 10, 'note', 2, DATE '2020-01-01') ON CONFLICT (ssn) DO UPDATE SET salary = EXCLUDED.salary RETURNING *",
	"UPDATE employees SET salary = $1, ssn = $2::text WHERE ssn IN ('a', $3, NULL) AND hired IS NOT DISTINCT FROM $4",
	"SELECT e.ssn FROM employees e JOIN departments d ON d.id = e.dept_id WHERE e.ssn <> E'a\\'b' ORDER BY d.name",
	"WITH c(k) AS (SELECT ssn FROM employees) SELECT k FROM c WHERE k = $1",
	"SELECT s FROM (SELECT ssn AS s FROM employees) x WHERE (x.s) = ('a')",
	"COPY employees (id, ssn) FROM STDIN WITH (FORMAT csv, HEADER) WHERE ssn <> 'x'",
	"COPY (SELECT ssn FROM employees) TO STDOUT",
	"PREPARE q(varchar(20), int) AS SELECT id FROM employees WHERE ssn = $1 AND id = $2; EXECUTE q('x', 1); DEALLOCATE q",
	"SELECT id FROM employees ORDER BY salary",
	"INSERT INTO employees (ssn) VALUES ('a'\n'b'), ($$x$$), (-1::int8), (CAST('1' AS text))",
	"DELETE FROM employees WHERE ssn NOT IN ('a', $1) RETURNING ssn",
	"EXPLAIN ANALYZE SELECT 1 FROM employees WHERE ssn IS DISTINCT FROM 'x' /* c */",
	"ALTER TABLE employees ALTER COLUMN ssn TYPE text",
}

// FuzzAnalyze checks that no text makes the analyzer panic, that every plan's edits lie within
// the text and do not overlap, and that a rewrite of a text PostgreSQL's parser accepts is accepted
// too.
func FuzzAnalyze(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	cat := testCatalog()
	f.Fuzz(func(t *testing.T, sql string) {
		p := Analyze(sql, cat, Options{SearchPath: []string{"public", "hr"}})
		switch p.Action {
		case Pass:
			return
		case Refuse:
			if p.Refusal == nil || p.Refusal.Error() == "" {
				t.Fatal("refusal without a reason")
			}
			return
		}
		end := 0
		for _, e := range p.Edits {
			if e.Start < end || e.End < e.Start || e.End > len(sql) {
				t.Fatalf("bad edit [%d,%d) after %d in %d bytes", e.Start, e.End, end, len(sql))
			}
			end = e.End
		}
		out, err := p.Render(sql, fakeSeal)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		if _, err := pg.Parse(out); err != nil {
			t.Fatalf("rewrite of %q does not parse: %v\n%s", sql, err, out)
		}
	})
}
