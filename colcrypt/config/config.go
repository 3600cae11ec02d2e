// Package config loads colcrypt.yaml, the one configuration file of `colcrypt serve`.
//
//	version: 1
//	listen: 127.0.0.1:6432
//	listen_unix: /run/colcrypt/.s.PGSQL.6432          # optional
//	tls: {cert: proxy.pem, key: proxy.key, require_client_tls: false}   # optional, client-facing
//	upstream: {host: 127.0.0.1, port: 5432, tls: disable, ca: db-ca.pem, server_name: db.internal, connect_timeout: 5s}
//	limits: {max_connections: 1000, idle_timeout: 30m, startup_timeout: 10s, shutdown_timeout: 30s, relay_threads: 0}
//	metrics: 127.0.0.1:9465
//	log: {level: info, format: text}
//	# issue 6, validated by the column-encryption layer:
//	agent: {socket: /run/keyward/agent.sock}
//	columns: [{table: public.employees, column: ssn, type: text, mode: deterministic, scope: "payroll:employees.ssn"}]
//	on_denied: error
//	catalog: {database: app, user: colcrypt_catalog, password_file: catalog.pw}   # the side connection
//
// Guarantees: Load is the only constructor (decoding goes through keyagent/confile, like every Keyward
// daemon's); it rejects unknown keys, a missing or unknown version,
// and invalid values, and every error names the file, the line and the key. Relative paths (certificate,
// key, CA) are resolved against the file's directory. Defaults are applied only to keys that are absent.
// Non-guarantees: the column entries are checked only for shape here (the encryption layer checks them
// against the live catalog); files named by the config are not opened by Load.
package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keyward/keyward/keyagent/confile"
)

// Version is the only config version this build understands.
const Version = 1

// Upstream TLS modes.
const (
	TLSDisable    = "disable"
	TLSRequire    = "require"
	TLSVerifyFull = "verify-full"
)

// Config is a validated colcrypt.yaml.
type Config struct {
	Version    int      `yaml:"version"`
	Listen     string   `yaml:"listen"`
	ListenUnix string   `yaml:"listen_unix"`
	TLS        *TLS     `yaml:"tls"`
	Upstream   Upstream `yaml:"upstream"`
	Limits     Limits   `yaml:"limits"`
	Metrics    string   `yaml:"metrics"`
	Log        Log      `yaml:"log"`
	Agent      *Agent   `yaml:"agent"`
	Columns    []Column `yaml:"columns"`
	OnDenied   string   `yaml:"on_denied"`
	Catalog    *Catalog `yaml:"catalog"`
	Path       string   `yaml:"-"` // the file it was loaded from
	doc        *confile.Doc
}

// TLS is the client-facing certificate.
type TLS struct {
	Cert             string `yaml:"cert"`
	Key              string `yaml:"key"`
	RequireClientTLS bool   `yaml:"require_client_tls"`
}

// Upstream is the PostgreSQL server.
type Upstream struct {
	Host           string        `yaml:"host"`
	Port           int           `yaml:"port"`
	TLS            string        `yaml:"tls"`
	CA             string        `yaml:"ca"`
	ServerName     string        `yaml:"server_name"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// Limits bound the resources of the proxy.
type Limits struct {
	MaxConnections  int           `yaml:"max_connections"`
	IdleTimeout     time.Duration `yaml:"idle_timeout"`
	StartupTimeout  time.Duration `yaml:"startup_timeout"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// RelayThreads is the number of event loops (a goroutine each) relaying sessions without TLS and
	// without protected columns: 0 picks one per four CPUs, -1 relays every session with goroutines.
	RelayThreads int `yaml:"relay_threads"`
}

// Log configures the daemon's slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Agent is the key agent's socket (issue 6) and how long the proxy trusts what it learned from it.
type Agent struct {
	Socket string `yaml:"socket"`
	// TTL is how long an authorization answer and the "newest key version" are reused before the
	// agent is asked again (0: the column layer's default, one minute): a policy change or a key
	// rotation reaches a running proxy within one TTL.
	TTL time.Duration `yaml:"ttl"`
}

// Catalog is the side connection the encryption layer reads the catalog with (issue 6): the database
// the protected columns live in (one per proxy) and a role that can read pg_catalog.
type Catalog struct {
	Database     string `yaml:"database"`
	User         string `yaml:"user"`
	PasswordFile string `yaml:"password_file"` // optional (trust or a .pgpass otherwise)
}

// Column is one protected column (issue 6). Only its shape is checked here.
type Column struct {
	Table  string `yaml:"table"`
	Column string `yaml:"column"`
	Type   string `yaml:"type"`
	Mode   string `yaml:"mode"`
	Scope  string `yaml:"scope"`
	Line   int    `yaml:"-"` // line of the entry in the file, for the encryption layer's own errors
}

// Defaults.
const (
	DefaultListen          = "127.0.0.1:6432"
	DefaultMaxConnections  = 1000
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultStartupTimeout  = 10 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultConnectTimeout  = 5 * time.Second
)

// Error is the error type of every problem Load reports: the file, the line, the dotted key
// ("upstream.tls", "columns[0]") and what is wrong. It is keyagent/confile's, shared by all daemons.
type Error = confile.Error

