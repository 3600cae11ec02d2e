package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/keyward/keyward/keyagent/audit"
	"github.com/keyward/keyward/keyagent/keycache"
	"github.com/keyward/keyward/keyagent/policy"
	"github.com/keyward/keyward/keyagent/upstream"
	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

// CredFunc reads the peer of a unix connection. The default is peercred-based; tests of the agent use
// the real one too, with clients run as other users.
type CredFunc func(c *net.UnixConn) (Peer, error)

// Deps are the agent's dependencies.
type Deps struct {
	Policy   *policy.Holder
	Upstream upstream.Upstream
	Cache    *keycache.Cache
	Audit    *audit.Log
	Logger   *slog.Logger
	Metrics  *Metrics // nil: NewMetrics(nil)
	Creds    CredFunc // nil: ReadPeer
	// IdleTimeout closes client connections idle that long (0: 10 minutes).
	IdleTimeout time.Duration
}

// Agent serves the socket.
type Agent struct {
	d  Deps
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// New checks deps and returns an Agent.
func New(d Deps) (*Agent, error) {
	if d.Policy == nil || d.Upstream == nil || d.Cache == nil || d.Audit == nil {
		return nil, errors.New("agent: policy, upstream, cache and audit are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	if d.Creds == nil {
		d.Creds = ReadPeer
	}
	if d.IdleTimeout == 0 {
		d.IdleTimeout = 10 * time.Minute
	}
	return &Agent{d: d, conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections until ctx ends, then closes them all and returns. It also sweeps expired
// keys from the cache.
func (a *Agent) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() {
		_ = ln.Close()
		a.mu.Lock()
		for c := range a.conns {
			_ = c.Close()
		}
		a.mu.Unlock()
	})
	defer stop()
	a.wg.Add(1)
	go a.sweep(ctx)
	var err error
	for {
		var c *net.UnixConn
		c, err = ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
			}
			break
		}
		a.mu.Lock()
		a.conns[c] = struct{}{}
		a.mu.Unlock()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.serveConn(ctx, c)
			a.mu.Lock()
			delete(a.conns, c)
			a.mu.Unlock()
		}()
	}
	a.wg.Wait()
	return err
}

func (a *Agent) sweep(ctx context.Context) {
	defer a.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := a.d.Cache.Sweep(); n > 0 {
				a.d.Metrics.expired.Add(float64(n))
			}
			a.d.Metrics.cacheKeys.Set(float64(a.d.Cache.Len()))
		}
	}
}

func (a *Agent) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	peer, err := a.d.Creds(c)
	if err != nil {
		a.d.Logger.Warn("peer credentials", "err", err)
		a.record(audit.Event{Service: "keyagent", Op: "connect", Decision: audit.Deny, Reason: "peer credentials: " + err.Error()})
		return
	}
	defer peer.Close()
	caller := peer.Caller
	checked, alive := time.Now(), true // just read at connect time
	conn := wire.NewConn(c, wire.Options{IdleTimeout: a.d.IdleTimeout, FrameTimeout: 10 * time.Second})
	for {
		t, err := conn.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				a.d.Logger.Warn("closing connection after a bad frame", "uid", caller.UID, "pid", caller.PID, "err", err)
				a.d.Metrics.badFrames.Inc()
				_ = conn.WriteMsg(wire.ErrorFrom(fmt.Errorf("%w: %v", wire.ErrBadRequest, err)))
			}
			return
		}
		// The liveness check is a poll(2) on the peer's pidfd: at most once a second per connection.
		// It refuses a connection whose creator exited (handed on, or its pid reused); it cannot stop a
		// live caller from relaying for another process, which no check on a socket can.
		if now := time.Now(); now.Sub(checked) >= time.Second {
			checked = now
			alive = peer.Alive()
		}
		if !alive {
			_ = conn.Skip()
			a.record(callerEvent(caller, audit.Event{Op: t.String(), Decision: audit.Deny,
				Reason: "the process that opened this connection has exited"}))
			_ = conn.WriteMsg(&wire.ErrorResponse{Code: wire.CodeDenied, Message: "the connecting process has exited"})
			return
		}
		if !a.handle(ctx, caller, conn, t) {
			return
		}
	}
}

