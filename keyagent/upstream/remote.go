package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

// RemoteConfig configures Remote.
type RemoteConfig struct {
	Endpoints []string    // host:port, tried in order
	TLS       *tls.Config // client certificate, CA; MinVersion is forced to TLS 1.3
	// DialTimeout bounds connecting and the TLS handshake (default 3s); each request is bounded by its
	// context and by RequestTimeout (default 10s).
	DialTimeout    time.Duration
	RequestTimeout time.Duration
	// MaxIdle connections kept per endpoint (default 16).
	MaxIdle int
	// Backoff after a failure starts at MinBackoff (default 200ms) and doubles to MaxBackoff (default 30s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// Observe, if set, is called after every attempt (for metrics).
	Observe func(endpoint string, d time.Duration, err error)
}

// Remote is a failover client of the key service.
type Remote struct {
	cfg RemoteConfig
	eps []*endpoint

	mu        sync.Mutex
	preferred int
}

type endpoint struct {
	addr string
	mu   sync.Mutex
	idle []*wire.Conn
	// backoff state
	failures int
	until    time.Time
	lastErr  error
}

var _ Upstream = (*Remote)(nil)

// NewRemote checks cfg; it does not connect (the first request does).
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("upstream: no key service endpoints")
	}
	if cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 {
		return nil, errors.New("upstream: a client certificate is required (mutual TLS)")
	}
	t := cfg.TLS.Clone()
	t.MinVersion = tls.VersionTLS13
	cfg.TLS = t
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 3 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.MaxIdle == 0 {
		cfg.MaxIdle = 16
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Remote{cfg: cfg}
	for _, a := range cfg.Endpoints {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("upstream: endpoint %q: %w", a, err)
		}
		r.eps = append(r.eps, &endpoint{addr: a})
	}
	return r, nil
}

// Key asks the key service to derive a key.
func (r *Remote) Key(ctx context.Context, req KeyRequest) (*memsafe.Key, uint32, error) {
	m, err := r.call(ctx, &wire.KeyRequest{Op: req.Op, Scope: req.Scope, Version: req.Version, ActingFor: req.ActingFor, Bits: uint16(req.Bits)})
	if err != nil {
		return nil, 0, err
	}
	kr, ok := m.(*wire.KeyResponse)
	if !ok {
		return nil, 0, fmt.Errorf("%w: key service answered %T to a key request", wire.ErrUnavailable, m)
	}
	if kr.Scope != req.Scope || kr.Version == 0 || (req.Version != 0 && kr.Version != req.Version) {
		kr.Key.Destroy()
		return nil, 0, fmt.Errorf("%w: key service answered for another scope or version", wire.ErrUnavailable)
	}
	return kr.Key, kr.Version, nil
}

// Encrypt forwards an in-HSM encryption.
func (r *Remote) Encrypt(ctx context.Context, req *wire.HSMEncryptRequest) (*wire.HSMEncryptResponse, error) {
	m, err := r.call(ctx, req)
	if err != nil {
		return nil, err
	}
	resp, ok := m.(*wire.HSMEncryptResponse)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected %T", wire.ErrUnavailable, m)
	}
	return resp, nil
}

// Decrypt forwards an in-HSM decryption.
func (r *Remote) Decrypt(ctx context.Context, req *wire.HSMDecryptRequest) (*wire.HSMDecryptResponse, error) {
	m, err := r.call(ctx, req)
	if err != nil {
		return nil, err
	}
	resp, ok := m.(*wire.HSMDecryptResponse)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected %T", wire.ErrUnavailable, m)
	}
	return resp, nil
}

// Health reports each endpoint: "ok", "backoff: <last error>" or "unknown" (never tried).
func (r *Remote) Health() []wire.StatusField {
	out := make([]wire.StatusField, 0, len(r.eps))
	for _, ep := range r.eps {
		ep.mu.Lock()
		v := "ok"
		switch {
		case ep.lastErr != nil:
			v = "failing: " + ep.lastErr.Error()
		case ep.failures == 0 && len(ep.idle) == 0:
			v = "idle"
		}
		ep.mu.Unlock()
		out = append(out, wire.StatusField{Name: "upstream." + ep.addr, Value: v})
	}
	return out
}

// Close closes idle connections.
func (r *Remote) Close() error {
	for _, ep := range r.eps {
		ep.mu.Lock()
		for _, c := range ep.idle {
			_ = c.Close()
		}
		ep.idle = nil
		ep.mu.Unlock()
	}
	return nil
}

