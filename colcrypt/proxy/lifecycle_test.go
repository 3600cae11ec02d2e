package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/config"
	"github.com/keyward/keyward/colcrypt/proxy"
	"github.com/keyward/keyward/testenv"
)

func TestClientDisconnectMidQuery(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, nil)
		direct := connect(t, pg.SuperDSN())
		ctx := ctxT(t, 30*time.Second)
		c := connect(t, e.DSN(pg, pg.User, pg.Password))
		var pid int
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		go c.Exec(context.Background(), "SELECT pg_sleep(30)")
		testenv.WaitFor(t, 5*time.Second, "backend running pg_sleep", func() error {
			return backendCount(ctx, direct, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid, 1)
		})
		c.PgConn().Conn().Close() // the client vanishes without Terminate
		testenv.WaitFor(t, 3*time.Second, "backend gone", func() error {
			return backendCount(ctx, direct, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid, 0)
		})
	})
}

// backendCount checks that query (a count of pg_stat_activity rows for pid) returns want.
func backendCount(ctx context.Context, c *pgx.Conn, query string, pid, want int) error {
	var n int
	if err := c.QueryRow(ctx, query, pid).Scan(&n); err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("%d rows, want %d", n, want)
	}
	return nil
}

func TestPostgresRestart(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := testenv.Postgres(t)
		e := start(t, pg, nil)
		ctx := ctxT(t, 60*time.Second)
		c := connect(t, e.DSN(pg, pg.User, pg.Password))
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		pg.Stop(t)
		if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatal("query on a session whose server stopped succeeded")
		}
		_, err := pgx.Connect(ctx, e.DSN(pg, pg.User, pg.Password))
		if code := errCode(err); code != "08006" {
			t.Fatalf("connect while the server is down: %v (code %s), want 08006", err, code)
		}
		pg.Start(t)
		c2 := connect(t, e.DSN(pg, pg.User, pg.Password))
		if _, err := c2.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("after restart: %v", err)
		}
	})
}

// rawSession opens a TCP connection to the proxy and authenticates through it with pgproto3 (trust is
// not available, so it drives SCRAM through pgconn and hijacks the connection).
func rawSession(t *testing.T, dsn string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := connect(t, dsn)
	hj, err := c.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hj.Conn.Close() })
	return hj.Conn, bufio.NewReader(hj.Conn)
}

// readUntilErrorOrEOF reads server messages until an ErrorResponse (returned) or EOF (nil).
func readUntilErrorOrEOF(t *testing.T, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, io.Discard)
	for {
		m, err := fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("no ErrorResponse and no close after malformed input")
			}
			return nil
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			cp := *e
			return &cp
		}
	}
}

func TestMalformedClientBytes(t *testing.T) {
	pg := pgFor(t)
	for _, variant := range []string{"event_loop", "goroutines", "hooks"} {
		t.Run(variant, func(t *testing.T) {
			mod := func(c *proxy.Config) { c.RelayThreads = -1 }
			switch variant {
			case "event_loop":
				mod = nil
			case "hooks":
				mod = func(c *proxy.Config) { c.Interceptor = &testInterceptor{t: t} }
			}
			e := startProxy(t, pg, mod)
			ctx := ctxT(t, 30*time.Second)
			bystander := connect(t, e.DSN(pg, pg.User, pg.Password))
			cases := []struct {
				name    string
				startup bool // sent instead of a StartupMessage
				bytes   []byte
			}{
				{"startup length too small", true, []byte{0, 0, 0, 3, 1, 2, 3}},
				{"startup length huge", true, []byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0}},
				{"startup unknown protocol", true, []byte{0, 0, 0, 8, 0, 9, 0, 0}},
				{"startup unterminated params", true, append([]byte{0, 0, 0, 14, 0, 3, 0, 0}, "user\x00a"...)},
				{"message length below 4", false, []byte{'Q', 0, 0, 0, 2}},
				{"message length huge", false, []byte{'Q', 0x7f, 0xff, 0xff, 0xff}},
				{"unknown message type", false, []byte{'z', 0, 0, 0, 4}},
				{"query without terminator", false, []byte{'Q', 0, 0, 0, 7, 'a', 'b', 'c'}},
				{"bind with bad counts", false, []byte{'B', 0, 0, 0, 10, 0, 0, 0xff, 0xff, 0, 0}},
				{"parse truncated", false, []byte{'P', 0, 0, 0, 6, 'x', 0}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var conn net.Conn
					if tc.startup {
						var err error
						conn, err = net.Dial("tcp", e.Addr)
						if err != nil {
							t.Fatal(err)
						}
						defer conn.Close()
					} else {
						conn, _ = rawSession(t, e.DSN(pg, pg.User, pg.Password))
					}
					if _, err := conn.Write(tc.bytes); err != nil {
						t.Fatal(err)
					}
					// Any ErrorResponse (the proxy's 08P01, or PostgreSQL's own for bytes the fast path
					// forwards) or a closed connection is fine; a hang or crash is not.
					er := readUntilErrorOrEOF(t, conn)
					if strings.Contains(tc.name, "length") && er != nil && er.Code != "08P01" {
						t.Fatalf("framing error answered with %s %s, want 08P01", er.Code, er.Message)
					}
					var v int
					if err := bystander.QueryRow(ctx, "SELECT 7").Scan(&v); err != nil || v != 7 {
						t.Fatalf("other session affected: %v", err)
					}
				})
			}
		})
	}
}

