package agent_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/keyagent/kdf"
	"github.com/keyward/keyward/testenv"
)

type stack struct {
	ks    *testenv.KeyService
	agent *testenv.Agent
	user  [2]uint32 // the unprivileged user
}

const policyTmpl = `version: 1
principals:
  proxy:  {uid: 0, exe: %[1]s, act_for: ["db:*"], admin: [status, purge]}
  tester: {uid: 0, exe: %[2]s, act_for: ["db:*"]}
  user:   {uid: %[3]d, exe: %[1]s}
roles:
  payroll: {grants: [{scopes: ["payroll:*"], ops: [encrypt, decrypt]}]}
  analyst: {grants: [{scopes: ["payroll:employees.salary"], ops: [decrypt]}]}
  vault:   {grants: [{scopes: ["vault:*"], ops: [encrypt, decrypt]}]}
  boot:    {grants: [{scopes: ["boot:volume/web-7/*"], ops: [decrypt]}]}
members:
  "db:alice": [payroll, vault]
  "db:bob":   [analyst]
  user: [boot]
cache: {ttl: %[4]s, offline_grace: %[5]s, max_keys: 64}
`

func policy(t *testing.T, agentBin string, uid uint32, ttl, grace string) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, _ = filepath.EvalSymlinks(self)
	return fmt.Sprintf(policyTmpl, agentBin, self, uid, ttl, grace)
}

func newStack(t *testing.T, ttl, grace string, extra ...*testenv.KeyService) *stack {
	t.Helper()
	s := &stack{}
	uid, gid, _ := testenv.Unprivileged(t)
	s.user = [2]uint32{uid, gid}
	s.ks = testenv.StartKeyService(t, testenv.KeyServiceOptions{Keyrings: []string{"payroll", "boot", "vault:hsm-aead"}})
	bin := testenv.Binary(t, "keyagent")
	s.agent = testenv.StartAgent(t, testenv.AgentOptions{
		Policy:      policy(t, bin, uid, ttl, grace),
		KeyServices: append([]*testenv.KeyService{s.ks}, extra...),
	})
	return s
}

// serviceKCV is the KCV the key service computes itself for scope.
func (s *stack) serviceKCV(t *testing.T, scope string) string {
	out, err := s.ks.Run("kcv", "--scope", scope)
	if err != nil {
		t.Fatalf("keyservice kcv: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

func (s *stack) derives(t *testing.T) int {
	data, _ := os.ReadFile(s.ks.AuditFile)
	return strings.Count(string(data), `"op":"derive","decision":"allow"`)
}

func TestAgentDecisions(t *testing.T) {
	s := newStack(t, "5m", "15m")
	root := &[2]uint32{0, 0}
	cases := []struct {
		name    string
		cred    *[2]uint32
		bin     string
		args    []string
		allowed bool
		reason  string
	}{
		{"proxy acts for alice", root, "", []string{"--scope", "payroll:employees.ssn", "--as", "db:alice"}, true, ""},
		{"bob lacks the grant", root, "", []string{"--scope", "payroll:employees.ssn", "--as", "db:bob"}, false, "no"},
		{"bob has salary", root, "", []string{"--scope", "payroll:employees.salary", "--as", "db:bob"}, true, ""},
		{"act_for outside its pattern", root, "", []string{"--scope", "payroll:employees.ssn", "--as", "svc:x"}, false, "act"},
		{"unprivileged user for itself", &s.user, "", []string{"--scope", "boot:volume/web-7/data"}, true, ""},
		{"unprivileged user acting for alice", &s.user, "", []string{"--scope", "payroll:employees.ssn", "--as", "db:alice"}, false, "act"},
		{"unprivileged user, other scope", &s.user, "", []string{"--scope", "payroll:employees.ssn"}, false, "no"},
		{"uid not in the policy", &[2]uint32{65534, 65534}, "", []string{"--scope", "boot:volume/web-7/data"}, false, "principal"},
		{"exe mismatch", root, "copy", []string{"--scope", "payroll:employees.ssn", "--as", "db:alice"}, false, "principal"},
	}
	copyBin := filepath.Join(testenv.SharedDir(t), "keyagent-copy")
	data, _ := os.ReadFile(s.agent.Bin())
	os.WriteFile(copyBin, data, 0o755)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if os.Geteuid() != 0 && c.cred != nil {
				t.Skip("needs root to run as other users")
			}
			args := append([]string{"get", "--kcv"}, c.args...)
			bin := s.agent.Bin()
			if c.bin == "copy" {
				bin = copyBin
			}
			out, err := s.agent.CLIBinary(t, bin, c.cred, args...)
			if c.allowed {
				scope := c.args[1]
				if err != nil || strings.TrimSpace(out) != s.serviceKCV(t, scope) {
					t.Fatalf("want allowed with the service's KCV %q, got %v: %s", s.serviceKCV(t, scope), err, out)
				}
				return
			}
			if err == nil || !strings.Contains(out, "denied") || !strings.Contains(strings.ToLower(out), c.reason) {
				t.Fatalf("want denied (%s), got %v: %s", c.reason, err, out)
			}
		})
	}
	// Every denial is audited with the caller's credentials.
	f, err := os.Open(s.agent.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	denials := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line: %v", err)
		}
		if ev["decision"] == "deny" {
			denials++
			for _, k := range []string{"caller_uid", "caller_pid", "scope", "op", "reason"} {
				if _, ok := ev[k]; !ok {
					t.Fatalf("denial without %s: %s", k, sc.Text())
				}
			}
		}
	}
	if want := 6; os.Geteuid() == 0 && denials != want {
		t.Fatalf("%d denials audited, want %d", denials, want)
	}
}

