package analyze

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/keyward/keyward/colcrypt/coltype"
	pg "github.com/pganalyze/pg_query_go/v6"
)

type wantParam struct {
	n      int
	column string
	role   Role
}

type planCase struct {
	name   string
	sql    string
	action Action
	want   string      // rewritten SQL (with show's placeholders), for Rewrite
	refuse string      // substring of the refusal message, for Refuse
	params []wantParam // for Rewrite
}

func runCases(t *testing.T, cases []planCase) {
	t.Helper()
	cat := testCatalog()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Analyze(tc.sql, cat, Options{})
			if p.Action != tc.action {
				msg := ""
				if p.Refusal != nil {
					msg = p.Refusal.Error()
				}
				t.Fatalf("action = %v (%s), want %v", p.Action, msg, tc.action)
			}
			switch p.Action {
			case Refuse:
				if !strings.Contains(p.Refusal.Error(), tc.refuse) || tc.refuse == "" {
					t.Fatalf("refusal %q does not contain %q", p.Refusal.Error(), tc.refuse)
				}
			case Rewrite:
				if tc.want != "" {
					if got := show(tc.sql, p); got != tc.want {
						t.Fatalf("rewritten:\n got %s\nwant %s", got, tc.want)
					}
				}
				var got []wantParam
				for _, pr := range p.Params {
					got = append(got, wantParam{pr.N, pr.Column.Column, pr.Role})
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.params) {
					t.Fatalf("params = %v, want %v", got, tc.params)
				}
				checkRenders(t, tc.sql, p)
			}
		})
	}
}

// checkRenders renders the plan with fake envelopes (two key versions for Match) and checks that
// PostgreSQL's parser accepts the result.
func checkRenders(t *testing.T, sql string, p *Plan) {
	t.Helper()
	out, err := p.Render(sql, fakeSeal)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if _, err := pg.Parse(out); err != nil {
		t.Fatalf("rendered SQL does not parse: %v\n%s", err, out)
	}
}

func fakeSeal(v *Value) ([][]byte, error) {
	env := []byte("KW\x01" + v.Column.Column + ":" + v.Literal.Value)
	if v.Role == Match {
		return [][]byte{env, append([]byte("v2"), env...)}, nil
	}
	return [][]byte{env}, nil
}

func TestPass(t *testing.T) {
	runCases(t, []planCase{
		{name: "no table", sql: "SELECT 1", action: Pass},
		{name: "plain table", sql: "SELECT * FROM departments WHERE name = 'x' ORDER BY name", action: Pass},
		{name: "unknown table", sql: "SELECT a FROM nowhere WHERE b < 3", action: Pass},
		{name: "syntax error", sql: "SELEC ssn FROM employees", action: Pass},
		{name: "select protected bare", sql: "SELECT id, ssn, salary AS s, e.note FROM employees e", action: Pass},
		{name: "select star", sql: "SELECT * FROM employees", action: Pass},
		{name: "select qualified star", sql: "SELECT e.*, d.name FROM employees e JOIN departments d ON d.id = e.dept_id", action: Pass},
		{name: "schema qualified", sql: "SELECT public.employees.ssn FROM public.employees", action: Pass},
		{name: "is null", sql: "SELECT id FROM employees WHERE salary IS NULL AND note IS NOT NULL", action: Pass},
		{name: "is null in target", sql: "SELECT salary IS NULL FROM employees", action: Pass},
		{name: "count", sql: "SELECT count(salary), count(*), count(DISTINCT ssn) FROM employees", action: Pass},
		{name: "plain predicates", sql: "SELECT ssn FROM employees WHERE id > 3 AND name LIKE 'a%' ORDER BY name, id DESC LIMIT 10", action: Pass},
		{name: "group by deterministic", sql: "SELECT ssn, count(*) FROM employees GROUP BY ssn HAVING count(*) > 1", action: Pass},
		{name: "group by position deterministic", sql: "SELECT ssn, count(*) FROM employees GROUP BY 1", action: Pass},
		{name: "distinct deterministic", sql: "SELECT DISTINCT ssn, hired FROM employees", action: Pass},
		{name: "subquery output", sql: "SELECT s FROM (SELECT ssn AS s FROM employees) x", action: Pass},
		{name: "cte output", sql: "WITH e AS (SELECT ssn, salary FROM employees) SELECT e.ssn, salary FROM e", action: Pass},
		{name: "cte shadows table", sql: "WITH employees AS (SELECT 1 AS salary) SELECT salary FROM employees ORDER BY salary", action: Pass},
		{name: "plain column of other table", sql: "SELECT d.ssn FROM employees e JOIN departments d ON d.id = e.dept_id ORDER BY d.ssn", action: Pass},
		{name: "order by plain alias", sql: "SELECT ssn, name AS salary FROM employees ORDER BY salary", action: Pass},
		{name: "update plain", sql: "UPDATE employees SET name = 'x' WHERE id = 1", action: Pass},
		{name: "delete plain", sql: "DELETE FROM employees WHERE id = $1 RETURNING ssn", action: Pass},
		{name: "insert plain only", sql: "INSERT INTO employees (id, name) VALUES (1, 'a') RETURNING *", action: Pass},
		{name: "insert null default", sql: "INSERT INTO employees (id, ssn, salary) VALUES (1, NULL, DEFAULT)", action: Pass},
		{name: "update set col = col", sql: "UPDATE employees SET ssn = ssn WHERE id = 1", action: Pass},
		{name: "compare with null", sql: "SELECT id FROM employees WHERE ssn = NULL", action: Pass},
		{name: "truncate", sql: "TRUNCATE employees", action: Pass},
		{name: "transaction", sql: "BEGIN; SET statement_timeout = 5; COMMIT", action: Pass},
		{name: "drop", sql: "DROP TABLE employees", action: Pass},
		{name: "vacuum analyze", sql: "VACUUM ANALYZE employees", action: Pass},
		{name: "alter not null", sql: "ALTER TABLE employees ALTER COLUMN ssn SET NOT NULL, ADD COLUMN x int", action: Pass},
		{name: "plain index", sql: "CREATE INDEX ON employees (ssn)", action: Pass},
		{name: "unique index deterministic", sql: "CREATE UNIQUE INDEX ON employees (ssn)", action: Pass},
		{name: "copy to stdout with file", sql: "COPY employees TO '/tmp/x'", action: Pass},
		{name: "copy plain table", sql: "COPY departments FROM STDIN", action: Pass},
		{name: "copy plain columns", sql: "COPY employees (id, name) FROM STDIN", action: Pass},
		{name: "exists", sql: "SELECT id FROM departments d WHERE EXISTS (SELECT 1 FROM employees e WHERE e.dept_id = d.id AND e.salary IS NULL)", action: Pass},
		{name: "window plain", sql: "SELECT ssn, row_number() OVER (PARTITION BY dept_id ORDER BY id) FROM employees", action: Pass},
		{name: "explain plain", sql: "EXPLAIN SELECT ssn FROM employees WHERE id = 1", action: Pass},
		{name: "cursor", sql: "DECLARE c CURSOR FOR SELECT ssn FROM employees; FETCH 10 FROM c", action: Pass},
		{name: "lateral plain", sql: "SELECT e.ssn, x.n FROM employees e, LATERAL (SELECT count(*) AS n FROM departments d WHERE d.id = e.dept_id) x", action: Pass},
		{name: "search path other schema", sql: "SELECT email FROM people ORDER BY email", action: Pass},
		{name: "group by deterministic out alias", sql: "SELECT ssn AS s FROM employees GROUP BY s", action: Pass},
	})
}