// Load reads, decodes strictly and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a config held in memory; path is used in errors and to resolve
// relative file names.
func Parse(path string, data []byte) (*Config, error) {
	c := &Config{Path: path}
	doc, err := confile.DecodeBytes(path, data, c, Version)
	if err != nil {
		return nil, err
	}
	c.doc = doc
	// YAML reads a bare `on_denied: null` as no value, but here null is the name of a policy.
	var top struct {
		OnDenied yaml.Node `yaml:"on_denied"`
	}
	if yaml.Unmarshal(data, &top) == nil && top.OnDenied.Kind == yaml.ScalarNode && top.OnDenied.Tag == "!!null" {
		c.OnDenied = "null"
	}
	for i := range c.Columns {
		c.Columns[i].Line = doc.Line(fmt.Sprintf("columns[%d]", i))
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// has reports whether key is present in the file.
func (c *Config) has(key string) bool { return c.doc.Line(key) > 0 }

// errf reports a problem at key; for a missing key, at the line of its nearest parent that is present.
func (c *Config) errf(key, format string, args ...any) error {
	line := 0
	for k := key; k != ""; {
		if l := c.doc.Line(k); l > 0 {
			line = l
			break
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return &Error{File: c.Path, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.Path), p)
}

func (c *Config) validate() error {
	if c.Listen == "" && c.ListenUnix == "" {
		c.Listen = DefaultListen
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return c.errf("listen", "want host:port: %v", err)
		}
	}
	if c.TLS != nil {
		if c.TLS.Cert == "" {
			return c.errf("tls", "cert is required")
		}
		if c.TLS.Key == "" {
			return c.errf("tls", "key is required")
		}
		c.TLS.Cert, c.TLS.Key = c.resolve(c.TLS.Cert), c.resolve(c.TLS.Key)
	}
	u := &c.Upstream
	if u.Host == "" {
		return c.errf("upstream.host", "required")
	}
	if u.Port == 0 {
		u.Port = 5432
	}
	if u.Port < 1 || u.Port > 65535 {
		return c.errf("upstream.port", "%d is not a TCP port", u.Port)
	}
	switch u.TLS {
	case "":
		u.TLS = TLSDisable
	case TLSDisable, TLSRequire, TLSVerifyFull:
	default:
		return c.errf("upstream.tls", "%q: want disable, require or verify-full", u.TLS)
	}
	if u.TLS == TLSVerifyFull && u.CA == "" {
		return c.errf("upstream.ca", "required with tls: verify-full")
	}
	u.CA = c.resolve(u.CA)
	if u.ConnectTimeout < 0 {
		return c.errf("upstream.connect_timeout", "negative")
	}
	if u.ConnectTimeout == 0 {
		u.ConnectTimeout = DefaultConnectTimeout
	}
	l := &c.Limits
	if l.MaxConnections < 0 {
		return c.errf("limits.max_connections", "negative")
	}
	if !c.has("limits.max_connections") {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.RelayThreads < -1 {
		return c.errf("limits.relay_threads", "want -1 (no event loop), 0 (one per four CPUs) or a number of loops")
	}
	for key, d := range map[string]*time.Duration{
		"limits.idle_timeout": &l.IdleTimeout, "limits.startup_timeout": &l.StartupTimeout,
		"limits.shutdown_timeout": &l.ShutdownTimeout,
	} {
		if *d < 0 {
			return c.errf(key, "negative duration")
		}
	}
	if !c.has("limits.idle_timeout") {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if !c.has("limits.startup_timeout") {
		l.StartupTimeout = DefaultStartupTimeout
	}
	if !c.has("limits.shutdown_timeout") {
		l.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Metrics != "" {
		host, _, err := net.SplitHostPort(c.Metrics)
		if err != nil {
			return c.errf("metrics", "want host:port: %v", err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return c.errf("metrics", "%q is not a loopback address (metrics are served without authentication)", host)
		}
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		return c.errf("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "text"
	case "text", "json":
	default:
		return c.errf("log.format", "%q: want text or json", c.Log.Format)
	}
	if c.Agent != nil {
		if c.Agent.Socket == "" {
			return c.errf("agent.socket", "required")
		}
		if c.Agent.TTL < 0 {
			return c.errf("agent.ttl", "must not be negative")
		}
	}
	for i, col := range c.Columns {
		key := fmt.Sprintf("columns[%d]", i)
		if col.Table == "" || col.Column == "" {
			return c.errf(key, "table and column are required")
		}
		if col.Scope == "" {
			return c.errf(key, "scope is required")
		}
	}
	if len(c.Columns) > 0 && c.Agent == nil {
		return c.errf("columns", "protected columns need an agent: {socket: ...}")
	}
	if c.Catalog != nil {
		if c.Catalog.Database == "" || c.Catalog.User == "" {
			return c.errf("catalog", "database and user are required")
		}
		c.Catalog.PasswordFile = c.resolve(c.Catalog.PasswordFile)
	}
	switch c.OnDenied {
	case "":
		c.OnDenied = "error"
	case "error", "null", "ciphertext":
	default:
		return c.errf("on_denied", "%q: want error, null or ciphertext", c.OnDenied)
	}
	return nil
}

// Line returns the line of a dotted key ("upstream.tls", "columns[0]"), 0 if absent. The encryption
// layer uses it to report its own errors against the file.
func (c *Config) Line(key string) int { return c.doc.Line(key) }
