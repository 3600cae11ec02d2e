package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/pgwire"
)

var syscallEMFILE = syscall.EMFILE

// Startup-phase request codes (PostgreSQL protocol).
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
)

// Authentication request codes.
const (
	authOK        = 0
	authKerberos  = 2
	authCleartext = 3
	authMD5       = 5
	authGSS       = 7
	authGSSCont   = 8
	authSSPI      = 9
	authSASL      = 10
	authSASLCont  = 11
	authSASLFinal = 12
)

// session is one client connection and its backend connection.
type session struct {
	srv    *Server
	id     uint64
	client net.Conn
	server net.Conn
	cr     *pgwire.Reader // from client
	cw     *pgwire.Writer // to client (written only by the backend pump once relaying)
	sr     *pgwire.Reader // from server
	sw     *pgwire.Writer // to server (written only by the frontend pump once relaying)

	info      Session
	clientTLS bool
	key       *cancelKey

	// Idle tracking, shared by the pumps and the reaper: a session is idle when every Query, Sync and
	// FunctionCall it sent has had its ReadyForQuery.
	sent      atomic.Uint64
	rfq       atomic.Uint64
	txStatus  atomic.Uint32 // status byte of the latest ReadyForQuery
	idleSince atomic.Int64  // unix nanoseconds of the latest ReadyForQuery

	ending    atomic.Bool // set by whichever pump ends the session first
	closeOnce sync.Once
	hooked    *tracker // non-nil when an Interceptor returned Hooks
	// loop is set (before the session is listed in Server.sessions) when an event loop relays the
	// session; client and server are then closed and the loop owns duplicates of their sockets.
	loop *loopSession
}

func (ss *session) idle() bool { return ss.rfq.Load() >= ss.sent.Load() }

// wake interrupts the backend pump's read so it re-checks whether to end the session.
func (ss *session) wake() {
	if ss.loop != nil {
		ss.loop.wake()
		return
	}
	if c := ss.server; c != nil {
		_ = c.SetReadDeadline(time.Now())
	}
}

// bytesRead returns the bytes read from the client and from the server so far.
func (ss *session) bytesRead() (in, out int64) {
	if ss.loop != nil {
		return ss.loop.bytes()
	}
	return ss.cr.BytesRead(), ss.sr.BytesRead()
}

// kill closes both connections.
func (ss *session) kill() {
	if ss.loop != nil {
		ss.loop.kill()
		return
	}
	ss.closeOnce.Do(func() {
		ss.client.Close()
		if ss.server != nil {
			ss.server.Close()
		}
	})
}

// fatal is an error ending the session that the client should be told about.
type fatal struct {
	code, msg string
	err       error // for the log
}

func (f *fatal) Error() string {
	if f.err != nil {
		return f.msg + ": " + f.err.Error()
	}
	return f.msg
}

func (f *fatal) Unwrap() error { return f.err }

