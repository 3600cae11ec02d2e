package cli_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/testenv"
	"github.com/keyward/keyward/volume/luks2"
	"github.com/keyward/keyward/volume/luks2/luks2test"
)

const policyTmpl = `version: 1
principals:
  volumectl: {uid: 0, exe: %[1]s}
  tester:    {uid: 0, exe: %[2]s}
roles:
  boot: {grants: [{scopes: ["boot:volume/*"], ops: [decrypt]}]}
members:
  volumectl: [boot]
  tester: [boot]
cache: {ttl: 1ms, offline_grace: 0s, max_keys: 64}
`

const (
	scope    = "boot:volume/test/data"
	recovery = "recovery passphrase"
)

type fixture struct {
	t      *testing.T
	bin    string
	cs     string
	ks     *testenv.KeyService
	agent  *testenv.Agent
	dir    string
	backup string
}

func newFixture(t *testing.T) *fixture {
	if os.Geteuid() != 0 {
		t.Skip("the policy names uid 0")
	}
	f := &fixture{t: t, cs: testenv.Require(t, "cryptsetup"), bin: testenv.Binary(t, "volumectl"), dir: t.TempDir()}
	f.backup = filepath.Join(f.dir, "backups")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, _ = filepath.EvalSymlinks(self)
	f.ks = testenv.StartKeyService(t, testenv.KeyServiceOptions{Soft: true, Keyrings: []string{"boot"}})
	f.agent = testenv.StartAgent(t, testenv.AgentOptions{Policy: fmt.Sprintf(policyTmpl, f.bin, self), KeyServices: []*testenv.KeyService{f.ks}})
	return f
}

// image makes a LUKS2 image with the real cryptsetup; keyslot 0 opens with the recovery passphrase.
func (f *fixture) image(name string) string {
	p := filepath.Join(f.dir, name)
	luks2test.Format(f.t, f.cs, p, recovery)
	return p
}

// volumectl runs the built binary and returns its output and exit code.
func (f *fixture) volumectl(env []string, args ...string) (string, int) {
	return f.volumectlIn("", env, args...)
}

func (f *fixture) volumectlIn(stdin string, env []string, args ...string) (string, int) {
	f.t.Helper()
	cmd := exec.Command(f.bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		f.t.Fatal(err)
	}
	return string(out), 0
}

func (f *fixture) must(args ...string) string {
	f.t.Helper()
	out, code := f.volumectl(nil, append(args, "--socket", f.agent.Socket)...)
	if code != 0 {
		f.t.Fatalf("volumectl %v: exit %d\n%s\nagent log:\n%s", args, code, out, f.agent.Log())
	}
	return out
}

// expected computes, independently of volume/bind, the passphrase the keyward keyslot must have:
// hex(HMAC-SHA256(DK, "keyward-luks2-v1" || 0 || uuid)), DK fetched in-process from the agent.
func (f *fixture) expected(path string, version uint32) string {
	f.t.Helper()
	c := client.New(f.agent.Socket)
	defer c.Close()
	dk, _, err := c.GetKey(context.Background(), scope, version, "")
	if err != nil {
		f.t.Fatal(err)
	}
	defer dk.Destroy()
	var out string
	_ = dk.Use(func(k []byte) error {
		m := hmac.New(sha256.New, k)
		m.Write([]byte("keyward-luks2-v1\x00" + uuid(f.t, path)))
		out = hex.EncodeToString(m.Sum(nil))
		return nil
	})
	return out
}

func uuid(t *testing.T, path string) string {
	out, err := exec.Command("cryptsetup", "luksUUID", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func (f *fixture) testPassphrase(path, pass string, slot int) error {
	return luks2test.TestPassphrase(f.cs, path, pass, slot)
}

// TestVolumectl runs the built binary against a real key service (software backend) and agent; the
// subtests share them, since building and starting them is most of the cost.
func TestVolumectl(t *testing.T) {
	f := newFixture(t)
	t.Run("lifecycle", func(t *testing.T) { f.t = t; lifecycle(t, f) })
	t.Run("errors", func(t *testing.T) { f.t = t; errorCases(t, f) })
	t.Run("static", func(t *testing.T) { static(t, f.bin) })
}

// static checks that volumectl fits an initramfs: a static executable (no ELF interpreter) that
// imports nothing needing cgo (the PKCS#11 backend, the Postgres parser).
func static(t *testing.T, bin string) {
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("volumectl is dynamically linked")
		}
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "./cmd/volumectl")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "pkcs11") || strings.Contains(dep, "pg_query") || dep == "runtime/cgo" || dep == "C" {
			t.Errorf("volumectl depends on %s", dep)
		}
	}
}

