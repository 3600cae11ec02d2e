package grants

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/keyward/keyward/keyagent/confile"
	"github.com/keyward/keyward/testenv"
)

func TestAllowed(t *testing.T) {
	g, err := Load("testdata/grants.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const web7 = "spiffe://keyward/node/web-7"
	tests := []struct {
		name     string
		identity string
		scope    string
		op       Op
		want     bool
		reason   string
	}{
		{"web-7 derives payroll", web7, "payroll:employees.ssn", OpDerive, true, `granted derive on "payroll:*"`},
		{"web-7 derives its volume", web7, "boot:volume/web-7/data", OpDerive, true, `"boot:volume/web-7/*"`},
		{"web-7 not another volume", web7, "boot:volume/web-8/data", OpDerive, false, `not granted scope`},
		{"web-7 hsm encrypt", web7, "payroll:x", OpEncrypt, true, ""},
		{"web-7 no status", web7, "", OpStatus, false, `not granted status`},
		{"db-1 derive", "node-db-1", "payroll:x", OpDerive, true, ""},
		{"db-1 no hsm decrypt", "node-db-1", "payroll:x", OpDecrypt, false, `not granted decrypt`},
		{"db-1 other keyring", "node-db-1", "payroll2:x", OpDerive, false, `not granted scope`},
		{"monitor status", "monitor-1", "", OpStatus, true, ""},
		{"monitor no derive", "monitor-1", "payroll:x", OpDerive, false, ""},
		{"vault decrypt", "vault-node", "vault:cards.pan", OpDecrypt, true, ""},
		{"unknown node", "spiffe://keyward/node/web-9", "payroll:x", OpDerive, false, `has no grants`},
		{"case matters", "NODE-DB-1", "payroll:x", OpDerive, false, `has no grants`},
		{"empty identity", "", "payroll:x", OpDerive, false, ""},
		{"unknown op", "node-db-1", "payroll:x", Op("rotate"), false, `unknown op`},
		{"bad scope", "node-db-1", "payroll", OpDerive, false, `bad scope`},
		{"pattern as scope", "node-db-1", "payroll:*", OpDerive, false, `bad scope`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := g.Allowed(tt.identity, tt.scope, tt.op)
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Fatalf("Allowed = %v %q, want %v containing %q", got, reason, tt.want, tt.reason)
			}
		})
	}
	var none *Grants
	if ok, _ := none.Allowed("node-db-1", "payroll:x", OpDerive); ok {
		t.Fatal("nil grants allowed")
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"version", "version: 3\nnodes: {}\n", []string{`g.yaml:1: key "version"`}},
		{"unknown key", "version: 1\nnode: {}\n", []string{`g.yaml:2: key "node": unknown key`}},
		{"unknown node key", "version: 1\nnodes:\n  a: {scopes: [\"p:*\"], ops: [derive], ttl: 5}\n", []string{`g.yaml:3:`, `unknown key`}},
		{"bad op", "version: 1\nnodes:\n  a: {scopes: [\"p:*\"], ops: [derive, unwrap]}\n", []string{`g.yaml:3: key "nodes.a.ops[1]": bad op "unwrap"`}},
		{"bad pattern", "version: 1\nnodes:\n  a:\n    scopes: [\"p*\"]\n    ops: [derive]\n", []string{`g.yaml:4: key "nodes.a.scopes[0]": bad scope pattern`}},
		{"no scopes", "version: 1\nnodes:\n  a: {ops: [derive]}\n", []string{`key "nodes.a": node has no scopes`}},
		{"no ops", "version: 1\nnodes:\n  a: {scopes: [\"p:*\"]}\n", []string{`node has no ops`}},
		{"duplicate node", "version: 1\nnodes:\n  a: {scopes: [\"p:*\"], ops: [derive]}\n  a: {scopes: [\"q:*\"], ops: [derive]}\n", []string{`g.yaml:4:`, `already defined`}},
		{"pattern identity", "version: 1\nnodes:\n  \"spiffe://keyward/*\": {scopes: [\"p:*\"], ops: [derive]}\n", []string{`node identities are literal`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("g.yaml", []byte(tt.yaml))
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

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIdentity(t *testing.T) {
	ca := testenv.NewCA(t)
	tests := []struct {
		name string
		cn   string
		sans []string
		want string
	}{
		{"uri san wins", "web-7", []string{"spiffe://keyward/node/web-7", "web-7.example"}, "spiffe://keyward/node/web-7"},
		{"cn without uri", "node-db-1", []string{"db-1.example", "127.0.0.1"}, "node-db-1"},
		{"cn only", "node-db-2", nil, "node-db-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, _ := ca.Issue(t, tt.cn, tt.sans...)
			if got := Identity(readCert(t, certFile)); got != tt.want {
				t.Fatalf("Identity = %q, want %q", got, tt.want)
			}
		})
	}
	if Identity(nil) != "" {
		t.Fatal("Identity(nil)")
	}
}
