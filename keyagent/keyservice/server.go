package keyservice

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyward/keyward/keyagent/audit"
	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/grants"
	"github.com/keyward/keyward/keyagent/scope"
	"github.com/keyward/keyward/keyagent/wire"
)

// Operations named in grants files and audit lines.
const (
	OpDerive  = grants.OpDerive
	OpEncrypt = grants.OpEncrypt
	OpDecrypt = grants.OpDecrypt
	OpStatus  = grants.OpStatus
)

// Authorizer decides whether a node identity may perform op on scope (*grants.Grants implements it).
type Authorizer interface {
	Allowed(identity, scope string, op grants.Op) (bool, string)
}

// ServerConfig holds the server's dependencies.
type ServerConfig struct {
	Backend backend.Backend
	Grants  Authorizer
	TLS     *tls.Config // from ServerTLS; must require client certificates
	Audit   *audit.Log
	Logger  *slog.Logger
	// Registerer receives the service's metrics; nil: none.
	Registerer prometheus.Registerer
	// IdleTimeout closes connections idle that long (0: 5 minutes).
	IdleTimeout time.Duration
}

// Server is a running key service.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	metrics *metrics

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New checks cfg and returns a Server.
func New(cfg ServerConfig) (*Server, error) {
	if cfg.Backend == nil || cfg.Grants == nil || cfg.Audit == nil {
		return nil, errors.New("keyservice: backend, grants and audit are required")
	}
	if cfg.TLS == nil || cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert || cfg.TLS.MinVersion < tls.VersionTLS13 {
		return nil, errors.New("keyservice: TLS 1.3 with required client certificates is mandatory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[net.Conn]struct{}{}}
	s.metrics = newMetrics(cfg.Registerer)
	return s, nil
}

// ServerTLS builds the TLS 1.3, client-certificate-required configuration from PEM files.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	pool, err := loadCAPool(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS builds a node's TLS 1.3 configuration for calling the key service: its certificate and key,
// and the CA that signed the service's certificate, from PEM files.
func ClientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	pool, err := loadCAPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}, nil
}

// Serve accepts connections on ln (a plain TCP listener: Serve wraps it in TLS) until ctx ends, then
// closes every connection and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	tln := tls.NewListener(ln, s.cfg.TLS)
	stop := context.AfterFunc(ctx, func() {
		_ = tln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = tln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
			}
			break
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c.(*tls.Conn))
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
	s.wg.Wait()
	return err
}

func (s *Server) serveConn(ctx context.Context, tc *tls.Conn) {
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Warn("tls handshake failed", "remote", tc.RemoteAddr().String(), "err", err)
		s.metrics.connErrors.WithLabelValues("handshake").Inc()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	node := Identity(tc.ConnectionState().PeerCertificates[0])
	conn := wire.NewConn(tc, wire.Options{IdleTimeout: s.cfg.IdleTimeout, FrameTimeout: 10 * time.Second})
	for {
		t, err := conn.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("closing connection after a bad frame", "node", node, "err", err)
				s.metrics.connErrors.WithLabelValues("frame").Inc()
				_ = conn.WriteMsg(wire.ErrorFrom(fmt.Errorf("%w: %v", wire.ErrBadRequest, err)))
			}
			return
		}
		resp, keep := s.handle(ctx, node, conn, t)
		if resp != nil {
			err = conn.WriteMsg(resp)
			if kr, ok := resp.(*wire.KeyResponse); ok {
				kr.Key.Destroy() // the service keeps no key once it is sent
			}
			if err != nil {
				s.log.Warn("write response", "node", node, "err", err)
				return
			}
		}
		if !keep {
			return
		}
	}
}

// handle decodes and answers one request. keep=false closes the connection (after a body that does
// not parse: the stream may be out of step).
func (s *Server) handle(ctx context.Context, node string, conn *wire.Conn, t wire.Type) (wire.Message, bool) {
	switch t {
	case wire.TypeKeyRequest:
		var req wire.KeyRequest
		if err := conn.Decode(&req); err != nil {
			return s.badFrame(node, t, err)
		}
		return s.derive(ctx, node, &req), true
	case wire.TypeHSMEncryptRequest:
		var req wire.HSMEncryptRequest
		if err := conn.Decode(&req); err != nil {
			return s.badFrame(node, t, err)
		}
		return s.hsmEncrypt(ctx, node, &req), true
	case wire.TypeHSMDecryptRequest:
		var req wire.HSMDecryptRequest
		if err := conn.Decode(&req); err != nil {
			return s.badFrame(node, t, err)
		}
		return s.hsmDecrypt(ctx, node, &req), true
	case wire.TypeStatusRequest:
		var req wire.StatusRequest
		if err := conn.Decode(&req); err != nil {
			return s.badFrame(node, t, err)
		}
		return s.status(ctx, node), true
	default:
		_ = conn.Skip()
		s.record(audit.Event{Node: node, Op: t.String(), Decision: audit.Deny, Reason: "request type not served by the key service"})
		return &wire.ErrorResponse{Code: wire.CodeBadRequest, Message: fmt.Sprintf("%s is not served by the key service", t)}, true
	}
}

