package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/keyagent/confile"
)

func loadTest(t testing.TB) *Policy {
	t.Helper()
	p, err := Load("testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	proxy    = Caller{UID: 991, GID: 991, PID: 100, Exe: "/usr/local/bin/colcrypt"}
	volume   = Caller{UID: 0, GID: 0, PID: 101, Exe: "/usr/local/bin/volumectl"}
	operator = Caller{UID: 1000, GID: 1000, PID: 102, Exe: "/usr/bin/keyagent"}
	batch    = Caller{UID: 992, GID: 992, PID: 103, Exe: "/opt/batch/run"}
)

func TestDecide(t *testing.T) {
	p := loadTest(t)
	tests := []struct {
		name      string
		req       Request
		allowed   bool
		rule      string
		principal string
		identity  string
	}{
		{"proxy for alice decrypts payroll", Request{proxy, "db:alice", "payroll:employees.ssn", OpDecrypt}, true, "roles.payroll.grants[0]", "colcrypt-proxy", "db:alice"},
		{"proxy for alice encrypts payroll", Request{proxy, "db:alice", "payroll:employees.ssn", OpEncrypt}, true, "roles.payroll.grants[0]", "colcrypt-proxy", "db:alice"},
		{"alice outside her keyring", Request{proxy, "db:alice", "hr:names", OpDecrypt}, false, DenyNoGrant, "colcrypt-proxy", "db:alice"},
		{"bob decrypts salary", Request{proxy, "db:bob", "payroll:employees.salary", OpDecrypt}, true, "roles.analyst.grants[0]", "colcrypt-proxy", "db:bob"},
		{"bob may not encrypt salary", Request{proxy, "db:bob", "payroll:employees.salary", OpEncrypt}, false, DenyNoGrant, "colcrypt-proxy", "db:bob"},
		{"bob may not read ssn", Request{proxy, "db:bob", "payroll:employees.ssn", OpDecrypt}, false, DenyNoGrant, "colcrypt-proxy", "db:bob"},
		{"member without roles", Request{proxy, "db:eve", "payroll:employees.ssn", OpDecrypt}, false, DenyNoGrant, "colcrypt-proxy", "db:eve"},
		{"proxy acts for itself without grants", Request{proxy, "", "payroll:employees.ssn", OpDecrypt}, false, DenyNoGrant, "colcrypt-proxy", "colcrypt-proxy"},
		{"act_for outside pattern", Request{proxy, "boot-unlock", "boot:volume/web-7/data", OpDecrypt}, false, DenyActFor, "colcrypt-proxy", ""},
		{"wrong exe", Request{Caller{UID: 991, GID: 991, Exe: "/tmp/colcrypt"}, "db:alice", "payroll:employees.ssn", OpDecrypt}, false, DenyNoPrincipal, "", ""},
		{"unreadable exe", Request{Caller{UID: 991, GID: 991}, "db:alice", "payroll:employees.ssn", OpDecrypt}, false, DenyNoPrincipal, "", ""},
		{"wrong uid", Request{Caller{UID: 5000, Exe: "/usr/local/bin/colcrypt"}, "db:alice", "payroll:employees.ssn", OpDecrypt}, false, DenyNoPrincipal, "", ""},
		{"boot unlock own volume", Request{volume, "", "boot:volume/web-7/data", OpDecrypt}, true, "roles.boot.grants[0]", "boot-unlock", "boot-unlock"},
		{"boot unlock acting for itself by name", Request{volume, "boot-unlock", "boot:volume/web-7/data", OpDecrypt}, true, "roles.boot.grants[0]", "boot-unlock", "boot-unlock"},
		{"boot unlock other host", Request{volume, "", "boot:volume/web-70/data", OpDecrypt}, false, DenyNoGrant, "boot-unlock", "boot-unlock"},
		{"boot unlock may not encrypt", Request{volume, "", "boot:volume/web-7/data", OpEncrypt}, false, DenyNoGrant, "boot-unlock", "boot-unlock"},
		{"boot unlock may not act for db", Request{volume, "db:alice", "payroll:x", OpDecrypt}, false, DenyActFor, "boot-unlock", ""},
		{"operator status", Request{operator, "", "", OpStatus}, true, "principals.operator.admin", "operator", "operator"},
		{"operator purge", Request{operator, "", "", OpPurge}, true, "principals.operator.admin", "operator", "operator"},
		{"operator wrong gid", Request{Caller{UID: 1000, GID: 0}, "", "", OpStatus}, false, DenyNoPrincipal, "", ""},
		{"monitor status", Request{Caller{UID: 1001}, "", "", OpStatus}, true, "principals.monitor.admin", "monitor", "monitor"},
		{"monitor may not purge", Request{Caller{UID: 1001}, "", "", OpPurge}, false, DenyNotAdmin, "monitor", "monitor"},
		{"proxy may not purge", Request{proxy, "", "", OpPurge}, false, DenyNotAdmin, "colcrypt-proxy", "colcrypt-proxy"},
		{"admin is not delegated", Request{proxy, "db:alice", "", OpStatus}, false, DenyActFor, "colcrypt-proxy", ""},
		{"operator has no keys", Request{operator, "", "payroll:employees.ssn", OpDecrypt}, false, DenyNoGrant, "operator", "operator"},
		{"batch pattern act_for", Request{batch, "db:batch-1", "hr:names", OpDecrypt}, true, "roles.reports.grants[0]", "batch", "db:batch-1"},
		{"second role second grant", Request{batch, "db:batch-1", "sales:public.leads", OpEncrypt}, true, "roles.reports.grants[1]", "batch", "db:batch-1"},
		{"grant op filters", Request{batch, "db:batch-1", "sales:public.leads", OpDecrypt}, false, DenyNoGrant, "batch", "db:batch-1"},
		{"literal act_for", Request{batch, "svc:reports", "hr:x", OpDecrypt}, true, "roles.reports.grants[0]", "batch", "svc:reports"},
		{"batch not db:alice", Request{batch, "db:alice", "payroll:x", OpDecrypt}, false, DenyActFor, "batch", ""},
		{"bad scope", Request{proxy, "db:alice", "payroll", OpDecrypt}, false, DenyBadRequest, "", ""},
		{"star in scope", Request{proxy, "db:alice", "payroll:*", OpDecrypt}, false, DenyBadRequest, "", ""},
		{"bad identity", Request{proxy, "db:*", "payroll:x", OpDecrypt}, false, DenyBadRequest, "", ""},
		{"unknown op", Request{proxy, "db:alice", "payroll:x", Op("derive")}, false, DenyBadRequest, "", ""},
		{"empty op", Request{proxy, "db:alice", "payroll:x", ""}, false, DenyBadRequest, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.req)
			if d.Allowed != tt.allowed || d.Rule != tt.rule || d.Principal != tt.principal || d.Identity != tt.identity {
				t.Fatalf("Decide = %+v\nwant allowed=%v rule=%q principal=%q identity=%q", d, tt.allowed, tt.rule, tt.principal, tt.identity)
			}
			if d.Reason == "" {
				t.Fatal("no reason")
			}
			ex := p.Explain(tt.req)
			want := "decision:  DENY"
			if tt.allowed {
				want = "decision:  ALLOW"
			}
			if !strings.Contains(ex, want) || !strings.Contains(ex, "rule:      "+tt.rule) {
				t.Fatalf("Explain does not agree with Decide:\n%s", ex)
			}
		})
	}
}