func lifecycle(t *testing.T, f *fixture) {
	img := f.image("disk.img")
	keyFile := filepath.Join(f.dir, "recovery.key")
	os.WriteFile(keyFile, []byte(recovery), 0o600)

	out := f.must("enroll", img, "--scope", scope, "--unlock-key-file", keyFile, "--backup-dir", f.backup)
	if !strings.Contains(out, "keyslot 1, token 0, "+scope+" version 1") {
		t.Fatalf("enroll said %q", out)
	}
	if b, _ := filepath.Glob(filepath.Join(f.backup, "*.luks2hdr")); len(b) != 1 {
		t.Fatalf("backups: %v", b)
	}
	// The real cryptsetup opens the keyward keyslot with the passphrase the spec says, and only it.
	if err := f.testPassphrase(img, f.expected(img, 1), 1); err != nil {
		t.Fatalf("cryptsetup --test-passphrase on the enrolled keyslot: %v", err)
	}
	if err := f.testPassphrase(img, f.expected(img, 1), 0); err == nil {
		t.Fatal("the derived passphrase opens the recovery keyslot")
	}
	if err := f.testPassphrase(img, recovery, 0); err != nil {
		t.Fatalf("recovery keyslot: %v", err)
	}

	if out := f.must("unlock", img, "--test"); !strings.Contains(out, "keyslot 1 opens with "+scope+" version 1") {
		t.Fatalf("unlock --test said %q", out)
	}
	if out := f.must("unlock", img, "--test", "--cryptsetup"); !strings.Contains(out, "keyslot 1 opens") {
		t.Fatalf("unlock --test --cryptsetup said %q", out)
	}
	// The socket rule: $KEYWARD_AGENT_SOCKET when there is no --socket.
	if out, code := f.volumectl([]string{"KEYWARD_AGENT_SOCKET=" + f.agent.Socket}, "unlock", img, "--test"); code != 0 {
		t.Fatalf("with KEYWARD_AGENT_SOCKET: exit %d: %s", code, out)
	}
	status := f.must("status", img)
	for _, want := range []string{"uuid:", uuid(t, img), "passphrase (recovery)", "keyward: " + scope + " version 1 (token 0)", "both copies valid"} {
		if !strings.Contains(status, want) {
			t.Fatalf("status lacks %q:\n%s", want, status)
		}
	}

	if out, err := f.ks.Run("keyring", "rotate", "boot"); err != nil {
		t.Fatalf("keyring rotate: %v\n%s", err, out)
	}
	out = f.must("rotate", img, "--backup-dir", f.backup)
	if !strings.Contains(out, "version 2") || !strings.Contains(out, "removed keyslot 1, token 0 (version 1)") {
		t.Fatalf("rotate said %q", out)
	}
	if out := f.must("unlock", img, "--test"); !strings.Contains(out, scope+" version 2") {
		t.Fatalf("unlock --test after rotate said %q", out)
	}
	if err := f.testPassphrase(img, f.expected(img, 2), 2); err != nil {
		t.Fatalf("cryptsetup on the rotated keyslot: %v", err)
	}
	if out := f.must("rotate", img, "--backup-dir", f.backup); !strings.Contains(out, "already holds") {
		t.Fatalf("second rotate said %q", out)
	}
	status = f.must("status", img)
	if strings.Contains(status, "version 1") || !strings.Contains(status, "version 2") {
		t.Fatalf("status after rotate:\n%s", status)
	}
}