func TestWrites(t *testing.T) { runCases(t, writeCases) }

var writeCases = []planCase{
	{
		name:   "insert psycopg2 literals",
		sql:    "INSERT INTO employees (id, ssn, salary, hired) VALUES (1, '123-45-6789', -42.5, '2024-01-02'::date)",
		action: Rewrite,
		want:   "INSERT INTO employees (id, ssn, salary, hired) VALUES (1, {W:ssn=123-45-6789}, {W:salary=-42.5}, {W:hired=2024-01-02::date})",
	},
	{
		name:   "negative integer with leading space",
		sql:    "INSERT INTO employees (salary) VALUES ( -42)",
		action: Rewrite,
		want:   "INSERT INTO employees (salary) VALUES ( {W:salary=-42})",
	},
	{
		name:   "sign not folded into a cast",
		sql:    "INSERT INTO employees (salary) VALUES (-42::int8)",
		action: Rewrite,
		want:   "INSERT INTO employees (salary) VALUES ({W:salary=-42::int8})",
	},
	{
		name:   "escape string and dollar quote",
		sql:    `INSERT INTO employees (ssn, note) VALUES (E'a\'b', $q$it's$q$)`,
		action: Rewrite,
		want:   "INSERT INTO employees (ssn, note) VALUES ({W:ssn=a'b}, {W:note=it's})",
	},
	{
		name:   "typed literal prefix form and CAST",
		sql:    "INSERT INTO employees (hired, ssn) VALUES (DATE '2024-01-02', CAST('x' AS text))",
		action: Rewrite,
		want:   "INSERT INTO employees (hired, ssn) VALUES ({W:hired=2024-01-02::date}, {W:ssn=x::text})",
	},
	{
		name:   "multi-word cast",
		sql:    "INSERT INTO employees (salary) VALUES ('1.5'::double precision)",
		action: Rewrite,
		want:   "INSERT INTO employees (salary) VALUES ({W:salary=1.5::pg_catalog.float8})",
	},
	{
		name:   "bytea style string into text",
		sql:    `INSERT INTO employees (ssn) VALUES ('\x00ff'::text)`,
		action: Rewrite,
		want:   `INSERT INTO employees (ssn) VALUES ({W:ssn=\x00ff::text})`,
	},
	{
		name:   "no column list uses catalog order",
		sql:    "INSERT INTO employees VALUES (1, 'n', 's', 10, 'note', 2, '2020-01-01')",
		action: Rewrite,
		want:   "INSERT INTO employees VALUES (1, 'n', {W:ssn=s}, {W:salary=10}, {W:note=note}, 2, {W:hired=2020-01-01})",
	},
	{
		name:   "multi-row values",
		sql:    "INSERT INTO employees (id, ssn) VALUES (1, 'a'), (2, NULL), (3, 'c') RETURNING id, ssn",
		action: Rewrite,
		want:   "INSERT INTO employees (id, ssn) VALUES (1, {W:ssn=a}), (2, NULL), (3, {W:ssn=c}) RETURNING id, ssn",
	},
	{
		name:   "null with cast becomes null",
		sql:    "INSERT INTO employees (ssn) VALUES (NULL::text)",
		action: Rewrite,
		want:   "INSERT INTO employees (ssn) VALUES (NULL)",
	},
	{
		name:   "parameters pgx",
		sql:    "INSERT INTO employees (id, ssn, salary) VALUES ($1, $2, $3)",
		action: Rewrite,
		want:   "INSERT INTO employees (id, ssn, salary) VALUES ($1, $2::bytea, $3::bytea)",
		params: []wantParam{{2, "ssn", Write}, {3, "salary", Write}},
	},
	{
		name:   "parameters with casts",
		sql:    "INSERT INTO employees (ssn, hired) VALUES ($1::text, CAST($2 AS date))",
		action: Rewrite,
		want:   "INSERT INTO employees (ssn, hired) VALUES ($1::bytea, $2::bytea)",
		params: []wantParam{{1, "ssn", Write}, {2, "hired", Write}},
	},
	{
		name:   "on conflict excluded",
		sql:    "INSERT INTO employees (id, ssn, salary) VALUES (1, 'a', 5) ON CONFLICT (ssn) DO UPDATE SET salary = EXCLUDED.salary, name = 'x' RETURNING ssn",
		action: Rewrite,
		want:   "INSERT INTO employees (id, ssn, salary) VALUES (1, {W:ssn=a}, {W:salary=5}) ON CONFLICT (ssn) DO UPDATE SET salary = EXCLUDED.salary, name = 'x' RETURNING ssn",
	},
	{
		name:   "on conflict set literal and param",
		sql:    "INSERT INTO employees AS e (id, ssn) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET ssn = $2, note = 'n' WHERE e.ssn = 'old'",
		action: Rewrite,
		want:   "INSERT INTO employees AS e (id, ssn) VALUES ($1, $2::bytea) ON CONFLICT (id) DO UPDATE SET ssn = $2::bytea, note = {W:note=n} WHERE (e.ssn IN ({M:ssn=old}))",
		params: []wantParam{{2, "ssn", Write}},
	},
	{
		name:   "update set and where",
		sql:    "UPDATE employees SET salary = 100.50, ssn = $1 WHERE ssn = $2 RETURNING salary",
		action: Rewrite,
		want:   "UPDATE employees SET salary = {W:salary=100.50}, ssn = $1::bytea WHERE (ssn = ANY($2::bytea[])) RETURNING salary",
		params: []wantParam{{1, "ssn", Write}, {2, "ssn", Match}},
	},
	{
		name:   "update multi-assign",
		sql:    "UPDATE employees SET (name, ssn) = ('n', 's') WHERE id = 1",
		action: Rewrite,
		want:   "UPDATE employees SET (name, ssn) = ('n', {W:ssn=s}) WHERE id = 1",
	},
	{
		name:   "update from other table",
		sql:    "UPDATE employees e SET ssn = 'x' FROM departments d WHERE d.id = e.dept_id AND d.name = 'r'",
		action: Rewrite,
		want:   "UPDATE employees e SET ssn = {W:ssn=x} FROM departments d WHERE d.id = e.dept_id AND d.name = 'r'",
	},
	{
		name:   "insert in cte",
		sql:    "WITH n AS (INSERT INTO employees (ssn) VALUES ('a') RETURNING id, ssn) SELECT ssn FROM n",
		action: Rewrite,
		want:   "WITH n AS (INSERT INTO employees (ssn) VALUES ({W:ssn=a}) RETURNING id, ssn) SELECT ssn FROM n",
	},
	{
		name:   "schema qualified other schema",
		sql:    "INSERT INTO hr.people (email) VALUES ('a@b')",
		action: Rewrite,
		want:   "INSERT INTO hr.people (email) VALUES ({W:email=a@b})",
	},
	{
		name:   "psycopg2 bytea literal",
		sql:    `INSERT INTO hr.people (id, badge) VALUES (1, '\x00ff'::bytea), (2, $$\x01$$)`,
		action: Rewrite,
		want:   `INSERT INTO hr.people (id, badge) VALUES (1, {W:badge=\x00ff::bytea}), (2, {W:badge=\x01})`,
	},
	{
		name:   "boolean and jsonb-like untyped literal",
		sql:    `INSERT INTO employees (note) VALUES ('{"a": 1}')`,
		action: Rewrite,
		want:   `INSERT INTO employees (note) VALUES ({W:note={"a": 1}})`,
	},
	{
		name:   "string continuation",
		sql:    "INSERT INTO employees (ssn) VALUES ('a'\n'b')",
		action: Rewrite,
		want:   "INSERT INTO employees (ssn) VALUES ({W:ssn=ab})",
	},
	{
		name:   "comment inside cast",
		sql:    "INSERT INTO employees (hired) VALUES ('2024-01-02' /* d */ ::date)",
		action: Rewrite,
		want:   "INSERT INTO employees (hired) VALUES ({W:hired=2024-01-02::date})",
	},
}

