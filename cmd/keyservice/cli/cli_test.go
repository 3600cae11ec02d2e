package cli_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keyward/keyward/keyagent/backend/backendtest"
	"github.com/keyward/keyward/testenv"
)

// Tests of the built keyservice binary: the operator subcommands on a real SoftHSM2 token (and the
// software store), as an operator would run them.

func mustRun(t *testing.T, ks *testenv.KeyService, args ...string) string {
	t.Helper()
	out, err := ks.Run(args...)
	if err != nil {
		t.Fatalf("keyservice %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func mustFail(t *testing.T, ks *testenv.KeyService, want string, args ...string) {
	t.Helper()
	out, err := ks.Run(args...)
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("keyservice %s: want failure containing %q, got %v\n%s", strings.Join(args, " "), want, err, out)
	}
}

func TestKeyringLifecycle(t *testing.T) {
	for _, soft := range []bool{false, true} {
		name := map[bool]string{false: "softhsm", true: "soft"}[soft]
		t.Run(name, func(t *testing.T) {
			ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Soft: soft})
			if out := mustRun(t, ks, "keyring", "create", "payroll"); !strings.Contains(out, "created keyring=payroll kind=derive version=1") {
				t.Fatal(out)
			}
			mustRun(t, ks, "keyring", "create", "vault", "--kind", "hsm-aead")
			mustFail(t, ks, "exists", "keyring", "create", "payroll")
			mustFail(t, ks, "--kind", "keyring", "create", "x", "--kind", "rsa")
			kcv1 := mustRun(t, ks, "kcv", "--scope", "payroll:employees.ssn")
			if !regexp.MustCompile(`^scope=payroll:employees.ssn version=1 kcv=[0-9a-f]{6}\n$`).MatchString(kcv1) {
				t.Fatalf("kcv output: %q", kcv1)
			}
			if out := mustRun(t, ks, "keyring", "rotate", "payroll"); !strings.Contains(out, "version=2") {
				t.Fatal(out)
			}
			kcv2 := mustRun(t, ks, "kcv", "--scope", "payroll:employees.ssn")
			if !strings.Contains(kcv2, "version=2") || kcv2[len(kcv2)-7:] == kcv1[len(kcv1)-7:] {
				t.Fatalf("after rotate: %q (before %q)", kcv2, kcv1)
			}
			if again := mustRun(t, ks, "kcv", "--scope", "payroll:employees.ssn", "--version", "1"); again != kcv1 {
				t.Fatalf("version 1 changed: %q vs %q", again, kcv1)
			}
			mustRun(t, ks, "keyring", "disable", "payroll@2")
			list := mustRun(t, ks, "keyring", "list")
			for _, want := range []string{"NAME", "payroll  derive", "disabled", "vault    hsm-aead"} {
				if !strings.Contains(list, want) {
					t.Fatalf("list lacks %q:\n%s", want, list)
				}
			}
			mustFail(t, ks, "NAME@VERSION", "keyring", "disable", "payroll")
			// destroy asks for confirmation
			cmd := exec.Command(testenv.Binary(t, "keyservice"), "keyring", "destroy", "payroll@2", "--config", ks.Config)
			cmd.Env = ks.Env
			cmd.Stdin = strings.NewReader("no\n")
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not confirmed") {
				t.Fatalf("destroy without confirmation: %v %s", err, out)
			}
			mustRun(t, ks, "keyring", "destroy", "payroll@2", "--yes")
			mustFail(t, ks, "not found", "kcv", "--scope", "payroll:employees.ssn", "--version", "2")
			mustFail(t, ks, "not found", "kcv", "--scope", "nosuch:x")
		})
	}
}

