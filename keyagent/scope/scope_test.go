package scope

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyward/keyward/keyagent/kdf"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		in      string
		want    bool
	}{
		{"literal equal", "payroll:employees.ssn", "payroll:employees.ssn", true},
		{"literal differs", "payroll:employees.ssn", "payroll:employees.sal", false},
		{"literal prefix only", "payroll:employees", "payroll:employees.ssn", false},
		{"keyring star", "payroll:*", "payroll:employees.ssn", true},
		{"keyring star other ring", "payroll:*", "payroll2:x", false},
		{"keyring star empty rest", "payroll:*", "payroll:", true},
		{"star crosses slash", "boot:volume/web-7/*", "boot:volume/web-7/a/b", true},
		{"star not other host", "boot:volume/web-7/*", "boot:volume/web-70/data", false},
		{"identity", "db:*", "db:alice", true},
		{"identity other prefix", "db:*", "dbx:alice", false},
		{"star alone", "*", "anything:at/all", true},
		{"star alone empty", "*", "", true},
		{"leading star", "*:public.*", "hr:public.names", true},
		{"leading star no match", "*:public.*", "hr:private.names", false},
		{"two middle parts in order", "a*b*c", "axxbyyc", true},
		{"middle parts out of order", "a*b*c", "acb", false},
		{"overlap first and last", "ab*ba", "aba", false},
		{"first and last adjacent", "ab*ba", "abba", true},
		{"repeated middle greedy leftmost", "a*aa*a", "aaaa", true},
		{"repeated middle too short", "a*aa*a", "aaa", false},
		{"double star", "a**b", "ab", true},
		{"question mark literal", "a?c", "abc", false},
		{"question mark itself", "a?c", "a?c", true},
		{"case sensitive", "db:Alice", "db:alice", false},
		{"utf8", "hr:é*", "hr:éa", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := compile(tt.pattern)
			if got := p.Match(tt.in); got != tt.want {
				t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.in, got, tt.want)
			}
			if got := reference(tt.pattern).MatchString(tt.in); got != tt.want {
				t.Fatalf("reference disagrees with the table for %q on %q", tt.pattern, tt.in)
			}
		})
	}
}

func TestZeroPatternMatchesNothing(t *testing.T) {
	var p Pattern
	for _, s := range []string{"", "a", "*"} {
		if p.Match(s) {
			t.Errorf("zero Pattern matched %q", s)
		}
	}
}

func reference(p string) *regexp.Regexp {
	parts := strings.Split(p, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile(`^(?s:` + strings.Join(parts, ".*") + `)$`)
}

// FuzzMatch checks the linear matcher against a regular expression.
func FuzzMatch(f *testing.F) {
	f.Add("a*b*c", "axxbyyc")
	f.Add("ab*ba", "aba")
	f.Add("a*aa*a", "aaaa")
	f.Add("payroll:*", "payroll:x")
	f.Fuzz(func(t *testing.T, pattern, in string) {
		// Patterns and inputs are validated UTF-8 before they are matched;
		// the reference regexp cannot compile anything else.
		if len(pattern) > 64 || len(in) > 256 || !utf8.ValidString(pattern) || !utf8.ValidString(in) {
			return
		}
		got := compile(pattern).Match(in)
		if want := reference(pattern).MatchString(in); got != want {
			t.Fatalf("%q.Match(%q) = %v, regexp says %v", pattern, in, got, want)
		}
	})
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		scope string
		ok    bool
	}{
		{"column", "payroll:employees.ssn", true},
		{"volume", "boot:volume/web-7/data", true},
		{"quoted identifier with space", `hr:"my table".col`, true},
		{"keyring chars", "a.b_c-9:x", true},
		{"keyring upper case", "Payroll:x", false},
		{"keyring leading dash", "-p:x", false},
		{"no colon", "payroll", false},
		{"empty keyring", ":x", false},
		{"empty name", "payroll:", false},
		{"star", "payroll:*", false},
		{"bad keyring char", "pay/roll:x", false},
		{"tab", "payroll:a\tb", false},
		{"newline", "payroll:a\nb", false},
		{"invalid utf8", "payroll:\xff", false},
		{"too long", "p:" + strings.Repeat("x", MaxScopeLen), false},
		{"keyring too long", strings.Repeat("k", MaxKeyringLen+1) + ":x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.scope)
			if (err == nil) != tt.ok {
				t.Fatalf("Check(%q) = %v, want ok=%v", tt.scope, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestCheckIdentity(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"principal", "boot-unlock", true},
		{"db role", "db:alice", true},
		{"spiffe", "spiffe://keyward/node/web-7", true},
		{"empty", "", false},
		{"space", "db:al ice", false},
		{"star", "db:*", false},
		{"control", "db:\x00", false},
		{"too long", strings.Repeat("a", MaxIdentityLen+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckIdentity(tt.id); (err == nil) != tt.ok {
				t.Fatalf("CheckIdentity(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}

func TestCompileScope(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		ok      bool
	}{
		{"ring star", "payroll:*", true},
		{"literal", "payroll:employees.salary", true},
		{"any ring", "*:public.*", true},
		{"volume", "boot:volume/web-7/*", true},
		{"no colon", "payroll*", false},
		{"keyring prefix", "pay*:x", false},
		{"empty name", "payroll:", false},
		{"empty", "", false},
		{"space in keyring", "pay roll:x", false},
		{"newline", "payroll:\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CompileScope(tt.pattern)
			if (err == nil) != tt.ok {
				t.Fatalf("CompileScope(%q) = %v, want ok=%v", tt.pattern, err, tt.ok)
			}
			if err == nil && p.String() != tt.pattern {
				t.Fatalf("String() = %q, want %q", p.String(), tt.pattern)
			}
		})
	}
}

func TestCompile(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		ok      bool
	}{
		{"db star", "db:*", true},
		{"star", "*", true},
		{"literal", "boot-unlock", true},
		{"empty", "", false},
		{"space", "db: *", false},
		{"too long", strings.Repeat("a", MaxIdentityLen+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.pattern)
			if (err == nil) != tt.ok {
				t.Fatalf("Compile(%q) = %v, want ok=%v", tt.pattern, err, tt.ok)
			}
			if err == nil && p.Literal() != !strings.Contains(tt.pattern, "*") {
				t.Fatalf("Literal() = %v for %q", p.Literal(), tt.pattern)
			}
		})
	}
}

func TestKeyring(t *testing.T) {
	if got := Keyring("payroll:employees.ssn"); got != "payroll" {
		t.Fatalf("Keyring = %q", got)
	}
	if got := Keyring("nocolon"); got != "" {
		t.Fatalf("Keyring(nocolon) = %q", got)
	}
}

// TestKeyringRuleMatchesKDF keeps the copy of the keyring rule in step with
// the key service's.
func TestKeyringRuleMatchesKDF(t *testing.T) {
	for _, ring := range []string{"payroll", "boot", "a", "a.b_c-9", "0x", "Payroll", "-p", ".p", "_p", "p/q", "p q", "", "é",
		strings.Repeat("k", 63), strings.Repeat("k", 64)} {
		mine := checkKeyring(ring) == nil
		theirs := kdf.CheckKeyring(ring) == nil
		if mine != theirs {
			t.Errorf("keyring %q: scope says ok=%v, kdf says ok=%v", ring, mine, theirs)
		}
	}
}