func errorCases(t *testing.T, f *fixture) {
	scope := "boot:volume/test/errors"
	base := f.image("base.img")
	enrolled := f.image("enrolled.img")
	keyFile := filepath.Join(f.dir, "recovery.key")
	os.WriteFile(keyFile, []byte(recovery), 0o600)
	f.must("enroll", enrolled, "--scope", scope, "--unlock-key-file", keyFile, "--backup-dir", f.backup)
	if out, err := f.ks.Run("keyring", "rotate", "boot"); err != nil {
		t.Fatalf("keyring rotate: %v\n%s", err, out)
	}
	// Tamper with the token: claim the next version (which exists now) for the keyslot.
	tampered := filepath.Join(f.dir, "tampered.img")
	b, _ := os.ReadFile(enrolled)
	os.WriteFile(tampered, b, 0o600)
	retag(t, tampered)
	plain := filepath.Join(f.dir, "plain.img")
	os.WriteFile(plain, make([]byte, 1<<20), 0o600)

	sock := []string{"--socket", f.agent.Socket}
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		want  string
		stdin string
	}{
		{"wrong recovery on stdin", append([]string{"enroll", base, "--scope", scope, "--unlock-key-file", "-", "--backup-dir", f.backup}, sock...), 1, "the existing passphrase opens no keyslot", "not it"},
		{"wrong recovery line", append([]string{"enroll", base, "--scope", scope, "--backup-dir", f.backup}, sock...), 1, "the existing passphrase opens no keyslot", recovery + "x\n"},
		{"not luks2", append([]string{"unlock", plain, "--test"}, sock...), 1, "not a LUKS2 volume", ""},
		{"status not luks2", []string{"status", plain}, 1, "not a LUKS2 volume", ""},
		{"no token", append([]string{"unlock", base, "--test"}, sock...), 5, "no keyward token", ""},
		{"agent unreachable", []string{"unlock", enrolled, "--test", "--socket", filepath.Join(f.dir, "nowhere.sock")}, 3, "agent unreachable", ""},
		{"wrong key", append([]string{"unlock", tampered, "--test"}, sock...), 5, "wrong key", ""},
		{"wrong key cryptsetup", append([]string{"unlock", tampered, "--test", "--cryptsetup"}, sock...), 5, "wrong key", ""},
		{"denied scope", append([]string{"enroll", base, "--scope", "boot:other/x", "--unlock-key-file", keyFile, "--backup-dir", f.backup}, sock...), 4, "denied", ""},
		{"already enrolled", append([]string{"enroll", enrolled, "--scope", scope, "--unlock-key-file", keyFile, "--backup-dir", f.backup}, sock...), 1, "already enrolled", ""},
		{"empty recovery", append([]string{"enroll", base, "--scope", scope, "--unlock-key-file", "/dev/null", "--backup-dir", f.backup}, sock...), 2, "empty", ""},
		{"no scope", append([]string{"enroll", base}, sock...), 2, "--scope is required", ""},
		{"unlock without name", append([]string{"unlock", enrolled}, sock...), 2, "want DEVICE NAME", ""},
		{"lock unknown", []string{"lock", "keyward-test-none"}, 1, "dm: ", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := f.volumectlIn(tc.stdin, nil, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d; output %q, want it to contain %q", code, tc.code, out, tc.want)
			}
		})
	}
	// Nothing was written by the failed commands.
	if err := f.testPassphrase(base, recovery, 0); err != nil {
		t.Fatal(err)
	}
	if out, _ := f.volumectl(nil, "status", base); !strings.Contains(out, "not enrolled") {
		t.Fatalf("a failed enroll left a binding:\n%s", out)
	}
	// The recovery passphrase as one line on stdin (what a prompt reads) enrolls.
	if out, code := f.volumectlIn(recovery+"\n", nil, append([]string{"enroll", base, "--scope", scope, "--backup-dir", f.backup}, sock...)...); code != 0 {
		t.Fatalf("enroll with the passphrase on stdin: exit %d: %s", code, out)
	}
}

// retag rewrites the keyward token with the next key version, as a tampered header would.
func retag(t *testing.T, path string) {
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	v, err := luks2.Open(fh)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := v.KeywardTokens()
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokens %v %v", toks, err)
	}
	version := 0
	for id, tok := range toks {
		version = tok.Version + 1
		if err := v.RemoveToken(fh, id); err != nil {
			t.Fatal(err)
		}
		raw := fmt.Sprintf(`{"type":"keyward","keyslots":["%d"],"scope":%q,"version":%d}`, tok.Keyslots[0], tok.Scope, version)
		if _, err := v.AddToken(fh, []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Contains(v.MetadataJSON(), []byte(fmt.Sprintf(`"version":%d`, version))) {
		t.Fatal("retag did not take")
	}
}
