package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/testenv"
)

const goodPolicy = `version: 1
principals:
  colcrypt-proxy: {uid: 991, exe: /usr/local/bin/colcrypt, act_for: ["db:*"]}
roles:
  payroll: {grants: [{scopes: ["payroll:*"], ops: [encrypt, decrypt]}]}
  analyst: {grants: [{scopes: ["payroll:employees.salary"], ops: [decrypt]}]}
members:
  "db:alice": [payroll]
  "db:bob":   [analyst]
`

func keyagent(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(testenv.Binary(t, "keyagent"), args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(goodPolicy), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(goodPolicy, `"db:bob":   [analyst]`, `"db:bob":   [analysts]`, 1)), 0o644)
	if out, code := keyagent(t, "policy", "check", good); code != 0 || !strings.Contains(out, "ok (version") {
		t.Fatalf("good policy: %d %s", code, out)
	}
	out, code := keyagent(t, "policy", "check", bad)
	if code != 1 || !strings.Contains(out, "bad.yaml:") || !strings.Contains(out, "analysts") {
		t.Fatalf("bad policy: want exit 1 naming the file, line and role, got %d %s", code, out)
	}
}

func TestPolicyExplain(t *testing.T) {
	p := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(p, []byte(goodPolicy), 0o644)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"alice allowed", []string{"--uid", "991", "--exe", "/usr/local/bin/colcrypt", "--as", "db:alice", "--scope", "payroll:employees.ssn"}, 0, "roles.payroll.grants[0]"},
		{"bob denied", []string{"--uid", "991", "--exe", "/usr/local/bin/colcrypt", "--as", "db:bob", "--scope", "payroll:employees.ssn"}, 1, "no-grant"},
		{"wrong exe", []string{"--uid", "991", "--exe", "/tmp/evil", "--as", "db:alice", "--scope", "payroll:employees.ssn"}, 1, "no-principal"},
		{"missing uid", []string{"--scope", "payroll:x"}, 2, "--uid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := keyagent(t, append([]string{"policy", "explain", "--policy", p}, c.args...)...)
			if code != c.code || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s", code, c.code, c.want, out)
			}
		})
	}
}

func TestGetNeedsKCVAndReportsUnreachableAgent(t *testing.T) {
	if out, code := keyagent(t, "get", "--scope", "payroll:x"); code != 2 || !strings.Contains(out, "--kcv") {
		t.Fatalf("get without --kcv: %d %s", code, out)
	}
	out, code := keyagent(t, "get", "--kcv", "--scope", "payroll:x", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(out, "unavailable") {
		t.Fatalf("unreachable agent: %d %s", code, out)
	}
}