func TestMaxConnections(t *testing.T) {
	pg := pgFor(t)
	e := startProxy(t, pg, func(c *proxy.Config) { c.MaxConnections = 2 })
	ctx := ctxT(t, 20*time.Second)
	connect(t, e.DSN(pg, pg.User, pg.Password))
	connect(t, e.DSN(pg, pg.User, pg.Password))
	_, err := pgx.Connect(ctx, e.DSN(pg, pg.User, pg.Password))
	if code := errCode(err); code != "53300" || !strings.Contains(err.Error(), "too many connections") {
		t.Fatalf("third connection: %v (code %s), want 53300 too many connections", err, code)
	}
}

func TestIdleTimeout(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, func(c *proxy.Config) { c.IdleTimeout = 300 * time.Millisecond })
		ctx := ctxT(t, 20*time.Second)
		idle := connect(t, e.DSN(pg, pg.User, pg.Password))
		busy := connect(t, e.DSN(pg, pg.User, pg.Password))
		// Waiting for a slow query is not idleness.
		if _, err := busy.Exec(ctx, "SELECT pg_sleep(0.8)"); err != nil {
			t.Fatalf("busy session killed: %v", err)
		}
		time.Sleep(time.Second)
		if _, err := idle.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatal("idle session survived idle_timeout")
		}
	})
}

func TestGracefulShutdown(t *testing.T) {
	eachRelay(t, func(t *testing.T, start startFunc) {
		pg := pgFor(t)
		e := start(t, pg, func(c *proxy.Config) { c.ShutdownTimeout = 5 * time.Second })
		ctx := ctxT(t, 20*time.Second)
		idle := connect(t, e.DSN(pg, pg.User, pg.Password))
		busy := connect(t, e.DSN(pg, pg.User, pg.Password))
		res := make(chan error, 1)
		go func() {
			_, err := busy.Exec(ctx, "SELECT pg_sleep(1)")
			res <- err
		}()
		time.Sleep(200 * time.Millisecond)
		began := time.Now()
		e.stop()
		if took := time.Since(began); took > 4*time.Second {
			t.Fatalf("shutdown took %v", took)
		}
		if err := <-res; err != nil {
			t.Fatalf("in-flight query was not allowed to finish: %v", err)
		}
		if _, err := idle.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatal("idle session still works after shutdown")
		}
		if c, err := net.DialTimeout("tcp", e.Addr, time.Second); err == nil {
			c.Close()
			t.Fatal("still accepting after shutdown")
		}
	})
}