func TestNilPolicyDenies(t *testing.T) {
	var p *Policy
	if d := p.Decide(Request{Caller: proxy, Scope: "a:b", Op: OpDecrypt}); d.Allowed || d.Rule != DenyNoPolicy {
		t.Fatalf("nil policy: %+v", d)
	}
}

// TestUnionOfPrincipals: two principals match one caller; either may allow.
func TestUnionOfPrincipals(t *testing.T) {
	p, err := Parse("u.yaml", []byte(`version: 1
principals:
  a: {uid: 7}
  b: {uid: 7, exe: /bin/b, act_for: ["db:*"]}
roles:
  r: {grants: [{scopes: ["k:*"], ops: [decrypt]}]}
members:
  "db:x": [r]
`))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decide(Request{Caller{UID: 7, Exe: "/bin/b"}, "db:x", "k:1", OpDecrypt})
	if !d.Allowed || d.Principal != "b" {
		t.Fatalf("union: %+v", d)
	}
	d = p.Decide(Request{Caller{UID: 7, Exe: "/bin/other"}, "db:x", "k:1", OpDecrypt})
	if d.Allowed || d.Principal != "a" || d.Rule != DenyActFor {
		t.Fatalf("only a matches: %+v", d)
	}
}

func TestExplainTrace(t *testing.T) {
	p := loadTest(t)
	ex := p.Explain(Request{proxy, "db:bob", "payroll:employees.ssn", OpDecrypt})
	for _, want := range []string{
		`principal boot-unlock: no match: uid 0, caller has 991`,
		`principal colcrypt-proxy: matches the caller`,
		`acts for db:bob via act_for "db:*"`,
		`roles.analyst.grants[0]: scopes [payroll:employees.salary] do not match "payroll:employees.ssn"`,
		`decision:  DENY`,
		`identity:  db:bob`,
		`version ` + p.Version(),
	} {
		if !strings.Contains(ex, want) {
			t.Errorf("Explain lacks %q:\n%s", want, ex)
		}
	}
}

