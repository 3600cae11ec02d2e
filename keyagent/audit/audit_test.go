package audit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keyward/keyward/keyagent/audit"
)

func TestLinesAreWholeAndFieldsFixed(t *testing.T) {
	var buf bytes.Buffer
	l := audit.New(&buf)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.Write(audit.Event{Service: "keyagent", CallerUID: audit.U32(0), Scope: "payroll:employees.ssn", Op: "decrypt", Decision: audit.Deny, Reason: "no grant"})
		}()
	}
	wg.Wait()
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v", n, err)
		}
		for _, k := range []string{"time", "service", "caller_uid", "scope", "op", "decision", "reason"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("line %d lacks %q: %s", n, k, sc.Text())
			}
		}
		if _, ok := m["node"]; ok {
			t.Fatalf("empty field not omitted: %s", sc.Text())
		}
		n++
	}
	if n != 50 {
		t.Fatalf("%d lines, want 50", n)
	}
}

func TestOpenAppendsWithPrivateMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	for i := 0; i < 2; i++ {
		l, err := audit.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Write(audit.Event{Service: "keyservice", Op: "derive", Decision: audit.Allow}); err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	data, _ := os.ReadFile(p)
	if bytes.Count(data, []byte("\n")) != 2 {
		t.Fatalf("want 2 lines: %s", data)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}
