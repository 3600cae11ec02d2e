package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/testenv"
)

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml string
		code       int
		want       string
	}{
		{"unknown key", "version: 1\nupstream: {host: 127.0.0.1}\nbogus: 1\n", ExitConfig, `colcrypt.yaml:3: key "bogus": unknown key`},
		{"missing cert file", "version: 1\nupstream: {host: 127.0.0.1}\ntls: {cert: nope.pem, key: nope.key}\n", ExitConfig, "client-facing tls"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "colcrypt.yaml")
			os.WriteFile(p, []byte(tc.yaml), 0o600)
			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"serve", "--config", p}, &out, &errOut)
			if code != tc.code || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errOut.String(), tc.code, tc.want)
			}
		})
	}
	var errOut bytes.Buffer
	if code := run(context.Background(), []string{"serve"}, io.Discard, &errOut); code != ExitConfig {
		t.Fatalf("serve without --config: exit %d %s", code, errOut.String())
	}
}

// TestServeBinary runs the built colcrypt binary with a config file against a real Postgres.
func TestServeBinary(t *testing.T) {
	pg := testenv.Postgres(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "colcrypt")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/keyward/keyward/cmd/colcrypt").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port, mport := testenv.FreePort(t), testenv.FreePort(t)
	cfg := fmt.Sprintf(`version: 1
listen: 127.0.0.1:%d
upstream: {host: %s, port: %d, tls: disable}
limits: {max_connections: 10, idle_timeout: 1m, startup_timeout: 5s, shutdown_timeout: 5s}
metrics: 127.0.0.1:%d
log: {level: info, format: json}
`, port, pg.Host, pg.Port, mport)
	cfgPath := filepath.Join(dir, "colcrypt.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("colcrypt serve did not listen: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn := strings.Replace(pg.UserDSN(), fmt.Sprintf("%s:%d", pg.Host, pg.Port), addr, 1)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect through colcrypt: %v\n%s", err, stderr.String())
	}
	var v string
	if err := c.QueryRow(ctx, "SELECT current_user || '@' || current_database()").Scan(&v); err != nil || v != pg.User+"@"+pg.Database {
		t.Fatalf("query: %q %v", v, err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"colcrypt_connections_total", "colcrypt_sessions_active 1", `colcrypt_messages_total{direction="client_to_server"}`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
	c.Close(ctx)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("colcrypt serve exited with %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("colcrypt serve did not stop on SIGTERM\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), "SELECT") {
		t.Fatalf("query text in the logs:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"session end"`) {
		t.Fatalf("no session log:\n%s", stderr.String())
	}
}