func TestPredicates(t *testing.T) { runCases(t, predicateCases) }

var predicateCases = []planCase{
	{
		name:   "equality literal",
		sql:    "SELECT id FROM employees WHERE ssn = '123'",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (ssn IN ({M:ssn=123}))",
	},
	{
		name:   "reversed",
		sql:    "SELECT id FROM employees e WHERE '123' = e.ssn AND id > 1",
		action: Rewrite,
		want:   "SELECT id FROM employees e WHERE (e.ssn IN ({M:ssn=123})) AND id > 1",
	},
	{
		name:   "parenthesized column",
		sql:    "SELECT id FROM employees WHERE (ssn) = ('123')",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE ((ssn) IN ({M:ssn=123}))",
	},
	{
		name:   "not equal",
		sql:    "DELETE FROM employees WHERE ssn <> '1' AND hired != DATE '2020-01-01'",
		action: Rewrite,
		want:   "DELETE FROM employees WHERE (ssn NOT IN ({M:ssn=1})) AND (hired NOT IN ({M:hired=2020-01-01::date}))",
	},
	{
		name:   "in list",
		sql:    "SELECT id FROM employees WHERE ssn IN ('a', 'b', NULL)",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (ssn IN ({M:ssn=a}, {M:ssn=b}, NULL))",
	},
	{
		name:   "not in list with params",
		sql:    "SELECT id FROM employees WHERE ssn NOT IN ('a', $1, $2)",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (ssn NOT IN ({M:ssn=a}) AND ssn <> ALL($1::bytea[]) AND ssn <> ALL($2::bytea[]))",
		params: []wantParam{{1, "ssn", Match}, {2, "ssn", Match}},
	},
	{
		name:   "param with cast pgjdbc",
		sql:    "SELECT id FROM employees WHERE ssn = $1::varchar",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (ssn = ANY($1::bytea[]))",
		params: []wantParam{{1, "ssn", Match}},
	},
	{
		name:   "param not equal",
		sql:    "SELECT id FROM employees WHERE ssn <> $1",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (ssn <> ALL($1::bytea[]))",
		params: []wantParam{{1, "ssn", Match}},
	},
	{
		name:   "is not distinct from literal",
		sql:    "SELECT id FROM employees WHERE ssn IS NOT DISTINCT FROM 'x'",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (COALESCE(ssn IN ({M:ssn=x}), false))",
	},
	{
		name:   "is distinct from param",
		sql:    "SELECT id FROM employees WHERE ssn IS DISTINCT FROM $1",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (NOT (ssn = ANY($1::bytea[]) IS TRUE OR (ssn IS NULL AND $1::bytea[] IS NULL)))",
		params: []wantParam{{1, "ssn", Match}},
	},
	{
		name:   "join on and where",
		sql:    "SELECT e.ssn, d.name FROM employees e JOIN departments d ON d.id = e.dept_id AND e.ssn = 'x' WHERE d.name = 'r' OR e.hired = '2020-02-02'",
		action: Rewrite,
		want:   "SELECT e.ssn, d.name FROM employees e JOIN departments d ON d.id = e.dept_id AND (e.ssn IN ({M:ssn=x})) WHERE d.name = 'r' OR (e.hired IN ({M:hired=2020-02-02}))",
	},
	{
		name:   "not",
		sql:    "SELECT 1 FROM employees WHERE NOT ssn = 'x'",
		action: Rewrite,
		want:   "SELECT 1 FROM employees WHERE NOT (ssn IN ({M:ssn=x}))",
	},
	{
		name:   "subquery column stays protected",
		sql:    "SELECT s FROM (SELECT ssn AS s FROM employees) x WHERE x.s = 'a'",
		action: Rewrite,
		want:   "SELECT s FROM (SELECT ssn AS s FROM employees) x WHERE (x.s IN ({M:ssn=a}))",
	},
	{
		name:   "cte column with alias list",
		sql:    "WITH c(k) AS (SELECT ssn FROM employees) SELECT k FROM c WHERE k = $1",
		action: Rewrite,
		want:   "WITH c(k) AS (SELECT ssn FROM employees) SELECT k FROM c WHERE (k = ANY($1::bytea[]))",
		params: []wantParam{{1, "ssn", Match}},
	},
	{
		name:   "correlated subquery",
		sql:    "SELECT name FROM departments d WHERE EXISTS (SELECT 1 FROM employees e WHERE e.dept_id = d.id AND e.ssn = 'x')",
		action: Rewrite,
		want:   "SELECT name FROM departments d WHERE EXISTS (SELECT 1 FROM employees e WHERE e.dept_id = d.id AND (e.ssn IN ({M:ssn=x})))",
	},
	{
		name:   "in subquery on plain column",
		sql:    "SELECT name FROM departments WHERE id IN (SELECT dept_id FROM employees WHERE ssn = 'x')",
		action: Rewrite,
		want:   "SELECT name FROM departments WHERE id IN (SELECT dept_id FROM employees WHERE (ssn IN ({M:ssn=x})))",
	},
	{
		name:   "having",
		sql:    "SELECT ssn, count(*) FROM employees GROUP BY ssn HAVING ssn = 'x'",
		action: Rewrite,
		want:   "SELECT ssn, count(*) FROM employees GROUP BY ssn HAVING (ssn IN ({M:ssn=x}))",
	},
	{
		name:   "union of plain outputs with protected predicates",
		sql:    "SELECT id FROM employees WHERE ssn = 'a' UNION SELECT id FROM employees WHERE ssn = 'b'",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (ssn IN ({M:ssn=a})) UNION SELECT id FROM employees WHERE (ssn IN ({M:ssn=b}))",
	},
	{
		name:   "filter clause",
		sql:    "SELECT count(*) FILTER (WHERE ssn = 'x') FROM employees",
		action: Rewrite,
		want:   "SELECT count(*) FILTER (WHERE (ssn IN ({M:ssn=x}))) FROM employees",
	},
	{
		name:   "same param twice same role",
		sql:    "SELECT id FROM employees WHERE ssn = $1 OR ssn = $1",
		action: Rewrite,
		want:   "SELECT id FROM employees WHERE (ssn = ANY($1::bytea[])) OR (ssn = ANY($1::bytea[]))",
		params: []wantParam{{1, "ssn", Match}},
	},
	{
		name:   "explain analyze rewrites",
		sql:    "EXPLAIN ANALYZE SELECT id FROM employees WHERE ssn = 'x'",
		action: Rewrite,
		want:   "EXPLAIN ANALYZE SELECT id FROM employees WHERE (ssn IN ({M:ssn=x}))",
	},
	{
		name:   "multi-statement query",
		sql:    "INSERT INTO employees (ssn) VALUES ('a'); SELECT id FROM employees WHERE ssn = 'a'; SELECT 1",
		action: Rewrite,
		want:   "INSERT INTO employees (ssn) VALUES ({W:ssn=a}); SELECT id FROM employees WHERE (ssn IN ({M:ssn=a})); SELECT 1",
	},
}