func TestBYOKImportWithOpenSSL(t *testing.T) {
	for _, c := range []struct {
		name       string
		soft       bool
		wrapping   string
		hash       string
		wantFailed string
	}{
		{"softhsm sha1", false, "RSA_AES_KEY_WRAP_SHA_1", "sha1", ""},
		{"softhsm sha256 unsupported", false, "RSA_AES_KEY_WRAP_SHA_256", "sha256", "does not support"},
		{"soft sha256", true, "RSA_AES_KEY_WRAP_SHA_256", "sha256", ""},
		{"soft wrong oaep hash", true, "RSA_AES_KEY_WRAP_SHA_1", "sha256", "bundle"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Soft: c.soft})
			pemFile := filepath.Join(t.TempDir(), "import.pem")
			if out := mustRun(t, ks, "import-key", "--out", pemFile); !strings.Contains(out, "RSA-3072") {
				t.Fatal(out)
			}
			data, _ := os.ReadFile(pemFile)
			blk, _ := pem.Decode(data)
			pubAny, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			pub := pubAny.(*rsa.PublicKey)
			secret := make([]byte, 32)
			rand.Read(secret)
			bundle := filepath.Join(t.TempDir(), "bundle.bin")
			os.WriteFile(bundle, backendtest.Bundle(t, pub, secret, c.hash), 0o600)
			args := []string{"keyring", "import", "onprem", "--bundle", bundle, "--wrapping", c.wrapping}
			if c.wantFailed != "" {
				mustFail(t, ks, c.wantFailed, args...)
				return
			}
			out := mustRun(t, ks, args...)
			want := "kcv=" + backendtest.OpenSSLKCV(t, secret)
			if !strings.Contains(out, want) {
				t.Fatalf("import printed %q, want %s (KCV of the original secret)", out, want)
			}
			// A truncated bundle is refused clearly.
			short := filepath.Join(t.TempDir(), "short.bin")
			os.WriteFile(short, backendtest.Bundle(t, pub, secret, c.hash)[:300], 0o600)
			mustFail(t, ks, "bundle", "keyring", "import", "other", "--bundle", short, "--wrapping", c.wrapping)
		})
	}
}

func TestBackupRoundTrip(t *testing.T) {
	ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Keyrings: []string{"payroll"}})
	dir := t.TempDir()
	wrap := filepath.Join(dir, "customer.key")
	k := make([]byte, 32)
	rand.Read(k)
	os.WriteFile(wrap, k, 0o600)
	blob := filepath.Join(dir, "backup.bin")
	mustRun(t, ks, "backup", "export", "--scope", "payroll:employees.ssn", "--wrap-key", wrap, "--out", blob)
	out := mustRun(t, ks, "backup", "restore", "--in", blob, "--wrap-key", wrap)
	kcv := mustRun(t, ks, "kcv", "--scope", "payroll:employees.ssn")
	_, want, _ := strings.Cut(strings.TrimSpace(kcv), " version=1 ") // "kcv=<hex>"
	if !strings.Contains(out, "scope=payroll:employees.ssn version=1 "+want+" verified=true") {
		t.Fatalf("restore %q does not match %q", out, kcv)
	}
	other := filepath.Join(dir, "other.key")
	rand.Read(k)
	os.WriteFile(other, k, 0o600)
	mustFail(t, ks, "", "backup", "restore", "--in", blob, "--wrap-key", other)
}

func TestStartupErrorsAreClear(t *testing.T) {
	hsm := testenv.SoftHSM(t)
	bin := testenv.Binary(t, "keyservice")
	dir := t.TempDir()
	wrongPin := filepath.Join(dir, "wrong.pin")
	os.WriteFile(wrongPin, []byte("000000\n"), 0o600)
	cases := []struct{ name, config, want string }{
		{"module not found", "version: 1\nbackend:\n  pkcs11: {module: /nonexistent/lib.so, token_label: x, pin_file: " + hsm.PinFile + "}\n", "/nonexistent/lib.so"},
		{"token not found", "version: 1\nbackend:\n  pkcs11: {module: " + hsm.Module + ", token_label: nosuch, pin_file: " + hsm.PinFile + "}\n", "nosuch"},
		{"wrong pin", "version: 1\nbackend:\n  pkcs11: {module: " + hsm.Module + ", token_label: " + hsm.TokenLabel + ", pin_file: " + wrongPin + "}\n", "PIN"},
		{"unknown key", "version: 1\nbackend:\n  pkcs11: {module: m, token_label: t, pin_file: p, pin: 1234}\n", `backend.pkcs11.pin`},
		{"no backend", "version: 1\nlisten: 127.0.0.1:1\n", `key "backend"`},
		{"wrong version", "version: 3\n", "unsupported version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml")
			os.WriteFile(cfg, []byte(c.config), 0o600)
			cmd := exec.Command(bin, "keyring", "list", "--config", cfg)
			cmd.Env = hsm.Env()
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("want an error naming %q, got %v: %s", c.want, err, out)
			}
			if strings.Contains(string(out), hsm.UserPin) {
				t.Fatal("the PIN appears in the output")
			}
		})
	}
	// serve: a bad grants file and a missing certificate name the problem.
	ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Soft: true})
	os.WriteFile(ks.Grants, []byte("version: 1\nnodes:\n  n: {scopes: [\"pay*:x\"], ops: [derive]}\n"), 0o644)
	ks.Stop()
	cmd := exec.Command(bin, "serve", "--config", ks.Config)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "grants") || !strings.Contains(string(out), "pay*:x") {
		t.Fatalf("bad grants: %v %s", err, out)
	}
}
