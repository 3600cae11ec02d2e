package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Colcrypt is a `colcrypt serve` process (the built binary) in front of a PG.
type Colcrypt struct {
	Addr   string
	Port   int
	Dir    string
	Config string

	bin string
	t   testing.TB
	mu  sync.Mutex
	p   *proc
	log *lockedWriter
}

// ColcryptOptions configures StartColcrypt.
type ColcryptOptions struct {
	PG *PG
	// Agent, when set, is written as `agent: {socket: …}`.
	Agent *Agent
	// Extra is YAML appended to the config (columns, catalog, on_denied, limits, …).
	Extra string
}

// StartColcrypt starts the proxy on a free loopback port and waits until it accepts connections.
func StartColcrypt(t testing.TB, o ColcryptOptions) *Colcrypt {
	t.Helper()
	c := &Colcrypt{t: t, Dir: SharedDir(t), bin: Binary(t, "colcrypt")}
	c.Port = FreePort(t)
	c.Addr = fmt.Sprintf("127.0.0.1:%d", c.Port)
	cfg := fmt.Sprintf("version: 1\nlisten: %s\nupstream: {host: 127.0.0.1, port: %d, tls: disable}\n", c.Addr, o.PG.Port)
	if o.Agent != nil {
		cfg += fmt.Sprintf("agent: {socket: %s}\n", o.Agent.Socket)
	}
	cfg += o.Extra
	c.Config = filepath.Join(c.Dir, "colcrypt.yaml")
	writeFile(t, c.Config, cfg, 0o644)
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

// Start starts the proxy.
func (c *Colcrypt) Start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = &lockedWriter{}
	cmd := exec.Command(c.bin, "serve", "--config", c.Config)
	cmd.Stdout, cmd.Stderr = c.log, c.log
	p, err := startProc(cmd)
	if err != nil {
		c.t.Fatalf("start colcrypt: %v", err)
	}
	c.p = p
	if err := waitTCP(c.Addr, 30*time.Second, p); err != nil {
		c.t.Fatalf("colcrypt did not start: %v\n%s", err, c.log.String())
	}
}

// Stop sends SIGTERM (graceful shutdown) and waits.
func (c *Colcrypt) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p == nil {
		return
	}
	c.p.stop(syscall.SIGTERM)
	c.p = nil
}

// Pid returns the running proxy's process id (0 when stopped), for CPU accounting in benchmarks.
func (c *Colcrypt) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p == nil {
		return 0
	}
	return c.p.cmd.Process.Pid
}

// Log returns what the proxy printed.
func (c *Colcrypt) Log() string { return c.log.String() }

// DSN is a URL for user through the proxy.
func (c *Colcrypt) DSN(pg *PG, user, password string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", user, password, c.Addr, pg.Database)
}
