package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PG is a running throwaway PostgreSQL cluster.
type PG struct {
	Host    string
	Port    int
	BinDir  string
	DataDir string
	LogFile string

	SuperUser, SuperPassword string // superuser, scram-sha-256
	User, Password           string // ordinary LOGIN role, scram-sha-256, owner of Database
	Database                 string

	CAFile string // with WithTLS: the CA that signed the server certificate (SANs 127.0.0.1, localhost)

	uid, gid uint32
	opts     pgOptions
}

type pgOptions struct {
	tls      bool
	hba      []string
	settings [][2]string
}

// PGOption configures Postgres.
type PGOption func(*pgOptions)

// WithTLS turns on ssl with a server certificate from a fresh test CA (PG.CAFile).
func WithTLS() PGOption { return func(o *pgOptions) { o.tls = true } }

// WithHBA puts lines at the top of pg_hba.conf (first match wins), e.g.
// "host all md5user 127.0.0.1/32 md5".
func WithHBA(lines ...string) PGOption {
	return func(o *pgOptions) { o.hba = append(o.hba, lines...) }
}

// WithSetting adds a postgresql.conf setting, e.g. WithSetting("max_connections", "400").
func WithSetting(key, value string) PGOption {
	return func(o *pgOptions) { o.settings = append(o.settings, [2]string{key, value}) }
}

// PostgresBinDir returns the newest /usr/lib/postgresql/<v>/bin with a postgres server in it.
func PostgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var found []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("no PostgreSQL server in /usr/lib/postgresql/*/bin")
	}
	ver := func(d string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return n
	}
	sort.Slice(found, func(i, j int) bool { return ver(found[i]) > ver(found[j]) })
	return found[0], nil
}

// Postgres starts a fresh cluster on 127.0.0.1 and stops and removes it at cleanup. When the test runs
// as root the server runs as the unprivileged test user, since postgres refuses to run as root.
func Postgres(t testing.TB, opts ...PGOption) *PG {
	t.Helper()
	bin, err := PostgresBinDir()
	if err != nil {
		if InCI() {
			t.Fatalf("%v: run `make deps`", err)
		}
		t.Skipf("%v: run `make deps` to install the test dependencies", err)
	}
	p := &PG{
		Host: "127.0.0.1", BinDir: bin,
		SuperUser: "kwsuper", SuperPassword: randHex(16),
		User: "keyward", Password: randHex(16), Database: "keyward",
	}
	for _, o := range opts {
		o(&p.opts)
	}
	p.uid, p.gid = uint32(os.Getuid()), uint32(os.Getgid())
	if os.Geteuid() == 0 {
		p.uid, p.gid, _ = Unprivileged(t)
	}
	dir := SharedDir(t)
	p.DataDir = filepath.Join(dir, "data")
	p.LogFile = filepath.Join(dir, "postgres.log")

	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.SuperPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.chown(t, pwfile)
	p.run(t, filepath.Join(bin, "initdb"), "-D", p.DataDir, "-U", p.SuperUser, "--pwfile="+pwfile,
		"--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	_ = os.Remove(pwfile)

	if p.opts.tls {
		p.setupTLS(t)
	}
	p.writeHBA(t)

	t.Cleanup(func() {
		stop := exec.Command(filepath.Join(bin, "pg_ctl"), "-D", p.DataDir, "-m", "immediate", "-w", "stop")
		AsUser(stop, p.uid, p.gid)
		_ = stop.Run()
		if t.Failed() {
			if log, err := os.ReadFile(p.LogFile); err == nil {
				t.Logf("postgres log (%s):\n%s", p.LogFile, tail(string(log), 4000))
			}
		}
	})

	// A port free a moment ago may be taken by a parallel test: retry with another one.
	var startErr error
	for attempt := 0; attempt < 5; attempt++ {
		p.Port = FreePort(t)
		p.writeConf(t)
		if startErr = p.start(); startErr == nil {
			break
		}
	}
	if startErr != nil {
		t.Fatalf("start postgres: %v", startErr)
	}
	p.bootstrap(t)
	return p
}

func (p *PG) writeConf(t testing.TB) {
	t.Helper()
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("port = %d", p.Port),
		fmt.Sprintf("unix_socket_directories = '%s'", p.DataDir),
		"fsync = off", "synchronous_commit = off", "full_page_writes = off",
		"shared_buffers = '64MB'", "max_wal_size = '1GB'",
		"password_encryption = 'scram-sha-256'",
		"log_min_messages = warning",
	}
	if p.opts.tls {
		conf = append(conf, "ssl = on", "ssl_cert_file = 'server.pem'", "ssl_key_file = 'server.key'")
	}
	for _, kv := range p.opts.settings {
		conf = append(conf, fmt.Sprintf("%s = '%s'", kv[0], strings.ReplaceAll(kv[1], "'", "''")))
	}
	path := filepath.Join(p.DataDir, "postgresql.auto.conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.chown(t, path)
}

func (p *PG) writeHBA(t testing.TB) {
	t.Helper()
	lines := append([]string{}, p.opts.hba...)
	lines = append(lines,
		"local all all scram-sha-256",
		"host all all 127.0.0.1/32 scram-sha-256",
	)
	path := filepath.Join(p.DataDir, "pg_hba.conf")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.chown(t, path)
}

func (p *PG) setupTLS(t testing.TB) {
	t.Helper()
	ca := NewCA(t)
	cert, key := ca.Issue(t, "localhost", "127.0.0.1", "localhost")
	for src, dst := range map[string]string{cert: "server.pem", key: "server.key"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(p.DataDir, dst)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		p.chown(t, path)
	}
	p.CAFile = ca.CertFile
}

func (p *PG) start() error {
	cmd := exec.Command(filepath.Join(p.BinDir, "pg_ctl"), "-D", p.DataDir, "-l", p.LogFile, "-w", "-t", "60", "start")
	AsUser(cmd, p.uid, p.gid)
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(p.LogFile)
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, tail(string(log), 2000))
	}
	return nil
}

