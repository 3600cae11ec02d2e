package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/colcrypt/proxy"
	"github.com/keyward/keyward/testenv"
)

// shared is one Postgres for the tests that do not stop it: TLS on (the proxy picks whether to use
// it), room for 300+ sessions, and an md5 role.
var (
	sharedOnce sync.Once
	sharedPG   *testenv.PG
	sharedErr  string
)

const md5User, md5Password = "md5user", "md5-secret"

// pgFor returns the shared cluster. It is started by the first caller and stopped when the package's
// tests are done (TestMain).
func pgFor(t *testing.T) *testenv.PG {
	t.Helper()
	sharedOnce.Do(func() {
		defer func() {
			if r := recover(); r != nil {
				sharedErr = fmt.Sprint(r)
				sharedPG = nil
			}
		}()
		sharedPG = testenv.Postgres(holder, testenv.WithTLS(), testenv.WithSetting("max_connections", "420"),
			testenv.WithHBA("host all "+md5User+" 127.0.0.1/32 md5"))
		sharedPG.Exec(holder, "SET password_encryption = 'md5'; CREATE ROLE "+md5User+" LOGIN PASSWORD '"+md5Password+"'")
		sharedPG.Exec(holder, "GRANT ALL ON DATABASE "+sharedPG.Database+" TO "+md5User+"; GRANT ALL ON SCHEMA public TO "+md5User)
	})
	if sharedPG == nil {
		if strings.HasPrefix(sharedErr, "skip: ") && !testenv.InCI() {
			t.Skip(sharedErr)
		}
		t.Fatal(sharedErr)
	}
	return sharedPG
}

type proxyEnv struct {
	Addr string
	Srv  *proxy.Server
	stop func()
}

// startProxy runs a proxy in-process on a fresh loopback port.
func startProxy(t *testing.T, pg *testenv.PG, mod func(*proxy.Config)) *proxyEnv {
	t.Helper()
	cfg := proxy.Config{
		UpstreamAddr:   fmt.Sprintf("%s:%d", pg.Host, pg.Port),
		UpstreamTLS:    proxy.TLSDisable,
		StartupTimeout: 10 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if mod != nil {
		mod(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	e := &proxyEnv{Addr: ln.Addr().String(), Srv: srv}
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(40 * time.Second):
				t.Errorf("serve did not return after shutdown")
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

// DSN returns pg's DSN for user with the host and port replaced by the proxy's.
func (e *proxyEnv) DSN(pg *testenv.PG, user, password string, params ...string) string {
	u, _ := url.Parse(pg.DSN(user, password))
	u.Host = e.Addr
	q := u.Query()
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// holder owns the shared cluster's cleanup: a testing.TB whose Cleanup runs at the end of TestMain.
var holder = &cleanupTB{}

type cleanupTB struct {
	testing.TB
	mu  sync.Mutex
	fns []func()
	dir []string
}

func (c *cleanupTB) Helper()                   {}
func (c *cleanupTB) Name() string              { return "shared" }
func (c *cleanupTB) Failed() bool              { return false }
func (c *cleanupTB) Logf(string, ...any)       {}
func (c *cleanupTB) Log(...any)                {}
func (c *cleanupTB) Setenv(k, v string)        { os.Setenv(k, v) }
func (c *cleanupTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (c *cleanupTB) Fatal(a ...any)            { panic(fmt.Sprint(a...)) }
func (c *cleanupTB) Errorf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (c *cleanupTB) Skipf(f string, a ...any)  { panic("skip: " + fmt.Sprintf(f, a...)) }
func (c *cleanupTB) Skip(a ...any)             { panic("skip: " + fmt.Sprint(a...)) }
func (c *cleanupTB) Cleanup(f func()) {
	c.mu.Lock()
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}
func (c *cleanupTB) TempDir() string {
	d, err := os.MkdirTemp("", "colcrypt-proxy-test-")
	if err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.dir = append(c.dir, d)
	c.mu.Unlock()
	return d
}
func (c *cleanupTB) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	for _, d := range c.dir {
		os.RemoveAll(d)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	holder.run()
	os.Exit(code)
}

// psqlStdin runs a psql script (psql -X -v ON_ERROR_STOP=0 -f -) and returns its combined output.
func psqlStdin(t *testing.T, pg *testenv.PG, dsn, script string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(pg.BinDir, "psql"), "-X", "-v", "ON_ERROR_STOP=0", "-d", dsn, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	return string(out)
}

// relays are the two ways a session without hooks is relayed: the proxy's own event loop (the
// default for sessions without TLS) and goroutines (TLS sessions, or RelayThreads < 0).
var relays = []struct {
	name    string
	threads int
}{{"event_loop", 0}, {"goroutines", -1}}

// startFunc starts a proxy like startProxy.
type startFunc func(t *testing.T, pg *testenv.PG, mod func(*proxy.Config)) *proxyEnv

// eachRelay runs f once per relay. Proxies f starts with start use that relay, and each one without
// an Interceptor is checked, when the test ends, to have relayed all its sessions that way.
func eachRelay(t *testing.T, f func(t *testing.T, start startFunc)) {
	for _, r := range relays {
		t.Run("relay="+r.name, func(t *testing.T) {
			f(t, func(t *testing.T, pg *testenv.PG, mod func(*proxy.Config)) *proxyEnv {
				var cfg proxy.Config
				e := startProxy(t, pg, func(c *proxy.Config) {
					c.RelayThreads = r.threads
					if mod != nil {
						mod(c)
					}
					cfg = *c
				})
				if cfg.Interceptor == nil && cfg.TLS == nil {
					t.Cleanup(func() {
						got := relayedBy(t, e.Srv)
						if got[r.name] == 0 || len(got) != 1 {
							t.Errorf("sessions by relay: %v, want all on %s", got, r.name)
						}
					})
				}
				return e
			})
		})
	}
}

// relayedBy returns the server's colcrypt_sessions_total by relay.
func relayedBy(t *testing.T, srv *proxy.Server) map[string]float64 {
	t.Helper()
	mfs, err := srv.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "colcrypt_sessions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "relay" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return got
}
