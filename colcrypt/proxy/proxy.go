// Package proxy is colcrypt's PostgreSQL protocol core: it accepts clients, terminates their TLS,
// relays authentication to PostgreSQL unchanged, and then relays the v3 protocol both ways.
//
// Guarantees:
//   - Fast path: without an Interceptor (or when it returns no Hooks for a session) every message after
//     authentication is forwarded as the exact bytes it arrived as; nothing is decoded but the type byte
//     and length. Sessions without TLS on either side are relayed by an epoll event loop of the proxy's
//     own (evloop_linux.go: one goroutine for many sessions, one read and one write per readiness
//     event, like PgBouncer);
//     TLS sessions by a goroutine per direction, which batches output and flushes it only when the
//     input side has no complete message left, i.e. just before it would block waiting for its peer.
//     Either way every point where a peer waits (ReadyForQuery, Sync, Flush, CopyDone, CopyFail, ...)
//     is flushed at once, and a burst of DataRows or a pipeline costs one read and one write syscall per
//     buffer, not per message.
//   - Authentication is PostgreSQL's: trust, password, md5 and SCRAM-SHA-256 pass through unchanged; the
//     role and database from the StartupMessage are handed to an Interceptor only after AuthenticationOk.
//     SCRAM-SHA-256-PLUS is never advertised to clients (TLS ends at the proxy, so channel binding cannot
//     be end to end). A client that insists on channel binding gets a clear error; one that announces it
//     could bind ("y" GS2 flag, sent by libpq and pgx over TLS by default) while the database also
//     speaks TLS is refused with a hint (channel_binding=disable) because PostgreSQL would reject the
//     exchange as a downgrade attack.
//   - Clients get a BackendKeyData made up by the proxy (random pid and secret); a CancelRequest on any
//     proxy connection is matched in constant time and forwarded to the right backend.
//   - TLS to clients after SSLRequest, or directly (PostgreSQL 17's sslnegotiation=direct, ALPN
//     "postgresql"), whether or not the database has TLS; bytes a client sends before its handshake
//     are never read as if they came through TLS. To the database: disable, require or verify-full.
//   - A malformed or oversized client message ends that session with an ErrorResponse (08P01) and
//     touches no other session. A client that vanishes mid-query gets its query cancelled and its
//     backend terminated at once, not when the query ends.
//   - Limits: beyond MaxConnections a client gets FATAL 53300; a session idle (every request answered)
//     for IdleTimeout gets FATAL 57P05; the startup phase (TLS, startup, authentication) is bounded by
//     StartupTimeout. Shutdown stops accepting, closes each session once it is idle outside a
//     transaction (FATAL 57P01), and closes the rest after ShutdownTimeout.
//   - Logs (slog, injected) and metrics (Prometheus, a registry per Server) never carry query text,
//     parameters or values.
//   - With Hooks, the core keeps per session the FIFO of requests awaiting responses and the registry of
//     named and unnamed statements and portals, so each server message is delivered with the request it
//     answers (see Interceptor, Refuse).
//
// Non-guarantees: the proxy does not pool connections (one backend per client, like PgBouncer in
// session mode); GSSAPI/SSPI authentication and GSS encryption are not supported (GSSENCRequest is
// answered 'N' so clients fall back); replication connections are relayed but get no Hooks.
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/colcrypt/config"
)

// Upstream TLS modes.
const (
	TLSDisable    = config.TLSDisable
	TLSRequire    = config.TLSRequire
	TLSVerifyFull = config.TLSVerifyFull
)

// Config configures a Server. Build it by hand or with FromFile.
type Config struct {
	// UpstreamAddr is the PostgreSQL server, host:port.
	UpstreamAddr string
	// UpstreamTLS is TLSDisable, TLSRequire or TLSVerifyFull.
	UpstreamTLS string
	// UpstreamTLSConfig is used for TLSRequire/TLSVerifyFull (RootCAs, ServerName). FromFile builds it.
	UpstreamTLSConfig *tls.Config
	ConnectTimeout    time.Duration // default 5s

	// TLS is the client-facing TLS configuration; nil answers SSLRequest with 'N'.
	TLS              *tls.Config
	RequireClientTLS bool

	MaxConnections  int           // 0: unlimited
	IdleTimeout     time.Duration // 0: none. A session waiting for its client this long is closed (57P05).
	StartupTimeout  time.Duration // 0: none. Bounds TLS handshake, startup and authentication.
	ShutdownTimeout time.Duration // drain time after the context ends (default 30s)
	// MaxClientMessage bounds a client message (default 256 MiB); beyond it the session ends with 08P01.
	MaxClientMessage int

	// RelayThreads is the number of event loops (one goroutine each) relaying the sessions that have
	// no hooks and no TLS on either side (see evloop_linux.go): 0 picks one per four CPUs, a negative
	// value relays every session with goroutines.
	RelayThreads int

	// Interceptor, when set, is offered every session (see Interceptor). nil keeps the raw fast path.
	Interceptor Interceptor
	// Logger receives connection-level logs (never query text or parameters). nil discards.
	Logger *slog.Logger
}