// bootstrap creates the ordinary role and its database.
func (p *PG) bootstrap(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := strings.Replace(p.SuperDSN(), "/"+p.Database+"?", "/postgres?", 1)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", p.User, p.Password),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", p.Database, p.User),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("bootstrap %q: %v", strings.SplitN(q, " PASSWORD", 2)[0], err)
		}
	}
}

// Stop stops the server (fast shutdown); Start starts it again on the same port.
func (p *PG) Stop(t testing.TB) {
	t.Helper()
	cmd := exec.Command(filepath.Join(p.BinDir, "pg_ctl"), "-D", p.DataDir, "-m", "fast", "-w", "stop")
	AsUser(cmd, p.uid, p.gid)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl stop: %v: %s", err, out)
	}
}

// Start starts a stopped server again.
func (p *PG) Start(t testing.TB) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
}

// DSN is a URL for user on the cluster's database, sslmode=disable.
func (p *PG) DSN(user, password string) string {
	return p.DSNAt(fmt.Sprintf("%s:%d", p.Host, p.Port), user, password)
}

// DSNAt is DSN with another host:port: the cluster's database through a proxy listening at addr.
func (p *PG) DSNAt(addr, user, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: addr, Path: "/" + p.Database, RawQuery: "sslmode=disable"}
	return u.String()
}

// SuperDSN is the superuser's DSN; UserDSN the ordinary role's.
func (p *PG) SuperDSN() string { return p.DSN(p.SuperUser, p.SuperPassword) }
func (p *PG) UserDSN() string  { return p.DSN(p.User, p.Password) }

// Psql runs psql -X -v ON_ERROR_STOP=1 against dsn with args and returns its combined output.
func (p *PG) Psql(t testing.TB, dsn string, args ...string) (string, error) {
	t.Helper()
	psql := filepath.Join(p.BinDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = Require(t, "psql")
	}
	cmd := exec.Command(psql, append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn}, args...)...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Exec runs SQL as the superuser and fails the test on error.
func (p *PG) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.SuperDSN())
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func (p *PG) run(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	AsUser(cmd, p.uid, p.gid)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", filepath.Base(name), err, out)
	}
}

func (p *PG) chown(t testing.TB, path string) {
	t.Helper()
	if os.Geteuid() == 0 {
		if err := os.Chown(path, int(p.uid), int(p.gid)); err != nil {
			t.Fatal(err)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
