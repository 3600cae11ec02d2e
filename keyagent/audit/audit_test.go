package audit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

func TestAppendMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 28, 5, 30, 1, 123456789, time.UTC)
	cases := map[string]audit.Event{
		"empty":   {Time: at},
		"agent":   {Time: at, Service: "keyagent", CallerUID: audit.U32(0), CallerGID: audit.U32(991), CallerPID: 4242, CallerExe: "/usr/local/bin/colcrypt", Principal: "colcrypt-proxy", OnBehalfOf: "db:alice", Scope: "payroll:employees.ssn", Version: 3, Op: "decrypt", Decision: audit.Allow, Upstream: "cache", DurationUS: 17},
		"service": {Time: at.In(time.FixedZone("x", 3600)), Service: "keyservice", Node: "spiffe://keyward/node/web-7", Scope: "vault:a b", Op: "derive", Decision: audit.Deny, Reason: "no grant"},
		"escapes": {Time: at, Reason: "quote \" backslash \\ ctl \x01\x1f nl \n tab \t <html> & bad \xff\xfe utf8 é \u2028\u2029 😀", Scope: "s:\x00"},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.AppendJSON(nil); string(got) != string(want) {
				t.Fatalf("AppendJSON:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("db:alice", "payroll:x", "reason \x00 \xff <>&")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		e := audit.Event{Time: time.Unix(0, 0).UTC(), OnBehalfOf: a, Scope: b, Reason: c, Op: "decrypt", Decision: audit.Deny}
		want, _ := json.Marshal(e)
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("got %s want %s", got, want)
		}
	})
}

// failingWriter fails every write after the first n.
type failingWriter struct {
	mu sync.Mutex
	n  int
	b  bytes.Buffer
}

func (f *failingWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return f.b.Write(p)
}

func TestWriteFailureReachesItsCallers(t *testing.T) {
	w := &failingWriter{n: 1}
	l := audit.New(w)
	if err := l.Write(audit.Event{Op: "decrypt", Decision: audit.Allow}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failures atomic.Int32
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Write(audit.Event{Op: "decrypt", Decision: audit.Allow}); err != nil {
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	if failures.Load() != 20 {
		t.Fatalf("%d of 20 writes after the disk filled reported an error, want all", failures.Load())
	}
}