// FromFile builds a Config from a loaded colcrypt.yaml, reading the certificate files it names.
func FromFile(c *config.Config) (Config, error) {
	pc := Config{
		UpstreamAddr:     net.JoinHostPort(c.Upstream.Host, strconv.Itoa(c.Upstream.Port)),
		UpstreamTLS:      c.Upstream.TLS,
		ConnectTimeout:   c.Upstream.ConnectTimeout,
		MaxConnections:   c.Limits.MaxConnections,
		IdleTimeout:      c.Limits.IdleTimeout,
		StartupTimeout:   c.Limits.StartupTimeout,
		ShutdownTimeout:  c.Limits.ShutdownTimeout,
		RelayThreads:     c.Limits.RelayThreads,
		RequireClientTLS: c.TLS != nil && c.TLS.RequireClientTLS,
	}
	if c.TLS != nil {
		cert, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key)
		if err != nil {
			return Config{}, fmt.Errorf("client-facing tls: %w", err)
		}
		pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if c.Upstream.TLS != TLSDisable {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.Upstream.ServerName}
		if tc.ServerName == "" {
			tc.ServerName = c.Upstream.Host
		}
		if c.Upstream.CA != "" {
			pem, err := os.ReadFile(c.Upstream.CA)
			if err != nil {
				return Config{}, fmt.Errorf("upstream ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return Config{}, fmt.Errorf("upstream ca %s: no PEM certificate", c.Upstream.CA)
			}
			tc.RootCAs = pool
		}
		pc.UpstreamTLSConfig = tc
	}
	return pc, nil
}

// Server is a running proxy. One Server may Serve several listeners (TCP and unix).
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	cancels cancelMap
	probe   string // name of the never-existing statement used to make PostgreSQL fail on purpose

	mu       sync.Mutex
	sessions map[*session]struct{}
	draining atomic.Bool
	conns    atomic.Int64 // client connections open (sessions and cancel requests)
	nextID   atomic.Uint64
	wg       sync.WaitGroup

	loopMu  sync.Mutex
	loops   []*evloop // started on first use, stopped when the last Serve returns
	serving int       // Serve calls running, under loopMu
}

// New returns a Server. It does not listen; call Serve.
func New(cfg Config) *Server {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.MaxClientMessage <= 0 {
		cfg.MaxClientMessage = 256 << 20
	}
	if cfg.UpstreamTLS == "" {
		cfg.UpstreamTLS = TLSDisable
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	return &Server{
		cfg: cfg, log: log, metrics: newMetrics(),
		cancels:  cancelMap{m: map[uint32]*cancelKey{}},
		probe:    "colcrypt.refused." + hex.EncodeToString(rnd[:]),
		sessions: map[*session]struct{}{},
	}
}

// Metrics returns the server's Prometheus metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Serve accepts clients on ln until ctx ends, then shuts down gracefully: it stops accepting, closes
// each session as soon as it is idle outside a transaction (the client gets FATAL 57P01), and after
// ShutdownTimeout closes what is left. It returns nil after a shutdown, or the accept error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.loopMu.Lock()
	s.serving++
	s.loopMu.Unlock()
	defer func() {
		s.loopMu.Lock()
		s.serving--
		last := s.serving == 0
		s.loopMu.Unlock()
		if last {
			s.stopLoops()
		}
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	reaperDone := make(chan struct{})
	go s.reaper(ctx, reaperDone)
	var acceptErr error
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				// Out of file descriptors: back off instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			acceptErr = err
			break
		}
		delay = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c)
		}()
	}
	s.shutdown()
	<-reaperDone
	return acceptErr
}

// shutdown drains the sessions, then closes them.
func (s *Server) shutdown() {
	s.draining.Store(true)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	deadline := time.NewTimer(s.cfg.ShutdownTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	s.wakeAll()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			s.wakeAll() // sessions that became idle since
		case <-deadline.C:
			s.mu.Lock()
			for ss := range s.sessions {
				ss.kill()
			}
			s.mu.Unlock()
			<-done
			return
		}
	}
}

func (s *Server) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		if ss.idle() {
			ss.wake()
		}
	}
}

// reaper closes sessions idle longer than IdleTimeout.
func (s *Server) reaper(ctx context.Context, done chan struct{}) {
	defer close(done)
	if s.cfg.IdleTimeout <= 0 {
		<-ctx.Done()
		return
	}
	every := min(max(s.cfg.IdleTimeout/4, 10*time.Millisecond), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		limit := time.Now().Add(-s.cfg.IdleTimeout).UnixNano()
		s.mu.Lock()
		for ss := range s.sessions {
			if ss.idle() && ss.idleSince.Load() < limit {
				ss.wake()
			}
		}
		s.mu.Unlock()
	}
}

func (s *Server) add(ss *session) {
	s.mu.Lock()
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) remove(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}
