package columns

import (
	"testing"
	"time"

	"github.com/keyward/keyward/colcrypt/analyze"
	"github.com/keyward/keyward/colcrypt/proxy"
)

func TestContainsFold(t *testing.T) {
	for _, c := range []struct {
		s, sub string
		want   bool
	}{
		{"SELECT * FROM Employees", "employees", true},
		{"select * from public.EMPLOYEES e", "employees", true},
		{`select * from "employees"`, "employees", true},
		{"select * from employee", "employees", false},
		{"select 1", "employees", false},
		{`select * from U&"\0065mployees"`, "u&", true},
		{"", "x", false},
	} {
		if got := containsFold(c.s, c.sub); got != c.want {
			t.Errorf("containsFold(%q, %q) = %v", c.s, c.sub, got)
		}
	}
}

// FuzzCopyText checks the COPY text-format codec: any value survives escaping, splitting and
// unescaping, whatever bytes it holds.
func FuzzCopyText(f *testing.F) {
	for _, s := range []string{"", "a\tb", "back\\slash", "new\nline\r", `\N`, "\x00\x01\xff", "\\x41"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		line := escapeText(nil, []byte(a), '\t')
		line = append(line, '\t')
		line = escapeText(line, []byte(b), '\t')
		if end := rowEnd(append(line, '\n'), false, 0, 0); end != len(line) {
			t.Fatalf("row end at %d, want %d", end, len(line))
		}
		fields := splitText(nil, line, '\t')
		if len(fields) != 2 || string(unescapeText(fields[0])) != a || string(unescapeText(fields[1])) != b {
			t.Fatalf("%q, %q -> %q", a, b, fields)
		}
	})
}

// FuzzCopyCSV checks that a csv field quoted as COPY TO quotes it splits and unquotes back.
func FuzzCopyCSV(f *testing.F) {
	for _, s := range []string{"", "a,b", `q"uote`, "multi\nline", `\.`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		q := []byte{'"'}
		for _, c := range []byte(v) {
			if c == '"' {
				q = append(q, '"')
			}
			q = append(q, c)
		}
		q = append(q, '"')
		line := append(append([]byte("x,"), q...), ",y"...)
		if end := rowEnd(append(line, '\n'), true, '"', '"'); end != len(line) {
			t.Fatalf("row end at %d, want %d", end, len(line))
		}
		fields := splitCSV(nil, line, ',', '"', '"')
		if len(fields) != 3 {
			t.Fatalf("%q split into %q", line, fields)
		}
		got, quoted := unquoteCSV(fields[1], '"', '"')
		if !quoted || string(got) != v {
			t.Fatalf("%q -> %q", v, got)
		}
	})
}

// TestRowEndCSV: rows end where PostgreSQL's csv reader ends them, with the escape defaulting to the
// quote (QUOTE set, ESCAPE not).
func TestRowEndCSV(t *testing.T) {
	for _, c := range []struct {
		name string
		cp   analyze.Copy
		in   string
		want int
	}{
		{"default quote", analyze.Copy{Format: "csv"}, "1,\"a\nb\"\"\"\n2\n", 9},
		{"quote set, escape not", analyze.Copy{Format: "csv", Quote: "'"}, "1,'a\"'\n2,'b'\n", 6},
		{"quote and escape set", analyze.Copy{Format: "csv", Quote: "'", Escape: "\\"}, "1,'a\\'\n'\n2\n", 8},
		{"incomplete", analyze.Copy{Format: "csv"}, "1,\"a\n", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, e := csvChars(&c.cp)
			if got := rowEnd([]byte(c.in), true, q, e); got != c.want {
				t.Fatalf("rowEnd(%q) = %d, want %d", c.in, got, c.want)
			}
		})
	}
}

// TestClockAfterReadyForQuery: the first row after a ReadyForQuery reads the clock, whatever the
// row count, so cached ciphers are not used past their expiry after an idle period.
func TestClockAfterReadyForQuery(t *testing.T) {
	ss := &session{}
	for range 5 {
		ss.tick()
	}
	stale := time.Now().Add(-time.Hour)
	ss.now = stale
	ss.Backend(&proxy.BackendMessage{Type: 'Z', Raw: []byte{'Z', 0, 0, 0, 5, 'I'}})
	ss.tick()
	if !ss.now.After(stale) {
		t.Fatalf("clock not read at the first row after ReadyForQuery")
	}
}
