package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// KeyService is a `keyservice serve` process (the built binary) with its files.
type KeyService struct {
	Addr      string
	Dir       string
	Config    string // its keyservice.yaml (also what the operator subcommands take)
	Grants    string
	AuditFile string
	CA        *CA
	HSM       *HSM // nil with the software backend
	Env       []string

	daemon
}

// KeyServiceOptions configures StartKeyService.
type KeyServiceOptions struct {
	// Soft uses the software backend instead of a SoftHSM2 token.
	Soft bool
	// HSM reuses a token (two services on one token); nil: a fresh token.
	HSM *HSM
	// Grants is the grants file's content; "" grants node "spiffe://keyward/node/test" every scope.
	Grants string
	// Keyrings are created before the service starts, "name" or "name:hsm-aead".
	Keyrings []string
	// CA signs the server certificate; nil: a fresh CA.
	CA *CA
}

// StartKeyService configures a backend, creates the keyrings with the operator CLI, and starts
// `keyservice serve` on a free loopback port. It is stopped at cleanup.
func StartKeyService(t testing.TB, o KeyServiceOptions) *KeyService {
	t.Helper()
	k := &KeyService{Dir: SharedDir(t), CA: o.CA, Env: os.Environ(), daemon: daemon{name: "keyservice", t: t, bin: Binary(t, "keyservice")}}
	if k.CA == nil {
		k.CA = NewCA(t)
	}
	var backend string
	if o.Soft {
		pass := filepath.Join(k.Dir, "store.pass")
		writeFile(t, pass, randHex(16)+"\n", 0o600)
		backend = fmt.Sprintf("  soft: {path: %s, passphrase_file: %s}\n", filepath.Join(k.Dir, "keyrings.sealed"), pass)
	} else {
		k.HSM = o.HSM
		if k.HSM == nil {
			k.HSM = SoftHSM(t)
		}
		backend = fmt.Sprintf("  pkcs11: {module: %s, token_label: %s, pin_file: %s}\n", k.HSM.Module, k.HSM.TokenLabel, k.HSM.PinFile)
		k.Env = append(k.Env, "SOFTHSM2_CONF="+k.HSM.ConfPath)
	}
	grants := o.Grants
	if grants == "" {
		grants = "version: 1\nnodes:\n  \"spiffe://keyward/node/test\": {scopes: [\"*:*\"], ops: [derive, encrypt, decrypt, status]}\n"
	}
	k.Grants = filepath.Join(k.Dir, "grants.yaml")
	writeFile(t, k.Grants, grants, 0o644)
	cert, key := k.CA.Issue(t, "keyservice", "127.0.0.1", "localhost")
	k.AuditFile = filepath.Join(k.Dir, "audit.jsonl")
	k.Addr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	k.Config = filepath.Join(k.Dir, "keyservice.yaml")
	writeFile(t, k.Config, fmt.Sprintf("version: 1\nbackend:\n%slisten: %s\ntls: {cert: %s, key: %s, client_ca: %s}\ngrants: %s\naudit: %s\n",
		backend, k.Addr, cert, key, k.CA.CertFile, k.Grants, k.AuditFile), 0o644)
	for _, r := range o.Keyrings {
		name, kind, _ := strings.Cut(r, ":")
		if kind == "" {
			kind = "derive"
		}
		if out, err := k.Run("keyring", "create", name, "--kind", kind); err != nil {
			t.Fatalf("keyring create %s: %v\n%s", r, err, out)
		}
	}
	k.Start()
	t.Cleanup(k.Stop)
	return k
}