// call sends req to the first endpoint that answers.
func (r *Remote) call(ctx context.Context, req wire.Message) (wire.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	r.mu.Lock()
	first := r.preferred
	r.mu.Unlock()
	var errs []error
	now := time.Now()
	// Two passes: endpoints out of backoff first; if all are backing off, try them anyway rather than
	// fail without asking (the backoff only orders the attempts).
	for pass := 0; pass < 2; pass++ {
		for i := range r.eps {
			idx := (first + i) % len(r.eps)
			ep := r.eps[idx]
			ep.mu.Lock()
			backing := now.Before(ep.until)
			ep.mu.Unlock()
			if backing != (pass == 1) {
				continue
			}
			start := time.Now()
			m, err := r.try(ctx, ep, req)
			if r.cfg.Observe != nil {
				r.cfg.Observe(ep.addr, time.Since(start), err)
			}
			if err == nil || isDefinitive(err) {
				ep.succeeded()
				if idx != first {
					r.mu.Lock()
					r.preferred = idx
					r.mu.Unlock()
				}
				return m, err
			}
			ep.failed(err, r.cfg.MinBackoff, r.cfg.MaxBackoff)
			r.cfg.Logger.Warn("key service endpoint failed", "endpoint", ep.addr, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", ep.addr, err))
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", wire.ErrUnavailable, errors.Join(errs...))
			}
		}
	}
	return nil, fmt.Errorf("%w: every key service endpoint failed: %w", wire.ErrUnavailable, errors.Join(errs...))
}

// isDefinitive: an answer another endpoint would repeat.
func isDefinitive(err error) bool {
	return errors.Is(err, wire.ErrDenied) || errors.Is(err, wire.ErrNotFound) || errors.Is(err, wire.ErrBadRequest)
}

func (r *Remote) try(ctx context.Context, ep *endpoint, req wire.Message) (wire.Message, error) {
	m, pooled, err := r.tryOnce(ctx, ep, req)
	var re *wire.RemoteError
	if err != nil && pooled && !errors.As(err, &re) && ctx.Err() == nil {
		// An idle connection may have been closed by the server in the meantime: that says nothing
		// about the endpoint's health, so retry once on a fresh connection before counting a failure.
		m, _, err = r.tryOnce(ctx, ep, req)
	}
	return m, err
}

func (r *Remote) tryOnce(ctx context.Context, ep *endpoint, req wire.Message) (_ wire.Message, pooled bool, _ error) {
	c, pooled, err := r.conn(ctx, ep)
	if err != nil {
		return nil, false, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.NetConn().SetDeadline(dl)
	}
	m, err := c.Call(req)
	if err != nil {
		var re *wire.RemoteError
		if errors.Is(err, wire.ErrInvalidMessage) {
			// Refused by our own encoder before anything was sent: the caller's mistake, not the
			// endpoint's, and the connection is still in step.
			_ = c.NetConn().SetDeadline(time.Time{})
			ep.put(c, r.cfg.MaxIdle)
			return nil, pooled, fmt.Errorf("%w: %w", wire.ErrBadRequest, err)
		}
		if errors.As(err, &re) {
			// The service answered: the connection is in step and reusable.
			_ = c.NetConn().SetDeadline(time.Time{})
			ep.put(c, r.cfg.MaxIdle)
			return nil, pooled, err
		}
		_ = c.Close()
		return nil, pooled, err
	}
	_ = c.NetConn().SetDeadline(time.Time{})
	ep.put(c, r.cfg.MaxIdle)
	return m, pooled, nil
}

func (r *Remote) conn(ctx context.Context, ep *endpoint) (*wire.Conn, bool, error) {
	ep.mu.Lock()
	if n := len(ep.idle); n > 0 {
		c := ep.idle[n-1]
		ep.idle = ep.idle[:n-1]
		ep.mu.Unlock()
		return c, true, nil
	}
	ep.mu.Unlock()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: r.cfg.DialTimeout}, Config: r.cfg.TLS}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", ep.addr)
	if err != nil {
		return nil, false, err
	}
	return wire.NewConn(nc, wire.Options{FrameTimeout: r.cfg.RequestTimeout}), false, nil
}

func (ep *endpoint) put(c *wire.Conn, max int) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if len(ep.idle) >= max {
		_ = c.Close()
		return
	}
	ep.idle = append(ep.idle, c)
}

func (ep *endpoint) succeeded() {
	ep.mu.Lock()
	ep.failures, ep.until, ep.lastErr = 0, time.Time{}, nil
	ep.mu.Unlock()
}

func (ep *endpoint) failed(err error, lo, hi time.Duration) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.failures++
	d := lo << min(ep.failures-1, 16)
	if d > hi || d <= 0 {
		d = hi
	}
	ep.until = time.Now().Add(d)
	ep.lastErr = err
	// Idle connections to a failing endpoint are likely dead too.
	for _, c := range ep.idle {
		_ = c.Close()
	}
	ep.idle = nil
}
