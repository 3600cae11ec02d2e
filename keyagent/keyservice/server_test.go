package keyservice_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/keyagent/audit"
	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/backend/soft"
	"github.com/keyward/keyward/keyagent/grants"
	"github.com/keyward/keyward/keyagent/kdf"
	"github.com/keyward/keyward/keyagent/keyservice"
	"github.com/keyward/keyward/keyagent/upstream"
	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/testenv"
)

// syncBuffer is an audit sink tests can read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) events(t *testing.T) []audit.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if line == "" {
			continue
		}
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

type fixture struct {
	addr  string
	ca    *testenv.CA
	b     backend.Backend
	audit *syncBuffer
	node  *tls.Config // client TLS for node "spiffe://keyward/node/web-7"
	other *tls.Config // a node with no grants
}

const grantsYAML = `version: 1
nodes:
  "spiffe://keyward/node/web-7": {scopes: ["payroll:*", "vault:*"], ops: [derive, encrypt, decrypt, status]}
`

func softBackend(t *testing.T) backend.Backend {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600)
	b, err := soft.Open(soft.Config{Path: filepath.Join(dir, "store"), PassphraseFile: pass,
		Argon2: soft.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func start(t *testing.T, b backend.Backend) *fixture {
	t.Helper()
	f := &fixture{ca: testenv.NewCA(t), b: b, audit: &syncBuffer{}}
	gfile := filepath.Join(t.TempDir(), "grants.yaml")
	os.WriteFile(gfile, []byte(grantsYAML), 0o600)
	g, err := grants.Load(gfile)
	if err != nil {
		t.Fatal(err)
	}
	scert, skey := f.ca.Issue(t, "keyservice", "127.0.0.1")
	tlsCfg, err := keyservice.ServerTLS(scert, skey, f.ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := keyservice.New(keyservice.ServerConfig{Backend: b, Grants: g, TLS: tlsCfg, Audit: audit.New(f.audit)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	f.node = f.clientTLS(t, "web-7", "spiffe://keyward/node/web-7")
	f.other = f.clientTLS(t, "db-9", "spiffe://keyward/node/db-9")
	return f
}

func (f *fixture) clientTLS(t *testing.T, cn, uri string) *tls.Config {
	cert, key := f.ca.Issue(t, cn, uri)
	c, err := keyservice.ClientTLS(cert, key, f.ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	c.ServerName = "127.0.0.1"
	return c
}

func (f *fixture) remote(t *testing.T, c *tls.Config) *upstream.Remote {
	r, err := upstream.NewRemote(upstream.RemoteConfig{Endpoints: []string{f.addr}, TLS: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestServeDerive(t *testing.T) {
	ctx := context.Background()
	b := softBackend(t)
	if _, err := b.CreateKeyring(ctx, "payroll", backend.KindDerive); err != nil {
		t.Fatal(err)
	}
	f := start(t, b)
	r := f.remote(t, f.node)

	k, v, err := r.Key(ctx, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:employees.ssn", Bits: 512, ActingFor: "db:alice"})
	if err != nil || v != 1 {
		t.Fatalf("derive: v=%d err=%v", v, err)
	}
	direct, _, err := b.Derive(ctx, "payroll:employees.ssn", 1, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Equal(direct) {
		t.Fatal("key from the service differs from the backend's")
	}

	cases := []struct {
		name   string
		tls    *tls.Config
		req    upstream.KeyRequest
		want   error
		reason string
	}{
		{"denied scope", f.node, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "hr:names", Bits: 256}, wire.ErrDenied, "hr:names"},
		{"node without grants", f.other, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:x", Bits: 256}, wire.ErrDenied, ""},
		{"unknown keyring", f.node, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "vault:x", Bits: 256}, wire.ErrNotFound, ""},
		{"unknown version", f.node, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:x", Version: 9, Bits: 256}, wire.ErrNotFound, ""},
		{"bad size", f.node, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:x", Bits: 128}, wire.ErrBadRequest, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := f.remote(t, c.tls).Key(ctx, c.req)
			if !errors.Is(err, c.want) {
				t.Fatalf("want %v, got %v", c.want, err)
			}
		})
	}
	var denials int
	for _, e := range f.audit.events(t) {
		if e.Decision == audit.Deny && e.Op == "derive" {
			denials++
			if e.Node == "" || e.Reason == "" {
				t.Fatalf("denial audited without node or reason: %+v", e)
			}
		}
		if e.Decision == audit.Allow && (e.Node != "spiffe://keyward/node/web-7" || e.OnBehalfOf != "db:alice" || e.Version != 1) {
			t.Fatalf("allow audited wrongly: %+v", e)
		}
	}
	if denials != 2 {
		t.Fatalf("%d denials audited, want 2", denials)
	}
}

func TestServeVersionStates(t *testing.T) {
	ctx := context.Background()
	b := softBackend(t)
	b.CreateKeyring(ctx, "payroll", backend.KindDerive)
	b.Rotate(ctx, "payroll")
	f := start(t, b)
	r := f.remote(t, f.node)
	if err := b.SetState(ctx, "payroll", 2, backend.StateDisabled); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Key(ctx, upstream.KeyRequest{Op: wire.OpEncrypt, Scope: "payroll:a", Version: 2, Bits: 256}); !errors.Is(err, wire.ErrDenied) {
		t.Fatalf("disabled version for encryption: %v", err)
	}
	k, v, err := r.Key(ctx, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:a", Version: 2, Bits: 256})
	if err != nil || v != 2 {
		t.Fatalf("disabled version for decryption: %v", err)
	}
	k.Destroy()
	if _, v, err := r.Key(ctx, upstream.KeyRequest{Op: wire.OpEncrypt, Scope: "payroll:a", Bits: 256}); err != nil || v != 1 {
		t.Fatalf("newest for encryption with v2 disabled: v=%d err=%v", v, err)
	}
	if err := b.SetState(ctx, "payroll", 2, backend.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Key(ctx, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:a", Version: 2, Bits: 256}); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("destroyed version: %v", err)
	}
}

func TestServeHSMAEADBindsScope(t *testing.T) {
	ctx := context.Background()
	b := softBackend(t)
	b.CreateKeyring(ctx, "vault", backend.KindHSMAEAD)
	f := start(t, b)
	r := f.remote(t, f.node)
	enc, err := r.Encrypt(ctx, &wire.HSMEncryptRequest{Scope: "vault:employees.note", AAD: []byte("aad"), Plaintext: []byte("top secret note")})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := r.Decrypt(ctx, &wire.HSMDecryptRequest{Scope: "vault:employees.note", Version: enc.Version, AAD: []byte("aad"), Ciphertext: enc.Ciphertext})
	if err != nil || string(dec.Plaintext) != "top secret note" {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := r.Decrypt(ctx, &wire.HSMDecryptRequest{Scope: "vault:other", Version: enc.Version, AAD: []byte("aad"), Ciphertext: enc.Ciphertext}); err == nil {
		t.Fatal("ciphertext of one scope decrypted under another scope")
	}
	if _, err := r.Encrypt(ctx, &wire.HSMEncryptRequest{Scope: "payroll:x", Plaintext: []byte("x")}); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("encrypt with a keyring that does not exist: %v", err)
	}
}

func TestServeBadClients(t *testing.T) {
	ctx := context.Background()
	b := softBackend(t)
	b.CreateKeyring(ctx, "payroll", backend.KindDerive)
	f := start(t, b)

	// No client certificate: the handshake fails.
	noCert := f.node.Clone()
	noCert.Certificates = nil
	if c, err := tls.Dial("tcp", f.addr, noCert); err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if err == nil {
			t.Fatal("server talked to a client without a certificate")
		}
	}

	frames := map[string][]byte{
		"oversized length":  append(binary.BigEndian.AppendUint32(nil, 1<<30), byte(wire.TypeKeyRequest)),
		"truncated body":    append(binary.BigEndian.AppendUint32(nil, 50), byte(wire.TypeKeyRequest), 1, 2),
		"garbage body":      append(binary.BigEndian.AppendUint32(nil, 4), byte(wire.TypeKeyRequest), 9, 9, 9),
		"response as input": append(binary.BigEndian.AppendUint32(nil, 1), byte(wire.TypeOK)),
	}
	for name, frame := range frames {
		t.Run(name, func(t *testing.T) {
			c, err := tls.Dial("tcp", f.addr, f.node)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(frame)
			if name == "truncated body" {
				c.CloseWrite()
			}
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			io.Copy(io.Discard, c) // the server answers (maybe) and closes
			// Everyone else is still served.
			k, _, err := f.remote(t, f.node).Key(ctx, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:x", Bits: 256})
			if err != nil {
				t.Fatalf("service broken after a bad frame: %v", err)
			}
			k.Destroy()
		})
	}
}

func TestKCVMatchesKDF(t *testing.T) {
	ctx := context.Background()
	b := softBackend(t)
	b.CreateKeyring(ctx, "payroll", backend.KindDerive)
	f := start(t, b)
	k, _, err := f.remote(t, f.node).Key(ctx, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:employees.ssn", Bits: 256})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := kdf.KCV(k)
	d, _, _ := b.Derive(ctx, "payroll:employees.ssn", 0, 256, false)
	want, _ := kdf.KCV(d)
	if got != want || len(got) != 6 {
		t.Fatalf("kcv %q vs %q", got, want)
	}
}
