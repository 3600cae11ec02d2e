package columns

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/colcrypt/colkeys"
	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/proxy"
	"github.com/keyward/keyward/keyagent/client"
)

// FromConfig builds the interceptor `colcrypt serve` installs from colcrypt.yaml: the agent client,
// the process's key cache and the catalog connection (catalog: {database, user, password_file},
// reached like the upstream). With no protected column it returns a nil Interceptor (the pure proxy).
// The returned function releases everything (keys are wiped).
func FromConfig(ctx context.Context, cfg *config.Config, log *slog.Logger) (proxy.Interceptor, func(), error) {
	if len(cfg.Columns) == 0 {
		return nil, nil, nil
	}
	if cfg.Catalog == nil {
		return nil, nil, fmt.Errorf("%s: protected columns need catalog: {database: ..., user: ..., password_file: ...} (the side connection that reads the column layout)", cfg.Path)
	}
	dsn, err := CatalogDSN(cfg)
	if err != nil {
		return nil, nil, err
	}
	socket := client.SocketPath("")
	var ttl time.Duration
	if cfg.Agent != nil {
		if cfg.Agent.Socket != "" {
			socket = cfg.Agent.Socket
		}
		ttl = cfg.Agent.TTL
	}
	agent := client.New(socket)
	keys := colkeys.New(colkeys.Config{Agent: agent, TTL: ttl, Logger: log})
	cols := append([]config.Column(nil), cfg.Columns...)
	for i := range cols {
		if cols[i].Line == 0 {
			cols[i].Line = cfg.Line(fmt.Sprintf("columns[%d]", i))
		}
	}
	ic, err := New(ctx, Config{Columns: cols, ConfigPath: cfg.Path, OnDenied: cfg.OnDenied, Keys: keys, CatalogDSN: dsn, Logger: log})
	if err != nil {
		keys.Close()
		agent.Close()
		return nil, nil, err
	}
	return ic, func() { ic.Close(); keys.Close(); agent.Close() }, nil
}

// CatalogDSN is the pgx connection string of the catalog side connection.
func CatalogDSN(cfg *config.Config) (string, error) {
	c := cfg.Catalog
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(cfg.Upstream.Host, strconv.Itoa(cfg.Upstream.Port)), Path: "/" + c.Database}
	if c.PasswordFile != "" {
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("catalog.password_file: %w", err)
		}
		u.User = url.UserPassword(c.User, strings.TrimRight(string(pw), "\r\n"))
	} else {
		u.User = url.User(c.User)
	}
	q := url.Values{}
	q.Set("application_name", "colcrypt-catalog")
	switch cfg.Upstream.TLS {
	case config.TLSRequire:
		q.Set("sslmode", "require")
	case config.TLSVerifyFull:
		q.Set("sslmode", "verify-full")
		if cfg.Upstream.CA != "" {
			q.Set("sslrootcert", cfg.Upstream.CA)
		}
	default:
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