func TestTLS(t *testing.T) {
	pg := pgFor(t)
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "localhost", "127.0.0.1", "localhost")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(pg.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	dbCAs := x509.NewCertPool()
	dbCAs.AppendCertsFromPEM(pem)
	ctx := ctxT(t, 30*time.Second)
	for _, upstream := range []string{proxy.TLSDisable, proxy.TLSRequire, proxy.TLSVerifyFull} {
		t.Run("upstream="+upstream, func(t *testing.T) {
			e := startProxy(t, pg, func(c *proxy.Config) {
				c.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
				c.RequireClientTLS = true
				c.UpstreamTLS = upstream
				c.UpstreamTLSConfig = &tls.Config{RootCAs: dbCAs, ServerName: "127.0.0.1"}
			})
			c := connect(t, e.DSN(pg, pg.User, pg.Password, "sslmode", "verify-full", "sslrootcert", ca.CertFile, "channel_binding", "disable"))
			if !c.PgConn().Conn().(*tls.Conn).ConnectionState().HandshakeComplete {
				t.Fatal("client connection is not TLS")
			}
			var ssl bool
			if err := c.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
				t.Fatal(err)
			}
			if ssl != (upstream != proxy.TLSDisable) {
				t.Fatalf("upstream ssl = %v with tls %s", ssl, upstream)
			}
			// PostgreSQL 17's direct TLS (no SSLRequest, ALPN "postgresql").
			connect(t, e.DSN(pg, pg.User, pg.Password, "sslmode", "verify-full", "sslrootcert", ca.CertFile, "channel_binding", "disable", "sslnegotiation", "direct"))
			// md5 is unaffected by channel binding.
			connect(t, e.DSN(pg, md5User, md5Password, "sslmode", "verify-full", "sslrootcert", ca.CertFile))
			// Plain connections are refused with require_client_tls.
			_, err := pgx.Connect(ctx, e.DSN(pg, pg.User, pg.Password, "sslmode", "disable"))
			if errCode(err) != "28000" {
				t.Fatalf("plain connection with require_client_tls: %v", err)
			}
			// SCRAM with the default channel_binding=prefer over TLS both ways cannot work: a clear error.
			_, err = pgx.Connect(ctx, e.DSN(pg, pg.User, pg.Password, "sslmode", "verify-full", "sslrootcert", ca.CertFile))
			if upstream == proxy.TLSDisable {
				if err != nil {
					t.Fatalf("channel_binding=prefer with a plain upstream: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), "channel_binding=disable") {
				t.Fatalf("channel_binding=prefer over TLS both ways: %v", err)
			}
			// channel_binding=require is refused (by the client: the proxy never offers -PLUS).
			if _, err := pgx.Connect(ctx, e.DSN(pg, pg.User, pg.Password, "sslmode", "verify-full", "sslrootcert", ca.CertFile, "channel_binding", "require")); err == nil {
				t.Fatal("channel_binding=require succeeded through a TLS-terminating proxy")
			}
		})
	}
	t.Run("gssenc refused", func(t *testing.T) {
		e := startProxy(t, pg, nil)
		c, err := net.Dial("tcp", e.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var b [8]byte
		binary.BigEndian.PutUint32(b[:], 8)
		binary.BigEndian.PutUint32(b[4:], 80877104)
		c.Write(b[:])
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b[:1]); err != nil || b[0] != 'N' {
			t.Fatalf("GSSENCRequest answer %q %v", b[0], err)
		}
	})
}

func TestUnixSocket(t *testing.T) {
	pg := pgFor(t)
	dir := testenv.SharedDir(t)
	sock := filepath.Join(dir, ".s.PGSQL.6432")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.New(proxy.Config{UpstreamAddr: fmt.Sprintf("%s:%d", pg.Host, pg.Port)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	c := connect(t, fmt.Sprintf("host=%s port=6432 user=%s password=%s dbname=%s sslmode=disable", dir, pg.User, pg.Password, pg.Database))
	var v int
	if err := c.QueryRow(ctxT(t, 10*time.Second), "SELECT 41 + 1").Scan(&v); err != nil || v != 42 {
		t.Fatalf("%d %v", v, err)
	}
}

func TestStartupTimeout(t *testing.T) {
	pg := pgFor(t)
	e := startProxy(t, pg, func(c *proxy.Config) { c.StartupTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil { // a silent client is disconnected
		t.Fatalf("read: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("silent client kept %v", took)
	}
}

func TestFromFile(t *testing.T) {
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "localhost", "127.0.0.1")
	dir := t.TempDir()
	path := filepath.Join(dir, "colcrypt.yaml")
	yaml := fmt.Sprintf("version: 1\ntls: {cert: %s, key: %s}\nupstream: {host: db.internal, port: 5433, tls: verify-full, ca: %s}\nlimits: {max_connections: 7}\n", cert, key, ca.CertFile)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := proxy.FromFile(fc)
	if err != nil {
		t.Fatal(err)
	}
	if pc.UpstreamAddr != "db.internal:5433" || pc.UpstreamTLS != proxy.TLSVerifyFull || pc.MaxConnections != 7 ||
		pc.TLS == nil || len(pc.TLS.Certificates) != 1 || pc.UpstreamTLSConfig.RootCAs == nil || pc.UpstreamTLSConfig.ServerName != "db.internal" {
		t.Fatalf("%+v", pc)
	}
	os.WriteFile(ca.CertFile, []byte("not a certificate"), 0o600)
	if _, err := proxy.FromFile(fc); err == nil {
		t.Fatal("a CA file without a certificate was accepted")
	}
}