func (s *Server) badFrame(node string, t wire.Type, err error) (wire.Message, bool) {
	s.log.Warn("closing connection after a malformed request", "node", node, "type", t.String(), "err", err)
	s.metrics.connErrors.WithLabelValues("frame").Inc()
	return wire.ErrorFrom(fmt.Errorf("%w: %v", wire.ErrBadRequest, err)), false
}

func (s *Server) derive(ctx context.Context, node string, req *wire.KeyRequest) wire.Message {
	ev := audit.Event{Node: node, OnBehalfOf: req.ActingFor, Scope: req.Scope, Version: req.Version, Op: string(OpDerive)}
	start := time.Now()
	if req.Bits != 256 && req.Bits != 512 {
		return s.deny(ev, wire.CodeBadRequest, "bits must be 256 or 512")
	}
	if err := scope.Check(req.Scope); err != nil {
		return s.deny(ev, wire.CodeBadRequest, err.Error())
	}
	if ok, why := s.cfg.Grants.Allowed(node, req.Scope, OpDerive); !ok {
		return s.deny(ev, wire.CodeDenied, why)
	}
	k, v, err := s.cfg.Backend.Derive(ctx, req.Scope, int(req.Version), int(req.Bits), req.Op == wire.OpEncrypt)
	s.metrics.hsmSeconds.WithLabelValues(string(OpDerive)).Observe(time.Since(start).Seconds())
	if err != nil {
		return s.fail(ev, err)
	}
	ev.Version = uint32(v)
	if err := s.allow(ev, start); err != nil {
		k.Destroy()
		return wire.ErrorFrom(err)
	}
	return &wire.KeyResponse{Scope: req.Scope, Version: uint32(v), Key: k}
}

func (s *Server) hsmEncrypt(ctx context.Context, node string, req *wire.HSMEncryptRequest) wire.Message {
	ev := audit.Event{Node: node, OnBehalfOf: req.ActingFor, Scope: req.Scope, Version: req.Version, Op: string(OpEncrypt)}
	start := time.Now()
	if err := scope.Check(req.Scope); err != nil {
		return s.deny(ev, wire.CodeBadRequest, err.Error())
	}
	if ok, why := s.cfg.Grants.Allowed(node, req.Scope, OpEncrypt); !ok {
		return s.deny(ev, wire.CodeDenied, why)
	}
	ct, v, err := s.cfg.Backend.Encrypt(ctx, scope.Keyring(req.Scope), int(req.Version), req.Plaintext, HSMAAD(req.Scope, req.AAD))
	s.metrics.hsmSeconds.WithLabelValues(string(OpEncrypt)).Observe(time.Since(start).Seconds())
	if err != nil {
		return s.fail(ev, err)
	}
	ev.Version = uint32(v)
	if err := s.allow(ev, start); err != nil {
		return wire.ErrorFrom(err)
	}
	return &wire.HSMEncryptResponse{Version: uint32(v), Ciphertext: ct}
}

func (s *Server) hsmDecrypt(ctx context.Context, node string, req *wire.HSMDecryptRequest) wire.Message {
	ev := audit.Event{Node: node, OnBehalfOf: req.ActingFor, Scope: req.Scope, Version: req.Version, Op: string(OpDecrypt)}
	start := time.Now()
	if err := scope.Check(req.Scope); err != nil {
		return s.deny(ev, wire.CodeBadRequest, err.Error())
	}
	if req.Version == 0 {
		return s.deny(ev, wire.CodeBadRequest, "decrypt needs the key version the ciphertext was made with")
	}
	if ok, why := s.cfg.Grants.Allowed(node, req.Scope, OpDecrypt); !ok {
		return s.deny(ev, wire.CodeDenied, why)
	}
	pt, err := s.cfg.Backend.Decrypt(ctx, scope.Keyring(req.Scope), int(req.Version), req.Ciphertext, HSMAAD(req.Scope, req.AAD))
	s.metrics.hsmSeconds.WithLabelValues(string(OpDecrypt)).Observe(time.Since(start).Seconds())
	if err != nil {
		return s.fail(ev, err)
	}
	if err := s.allow(ev, start); err != nil {
		return wire.ErrorFrom(err)
	}
	return &wire.HSMDecryptResponse{Plaintext: pt}
}