// handle answers one request; false closes the connection.
func (a *Agent) handle(ctx context.Context, caller policy.Caller, conn *wire.Conn, t wire.Type) bool {
	var (
		req  any
		msg  wire.Message
		body error
	)
	switch t {
	case wire.TypeKeyRequest:
		m := &wire.KeyRequest{}
		req, msg = m, m
	case wire.TypeHSMEncryptRequest:
		m := &wire.HSMEncryptRequest{}
		req, msg = m, m
	case wire.TypeHSMDecryptRequest:
		m := &wire.HSMDecryptRequest{}
		req, msg = m, m
	case wire.TypeStatusRequest:
		m := &wire.StatusRequest{}
		req, msg = m, m
	case wire.TypePurgeRequest:
		m := &wire.PurgeRequest{}
		req, msg = m, m
	default:
		_ = conn.Skip()
		a.record(callerEvent(caller, audit.Event{Op: t.String(), Decision: audit.Deny, Reason: "not a request the agent serves"}))
		return conn.WriteMsg(&wire.ErrorResponse{Code: wire.CodeBadRequest, Message: t.String() + " is not an agent request"}) == nil
	}
	if body = conn.Decode(msg); body != nil {
		a.d.Metrics.badFrames.Inc()
		a.d.Logger.Warn("closing connection after a malformed request", "uid", caller.UID, "type", t.String(), "err", body)
		_ = conn.WriteMsg(wire.ErrorFrom(fmt.Errorf("%w: %v", wire.ErrBadRequest, body)))
		return false
	}
	var err error
	switch r := req.(type) {
	case *wire.KeyRequest:
		err = a.key(ctx, caller, conn, r)
	case *wire.HSMEncryptRequest:
		err = a.hsmEncrypt(ctx, caller, conn, r)
	case *wire.HSMDecryptRequest:
		err = a.hsmDecrypt(ctx, caller, conn, r)
	case *wire.StatusRequest:
		err = a.status(caller, conn)
	case *wire.PurgeRequest:
		err = a.purge(caller, conn)
	}
	if err != nil {
		a.d.Logger.Warn("write response", "uid", caller.UID, "err", err)
		return false
	}
	return true
}

// decide runs the policy and audits a denial. It returns the decision and, when denied, the response.
func (a *Agent) decide(caller policy.Caller, actingFor, scope string, op policy.Op, ev audit.Event) (policy.Decision, wire.Message) {
	d := a.d.Policy.Policy().Decide(policy.Request{Caller: caller, ActingFor: actingFor, Scope: scope, Op: op})
	if d.Allowed {
		return d, nil
	}
	ev.Principal, ev.OnBehalfOf = d.Principal, d.Identity
	if ev.OnBehalfOf == "" {
		ev.OnBehalfOf = actingFor
	}
	ev.Decision, ev.Reason = audit.Deny, d.Reason
	a.record(callerEvent(caller, ev))
	return d, &wire.ErrorResponse{Code: wire.CodeDenied, Message: d.Reason}
}

func (a *Agent) key(ctx context.Context, caller policy.Caller, conn *wire.Conn, r *wire.KeyRequest) error {
	start := time.Now()
	op := policy.OpDecrypt
	if r.Op == wire.OpEncrypt {
		op = policy.OpEncrypt
	}
	ev := audit.Event{Scope: r.Scope, Version: r.Version, Op: string(op)}
	d, deny := a.decide(caller, r.ActingFor, r.Scope, op, ev)
	if deny != nil {
		a.d.Metrics.request(string(op), audit.Deny).Inc()
		return conn.WriteMsg(deny)
	}
	ev.Principal, ev.OnBehalfOf = d.Principal, d.Identity
	id := keycache.ID{Scope: r.Scope, Version: r.Version, Bits: int(r.Bits), Op: r.Op}
	fetch := func(ctx context.Context) (*memsafe.Key, uint32, error) {
		return a.d.Upstream.Key(ctx, upstream.KeyRequest{Op: r.Op, Scope: r.Scope, Version: r.Version, Bits: int(r.Bits), ActingFor: d.Identity})
	}
	var writeErr error
	err := a.d.Cache.Use(ctx, id, fetch, func(k *memsafe.Key, v uint32, src keycache.Source) error {
		a.d.Metrics.cacheResult(string(src)).Inc()
		ev.Version, ev.Upstream = v, string(src)
		ev.Decision, ev.DurationUS = audit.Allow, time.Since(start).Microseconds()
		if err := a.d.Audit.Write(callerEvent(caller, ev)); err != nil {
			return fmt.Errorf("%w: audit log unavailable", wire.ErrUnavailable)
		}
		a.d.Metrics.request(string(op), audit.Allow).Inc()
		writeErr = conn.WriteMsg(&wire.KeyResponse{Scope: r.Scope, Version: v, Key: k})
		return nil
	})
	if err != nil {
		ev.Decision, ev.Reason = audit.Error, err.Error()
		a.record(callerEvent(caller, ev))
		a.d.Metrics.request(string(op), audit.Error).Inc()
		return conn.WriteMsg(wire.ErrorFrom(err))
	}
	return writeErr
}