func TestAgentStatusPurgeAndHSM(t *testing.T) {
	s := newStack(t, "5m", "15m")
	if out, err := s.agent.CLI(t, nil, "get", "--kcv", "--scope", "payroll:a", "--as", "db:alice"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err := s.agent.CLI(t, nil, "status")
	if err != nil || !strings.Contains(out, "cache_keys=1") || !strings.Contains(out, "policy_version=") || !strings.Contains(out, "upstream."+s.ks.Addr+"=ok") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if out, err := s.agent.CLI(t, nil, "purge"); err != nil || !strings.Contains(out, "purged") {
		t.Fatalf("purge: %v %s", err, out)
	}
	if out, _ := s.agent.CLI(t, nil, "status"); !strings.Contains(out, "cache_keys=0") {
		t.Fatalf("after purge: %s", out)
	}
	// In-HSM encryption forwarded with the same policy.
	c := client.New(s.agent.Socket)
	defer c.Close()
	ctx := context.Background()
	ct, v, err := c.Encrypt(ctx, "vault:employees.note", 0, "db:alice", []byte("a note"), []byte("aad"))
	if err != nil || v != 1 {
		t.Fatalf("hsm encrypt: v=%d %v", v, err)
	}
	pt, err := c.Decrypt(ctx, "vault:employees.note", v, "db:alice", ct, []byte("aad"))
	if err != nil || string(pt) != "a note" {
		t.Fatalf("hsm decrypt: %v", err)
	}
	if _, err := c.Decrypt(ctx, "vault:employees.note", v, "db:bob", ct, []byte("aad")); !errors.Is(err, client.ErrDenied) {
		t.Fatalf("bob decrypting the vault: %v", err)
	}
}

func TestAgentTTLAndOfflineGrace(t *testing.T) {
	s := newStack(t, "2s", "3s")
	c := client.New(s.agent.Socket)
	defer c.Close()
	ctx := context.Background()
	get := func() error {
		k, _, err := c.GetKey(ctx, "payroll:employees.ssn", 0, "db:alice")
		k.Destroy()
		return err
	}
	for i := 0; i < 3; i++ {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.derives(t); n != 1 {
		t.Fatalf("%d derivations for 3 gets within the TTL, want 1", n)
	}
	time.Sleep(2200 * time.Millisecond)
	if err := get(); err != nil {
		t.Fatal(err)
	}
	if n := s.derives(t); n != 2 {
		t.Fatalf("%d derivations after the TTL, want 2 (re-fetch)", n)
	}
	s.ks.Stop()
	time.Sleep(2200 * time.Millisecond) // past the TTL, within the grace
	if err := get(); err != nil {
		t.Fatalf("within offline grace: %v", err)
	}
	time.Sleep(3 * time.Second) // past TTL+grace
	if err := get(); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("after the grace: want unavailable, got %v", err)
	}
	s.ks.Start()
	deadline := time.Now().Add(40 * time.Second) // the agent backs the endpoint off; it must come back
	for {
		err := get()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service did not resume: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestAgentFailover(t *testing.T) {
	uid, _, _ := testenv.Unprivileged(t)
	hsm := testenv.SoftHSM(t)
	ks1 := testenv.StartKeyService(t, testenv.KeyServiceOptions{HSM: hsm, Keyrings: []string{"payroll"}})
	ks2 := testenv.StartKeyService(t, testenv.KeyServiceOptions{HSM: hsm, CA: ks1.CA})
	a := testenv.StartAgent(t, testenv.AgentOptions{
		Policy:      policy(t, testenv.Binary(t, "keyagent"), uid, "1ms", "0s"),
		KeyServices: []*testenv.KeyService{ks1, ks2},
	})
	c := client.New(a.Socket)
	defer c.Close()
	ctx := context.Background()
	k1, _, err := c.GetKey(ctx, "payroll:employees.ssn", 1, "db:alice")
	if err != nil {
		t.Fatal(err)
	}
	defer k1.Destroy()
	ks1.Stop()
	k2, _, err := c.GetKey(ctx, "payroll:employees.ssn", 1, "db:alice")
	if err != nil {
		t.Fatalf("failover to the second endpoint: %v", err)
	}
	defer k2.Destroy()
	if !k1.Equal(k2) {
		t.Fatal("two key services on one token served different keys")
	}
	if data, _ := os.ReadFile(ks2.AuditFile); !strings.Contains(string(data), `"decision":"allow"`) {
		t.Fatal("second endpoint never served")
	}
}

func TestAgentBadPolicyEditKeepsOld(t *testing.T) {
	s := newStack(t, "5m", "15m")
	old, _ := os.ReadFile(s.agent.Policy)
	if err := os.WriteFile(s.agent.Policy, append(old, []byte("bogus_key: 1\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	s.agent.Signal(syscall.SIGHUP)
	time.Sleep(500 * time.Millisecond)
	if out, err := s.agent.CLI(t, nil, "get", "--kcv", "--scope", "payroll:a", "--as", "db:alice"); err != nil {
		t.Fatalf("the old policy should still allow: %v %s", err, out)
	}
	if !strings.Contains(s.agent.Log(), "keeping the running policy") || !strings.Contains(s.agent.Log(), "bogus_key") {
		t.Fatalf("agent log does not say why the reload failed:\n%s", s.agent.Log())
	}
}

func TestAgentMalformedFrameClosesOnlyThatConnection(t *testing.T) {
	s := newStack(t, "5m", "15m")
	c := client.New(s.agent.Socket)
	defer c.Close()
	ctx := context.Background()
	if k, _, err := c.GetKey(ctx, "payroll:a", 0, "db:alice"); err != nil {
		t.Fatal(err)
	} else {
		k.Destroy()
	}
	frames := map[string][]byte{
		"oversized": append(binary.BigEndian.AppendUint32(nil, 64<<20), 1),
		"garbage":   append(binary.BigEndian.AppendUint32(nil, 5), 1, 0xff, 0xff, 0xff, 0xff),
	}
	for name, f := range frames {
		raw, err := net.Dial("unix", s.agent.Socket)
		if err != nil {
			t.Fatal(err)
		}
		raw.Write(f)
		raw.SetDeadline(time.Now().Add(15 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := raw.Read(buf); err != nil {
				break // closed by the agent
			}
		}
		raw.Close()
		if k, _, err := c.GetKey(ctx, "payroll:a", 0, "db:alice"); err != nil {
			t.Fatalf("after %s frame, another client fails: %v", name, err)
		} else {
			k.Destroy()
		}
	}
}

func TestAgent200ConcurrentClients(t *testing.T) {
	s := newStack(t, "5m", "15m")
	want := strings.TrimPrefix(s.serviceKCV(t, "payroll:employees.ssn"), "scope=payroll:employees.ssn version=1 kcv=")
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client.New(s.agent.Socket)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for j := 0; j < 5; j++ {
				k, _, err := c.GetKey(ctx, "payroll:employees.ssn", 0, "db:alice")
				if err != nil {
					errs <- err
					return
				}
				got, _ := kdf.KCV(k)
				k.Destroy()
				if got != want {
					errs <- fmt.Errorf("kcv %s, want %s", got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.derives(t); n != 1 {
		t.Fatalf("%d upstream derivations for 1000 concurrent gets of one key, want 1", n)
	}
}

// TestAgentEmbeddedAndMetrics runs the agent with the key service's backend in-process (the
// single-node setup) and reads its Prometheus metrics.
func TestAgentEmbeddedAndMetrics(t *testing.T) {
	uid, _, _ := testenv.Unprivileged(t)
	ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Soft: true, Keyrings: []string{"payroll"}})
	a := testenv.StartAgent(t, testenv.AgentOptions{
		Policy:      policy(t, testenv.Binary(t, "keyagent"), uid, "5m", "15m"),
		KeyServices: []*testenv.KeyService{ks},
		Embedded:    true,
		Metrics:     true,
	})
	want, err := ks.Run("kcv", "--scope", "payroll:employees.ssn")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		out, err := a.CLI(t, nil, "get", "--kcv", "--scope", "payroll:employees.ssn", "--as", "db:alice")
		if err != nil || out != want {
			t.Fatalf("embedded get: %v %q, want %q", err, out, want)
		}
	}
	if out, err := a.CLI(t, nil, "get", "--kcv", "--scope", "payroll:employees.ssn", "--as", "db:bob"); err == nil {
		t.Fatalf("bob allowed: %s", out)
	}
	if out, _ := a.CLI(t, nil, "status"); !strings.Contains(out, "upstream.embedded=ok") {
		t.Fatalf("status: %s", out)
	}
	resp, err := http.Get("http://" + a.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, w := range []string{
		`keyward_agent_requests_total{decision="allow",op="decrypt"} 2`,
		`keyward_agent_requests_total{decision="deny",op="decrypt"} 1`,
		`keyward_agent_cache_total{result="cache"} 1`,
		`keyward_agent_cache_total{result="upstream"} 1`,
	} {
		if !strings.Contains(string(body), w) {
			t.Fatalf("metrics lack %q:\n%s", w, body)
		}
	}
	if strings.Contains(string(body), "payroll:employees.ssn") {
		t.Fatal("metrics carry a scope")
	}
}