func (s *Server) status(ctx context.Context, node string) wire.Message {
	ev := audit.Event{Node: node, Op: string(OpStatus)}
	if ok, why := s.cfg.Grants.Allowed(node, "*:*", OpStatus); !ok {
		return s.deny(ev, wire.CodeDenied, why)
	}
	fields := []wire.StatusField{{Name: "service", Value: "keyservice"}}
	rings, err := s.cfg.Backend.Keyrings(ctx)
	if err != nil {
		fields = append(fields, wire.StatusField{Name: "backend", Value: "unavailable"})
	} else {
		fields = append(fields, wire.StatusField{Name: "backend", Value: "ok"},
			wire.StatusField{Name: "keyrings", Value: strconv.Itoa(len(rings))})
	}
	_ = s.allow(ev, time.Now())
	return &wire.StatusResponse{Fields: fields}
}

// HSMAAD is the AAD the backend sees for an in-HSM operation on scope (see the package doc).
func HSMAAD(scope string, aad []byte) []byte {
	out := make([]byte, 0, len("keyward-hsm-v1")+2+len(scope)+len(aad))
	out = append(out, "keyward-hsm-v1"...)
	out = append(out, 0)
	out = append(out, scope...)
	out = append(out, 0)
	return append(out, aad...)
}

func (s *Server) deny(ev audit.Event, code wire.Code, reason string) wire.Message {
	ev.Decision, ev.Reason = audit.Deny, reason
	s.record(ev)
	return &wire.ErrorResponse{Code: code, Message: reason}
}

// fail maps a backend error to the wire code and audits it.
func (s *Server) fail(ev audit.Event, err error) wire.Message {
	resp := wire.ErrorFrom(WireError(err))
	ev.Decision, ev.Reason = audit.Error, err.Error()
	if resp.Code == wire.CodeDenied {
		ev.Decision = audit.Deny
	}
	s.record(ev)
	if resp.Code == wire.CodeInternal {
		s.log.Error("backend error", "scope", ev.Scope, "op", ev.Op, "err", err)
	}
	return resp
}

// WireError gives a backend error the wire sentinel (wire.ErrNotFound, ...) that the agent and its
// clients branch on, wrapping err's text; an error it does not classify is returned unchanged (it
// travels as an internal error). The key service and the agent's embedded upstream share it, so a
// backend failure means the same thing in both setups.
func WireError(err error) error {
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return fmt.Errorf("%w: %v", wire.ErrNotFound, err)
	case errors.Is(err, backend.ErrDisabled):
		return fmt.Errorf("%w: %v", wire.ErrDenied, err)
	case errors.Is(err, backend.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %v", wire.ErrUnavailable, err)
	case errors.Is(err, backend.ErrBadInput), errors.Is(err, backend.ErrUnsupported):
		return fmt.Errorf("%w: %v", wire.ErrBadRequest, err)
	}
	return err
}

// allow audits an allowed request. An audit write failure turns it into an error: an unaudited key
// release is not allowed.
func (s *Server) allow(ev audit.Event, start time.Time) error {
	ev.Decision = audit.Allow
	ev.DurationUS = time.Since(start).Microseconds()
	ev.Service = "keyservice"
	if err := s.cfg.Audit.Write(ev); err != nil {
		s.log.Error("audit write failed: refusing the request", "err", err)
		s.metrics.requests.WithLabelValues(ev.Op, audit.Error).Inc()
		return fmt.Errorf("%w: audit log unavailable", wire.ErrUnavailable)
	}
	s.metrics.requests.WithLabelValues(ev.Op, ev.Decision).Inc()
	return nil
}

func (s *Server) record(ev audit.Event) {
	ev.Service = "keyservice"
	s.metrics.requests.WithLabelValues(ev.Op, ev.Decision).Inc()
	if err := s.cfg.Audit.Write(ev); err != nil {
		s.log.Error("audit write failed", "err", err)
	}
}

// Identity is a node certificate's identity: its first URI SAN, else its subject CN.
func Identity(c *x509.Certificate) string { return grants.Identity(c) }
