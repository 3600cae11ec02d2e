// Package config loads colcrypt.yaml, the one configuration file of `colcrypt serve`.
//
//	version: 1
//	listen: 127.0.0.1:6432
//	listen_unix: /run/colcrypt/.s.PGSQL.6432          # optional
//	tls: {cert: proxy.pem, key: proxy.key, require_client_tls: false}   # optional, client-facing
//	upstream: {host: 127.0.0.1, port: 5432, tls: disable, ca: db-ca.pem, server_name: db.internal, connect_timeout: 5s}
//	limits: {max_connections: 1000, idle_timeout: 30m, startup_timeout: 10s, shutdown_timeout: 30s}
//	metrics: 127.0.0.1:9465
//	log: {level: info, format: text}
//	# issue 6, validated by the column-encryption layer:
//	agent: {socket: /run/keyward/agent.sock}
//	columns: [{table: public.employees, column: ssn, type: text, mode: deterministic, scope: "payroll:employees.ssn"}]
//	on_denied: error
//
// Guarantees: Load is the only constructor; it rejects unknown keys, a missing or unknown version,
// and invalid values, and every error names the file, the line and the key. Relative paths (certificate,
// key, CA) are resolved against the file's directory. Defaults are applied only to keys that are absent.
// Non-guarantees: the column entries are checked only for shape here (the encryption layer checks them
// against the live catalog); files named by the config are not opened by Load.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
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
	Version    int       `yaml:"version"`
	Listen     string    `yaml:"listen"`
	ListenUnix string    `yaml:"listen_unix"`
	TLS        *TLS      `yaml:"tls"`
	Upstream   Upstream  `yaml:"upstream"`
	Limits     Limits    `yaml:"limits"`
	Metrics    string    `yaml:"metrics"`
	Log        Log       `yaml:"log"`
	Agent      *Agent    `yaml:"agent"`
	Columns    []Column  `yaml:"columns"`
	OnDenied   string    `yaml:"on_denied"`
	Path       string    `yaml:"-"` // the file it was loaded from
	lines      lineIndex `yaml:"-"`
	nulls      map[string]bool
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
}

// Log configures the daemon's slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Agent is the key agent's socket (issue 6).
type Agent struct {
	Socket string `yaml:"socket"`
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

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid config")

// Error is a problem at a key of the file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted path, e.g. "upstream.tls"
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: key %q: %s", e.File, e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: key %q: %s", e.File, e.Key, e.Msg)
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Load reads, decodes strictly and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)`)
var typeErrLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// Parse decodes and validates a config held in memory; path is used in errors and to resolve
// relative file names.
func Parse(path string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	idx := lineIndex{}
	idx.walk("", &root)

	c := &Config{Path: path, lines: idx, nulls: map[string]bool{}}
	if doc := root.Content; len(doc) == 1 && doc[0].Kind == yaml.MappingNode {
		for i := 0; i+1 < len(doc[0].Content); i += 2 {
			if v := doc[0].Content[i+1]; v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				c.nulls[doc[0].Content[i].Value] = true
			}
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			msg := te.Errors[0]
			if m := unknownField.FindStringSubmatch(msg); m != nil {
				line, _ := strconv.Atoi(m[1])
				return nil, &Error{File: path, Line: line, Key: idx.keyAt(line, m[2]), Msg: "unknown key"}
			}
			if m := typeErrLine.FindStringSubmatch(msg); m != nil {
				line, _ := strconv.Atoi(m[1])
				return nil, &Error{File: path, Line: line, Key: idx.keyAt(line, ""), Msg: m[2]}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: path, Key: "version", Msg: "empty file"}
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i := range c.Columns {
		c.Columns[i].Line = idx[fmt.Sprintf("columns.%d", i)]
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// errf reports a problem at key; for a missing key, the line of its nearest parent that is present.
func (c *Config) errf(key, format string, args ...any) error {
	line := 0
	for k := key; k != ""; {
		if l, ok := c.lines[k]; ok {
			line = l
			break
		}
		i := strings.LastIndexByte(k, '.')
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
	if c.Version == 0 {
		return c.errf("version", "missing (this build reads version: %d)", Version)
	}
	if c.Version != Version {
		return c.errf("version", "unknown version %d (this build reads version: %d)", c.Version, Version)
	}
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
	if _, ok := c.lines["limits.max_connections"]; !ok {
		l.MaxConnections = DefaultMaxConnections
	}
	for key, d := range map[string]*time.Duration{
		"limits.idle_timeout": &l.IdleTimeout, "limits.startup_timeout": &l.StartupTimeout,
		"limits.shutdown_timeout": &l.ShutdownTimeout,
	} {
		if *d < 0 {
			return c.errf(key, "negative duration")
		}
	}
	if _, ok := c.lines["limits.idle_timeout"]; !ok {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if _, ok := c.lines["limits.startup_timeout"]; !ok {
		l.StartupTimeout = DefaultStartupTimeout
	}
	if _, ok := c.lines["limits.shutdown_timeout"]; !ok {
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
	}
	for i, col := range c.Columns {
		key := fmt.Sprintf("columns.%d", i)
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
	if c.OnDenied == "" && c.nulls["on_denied"] {
		c.OnDenied = "null" // YAML reads a bare null as no value; here it is the policy named null
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

// Line returns the line of a dotted key ("upstream.tls", "columns.0"), 0 if absent. The encryption
// layer uses it to report its own errors against the file.
func (c *Config) Line(key string) int { return c.lines[key] }

// lineIndex maps dotted key paths to the line where the key (or sequence item) appears.
type lineIndex map[string]int

func (idx lineIndex) walk(prefix string, n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			idx.walk(prefix, c)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			idx[p] = k.Line
			idx.walk(p, n.Content[i+1])
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := prefix + "." + strconv.Itoa(i)
			idx[p] = c.Line
			idx.walk(p, c)
		}
	}
}

// keyAt finds the dotted key at line whose last element is name (any key at that line if name is "").
func (idx lineIndex) keyAt(line int, name string) string {
	best := ""
	for k, l := range idx {
		if l != line {
			continue
		}
		if name == "" || k == name || strings.HasSuffix(k, "."+name) {
			if best == "" || len(k) > len(best) {
				best = k
			}
		}
	}
	if best == "" {
		return name
	}
	return best
}
