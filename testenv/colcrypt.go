package testenv

import (
	"fmt"
	"path/filepath"
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

	daemon
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
	c := &Colcrypt{Dir: SharedDir(t), daemon: daemon{name: "colcrypt", t: t, bin: Binary(t, "colcrypt")}}
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

// Start starts the proxy with the test's environment.
func (c *Colcrypt) Start() {
	c.t.Helper()
	c.start(nil, "tcp", c.Addr, 30*time.Second, "serve", "--config", c.Config)
}

// Stop sends SIGTERM (graceful shutdown) and waits.
func (c *Colcrypt) Stop() { c.stop(syscall.SIGTERM) }

// Pid returns the running proxy's process id (0 when stopped), for CPU accounting in benchmarks.
func (c *Colcrypt) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p == nil {
		return 0
	}
	return c.p.cmd.Process.Pid
}

// DSN is a URL for user through the proxy.
func (c *Colcrypt) DSN(pg *PG, user, password string) string {
	return pg.DSNAt(c.Addr, user, password)
}
