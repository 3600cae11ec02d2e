package keyservice_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
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

// benchFigures accumulates one measured side of a comparison over several rounds.
type benchFigures struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration // user+system time of the whole process (both ends when both are in it)
	lat     []time.Duration
}

// cpuPer is the process's CPU time per operation: unlike a rate, it does not depend on how much of
// the machine other processes take while the figure is measured.
func (f *benchFigures) cpuPer() time.Duration { return f.cpu / time.Duration(max(f.n, 1)) }

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (f *benchFigures) rate() float64 { return float64(f.n) / f.elapsed.Seconds() }

func (f *benchFigures) pct(p int) time.Duration {
	slices.Sort(f.lat)
	if len(f.lat) == 0 {
		return 0
	}
	return f.lat[(len(f.lat)-1)*p/100]
}

// benchDrive runs one goroutine per op for dur, each calling its op in a loop, and adds to f.
func benchDrive(t *testing.T, f *benchFigures, ops []func() error, dur time.Duration) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0 := processCPU()
	start := time.Now()
	deadline := start.Add(dur)
	for _, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1<<14)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := op(); err != nil {
					t.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			f.lat = append(f.lat, mine...)
			f.n += len(mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	f.elapsed += time.Since(start)
	f.cpu += processCPU() - cpu0
}

func benchUS(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

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
	benchDrive(t, &benchFigures{}, remote, 100*time.Millisecond) // fills its connection pool
	var d, s, rf benchFigures
	for range rounds {
		benchDrive(t, &d, direct, dur)
		benchDrive(t, &s, service, dur)
		benchDrive(t, &rf, remote, dur/2)
	}
	if t.Failed() {
		return
	}

	ratio := s.rate() / d.rate()
	fmt.Printf("BENCH scenario=\"keyservice derive over TLS vs direct C_Sign, 8 clients, SoftHSM\" keyward=%.0f baseline=%.0f unit=derive/s ratio=%.2f goal=\">=0.6\" met=%t\n",
		s.rate(), d.rate(), ratio, ratio >= 0.6)
	fmt.Printf("BENCH scenario=\"keyservice derive p50 (baseline: direct)\" keyward=%.1f baseline=%.1f unit=us ratio=0 goal=\"report\" met=true\n",
		benchUS(s.pct(50)), benchUS(d.pct(50)))
	fmt.Printf("BENCH scenario=\"keyservice derive p99 (baseline: direct)\" keyward=%.1f baseline=%.1f unit=us ratio=0 goal=\"report\" met=true\n",
		benchUS(s.pct(99)), benchUS(d.pct(99)))
	fmt.Printf("BENCH scenario=\"keyservice CPU per derive, service and its clients (baseline: direct)\" keyward=%.1f baseline=%.1f unit=us ratio=%.2f goal=\"report\" met=true\n",
		benchUS(s.cpuPer()), benchUS(d.cpuPer()), benchUS(d.cpuPer())/benchUS(s.cpuPer()))
	fmt.Printf("BENCH scenario=\"keyservice derive via upstream.Remote (memguard keys)\" keyward=%.0f baseline=%.0f unit=derive/s ratio=%.2f goal=\"report\" met=true\n",
		rf.rate(), d.rate(), rf.rate()/d.rate())
}

func clientTLS(t *testing.T, ca *testenv.CA, uri string) *tls.Config {
	t.Helper()
	f := &fixture{ca: ca}
	return f.clientTLS(t, "bench", uri)
}