func TestDecideAllowAllocatesNothing(t *testing.T) {
	p := loadTest(t)
	req := Request{proxy, "db:alice", "payroll:employees.ssn", OpDecrypt}
	allocs := testing.AllocsPerRun(200, func() {
		if !p.Decide(req).Allowed {
			t.Fatal("denied")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per allowed decision", allocs)
	}
}

func TestCacheAndVersion(t *testing.T) {
	p := loadTest(t)
	if c := p.Cache(); c.TTL != 2*time.Minute || c.OfflineGrace != 10*time.Minute || c.MaxKeys != 64 {
		t.Fatalf("cache %+v", c)
	}
	if len(p.Version()) != 12 {
		t.Fatalf("version %q", p.Version())
	}
	q, err := Parse("min.yaml", []byte("version: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := q.Cache(); c.TTL != DefaultTTL || c.OfflineGrace != DefaultOfflineGrace || c.MaxKeys != DefaultMaxKeys {
		t.Fatalf("defaults %+v", c)
	}
	if q.Version() == p.Version() {
		t.Fatal("different files, same version")
	}
	if d := q.Decide(Request{proxy, "", "a:b", OpDecrypt}); d.Allowed {
		t.Fatal("empty policy allowed a request")
	}
}

func TestWarnings(t *testing.T) {
	p, err := Parse("w.yaml", []byte(`version: 1
principals:
  a: {uid: 1}
roles:
  used: {grants: [{scopes: ["k:*"], ops: [decrypt]}]}
  unused: {grants: [{scopes: ["k:*"], ops: [decrypt]}]}
members:
  a: [used]
  "db:orphan": [used]
`))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(p.Warnings(), "\n")
	if !strings.Contains(w, `w.yaml:9: member "db:orphan"`) || !strings.Contains(w, "w.yaml:6: role unused is held by no member") {
		t.Fatalf("warnings:\n%s", w)
	}
	if strings.Contains(w, "role used") {
		t.Fatalf("warning about a held role:\n%s", w)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error
	}{
		{"version 2", "version: 2\n", []string{`bad.yaml:1: key "version"`}},
		{"no version", "principals: {}\n", []string{`key "version": missing`}},
		{"unknown top key", "version: 1\nprincipal: {}\n", []string{`bad.yaml:2: key "principal": unknown key`}},
		{"unknown principal key", "version: 1\nprincipals:\n  a: {uid: 1, exec: /bin/x}\n", []string{`bad.yaml:3:`, `unknown key`}},
		{"principal without uid", "version: 1\nprincipals:\n  a: {exe: /bin/x}\n", []string{`bad.yaml:3: key "principals.a": principal has no uid`}},
		{"negative uid", "version: 1\nprincipals:\n  a: {uid: -1}\n", []string{`bad.yaml:3:`}},
		{"uid not a number", "version: 1\nprincipals:\n  a: {uid: root}\n", []string{`bad.yaml:3:`}},
		{"relative exe", "version: 1\nprincipals:\n  a: {uid: 1, exe: bin/x}\n", []string{`bad.yaml:3: key "principals.a.exe"`}},
		{"bad act_for", "version: 1\nprincipals:\n  a:\n    uid: 1\n    act_for: [\"db: x\"]\n", []string{`bad.yaml:5: key "principals.a.act_for[0]": bad identity pattern`}},
		{"bad admin op", "version: 1\nprincipals:\n  a: {uid: 1, admin: [status, reboot]}\n", []string{`key "principals.a.admin[1]": bad admin op "reboot"`}},
		{"bad principal name", "version: 1\nprincipals:\n  \"a b\": {uid: 1}\n", []string{`bad principal name`}},
		{"duplicate principal", "version: 1\nprincipals:\n  a: {uid: 1}\n  a: {uid: 2}\n", []string{`bad.yaml:4:`, `already defined`}},
		{"role without grants", "version: 1\nroles:\n  r: {grants: []}\n", []string{`bad.yaml:3: key "roles.r": role has no grants`}},
		{"bad scope pattern", "version: 1\nroles:\n  r:\n    grants:\n      - scopes: [\"pay*:x\"]\n        ops: [decrypt]\n", []string{`bad.yaml:5: key "roles.r.grants[0].scopes[0]": bad scope pattern`}},
		{"scope without keyring", "version: 1\nroles:\n  r: {grants: [{scopes: [payroll], ops: [decrypt]}]}\n", []string{`key "roles.r.grants[0].scopes[0]"`}},
		{"bad op", "version: 1\nroles:\n  r: {grants: [{scopes: [\"p:*\"], ops: [decrypt, derive]}]}\n", []string{`key "roles.r.grants[0].ops[1]": bad op "derive"`}},
		{"admin op in grant", "version: 1\nroles:\n  r: {grants: [{scopes: [\"p:*\"], ops: [purge]}]}\n", []string{`bad op "purge"`}},
		{"grant without ops", "version: 1\nroles:\n  r: {grants: [{scopes: [\"p:*\"]}]}\n", []string{`grant has no ops`}},
		{"grant without scopes", "version: 1\nroles:\n  r: {grants: [{ops: [decrypt]}]}\n", []string{`grant has no scopes`}},
		{"unknown grant key", "version: 1\nroles:\n  r: {grants: [{scope: [\"p:*\"], ops: [decrypt]}]}\n", []string{`bad.yaml:3:`, `unknown key`}},
		{"unknown role in members", "version: 1\nmembers:\n  \"db:a\": [payrol]\n", []string{`bad.yaml:3: key "members.db:a[0]": unknown role "payrol"`}},
		{"pattern member", "version: 1\nroles:\n  r: {grants: [{scopes: [\"p:*\"], ops: [decrypt]}]}\nmembers:\n  \"db:*\": [r]\n", []string{`key "members.db:*": members are literal identities`}},
		{"member without roles", "version: 1\nmembers:\n  \"db:a\": []\n", []string{`member has no roles`}},
		{"duplicate member", "version: 1\nroles:\n  r: {grants: [{scopes: [\"p:*\"], ops: [decrypt]}]}\nmembers:\n  \"db:a\": [r]\n  \"db:a\": [r]\n", []string{`already defined`}},
		{"bad ttl", "version: 1\ncache: {ttl: 5 minutes}\n", []string{`bad.yaml:2: key "cache.ttl"`}},
		{"zero ttl", "version: 1\ncache: {ttl: 0s}\n", []string{`key "cache.ttl"`}},
		{"negative grace", "version: 1\ncache: {offline_grace: -1m}\n", []string{`key "cache.offline_grace"`}},
		{"max_keys zero", "version: 1\ncache: {max_keys: 0}\n", []string{`key "cache.max_keys": want 1 to`}},
		{"unknown cache key", "version: 1\ncache: {tll: 5m}\n", []string{`unknown key`}},
		{"several problems at once", "version: 1\nprincipals:\n  a: {}\nroles:\n  r: {grants: [{scopes: [x], ops: [y]}]}\n", []string{`principal has no uid`, `bad scope pattern`, `bad op "y"`}},
		{"not a mapping", "- a\n- b\n", []string{`bad.yaml`}},
		{"empty", "", []string{`bad.yaml`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			var ce *confile.Error
			if !errors.As(err, &ce) {
				t.Errorf("error is not a *confile.Error: %T", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
