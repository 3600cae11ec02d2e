package analyze

import (
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// The proxy analyzes each distinct statement text once (callers cache plans by text), so these
// measure the cost of a cache miss: the common pass-through case and a typical rewrite.

func benchAnalyze(b *testing.B, sql string, want Action) {
	cat := testCatalog()
	if p := Analyze(sql, cat, Options{}); p.Action != want {
		b.Fatalf("action %v, want %v", p.Action, want)
	}
	b.ReportAllocs()
	for b.Loop() {
		Analyze(sql, cat, Options{})
	}
}

func BenchmarkAnalyzePassNoProtectedTable(b *testing.B) {
	benchAnalyze(b, "SELECT d.id, d.name FROM departments d JOIN orders o ON o.dept_id = d.id WHERE d.name = $1 ORDER BY d.id LIMIT 50", Pass)
}

func BenchmarkAnalyzePassProtectedTable(b *testing.B) {
	benchAnalyze(b, "SELECT e.id, e.ssn, e.salary, d.name FROM employees e JOIN departments d ON d.id = e.dept_id WHERE e.id = $1", Pass)
}

func BenchmarkAnalyzeRewriteInsert(b *testing.B) {
	benchAnalyze(b, "INSERT INTO employees (id, name, ssn, salary, hired) VALUES (1, 'Ann', '123-45-6789', 5200.50, '2024-01-02'::date) ON CONFLICT (ssn) DO UPDATE SET salary = EXCLUDED.salary RETURNING id", Rewrite)
}

func BenchmarkAnalyzeRewriteSelect(b *testing.B) {
	benchAnalyze(b, "SELECT id, ssn, salary FROM employees WHERE ssn = $1 AND hired IN ('2024-01-02', '2024-01-03')", Rewrite)
}

func BenchmarkRender(b *testing.B) {
	sql := "INSERT INTO employees (id, name, ssn, salary, hired) VALUES (1, 'Ann', '123-45-6789', 5200.50, '2024-01-02'::date)"
	p := Analyze(sql, testCatalog(), Options{})
	env := make([]byte, 60)
	seal := func(*Value) ([][]byte, error) { return [][]byte{env}, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Render(sql, seal); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseOnly is the parser's share (cgo and protobuf decoding) of the figures above.
func BenchmarkParseOnly(b *testing.B) {
	sql := "SELECT d.id, d.name FROM departments d JOIN orders o ON o.dept_id = d.id WHERE d.name = $1 ORDER BY d.id LIMIT 50"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pg.Parse(sql); err != nil {
			b.Fatal(err)
		}
	}
}