func errorMsg(severity, code, msg string) []byte {
	b, _ := (&pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}).Encode(nil)
	return b
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	n := s.conns.Add(1)
	defer s.conns.Add(-1)
	s.metrics.accepted.Inc()
	ss := &session{
		srv: s, id: s.nextID.Add(1), client: c,
		cr: pgwire.NewReader(c, 0, s.cfg.MaxClientMessage),
		cw: pgwire.NewWriter(c, 0),
	}
	ss.info.ID = ss.id
	ss.info.ClientAddr = c.RemoteAddr()
	defer ss.kill()
	if s.cfg.StartupTimeout > 0 {
		_ = c.SetDeadline(time.Now().Add(s.cfg.StartupTimeout))
	}
	start := time.Now()
	err := ss.startup(ctx, n)
	if err != nil {
		if ss.hooked != nil {
			ss.hooked.close() // Open succeeded but the first ReadyForQuery could not be delivered
		}
		ss.reportStartupError(err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	if s.draining.Load() {
		ss.cw.Write(fatalShutdown)
		ss.cw.Flush()
		if ss.hooked != nil {
			ss.hooked.close()
		}
		return
	}
	s.metrics.active.Inc()
	onLoop := s.attachLoop(ss)
	if onLoop {
		s.metrics.sessions.WithLabelValues("event_loop").Inc()
	} else {
		s.metrics.sessions.WithLabelValues("goroutines").Inc()
	}
	s.add(ss)
	s.log.Info("session start", "session", ss.id, "client", addrString(c.RemoteAddr()), "role", ss.info.Role,
		"database", ss.info.Database, "client_tls", ss.clientTLS, "hooks", ss.hooked != nil, "event_loop", onLoop)
	err = ss.relay()
	s.remove(ss)
	s.metrics.active.Dec()
	if ss.key != nil {
		s.cancels.remove(ss.key)
	}
	in, out := ss.bytesRead()
	attrs := []any{"session", ss.id, "duration", time.Since(start).Round(time.Millisecond), "bytes_in", in, "bytes_out", out}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	s.log.Info("session end", attrs...)
}

func (ss *session) reportStartupError(err error) {
	s := ss.srv
	var f *fatal
	if errors.As(err, &f) {
		if f.code != "" {
			ss.cw.Write(errorMsg("FATAL", f.code, f.msg))
			ss.cw.Flush()
		}
		s.log.Info("session rejected", "session", ss.id, "client", addrString(ss.client.RemoteAddr()), "err", err)
		return
	}
	var pe *pgwire.ParseError
	if errors.As(err, &pe) {
		s.metrics.errors.WithLabelValues("protocol").Inc()
		ss.cw.Write(errorMsg("FATAL", "08P01", "invalid startup packet"))
		ss.cw.Flush()
	}
	if !errors.Is(err, io.EOF) {
		s.log.Info("startup failed", "session", ss.id, "client", addrString(ss.client.RemoteAddr()), "err", err)
	}
}

// startup runs the startup phase: SSL/GSS negotiation, cancel requests, the StartupMessage, the
// backend connection and the relayed authentication. It returns once the client has been sent its
// first ReadyForQuery.
func (ss *session) startup(ctx context.Context, nconns int64) error {
	s := ss.srv
	if s.cfg.TLS != nil {
		// PostgreSQL 17 clients with sslnegotiation=direct start the TLS handshake at once, without an
		// SSLRequest. A handshake record starts with 0x16; a startup packet with a length byte 0.
		b, err := ss.cr.Peek(1)
		if err != nil {
			return err
		}
		if b[0] == 0x16 {
			if err := ss.directTLS(ctx); err != nil {
				return err
			}
		}
	}
	var pkt []byte
	for {
		var err error
		pkt, err = ss.cr.ReadStartup(0)
		if err != nil {
			return err
		}
		code := binary.BigEndian.Uint32(pkt[4:])
		switch code {
		case codeSSLRequest:
			if ss.clientTLS || s.cfg.TLS == nil {
				if ss.clientTLS {
					return &fatal{code: "08P01", msg: "SSLRequest inside TLS"}
				}
				if _, err := ss.client.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if _, err := ss.client.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(ss.client, s.cfg.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				s.metrics.errors.WithLabelValues("client_tls").Inc()
				return &fatal{msg: "client tls handshake", err: err}
			}
			// Bytes sent before the handshake must not be read as if they came through TLS
			// (CVE-2021-23214 is this mistake).
			if err := ss.cr.Reset(tc); err != nil {
				return &fatal{msg: "client tls", err: err}
			}
			ss.client = tc
			ss.cw.Reset(tc)
			ss.clientTLS = true
			continue
		case codeGSSENCRequest:
			if _, err := ss.client.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case codeCancelRequest:
			var cr pgproto3.CancelRequest
			if err := cr.Decode(pkt[4:]); err != nil {
				return &fatal{msg: "cancel request", err: err}
			}
			s.forwardCancel(ctx, cr.ProcessID, cr.SecretKey)
			return &fatal{msg: "cancel request handled"}
		}
		break
	}
	var sm pgproto3.StartupMessage
	if err := sm.Decode(pkt[4:]); err != nil {
		return &fatal{code: "08P01", msg: "unsupported frontend protocol or invalid startup packet", err: err}
	}
	ss.info.Startup = sm.Parameters
	ss.info.Role = sm.Parameters["user"]
	ss.info.Database = sm.Parameters["database"]
	if ss.info.Database == "" {
		ss.info.Database = ss.info.Role
	}
	ss.info.ClientTLS = ss.clientTLS
	if ss.info.Role == "" {
		return &fatal{code: "28000", msg: "no PostgreSQL user name specified in startup packet"}
	}
	if s.cfg.RequireClientTLS && !ss.clientTLS {
		s.metrics.rejected.WithLabelValues("tls_required").Inc()
		return &fatal{code: "28000", msg: "colcrypt requires TLS: connect with sslmode=require (or stronger)"}
	}
	if s.cfg.MaxConnections > 0 && nconns > int64(s.cfg.MaxConnections) {
		s.metrics.rejected.WithLabelValues("too_many").Inc()
		return &fatal{code: "53300", msg: fmt.Sprintf("too many connections (colcrypt max_connections is %d)", s.cfg.MaxConnections)}
	}
	if s.draining.Load() {
		return &fatal{code: "57P03", msg: "the proxy is shutting down"}
	}
	up, err := s.dialUpstream(ctx)
	if err != nil {
		s.metrics.errors.WithLabelValues("upstream_connect").Inc()
		return &fatal{code: "08006", msg: "could not connect to the database server", err: err}
	}
	ss.server = up
	if s.cfg.StartupTimeout > 0 {
		_ = up.SetDeadline(time.Now().Add(s.cfg.StartupTimeout))
	}
	ss.sr = pgwire.NewReader(up, 0, 0)
	ss.sw = pgwire.NewWriter(up, 0)
	ss.sw.Write(pkt) // the StartupMessage exactly as the client sent it
	if err := ss.sw.Flush(); err != nil {
		return &fatal{code: "08006", msg: "could not connect to the database server", err: err}
	}
	if err := ss.authenticate(ctx); err != nil {
		return err
	}
	_ = up.SetDeadline(time.Time{})
	return nil
}

// dialUpstream connects to PostgreSQL, with TLS as configured.
func (s *Server) dialUpstream(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: s.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", s.cfg.UpstreamAddr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if s.cfg.UpstreamTLS == TLSDisable {
		return c, nil
	}
	_ = c.SetDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
		c.Close()
		return nil, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("ssl request: %w", err)
	}
	if b[0] != 'S' {
		c.Close()
		return nil, errors.New("the database server does not accept TLS (upstream tls is " + s.cfg.UpstreamTLS + ")")
	}
	tcfg := s.cfg.UpstreamTLSConfig
	if tcfg == nil {
		tcfg = &tls.Config{}
	}
	tcfg = tcfg.Clone()
	if s.cfg.UpstreamTLS == TLSRequire {
		// require: encryption without authentication of the server, like libpq's sslmode=require.
		tcfg.InsecureSkipVerify = true
	}
	tc := tls.Client(c, tcfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		s.metrics.errors.WithLabelValues("upstream_tls").Inc()
		return nil, fmt.Errorf("tls: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// authenticate relays authentication until the first ReadyForQuery, substituting BackendKeyData and
// stripping SCRAM-SHA-256-PLUS.
func (ss *session) authenticate(ctx context.Context) error {
	s := ss.srv
	authenticated := false
	upstreamPlus := false
	var backendKey pgproto3.BackendKeyData
	params := map[string]string{}
	for {
		if !ss.sr.Pending() {
			if err := ss.cw.Flush(); err != nil {
				return err
			}
		}
		m, err := ss.sr.Next()
		if err != nil {
			return &fatal{code: "08006", msg: "lost the connection to the database server during authentication", err: err}
		}
		body := m.Body()
		switch m.Type {
		case 'R':
			if len(body) < 4 {
				return &fatal{code: "08P01", msg: "invalid authentication message from the database server"}
			}
			code := binary.BigEndian.Uint32(body)
			needReply := false
			switch code {
			case authOK:
				authenticated = true
				ss.cw.Write(m.Raw)
			case authSASL:
				var a pgproto3.AuthenticationSASL
				if err := a.Decode(body); err != nil {
					return &fatal{code: "08P01", msg: "invalid SASL message from the database server", err: err}
				}
				var keep []string
				for _, mech := range a.AuthMechanisms {
					if mech == "SCRAM-SHA-256-PLUS" {
						upstreamPlus = true
						continue
					}
					keep = append(keep, mech)
				}
				if len(keep) == 0 {
					return &fatal{code: "28000", msg: "the database server offers only SCRAM channel binding, which is impossible through colcrypt (TLS ends at the proxy)"}
				}
				a.AuthMechanisms = keep
				out, _ := a.Encode(nil)
				ss.cw.Write(out)
				needReply = true
			case authCleartext, authMD5, authSASLCont:
				ss.cw.Write(m.Raw)
				needReply = true
			case authSASLFinal:
				ss.cw.Write(m.Raw)
			case authKerberos, authGSS, authGSSCont, authSSPI:
				return &fatal{code: "28000", msg: "GSSAPI/SSPI authentication is not supported through colcrypt"}
			default:
				ss.cw.Write(m.Raw)
			}
			if needReply {
				if err := ss.cw.Flush(); err != nil {
					return err
				}
				cm, err := ss.cr.Next()
				if err != nil {
					var pe *pgwire.ParseError
					if errors.As(err, &pe) {
						return &fatal{code: "08P01", msg: "invalid authentication response", err: err}
					}
					return err
				}
				if cm.Type != 'p' {
					return &fatal{code: "08P01", msg: fmt.Sprintf("expected a password response, got message type %q", cm.Type)}
				}
				if code == authSASL {
					if err := checkChannelBinding(cm.Body(), upstreamPlus && s.cfg.UpstreamTLS != TLSDisable); err != nil {
						return err
					}
				}
				ss.sw.Write(cm.Raw)
				if err := ss.sw.Flush(); err != nil {
					return &fatal{code: "08006", msg: "lost the connection to the database server during authentication", err: err}
				}
			}
		case 'E':
			// Authentication failed (or the database refused us): PostgreSQL's own error, unchanged.
			ss.cw.Write(m.Raw)
			ss.cw.Flush()
			s.metrics.errors.WithLabelValues("auth").Inc()
			return &fatal{msg: "database refused the session"}
		case 'K':
			if !authenticated {
				return &fatal{code: "08P01", msg: "BackendKeyData before authentication"}
			}
			if err := backendKey.Decode(body); err != nil {
				return &fatal{code: "08P01", msg: "invalid BackendKeyData", err: err}
			}
			key, err := s.cancels.issue(backendKey.ProcessID, backendKey.SecretKey)
			if err != nil {
				return &fatal{code: "XX000", msg: "internal error", err: err}
			}
			ss.key = key
			ss.info.BackendPID = backendKey.ProcessID
			out, _ := (&pgproto3.BackendKeyData{ProcessID: key.pid, SecretKey: key.secret}).Encode(nil)
			ss.cw.Write(out)
		case 'S':
			var ps pgproto3.ParameterStatus
			if err := ps.Decode(body); err == nil {
				params[ps.Name] = ps.Value
			}
			ss.cw.Write(m.Raw)
		case 'N', 'v':
			ss.cw.Write(m.Raw)
		case 'Z':
			if !authenticated {
				return &fatal{code: "08P01", msg: "ReadyForQuery before authentication"}
			}
			ss.info.params = params
			if s.cfg.Interceptor != nil && ss.info.Startup["replication"] == "" {
				hooks, err := s.cfg.Interceptor.Open(ctx, &ss.info)
				if err != nil {
					var r *Refusal
					if errors.As(err, &r) {
						e := *r.Response
						e.Severity, e.SeverityUnlocalized = "FATAL", "FATAL"
						out, _ := e.Encode(nil)
						ss.cw.Write(out)
						ss.cw.Flush()
						return &fatal{msg: "interceptor refused the session", err: err}
					}
					return &fatal{code: "XX000", msg: "colcrypt could not set up the session", err: err}
				}
				if hooks != nil {
					ss.hooked = newTracker(ss, hooks)
				}
			}
			if len(body) > 0 {
				ss.txStatus.Store(uint32(body[0]))
			}
			ss.idleSince.Store(time.Now().UnixNano())
			ss.cw.Write(m.Raw)
			return ss.cw.Flush()
		default:
			return &fatal{code: "08P01", msg: fmt.Sprintf("unexpected message %q from the database server during authentication", m.Type)}
		}
	}
}

// checkChannelBinding looks at the GS2 header of a SASLInitialResponse. A client cannot bind to the
// database's TLS channel through the proxy; and a client announcing that it could ('y') is rejected by
// PostgreSQL as a downgrade when PostgreSQL itself offered -PLUS (it did, over upstream TLS), so tell
// the client what to do instead of letting the database's cryptic error through.
func checkChannelBinding(body []byte, upstreamPlus bool) error {
	i := bytes.IndexByte(body, 0)
	if i < 0 || len(body) < i+1+4 {
		return &fatal{code: "08P01", msg: "invalid SASLInitialResponse"}
	}
	mech := string(body[:i])
	data := body[i+5:]
	if mech != "SCRAM-SHA-256" || (len(data) > 0 && data[0] == 'p') {
		return &fatal{code: "28000", msg: "SCRAM channel binding (SCRAM-SHA-256-PLUS) is not possible through colcrypt: TLS ends at the proxy"}
	}
	if upstreamPlus && len(data) > 0 && data[0] == 'y' {
		return &fatal{code: "28000", msg: "SCRAM channel binding is not possible through colcrypt (TLS ends at the proxy) and the database would reject this login as a downgrade: connect with channel_binding=disable"}
	}
	return nil
}

// newSecret returns n random bytes.
func newSecret(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := rand.Read(b)
	return b, err
}

// addrString formats a peer address; unix-socket peers are usually unnamed.
func addrString(a net.Addr) string {
	if a == nil || a.String() == "" {
		return "unix"
	}
	return a.String()
}

// directTLS runs a TLS handshake the client began without SSLRequest. As PostgreSQL does, it demands
// the ALPN protocol "postgresql", which proves the client meant to speak PostgreSQL inside TLS.
func (ss *session) directTLS(ctx context.Context) error {
	cfg := ss.srv.cfg.TLS.Clone()
	cfg.NextProtos = []string{"postgresql"}
	tc := tls.Server(&prefixConn{Conn: ss.client, pre: ss.cr.TakeBuffered()}, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		ss.srv.metrics.errors.WithLabelValues("client_tls").Inc()
		return &fatal{msg: "client tls handshake (direct)", err: err}
	}
	if tc.ConnectionState().NegotiatedProtocol != "postgresql" {
		return &fatal{msg: "direct TLS connection without ALPN protocol postgresql"}
	}
	if err := ss.cr.Reset(tc); err != nil {
		return &fatal{msg: "client tls", err: err}
	}
	ss.client = tc
	ss.cw.Reset(tc)
	ss.clientTLS = true
	return nil
}

// prefixConn replays bytes already read from a connection before reading from it again.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
