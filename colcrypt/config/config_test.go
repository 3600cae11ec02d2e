package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const full = `version: 1
listen: 127.0.0.1:6432
tls: {cert: proxy.pem, key: proxy.key, require_client_tls: true}
upstream: {host: 127.0.0.1, port: 5432, tls: verify-full, ca: db-ca.pem}
limits: {max_connections: 1000, idle_timeout: 30m, startup_timeout: 10s}
metrics: 127.0.0.1:9465
agent: {socket: /run/keyward/agent.sock}
columns:
  - {table: public.employees, column: ssn,    type: text,    mode: deterministic, scope: "payroll:employees.ssn"}
  - {table: public.employees, column: salary, type: numeric, mode: randomized,    scope: "payroll:employees.salary"}
on_denied: null
`

func TestParseFull(t *testing.T) {
	c, err := Parse("/etc/colcrypt/colcrypt.yaml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.Cert != "/etc/colcrypt/proxy.pem" || !c.TLS.RequireClientTLS || c.Upstream.CA != "/etc/colcrypt/db-ca.pem" {
		t.Fatalf("paths: %+v %+v", c.TLS, c.Upstream)
	}
	if c.Limits.IdleTimeout != 30*time.Minute || c.Limits.StartupTimeout != 10*time.Second || c.Limits.ShutdownTimeout != DefaultShutdownTimeout {
		t.Fatalf("limits: %+v", c.Limits)
	}
	if len(c.Columns) != 2 || c.Columns[1].Line != 10 || c.OnDenied != "null" || c.Line("upstream.tls") != 4 {
		t.Fatalf("columns: %+v on_denied %q", c.Columns, c.OnDenied)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse("c.yaml", []byte("version: 1\nupstream: {host: db}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != DefaultListen || c.Upstream.Port != 5432 || c.Upstream.TLS != TLSDisable ||
		c.Limits.MaxConnections != DefaultMaxConnections || c.Limits.IdleTimeout != DefaultIdleTimeout ||
		c.OnDenied != "error" || c.Log.Level != "info" {
		t.Fatalf("defaults: %+v", c)
	}
	// An explicit zero is kept (no limit), not replaced by the default.
	c, err = Parse("c.yaml", []byte("version: 1\nupstream: {host: db}\nlimits: {max_connections: 0, idle_timeout: 0s}\n"))
	if err != nil || c.Limits.MaxConnections != 0 || c.Limits.IdleTimeout != 0 {
		t.Fatalf("explicit zero: %+v %v", c.Limits, err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		key, msg   string
	}{
		{"unknown top key", "version: 1\nupstream: {host: db}\nlisten_port: 5\n", 3, "listen_port", "unknown key"},
		{"unknown nested key", "version: 1\nupstream:\n  host: db\n  sslmode: require\n", 4, "upstream.sslmode", "unknown key"},
		{"missing version", "upstream: {host: db}\n", 1, "version", "missing"},
		{"future version", "version: 2\nupstream: {host: db}\n", 1, "version", "unsupported version"},
		{"bad tls mode", "version: 1\nupstream: {host: db, tls: prefer}\n", 2, "upstream.tls", "verify-full"},
		{"verify-full without ca", "version: 1\nupstream: {host: db, tls: verify-full}\n", 2, "upstream.ca", "required"},
		{"no host", "version: 1\nupstream: {port: 5432}\n", 2, "upstream.host", "required"},
		{"bad duration", "version: 1\nupstream: {host: db}\nlimits: {idle_timeout: soon}\n", 3, "", "time.Duration"}, // confile names the line, not the key, for type errors
		{"bad relay_threads", "version: 1\nupstream: {host: db}\nlimits: {relay_threads: -2}\n", 3, "limits.relay_threads", "number of loops"},
		{"metrics not loopback", "version: 1\nupstream: {host: db}\nmetrics: 0.0.0.0:9465\n", 3, "metrics", "loopback"},
		{"tls without key", "version: 1\nupstream: {host: db}\ntls: {cert: a.pem}\n", 3, "tls", "key is required"},
		{"column without scope", "version: 1\nupstream: {host: db}\nagent: {socket: /s}\ncolumns:\n  - {table: t, column: c}\n", 5, "columns[0]", "scope"},
		{"columns without agent", "version: 1\nupstream: {host: db}\ncolumns:\n  - {table: t, column: c, scope: a:b}\n", 3, "columns", "agent"},
		{"bad on_denied", "version: 1\nupstream: {host: db}\non_denied: maybe\n", 3, "on_denied", "want error"},
		{"empty", "", 0, "", "empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("colcrypt.yaml", []byte(tc.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			if ce.Line != tc.line || ce.Key != tc.key || !strings.Contains(ce.Msg, tc.msg) {
				t.Fatalf("got line %d key %q msg %q (%v), want line %d key %q msg ~%q", ce.Line, ce.Key, ce.Msg, err, tc.line, tc.key, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "colcrypt.yaml") || (tc.line > 0 && !strings.Contains(err.Error(), fmt.Sprintf(":%d: ", tc.line))) {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "colcrypt.yaml")
	if err := os.WriteFile(p, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Path != p {
		t.Fatalf("%v %v", c, err)
	}
	if _, err := Load(p + ".missing"); err == nil {
		t.Fatal("missing file loaded")
	}
}