// Run runs an operator subcommand of the keyservice binary with this service's config.
func (k *KeyService) Run(args ...string) (string, error) {
	cmd := exec.Command(k.bin, append(args, "--config", k.Config)...)
	cmd.Env = k.Env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Start starts (or restarts) the server and waits until it accepts connections.
func (k *KeyService) Start() {
	k.t.Helper()
	k.start(k.Env, "tcp", k.Addr, 20*time.Second, "serve", "--config", k.Config)
}

// Stop kills the server (SIGKILL: as a crash would). Start brings it back.
func (k *KeyService) Stop() { k.stop(syscall.SIGKILL) }

// NodeTLS issues a client certificate for a node identity (a URI SAN) and returns cert and key files.
func (k *KeyService) NodeTLS(t testing.TB, identity string) (cert, key string) {
	return k.CA.Issue(t, "node", identity)
}

// Agent is a `keyagent serve` process with its files.
type Agent struct {
	Socket      string
	Dir         string
	Config      string
	Policy      string
	AuditFile   string
	MetricsAddr string // with AgentOptions.Metrics
	Env         []string

	daemon
}

// AgentOptions configures StartAgent.
type AgentOptions struct {
	Policy string // the policy file's content
	// KeyServices are the upstream endpoints, tried in order (all must share one CA: the first's).
	KeyServices []*KeyService
	// Endpoints overrides the endpoint list (for failover tests with a dead first endpoint).
	Endpoints []string
	// Embedded runs the key service's backend in-process instead (the first KeyService's config).
	Embedded bool
	// Identity is the node certificate's URI SAN (default "spiffe://keyward/node/test").
	Identity string
	// Metrics serves Prometheus metrics on a free loopback port (Agent.MetricsAddr).
	Metrics bool
}

// StartAgent starts `keyagent serve` (as the test user, root in CI) with a socket in a SharedDir.
func StartAgent(t testing.TB, o AgentOptions) *Agent {
	t.Helper()
	a := &Agent{Dir: SharedDir(t), Env: os.Environ(), daemon: daemon{name: "keyagent", t: t, bin: Binary(t, "keyagent")}}
	a.Socket = filepath.Join(a.Dir, "agent.sock")
	a.Policy = filepath.Join(a.Dir, "policy.yaml")
	writeFile(t, a.Policy, o.Policy, 0o644)
	a.AuditFile = filepath.Join(a.Dir, "agent-audit.jsonl")
	ks := o.KeyServices[0]
	var up string
	if o.Embedded {
		up = fmt.Sprintf("  embedded: {config: %s}\n", ks.Config)
		a.Env = ks.Env
	} else {
		id := o.Identity
		if id == "" {
			id = "spiffe://keyward/node/test"
		}
		cert, key := ks.NodeTLS(t, id)
		eps := o.Endpoints
		if eps == nil {
			for _, k := range o.KeyServices {
				eps = append(eps, k.Addr)
			}
		}
		up = fmt.Sprintf("  keyservice: {endpoints: [%s], tls: {cert: %s, key: %s, ca: %s}}\n", strings.Join(eps, ", "), cert, key, ks.CA.CertFile)
	}
	a.Config = filepath.Join(a.Dir, "agent.yaml")
	cfg := fmt.Sprintf("version: 1\nsocket: {path: %s, mode: \"0666\"}\npolicy: %s\nupstream:\n%saudit: %s\n",
		a.Socket, a.Policy, up, a.AuditFile)
	if o.Metrics {
		a.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		cfg += "metrics: " + a.MetricsAddr + "\n"
	}
	writeFile(t, a.Config, cfg, 0o644)
	a.Start()
	t.Cleanup(a.Stop)
	return a
}

// Start starts the agent and waits for its socket.
func (a *Agent) Start() {
	a.t.Helper()
	a.start(a.Env, "unix", a.Socket, 20*time.Second, "serve", "--config", a.Config)
}

// Stop sends SIGTERM and waits.
func (a *Agent) Stop() { a.stop(syscall.SIGTERM) }

// Signal sends sig to the agent (SIGHUP: reload the policy).
func (a *Agent) Signal(sig os.Signal) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.p != nil {
		_ = a.p.cmd.Process.Signal(sig)
	}
}

// CLI runs the keyagent binary with args against this agent's socket, as uid/gid when given (root only).
func (a *Agent) CLI(t testing.TB, cred *[2]uint32, args ...string) (string, error) {
	return a.CLIBinary(t, a.bin, cred, args...)
}

// CLIBinary is CLI with another executable (a copy of keyagent at another path, for exe checks).
func (a *Agent) CLIBinary(t testing.TB, bin string, cred *[2]uint32, args ...string) (string, error) {
	cmd := exec.Command(bin, append(args, "--socket", a.Socket)...)
	if cred != nil {
		AsUser(cmd, cred[0], cred[1])
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Bin is the agent binary's path.
func (a *Agent) Bin() string { return a.bin }

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// daemon is a long-running binary that a test starts, stops and restarts, with its output collected.
type daemon struct {
	name string // for failure messages
	bin  string
	t    testing.TB
	mu   sync.Mutex
	p    *proc
	log  *lockedWriter
}

// start runs bin with args and env and waits up to d until network/addr accepts connections. A running
// daemon is left as it is.
func (m *daemon) start(env []string, network, addr string, d time.Duration, args ...string) {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p != nil {
		return
	}
	m.log = &lockedWriter{}
	cmd := exec.Command(m.bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = m.log, m.log
	p, err := startProc(cmd)
	if err != nil {
		m.t.Fatalf("start %s: %v", m.name, err)
	}
	m.p = p
	if err := waitDial(network, addr, d, p); err != nil {
		m.t.Fatalf("%s did not start: %v\n%s", m.name, err, m.log.String())
	}
}

// stop sends sig and waits (see proc.stop); a stopped daemon is left as it is.
func (m *daemon) stop(sig os.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p == nil {
		return
	}
	m.p.stop(sig)
	m.p = nil
}

// Log returns what the process printed (since its last start).
func (m *daemon) Log() string { return m.log.String() }

// waitDial waits up to d until network/addr accepts a connection, giving up early when p (if not nil)
// exits.
func waitDial(network, addr string, d time.Duration, p *proc) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("process exited")
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proc is a started process whose exit is observed by a goroutine.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to 10s, then kills.
func (p *proc) stop(sig os.Signal) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// lockedWriter collects a process's output; the process writes from exec's copying goroutines
// while the test reads.
type lockedWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