func TestRefusals(t *testing.T) {
	runCases(t, []planCase{
		{name: "order by randomized", sql: "SELECT id FROM employees ORDER BY salary", action: Refuse,
			refuse: "column public.employees.salary is encrypted (randomized): ORDER BY on it cannot be computed by the database"},
		{name: "order by deterministic", sql: "SELECT id FROM employees ORDER BY ssn DESC", action: Refuse, refuse: "employees.ssn is encrypted (deterministic): ORDER BY"},
		{name: "order by output alias", sql: "SELECT ssn AS x FROM employees ORDER BY x", action: Refuse, refuse: "ssn is encrypted (deterministic): ORDER BY"},
		{name: "order by position", sql: "SELECT id, salary FROM employees ORDER BY 2", action: Refuse, refuse: "salary is encrypted (randomized): ORDER BY"},
		{name: "order by star position", sql: "SELECT * FROM employees ORDER BY 3", action: Refuse, refuse: "ssn is encrypted (deterministic): ORDER BY"},
		{name: "equality randomized", sql: "SELECT id FROM employees WHERE salary = 10", action: Refuse, refuse: "salary is encrypted (randomized): equality (=) on it cannot be computed by the database (only deterministic columns can be searched)"},
		{name: "equality hsm", sql: "SELECT id FROM employees WHERE note = $1", action: Refuse, refuse: "note is encrypted (hsm): equality"},
		{name: "in randomized", sql: "SELECT id FROM employees WHERE salary IN (1, 2)", action: Refuse, refuse: "salary is encrypted (randomized): IN on it"},
		{name: "range", sql: "SELECT id FROM employees WHERE ssn > 'a'", action: Refuse, refuse: "ssn is encrypted (deterministic): the range comparison > on it cannot be computed"},
		{name: "between", sql: "SELECT id FROM employees WHERE hired BETWEEN '2020-01-01' AND '2021-01-01'", action: Refuse, refuse: "hired is encrypted (deterministic): the range comparison BETWEEN"},
		{name: "like", sql: "SELECT id FROM employees WHERE ssn LIKE '12%'", action: Refuse, refuse: "ssn is encrypted (deterministic): LIKE on it"},
		{name: "function in where", sql: "SELECT id FROM employees WHERE lower(ssn) = 'a'", action: Refuse, refuse: "the function lower() on it"},
		{name: "function in target", sql: "SELECT upper(ssn) FROM employees", action: Refuse, refuse: "the function upper() on it"},
		{name: "cast in target", sql: "SELECT salary::text FROM employees", action: Refuse, refuse: "a cast to text on it"},
		{name: "operator in target", sql: "SELECT salary + 1 FROM employees", action: Refuse, refuse: "the operator + on it"},
		{name: "case", sql: "SELECT CASE WHEN id = 1 THEN ssn END FROM employees", action: Refuse, refuse: "CASE on it"},
		{name: "coalesce", sql: "SELECT coalesce(ssn, 'none') FROM employees", action: Refuse, refuse: "COALESCE on it"},
		{name: "aggregate", sql: "SELECT sum(salary) FROM employees", action: Refuse, refuse: "the function sum() on it"},
		{name: "max deterministic", sql: "SELECT max(ssn) FROM employees", action: Refuse, refuse: "the function max() on it"},
		{name: "count distinct randomized", sql: "SELECT count(DISTINCT salary) FROM employees", action: Refuse, refuse: "count(DISTINCT) on it"},
		{name: "column to column", sql: "SELECT 1 FROM employees e JOIN hr.people p ON p.email = e.ssn", action: Refuse, refuse: "comparing it with another column"},
		{name: "column to plain column", sql: "SELECT 1 FROM employees e JOIN departments d ON d.name = e.ssn", action: Refuse, refuse: "ssn is encrypted (deterministic): comparing it with another column"},
		{name: "same column self join", sql: "SELECT 1 FROM employees a JOIN employees b ON a.ssn = b.ssn", action: Refuse, refuse: "comparing it with another column"},
		{name: "join using", sql: "SELECT 1 FROM employees JOIN departments USING (ssn)", action: Refuse, refuse: "ssn is encrypted (deterministic): JOIN USING"},
		{name: "natural join", sql: "SELECT 1 FROM employees NATURAL JOIN departments", action: Refuse, refuse: "NATURAL JOIN"},
		{name: "group by randomized", sql: "SELECT salary FROM employees GROUP BY salary", action: Refuse, refuse: "salary is encrypted (randomized): GROUP BY on it"},
		{name: "distinct randomized", sql: "SELECT DISTINCT note FROM employees", action: Refuse, refuse: "note is encrypted (hsm): SELECT DISTINCT"},
		{name: "partition by randomized", sql: "SELECT row_number() OVER (PARTITION BY salary) FROM employees", action: Refuse, refuse: "PARTITION BY"},
		{name: "window order", sql: "SELECT row_number() OVER (ORDER BY ssn) FROM employees", action: Refuse, refuse: "ORDER BY"},
		{name: "compare with expression", sql: "SELECT 1 FROM employees WHERE ssn = lower('A')", action: Refuse, refuse: "comparing it with an expression cannot be encrypted"},
		{name: "compare with subquery", sql: "SELECT 1 FROM employees WHERE ssn = (SELECT name FROM departments LIMIT 1)", action: Refuse, refuse: "comparing it with an expression"},
		{name: "in subquery", sql: "SELECT 1 FROM employees WHERE ssn IN (SELECT ssn FROM employees)", action: Refuse, refuse: "comparing it with a subquery"},
		{name: "scalar subquery output", sql: "SELECT (SELECT ssn FROM employees LIMIT 1)", action: Refuse, refuse: "a subquery returning it as a value"},
		{name: "union output", sql: "SELECT ssn FROM employees UNION SELECT name FROM departments", action: Refuse, refuse: "UNION with it in the result"},
		{name: "whole row", sql: "SELECT e FROM employees e", action: Refuse, refuse: "whole-row reference"},
		{name: "row_to_json star", sql: "SELECT row_to_json(e.*) FROM employees e", action: Refuse, refuse: "whole-row value"},
		{name: "insert function value", sql: "INSERT INTO employees (ssn) VALUES (lower('A'))", action: Refuse, refuse: "the value written to it is an expression the proxy cannot encrypt"},
		{name: "insert concatenation", sql: "INSERT INTO employees (ssn) VALUES ('a' || 'b')", action: Refuse, refuse: "the value written to it is an expression"},
		{name: "insert select", sql: "INSERT INTO employees (id, ssn) SELECT id, name FROM departments", action: Refuse, refuse: "INSERT ... SELECT would write values the proxy cannot encrypt"},
		{name: "insert select same column", sql: "INSERT INTO employees (ssn) SELECT ssn FROM employees", action: Refuse, refuse: "INSERT ... SELECT"},
		{name: "insert select ciphertext to plain", sql: "INSERT INTO departments (name) SELECT ssn FROM employees", action: Refuse, refuse: "copy its ciphertext"},
		{name: "update from another column", sql: "UPDATE employees SET ssn = name", action: Refuse, refuse: "the value written to it is an expression"},
		{name: "update copy to plain", sql: "UPDATE employees SET name = ssn", action: Refuse, refuse: "copying it into another column"},
		{name: "update other protected column", sql: "UPDATE employees SET ssn = note", action: Refuse, refuse: "ssn is encrypted (deterministic): the value written to it"},
		{name: "update subquery", sql: "UPDATE employees SET ssn = (SELECT name FROM departments LIMIT 1)", action: Refuse, refuse: "comes from a subquery"},
		{name: "excluded other column", sql: "INSERT INTO employees (ssn, note) VALUES ('a', 'b') ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.note", action: Refuse, refuse: "the value written to it"},
		{name: "on conflict randomized", sql: "INSERT INTO employees (salary) VALUES (1) ON CONFLICT (salary) DO NOTHING", action: Refuse, refuse: "ON CONFLICT on it"},
		{name: "param two roles", sql: "UPDATE employees SET ssn = $1 WHERE ssn = $1", action: Refuse, refuse: "parameter $1 is bound both to public.employees.ssn (write) and to public.employees.ssn (match)"},
		{name: "param two columns", sql: "SELECT 1 FROM employees WHERE ssn = $1 AND hired = $1", action: Refuse, refuse: "parameter $1 is bound both"},
		{name: "param used elsewhere", sql: "SELECT 1 FROM employees WHERE ssn = $1 OR name = $1", action: Refuse, refuse: "parameter $1 is bound to it and also used elsewhere"},
		{name: "unsupported cast", sql: "INSERT INTO employees (ssn) VALUES ('a'::varchar(3))", action: Refuse, refuse: "a value cast to varchar cannot be encrypted"},
		{name: "cast to other type", sql: "INSERT INTO employees (hired) VALUES ('1 day'::interval)", action: Refuse, refuse: "cast to interval"},
		{name: "bit string", sql: "INSERT INTO employees (ssn) VALUES (B'101')", action: Refuse, refuse: "expression"},
		{name: "select into", sql: "SELECT ssn INTO t2 FROM employees", action: Refuse, refuse: "SELECT INTO would copy its ciphertext"},
		{name: "create table as", sql: "CREATE TABLE t2 AS SELECT id, salary FROM employees", action: Refuse, refuse: "CREATE TABLE AS"},
		{name: "create view", sql: "CREATE VIEW v AS SELECT ssn FROM employees", action: Refuse, refuse: "a view over encrypted columns"},
		{name: "create view star", sql: "CREATE VIEW v AS SELECT * FROM employees", action: Refuse, refuse: "a view over encrypted columns"},
		{name: "create view plain columns", sql: "CREATE VIEW v AS SELECT id, name FROM employees", action: Pass},
		{name: "create view with predicate", sql: "CREATE VIEW v AS SELECT id FROM employees WHERE ssn = 'x'", action: Refuse, refuse: "a view over encrypted columns"},
		{name: "alter type", sql: "ALTER TABLE employees ALTER COLUMN ssn TYPE text", action: Refuse, refuse: "ssn is encrypted (deterministic): ALTER TABLE AlterColumnType on it"},
		{name: "alter default", sql: "ALTER TABLE employees ALTER COLUMN salary SET DEFAULT 0", action: Refuse, refuse: "ALTER TABLE ColumnDefault"},
		{name: "check constraint", sql: "ALTER TABLE employees ADD CONSTRAINT c CHECK (ssn <> '')", action: Refuse, refuse: "a constraint computing on it"},
		{name: "foreign key", sql: "ALTER TABLE employees ADD FOREIGN KEY (ssn) REFERENCES departments (ssn)", action: Refuse, refuse: "a foreign key on it"},
		{name: "rename column", sql: "ALTER TABLE employees RENAME COLUMN ssn TO ssn2", action: Refuse, refuse: "renaming it"},
		{name: "rename table", sql: "ALTER TABLE employees RENAME TO staff", action: Refuse, refuse: "table public.employees has encrypted columns: renaming it"},
		{name: "set schema", sql: "ALTER TABLE employees SET SCHEMA hr", action: Refuse, refuse: "moving it to another schema"},
		{name: "expression index", sql: "CREATE INDEX ON employees (lower(ssn))", action: Refuse, refuse: "an index on an expression of it"},
		{name: "unique index randomized", sql: "CREATE UNIQUE INDEX ON employees (salary)", action: Refuse, refuse: "a unique index on it"},
		{name: "merge", sql: "MERGE INTO employees e USING departments d ON d.id = e.id WHEN MATCHED THEN UPDATE SET ssn = 'x'", action: Refuse, refuse: "this kind of statement (MergeStmt)"},
		{name: "multi-statement one refused", sql: "SELECT 1; SELECT id FROM employees ORDER BY salary", action: Refuse, refuse: "ORDER BY"},
		{name: "cte refused inside", sql: "WITH x AS (SELECT salary FROM employees ORDER BY salary) SELECT 1", action: Refuse, refuse: "ORDER BY"},
		{name: "subquery column range", sql: "SELECT 1 FROM (SELECT ssn AS s FROM employees) x WHERE x.s > 'a'", action: Refuse, refuse: "ssn is encrypted (deterministic): the range comparison >"},
		{name: "lateral function on protected", sql: "SELECT * FROM employees e, LATERAL jsonb_each(e.note::jsonb)", action: Refuse, refuse: "a cast to jsonb on it"},
		{name: "any array", sql: "SELECT 1 FROM employees WHERE ssn = ANY($1)", action: Refuse, refuse: "= ANY (array) on it"},
		{name: "condition in target", sql: "SELECT ssn = 'x' FROM employees", action: Refuse, refuse: "the operator = on it"},
		{name: "collate", sql: "SELECT 1 FROM employees WHERE ssn = 'x' COLLATE \"C\"", action: Refuse, refuse: "comparing it with an expression"},
		{name: "empty in list param array cast", sql: "SELECT 1 FROM employees WHERE ssn IN ($1::text[])", action: Refuse, refuse: "cast to text"},
		{name: "prepare refused inner", sql: "PREPARE p AS SELECT 1 FROM employees ORDER BY salary", action: Refuse, refuse: "ORDER BY"},
		{name: "policy", sql: "CREATE POLICY p ON employees USING (ssn = current_user)", action: Refuse, refuse: "this kind of statement"},
	})
}

