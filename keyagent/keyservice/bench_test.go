package keyservice_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"net"

	"github.com/keyward/keyward/keyagent/audit"
	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/backend/pkcs11"
	"github.com/keyward/keyward/keyagent/grants"
	"github.com/keyward/keyward/keyagent/keyservice"
	"github.com/keyward/keyward/keyagent/upstream"
	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/testenv"
)

var benchUS = testenv.Micros

// TestBenchKeyService measures issue 3's speed figure: derivations per second through the key
// service (TLS 1.3 with client certificates, 8 concurrent clients each on its own connection, a
// SoftHSM token) as a ratio of direct in-process derivations (pkcs11.Backend.Derive, C_Sign in the
// token, 8 goroutines) on the same token and backend, in alternating rounds of the same run.
//
// The service runs in this process (keyservice.New + Serve on 127.0.0.1), so its clients, its TLS and
// the HSM share the machine's cores with it; the direct figure has the cores to itself. The clients
// are wire.Conns that read keys into memsafe's slab (what keyagent/client does); a second figure, for
// information, goes through upstream.Remote, the agent's client, which reads keys into memguard.
func TestBenchKeyService(t *testing.T) {
	if os.Getenv("KEYWARD_BENCH") != "1" {
		t.Skip("set KEYWARD_BENCH=1 (make bench)")
	}
	rounds, dur := 6, 500*time.Millisecond
	if os.Getenv("KEYWARD_BENCH_QUICK") == "1" {
		rounds, dur = 2, 200*time.Millisecond
	}
	const clients = 8
	ctx := context.Background()
	hsm := testenv.SoftHSM(t)
	b, err := pkcs11.Open(pkcs11.Config{Module: hsm.Module, TokenLabel: hsm.TokenLabel, PinFile: hsm.PinFile})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateKeyring(ctx, "bench", backend.KindDerive); err != nil {
		t.Fatal(err)
	}
	const sc = "bench:employees.ssn"

	dir := t.TempDir()
	g, err := grants.Parse("grants.yaml", []byte("version: 1\nnodes:\n  \"spiffe://keyward/node/bench\": {scopes: [\"bench:*\"], ops: [derive]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ca := testenv.NewCA(t)
	scert, skey := ca.Issue(t, "keyservice", "127.0.0.1")
	stls, err := keyservice.ServerTLS(scert, skey, ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.Open(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close()
	srv, err := keyservice.New(keyservice.ServerConfig{Backend: b, Grants: g, TLS: stls, Audit: al})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	ctls := clientTLS(t, ca, "spiffe://keyward/node/bench")

	// Direct: the backend's own Derive, as many goroutines as clients.
	direct := make([]func() error, clients)
	for i := range direct {
		direct[i] = func() error {
			k, _, err := b.Derive(ctx, sc, 1, 256, false)
			if err != nil {
				return err
			}
			k.Destroy()
			return nil
		}
	}
	// Through the service: one TLS connection per client, keys read into the slab.
	var service []func() error
	for range clients {
		tc, err := tls.Dial("tcp", ln.Addr().String(), ctls)
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		c := wire.NewConn(tc, wire.Options{NewKey: memsafe.SlabFromReader})
		req := &wire.KeyRequest{Op: wire.OpDecrypt, Scope: sc, Version: 1, ActingFor: "db:alice", Bits: 256}
		service = append(service, func() error {
			m, err := c.Call(req)
			if err != nil {
				return err
			}
			kr, ok := m.(*wire.KeyResponse)
			if !ok {
				return fmt.Errorf("answer %T", m)
			}
			kr.Key.Destroy()
			return nil
		})
	}
	// Warm both paths (session copies of the key, TLS handshakes).
	for _, op := range append(direct[:1:1], service...) {
		if err := op(); err != nil {
			t.Fatal(err)
		}
	}

	// For information: the agent's own client, upstream.Remote (keys into memguard buffers).
	r, err := upstream.NewRemote(upstream.RemoteConfig{Endpoints: []string{ln.Addr().String()}, TLS: ctls})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	remote := make([]func() error, clients)
	for i := range remote {
		remote[i] = func() error {
			k, _, err := r.Key(ctx, upstream.KeyRequest{Op: wire.OpDecrypt, Scope: sc, Version: 1, Bits: 256, ActingFor: "db:alice"})
			if err != nil {
				return err
			}
			k.Destroy()
			return nil
		}
	}
	(&testenv.Load{}).Drive(t, remote, 100*time.Millisecond) // fills its connection pool
	var d, s, rf testenv.Load
	for range rounds {
		d.Drive(t, direct, dur)
		s.Drive(t, service, dur)
		rf.Drive(t, remote, dur/2)
	}
	if t.Failed() {
		return
	}

	ratio := s.Rate() / d.Rate()
	fmt.Printf("BENCH scenario=\"keyservice derive over TLS vs direct C_Sign, 8 clients, SoftHSM\" keyward=%.0f baseline=%.0f unit=derive/s ratio=%.2f goal=\">=0.6\" met=%t\n",
		s.Rate(), d.Rate(), ratio, ratio >= 0.6)
	fmt.Printf("BENCH scenario=\"keyservice derive p50 (baseline: direct)\" keyward=%.1f baseline=%.1f unit=us ratio=0 goal=\"report\" met=true\n",
		benchUS(s.Pct(50)), benchUS(d.Pct(50)))
	fmt.Printf("BENCH scenario=\"keyservice derive p99 (baseline: direct)\" keyward=%.1f baseline=%.1f unit=us ratio=0 goal=\"report\" met=true\n",
		benchUS(s.Pct(99)), benchUS(d.Pct(99)))
	fmt.Printf("BENCH scenario=\"keyservice CPU per derive, service and its clients (baseline: direct)\" keyward=%.1f baseline=%.1f unit=us ratio=%.2f goal=\"report\" met=true\n",
		benchUS(s.CPUPer()), benchUS(d.CPUPer()), benchUS(d.CPUPer())/benchUS(s.CPUPer()))
	fmt.Printf("BENCH scenario=\"keyservice derive via upstream.Remote (memguard keys)\" keyward=%.0f baseline=%.0f unit=derive/s ratio=%.2f goal=\"report\" met=true\n",
		rf.Rate(), d.Rate(), rf.Rate()/d.Rate())
}

func clientTLS(t *testing.T, ca *testenv.CA, uri string) *tls.Config {
	t.Helper()
	f := &fixture{ca: ca}
	return f.clientTLS(t, "bench", uri)
}