func (a *Agent) hsmEncrypt(ctx context.Context, caller policy.Caller, conn *wire.Conn, r *wire.HSMEncryptRequest) error {
	ev := audit.Event{Scope: r.Scope, Version: r.Version, Op: "hsm-encrypt"}
	return a.forward(caller, conn, ev, r.ActingFor, policy.OpEncrypt, func(identity string) (wire.Message, uint32, error) {
		fwd := *r
		fwd.ActingFor = identity
		resp, err := a.d.Upstream.Encrypt(ctx, &fwd)
		if err != nil {
			return nil, 0, err
		}
		return resp, resp.Version, nil
	})
}

func (a *Agent) hsmDecrypt(ctx context.Context, caller policy.Caller, conn *wire.Conn, r *wire.HSMDecryptRequest) error {
	ev := audit.Event{Scope: r.Scope, Version: r.Version, Op: "hsm-decrypt"}
	return a.forward(caller, conn, ev, r.ActingFor, policy.OpDecrypt, func(identity string) (wire.Message, uint32, error) {
		fwd := *r
		fwd.ActingFor = identity
		resp, err := a.d.Upstream.Decrypt(ctx, &fwd)
		if err != nil {
			return nil, 0, err
		}
		return resp, r.Version, nil
	})
}

// forward decides an in-HSM operation, runs it upstream (call gets the identity the policy decided the
// caller acts for, and returns the response and the key version used), audits and answers.
func (a *Agent) forward(caller policy.Caller, conn *wire.Conn, ev audit.Event, actingFor string, op policy.Op,
	call func(identity string) (wire.Message, uint32, error)) error {
	d, deny := a.decide(caller, actingFor, ev.Scope, op, ev)
	if deny != nil {
		a.d.Metrics.request(ev.Op, audit.Deny).Inc()
		return conn.WriteMsg(deny)
	}
	ev.Principal, ev.OnBehalfOf, ev.Upstream = d.Principal, d.Identity, "upstream"
	resp, version, err := call(d.Identity)
	if err != nil {
		ev.Decision, ev.Reason = audit.Error, err.Error()
		a.record(callerEvent(caller, ev))
		a.d.Metrics.request(ev.Op, audit.Error).Inc()
		return conn.WriteMsg(wire.ErrorFrom(err))
	}
	ev.Version, ev.Decision = version, audit.Allow
	if err := a.d.Audit.Write(callerEvent(caller, ev)); err != nil {
		return conn.WriteMsg(wire.ErrorFrom(fmt.Errorf("%w: audit log unavailable", wire.ErrUnavailable)))
	}
	a.d.Metrics.request(ev.Op, audit.Allow).Inc()
	return conn.WriteMsg(resp)
}

func (a *Agent) status(caller policy.Caller, conn *wire.Conn) error {
	ev := audit.Event{Op: string(policy.OpStatus)}
	if _, deny := a.decide(caller, "", "", policy.OpStatus, ev); deny != nil {
		return conn.WriteMsg(deny)
	}
	p := a.d.Policy.Policy()
	fields := []wire.StatusField{
		{Name: "service", Value: "keyagent"},
		{Name: "policy_version", Value: p.Version()},
		{Name: "policy_file", Value: p.File()},
		{Name: "cache_keys", Value: strconv.Itoa(a.d.Cache.Len())},
	}
	fields = append(fields, a.d.Upstream.Health()...)
	ev.Decision = audit.Allow
	a.record(callerEvent(caller, ev))
	return conn.WriteMsg(&wire.StatusResponse{Fields: fields})
}

func (a *Agent) purge(caller policy.Caller, conn *wire.Conn) error {
	ev := audit.Event{Op: string(policy.OpPurge)}
	if _, deny := a.decide(caller, "", "", policy.OpPurge, ev); deny != nil {
		return conn.WriteMsg(deny)
	}
	n := a.d.Cache.Purge()
	ev.Decision, ev.Reason = audit.Allow, fmt.Sprintf("%d keys wiped", n)
	a.record(callerEvent(caller, ev))
	return conn.WriteMsg(&wire.OK{})
}

func (a *Agent) record(ev audit.Event) {
	if err := a.d.Audit.Write(ev); err != nil {
		a.d.Logger.Error("audit write failed", "err", err)
	}
}

func callerEvent(c policy.Caller, ev audit.Event) audit.Event {
	ev.Service = "keyagent"
	ev.CallerUID, ev.CallerGID = audit.U32(c.UID), audit.U32(c.GID)
	ev.CallerPID, ev.CallerExe = int32(c.PID), c.Exe
	return ev
}
