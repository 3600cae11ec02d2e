package testenv_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/miekg/pkcs11"

	"github.com/keyward/keyward/testenv"
)

func TestTwoClustersAtOnce(t *testing.T) {
	var (
		wg  sync.WaitGroup
		pgs [2]*testenv.PG
	)
	for i := range pgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pgs[i] = testenv.Postgres(t)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if pgs[0].Port == pgs[1].Port || pgs[0].DataDir == pgs[1].DataDir {
		t.Fatalf("clusters share port or directory: %+v %+v", pgs[0].Port, pgs[1].Port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, p := range pgs {
		conn, err := pgx.Connect(ctx, p.UserDSN())
		if err != nil {
			t.Fatalf("cluster %d: %v", i, err)
		}
		var port int
		var user string
		if err := conn.QueryRow(ctx, "SELECT current_setting('port')::int, current_user").Scan(&port, &user); err != nil {
			t.Fatal(err)
		}
		if port != p.Port || user != p.User {
			t.Fatalf("cluster %d answers on port %d as %q, want %d as %q", i, port, user, p.Port, p.User)
		}
		conn.Close(ctx)
	}
}

func TestScramLogin(t *testing.T) {
	p := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.UserDSN())
	if err != nil {
		t.Fatalf("scram login: %v", err)
	}
	var enc string
	if err := conn.QueryRow(ctx, "SHOW password_encryption").Scan(&enc); err != nil || enc != "scram-sha-256" {
		t.Fatalf("password_encryption = %q, %v", enc, err)
	}
	conn.Close(ctx)
	_, err = pgx.Connect(ctx, p.DSN(p.User, "wrong-password"))
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("wrong password: want authentication failure, got %v", err)
	}
	// DSNAt escapes what a URL cannot carry as is; the cluster's own address makes it the same DSN.
	if _, err := pgx.Connect(ctx, p.DSNAt(fmt.Sprintf("127.0.0.1:%d", p.Port), p.User, p.Password+"@/:?#%")); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("DSNAt with an unusual wrong password: want authentication failure, got %v", err)
	}
	if c, err := pgx.Connect(ctx, p.DSNAt(fmt.Sprintf("127.0.0.1:%d", p.Port), p.User, p.Password)); err != nil {
		t.Fatalf("DSNAt: %v", err)
	} else {
		c.Close(ctx)
	}
	out, err := p.Psql(t, p.UserDSN(), "-t", "-A", "-c", "SELECT 40+2")
	if err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("psql: %q %v", out, err)
	}
}

func TestPostgresTLSAndRestart(t *testing.T) {
	p := testenv.Postgres(t, testenv.WithTLS(), testenv.WithSetting("max_connections", "50"))
	ca, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cfg, err := pgx.ParseConfig(p.UserDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("verify-full TLS: %v", err)
	}
	var ssl bool
	var maxc string
	if err := conn.QueryRow(ctx, "SELECT ssl, current_setting('max_connections') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &maxc); err != nil {
		t.Fatal(err)
	}
	if !ssl || maxc != "50" {
		t.Fatalf("ssl=%t max_connections=%s", ssl, maxc)
	}
	conn.Close(ctx)
	p.Stop(t)
	if _, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		t.Fatal("connected to a stopped server")
	}
	p.Start(t)
	conn, err = pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	conn.Close(ctx)
}

func TestSoftHSMLogin(t *testing.T) {
	h := testenv.SoftHSM(t)
	p := pkcs11.New(h.Module)
	if p == nil {
		t.Fatalf("load %s", h.Module)
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer p.Destroy()
	defer p.Finalize()
	info, err := p.GetTokenInfo(h.Slot)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(info.Label) != h.TokenLabel {
		t.Fatalf("token label %q, want %q", info.Label, h.TokenLabel)
	}
	s, err := p.OpenSession(h.Slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s)
	if err := p.Login(s, pkcs11.CKU_USER, "not-the-pin"); err == nil {
		t.Fatal("login with a wrong PIN succeeded")
	}
	if err := p.Login(s, pkcs11.CKU_USER, h.UserPin); err != nil {
		t.Fatalf("login: %v", err)
	}
	pin, err := os.ReadFile(h.PinFile)
	if err != nil || strings.TrimSpace(string(pin)) != h.UserPin {
		t.Fatalf("pin file: %v", err)
	}
}

func TestRequire(t *testing.T) {
	if p := testenv.Require(t, "sh"); p == "" {
		t.Fatal("sh not found")
	}
	// A missing tool skips outside CI and fails under CI=true: check both in a subprocess.
	for _, ci := range []string{"", "true"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireMissing$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_REQUIRE_MISSING=1", "CI="+ci)
		out, err := cmd.CombinedOutput()
		switch {
		case ci == "true" && (err == nil || !strings.Contains(string(out), "make deps")):
			t.Fatalf("CI=true: want failure naming make deps, got %v: %s", err, out)
		case ci == "" && (err != nil || !strings.Contains(string(out), "SKIP") || !strings.Contains(string(out), "make deps")):
			t.Fatalf("CI unset: want skip naming make deps, got %v: %s", err, out)
		}
	}
}

func TestRequireMissing(t *testing.T) {
	if os.Getenv("TESTENV_REQUIRE_MISSING") == "" {
		t.Skip("helper for TestRequire")
	}
	testenv.Require(t, "no-such-tool-keyward")
}

func TestCAIssueURI(t *testing.T) {
	ca := testenv.NewCA(t)
	certFile, keyFile := ca.Issue(t, "node-1", "spiffe://keyward/node/web-7", "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	pool := x509.NewCertPool()
	data, _ := os.ReadFile(ca.CertFile)
	pool.AppendCertsFromPEM(data)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://keyward/node/web-7" || leaf.Subject.CommonName != "node-1" {
		t.Fatalf("cert: %v %v", leaf.URIs, leaf.Subject)
	}
}

func TestWaitForAndWaitDial(t *testing.T) {
	calls := 0
	testenv.WaitFor(t, 5*time.Second, "the third call", func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("WaitFor stopped after %d calls, want 3", calls)
	}

	port := testenv.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := testenv.WaitDial("tcp", addr, 100*time.Millisecond); err == nil {
		t.Fatal("WaitDial succeeded with nothing listening")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := testenv.WaitDial("tcp", addr, 5*time.Second); err != nil {
		t.Fatalf("WaitDial with a listener: %v", err)
	}
}

func TestSelfExe(t *testing.T) {
	self := testenv.SelfExe(t)
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if self != exe {
		t.Fatalf("SelfExe = %q, /proc/self/exe = %q", self, exe)
	}
}