func TestCopy(t *testing.T) {
	cat := testCatalog()
	cases := []struct {
		name   string
		sql    string
		refuse string
		want   Copy
	}{
		{name: "from stdin text", sql: "COPY employees FROM STDIN", want: Copy{From: true, Schema: "public", Table: "employees", Format: "text", Delimiter: "\t", Null: `\N`, NumColumns: 7,
			Columns: []CopyColumn{{2, nil}, {3, nil}, {4, nil}, {6, nil}}}},
		{name: "from stdin csv columns", sql: "COPY employees (id, salary, ssn) FROM STDIN WITH (FORMAT csv, HEADER, DELIMITER ';', NULL 'NA', FORCE_NULL (ssn), FORCE_NOT_NULL (id))",
			want: Copy{From: true, Schema: "public", Table: "employees", Format: "csv", Delimiter: ";", Null: "NA", Quote: `"`, Escape: `"`, Header: true, ForceNull: []int{2}, ForceNotNull: []int{0}, NumColumns: 3,
				Columns: []CopyColumn{{1, nil}, {2, nil}}}},
		{name: "legacy csv syntax", sql: "COPY employees (ssn) FROM STDIN CSV QUOTE '''' ESCAPE '\\'",
			want: Copy{From: true, Schema: "public", Table: "employees", Format: "csv", Delimiter: ",", Quote: "'", Escape: `\`, NumColumns: 1, Columns: []CopyColumn{{0, nil}}}},
		{name: "to stdout", sql: "COPY employees (id, ssn) TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
			want: Copy{Schema: "public", Table: "employees", Format: "csv", Delimiter: ",", Quote: `"`, Escape: `"`, ForceQuoteAll: true, NumColumns: 2, Columns: []CopyColumn{{1, nil}}}},
		{name: "query to stdout", sql: "COPY (SELECT id, ssn AS s, name FROM employees WHERE ssn = 'x') TO STDOUT",
			want: Copy{Format: "text", Delimiter: "\t", Null: `\N`, NumColumns: 3, Columns: []CopyColumn{{1, nil}}}},
		{name: "binary from", sql: "COPY employees FROM STDIN (FORMAT binary)", refuse: "binary COPY is not supported"},
		{name: "binary legacy", sql: "COPY employees FROM STDIN BINARY", refuse: "binary COPY"},
		{name: "binary to", sql: "COPY employees TO STDOUT (FORMAT binary)", refuse: "binary COPY"},
		{name: "from server file", sql: "COPY employees FROM '/tmp/x.csv' CSV", refuse: "COPY FROM a server file or program would store plaintext"},
		{name: "from program", sql: "COPY employees (ssn) FROM PROGRAM 'cat x'", refuse: "COPY FROM a server file"},
		{name: "query not exact", sql: "COPY (SELECT * FROM employees, nowhere) TO STDOUT", refuse: "COPY (query) TO: the proxy cannot tell"},
		{name: "query refused", sql: "COPY (SELECT ssn FROM employees ORDER BY ssn) TO STDOUT", refuse: "ORDER BY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Analyze(tc.sql, cat, Options{})
			if tc.refuse != "" {
				if p.Action != Refuse || !strings.Contains(p.Refusal.Error(), tc.refuse) {
					t.Fatalf("got %v %v, want refusal %q", p.Action, p.Refusal, tc.refuse)
				}
				return
			}
			if p.Action != Rewrite || len(p.Statements) != 1 || p.Statements[0].Copy == nil {
				t.Fatalf("got %v %+v, want a COPY plan", p.Action, p.Refusal)
			}
			got := *p.Statements[0].Copy
			for i := range got.Columns {
				if got.Columns[i].Column == nil || got.Columns[i].Column.Protection.Type == 0 {
					t.Fatalf("column %d without protection", i)
				}
				got.Columns[i].Column = nil
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Fatalf("copy:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestCopyWhereEdits(t *testing.T) {
	sql := "COPY employees (id, ssn) FROM STDIN WHERE ssn <> 'x'"
	p := Analyze(sql, testCatalog(), Options{})
	if p.Action != Rewrite {
		t.Fatalf("action %v %v", p.Action, p.Refusal)
	}
	if got, want := show(sql, p), "COPY employees (id, ssn) FROM STDIN WHERE (ssn NOT IN ({M:ssn=x}))"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestPrepareExecute(t *testing.T) {
	cat := testCatalog()
	prep := "PREPARE ins (int, text, numeric) AS INSERT INTO employees (id, ssn, salary) VALUES ($1, $2, $3); PREPARE q(varchar(20)) AS SELECT id FROM employees WHERE ssn = $1"
	p := Analyze(prep, cat, Options{})
	if p.Action != Rewrite {
		t.Fatalf("action %v %v", p.Action, p.Refusal)
	}
	want := "PREPARE ins (int, bytea, bytea) AS INSERT INTO employees (id, ssn, salary) VALUES ($1, $2::bytea, $3::bytea); PREPARE q(bytea[]) AS SELECT id FROM employees WHERE (ssn = ANY($1::bytea[]))"
	if got := show(prep, p); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if len(p.Params) != 0 {
		t.Fatalf("PREPARE's parameters reported as the text's own: %v", p.Params)
	}
	checkRenders(t, prep, p)
	ins, q := p.Statements[0].Prepare, p.Statements[1].Prepare
	if ins == nil || ins.Name != "ins" || len(ins.Params) != 2 || ins.Params[0].N != 2 || ins.Params[1].Column.Column != "salary" {
		t.Fatalf("prepare ins = %+v", ins)
	}
	if q == nil || q.Name != "q" || len(q.Params) != 1 || q.Params[0].Role != Match {
		t.Fatalf("prepare q = %+v", q)
	}

	exec := "EXECUTE ins(1, 'a''b', -5.5); EXECUTE q ('x'::text); EXECUTE ins(2, NULL, lower('x'))"
	e := Analyze(exec, cat, Options{})
	if e.Action != Rewrite || len(e.Statements) != 3 {
		t.Fatalf("execute plan %v %v", e.Action, e.Refusal)
	}
	var edits []Edit
	for i, prepared := range []*Prepare{ins, q} {
		ed, ref := e.Statements[i].Execute.Bind(prepared)
		if ref != nil {
			t.Fatalf("bind %d: %v", i, ref)
		}
		edits = append(edits, ed...)
	}
	got := show(exec, &Plan{Edits: edits})
	if want := "EXECUTE ins(1, {W:ssn=a'b}, {W:salary=-5.5}); EXECUTE q (ARRAY[{M:ssn=x::text}]::bytea[]); EXECUTE ins(2, NULL, lower('x'))"; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	out, err := Render(exec, edits, fakeSeal)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Parse(out); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, ref := e.Statements[2].Execute.Bind(ins); ref == nil || !strings.Contains(ref.Error(), "salary is encrypted (randomized): the EXECUTE argument for it is an expression") {
		t.Fatalf("bind with expression: %v", ref)
	}
	if ed, ref := e.Statements[0].Execute.Bind(nil); ed != nil || ref != nil {
		t.Fatal("bind to an unknown prepared statement must bind nothing")
	}

	d := Analyze("DEALLOCATE ins; DISCARD ALL", cat, Options{})
	if d.Action != Rewrite || d.Statements[0].Deallocate.Name != "ins" || !d.Statements[1].Deallocate.All {
		t.Fatalf("deallocate plan %+v", d)
	}
	plain := Analyze("PREPARE p AS SELECT 1", cat, Options{})
	if plain.Action != Rewrite || plain.Statements[0].Prepare == nil || len(plain.Statements[0].Prepare.Params) != 0 {
		t.Fatalf("a plain PREPARE must still be reported (it replaces any earlier one): %+v", plain)
	}
}

func TestSearchPath(t *testing.T) {
	cat := testCatalog()
	sql := "SELECT id FROM people WHERE email = 'a'"
	if p := Analyze(sql, cat, Options{SearchPath: []string{"public"}}); p.Action != Pass {
		t.Fatalf("people is not on the default path: %v", p.Action)
	}
	if p := Analyze(sql, cat, Options{SearchPath: []string{"public", "hr"}}); p.Action != Rewrite {
		t.Fatalf("hr on the path: %v", p.Action)
	}
}

func TestValuesCarryColumn(t *testing.T) {
	sql := "INSERT INTO employees (ssn, salary) VALUES (E'x\\ty', 1e3)"
	p := Analyze(sql, testCatalog(), Options{})
	if p.Action != Rewrite || len(p.Values) != 2 {
		t.Fatalf("plan %+v", p)
	}
	ssn, sal := p.Values[0], p.Values[1]
	if ssn.Column.QualifiedName() != "public.employees.ssn" || ssn.Column.Scope != "payroll:employees.ssn" || ssn.Column.Type != coltype.Text || ssn.Column.Attnum != 3 {
		t.Fatalf("ssn column %+v", ssn.Column)
	}
	if ssn.Literal != (coltype.Literal{Kind: coltype.StringLiteral, Value: "x\ty"}) || sql[ssn.Start:ssn.End] != `E'x\ty'` {
		t.Fatalf("ssn value %+v %q", ssn.Literal, sql[ssn.Start:ssn.End])
	}
	if sal.Literal != (coltype.Literal{Kind: coltype.NumberLiteral, Value: "1e3"}) || sal.Role != Write {
		t.Fatalf("salary value %+v", sal)
	}
	// The literal goes through coltype as the proxy will do it.
	if _, err := coltype.ParseLiteral(sal.Column.Type, sal.Literal, &coltype.Session{}); err != nil {
		t.Fatalf("ParseLiteral: %v", err)
	}
}

func TestApply(t *testing.T) {
	got := Apply("abcdef", Replacement{4, 5, "E"}, Replacement{0, 1, "AA"}, Replacement{2, 2, "+"})
	if got != "AAb+cdEf" {
		t.Fatalf("Apply = %q", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("overlapping replacements must panic")
		}
	}()
	Apply("abc", Replacement{0, 2, "x"}, Replacement{1, 3, "y"})
}

func TestRender(t *testing.T) {
	sql := "SELECT 1 FROM employees WHERE ssn = 'x' AND id IN (SELECT id FROM employees WHERE hired = '2020-01-01')"
	p := Analyze(sql, testCatalog(), Options{})
	out, err := p.Render(sql, func(v *Value) ([][]byte, error) {
		return [][]byte{{0x4b, 0x57, 0x01}, {0xff}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `SELECT 1 FROM employees WHERE (ssn IN ('\x4b5701'::bytea, '\xff'::bytea)) AND id IN (SELECT id FROM employees WHERE (hired IN ('\x4b5701'::bytea, '\xff'::bytea)))`
	if out != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
	w := Analyze("INSERT INTO employees (ssn) VALUES ('a')", testCatalog(), Options{})
	if _, err := w.Render("INSERT INTO employees (ssn) VALUES ('a')", func(*Value) ([][]byte, error) { return [][]byte{{1}, {2}}, nil }); err == nil {
		t.Fatal("two envelopes for a Write value must be an error")
	}
	if _, err := Render("abc", []Edit{{Start: 2, End: 9}}, fakeSeal); err == nil {
		t.Fatal("out of range edit must be an error")
	}
}

func TestParamOIDs(t *testing.T) {
	p := Analyze("UPDATE employees SET ssn = $1 WHERE hired = $2", testCatalog(), Options{})
	if p.Param(1).OID() != 17 || p.Param(1).Array() || p.Param(2).OID() != 1001 || !p.Param(2).Array() || p.Param(3) != nil {
		t.Fatalf("params %+v", p.Params)
	}
	c := Analyze("SELECT 1 FROM employees WHERE ssn = $1::varchar", testCatalog(), Options{})
	if c.Param(1).Cast != "pg_catalog.varchar" {
		t.Fatalf("cast %q", c.Param(1).Cast)
	}
}

func TestEditsSortedAndDisjoint(t *testing.T) {
	sql := "INSERT INTO employees (ssn, note) VALUES ('a', 'b'), ('c', 'd') ON CONFLICT (id) DO UPDATE SET ssn = 'e' WHERE employees.ssn IN ('f', $1)"
	p := Analyze(sql, testCatalog(), Options{})
	if p.Action != Rewrite {
		t.Fatalf("%v %v", p.Action, p.Refusal)
	}
	if !sort.SliceIsSorted(p.Edits, func(i, j int) bool { return p.Edits[i].Start < p.Edits[j].Start }) {
		t.Fatal("edits not sorted")
	}
	checkRenders(t, sql, p)
}

func TestSearchPathChanges(t *testing.T) {
	p := Analyze(`SET search_path TO hr, "My Schema", '$user'; SET LOCAL search_path = DEFAULT; RESET search_path; RESET ALL; SET work_mem = '1MB'`, testCatalog(), Options{})
	if p.Action != Rewrite || len(p.Statements) != 5 {
		t.Fatalf("plan %v %v", p.Action, p.Refusal)
	}
	var got []string
	for _, st := range p.Statements {
		got = append(got, fmt.Sprintf("%+v", st.SearchPath))
	}
	want := `[&{Schemas:[hr My Schema $user] Default:false Local:false} &{Schemas:[] Default:true Local:true} &{Schemas:[] Default:true Local:false} &{Schemas:[] Default:true Local:false} <nil>]`
	if fmt.Sprint(got) != want {
		t.Fatalf("got  %v\nwant %s", got, want)
	}
}
