package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyward/keyward/colcrypt/pgwire"
)

var (
	errClientGone   = errors.New("client closed the connection")
	errTerminated   = errors.New("client sent Terminate")
	errUpstreamGone = errors.New("database server closed the connection")
	errEnding       = errors.New("session ending")
)

// relay runs the two pumps until the session ends (or, for a session on an event loop, waits for it). The frontend pump (this goroutine) is the only
// writer to the server; the backend pump is the only writer to the client. Whichever side ends first
// sets ss.ending and interrupts the other one's read with a past deadline.
func (ss *session) relay() error {
	if ss.loop != nil {
		return ss.loop.wait()
	}
	done := make(chan error, 1)
	go func() { done <- ss.backendLoop() }()
	ferr := ss.frontendLoop()
	ss.ending.Store(true)
	var pe *pgwire.ParseError
	switch {
	case errors.Is(ferr, errEnding):
		// the backend pump ended the session
	case errors.Is(ferr, errTerminated):
		// Terminate was forwarded; PostgreSQL closes its side, which ends the backend pump.
		_ = ss.server.SetReadDeadline(time.Now().Add(time.Second))
	default:
		// The client vanished or misbehaved: make sure the backend does not keep running its query for
		// nobody (a cancel interrupts it now; Terminate then ends it).
		ss.cancelIfBusy()
		ss.sw.Write(terminateMsg)
		ss.sw.Flush()
		ss.wake()
	}
	berr := <-done
	if errors.As(ferr, &pe) {
		ss.srv.metrics.errors.WithLabelValues("protocol").Inc()
		ss.cw.Write(fatalInvalidFrontend(pe))
		ss.cw.Flush()
	}
	if ss.hooked != nil {
		ss.hooked.close()
	}
	ss.kill()
	if errors.Is(ferr, errEnding) {
		return berr
	}
	if errors.Is(ferr, errTerminated) || errors.Is(ferr, errClientGone) {
		return nil
	}
	return ferr
}

var terminateMsg = []byte{'X', 0, 0, 0, 4}

// Why a relayed session ends, as the log says it and as the client is told (both relays use these).
var (
	errShutdown      = errors.New("shutdown")
	errIdleTimeout   = errors.New("idle timeout")
	fatalShutdown    = errorMsg("FATAL", "57P01", "terminating connection due to administrator command")
	fatalIdleTimeout = errorMsg("FATAL", "57P05", "terminating connection due to idle-session timeout")
	// fatalUpstreamLost is not sent when the server said FATAL itself before closing.
	fatalUpstreamLost = errorMsg("FATAL", "08006", "lost the connection to the database server")
)

// fatalInvalidFrontend is the client's error for malformed framing (type and length, no content).
func fatalInvalidFrontend(pe *pgwire.ParseError) []byte {
	return errorMsg("FATAL", "08P01", "invalid frontend message: "+pe.Error())
}

// drainable reports whether a draining server should end the session now: every request answered
// and no transaction open.
func (ss *session) drainable() bool {
	return ss.srv.draining.Load() && ss.idle() && ss.txStatus.Load() == 'I'
}

// idleExpired reports whether the session has waited for its client longer than IdleTimeout.
func (ss *session) idleExpired() bool {
	t := ss.srv.cfg.IdleTimeout
	return t > 0 && ss.idle() && time.Since(time.Unix(0, ss.idleSince.Load())) >= t
}

// cancelIfBusy cancels the backend's running query, if any: the client it was running for is gone.
func (ss *session) cancelIfBusy() {
	if !ss.idle() && ss.key != nil {
		ss.srv.forwardCancel(context.Background(), ss.key.pid, ss.key.secret)
	}
}

// readyForQuery records a ReadyForQuery (its body is the transaction status byte).
func (ss *session) readyForQuery(body []byte) {
	if len(body) > 0 {
		ss.txStatus.Store(uint32(body[0]))
	}
	ss.idleSince.Store(time.Now().UnixNano())
	ss.rfq.Add(1)
}

func (ss *session) frontendLoop() error {
	c := counts{msgs: ss.srv.metrics.msgsIn, bytes: ss.srv.metrics.bytesIn, r: ss.cr}
	defer c.publish()
	for {
		if !ss.cr.Pending() {
			if err := ss.sw.Flush(); err != nil {
				return errEnding // the backend pump reports the lost server
			}
			c.publish()
		}
		msg, err := ss.cr.Next()
		if err != nil {
			if ss.ending.Load() {
				return errEnding
			}
			var pe *pgwire.ParseError
			if errors.As(err, &pe) {
				return err
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
				return errClientGone
			}
			return errors.Join(errClientGone, err)
		}
		c.n++
		switch msg.Type {
		case 'X':
			ss.ending.Store(true) // the server closing now is expected, not an error to report
			ss.sw.Write(msg.Raw)
			ss.sw.Flush()
			return errTerminated
		case 'Q', 'S', 'F':
			ss.sent.Add(1)
		}
		if ss.hooked != nil {
			if err := ss.hooked.frontend(msg); err != nil {
				return err
			}
			continue
		}
		ss.sw.Write(msg.Raw)
	}
}

func (ss *session) backendLoop() error {
	s := ss.srv
	m := s.metrics
	c := counts{msgs: m.msgsOut, bytes: m.bytesOut, r: ss.sr}
	defer c.publish()
	sawFatal := false // the server said why it ends the session; the client needs no second FATAL
	// end tells the client why the session ends (if it should be told), and stops the frontend pump.
	end := func(err error, fatal []byte) error {
		if fatal != nil {
			ss.cw.Write(fatal)
		}
		ss.cw.Flush()
		ss.ending.Store(true)
		_ = ss.client.SetReadDeadline(time.Now())
		return err
	}
	for {
		if !ss.sr.Pending() {
			if err := ss.cw.Flush(); err != nil {
				return end(errClientGone, nil)
			}
			c.publish()
		}
		msg, err := ss.sr.Next()
		if err != nil {
			if ss.ending.Load() {
				return end(errEnding, nil)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ss.drainable() {
					return end(errShutdown, fatalShutdown)
				}
				if ss.idleExpired() {
					return end(errIdleTimeout, fatalIdleTimeout)
				}
				_ = ss.server.SetReadDeadline(time.Time{})
				continue
			}
			if sawFatal {
				return end(errUpstreamGone, nil)
			}
			m.errors.WithLabelValues("upstream_lost").Inc()
			return end(errors.Join(errUpstreamGone, err), fatalUpstreamLost)
		}
		c.n++
		if msg.Type == 'E' && isFatal(msg.Body()) {
			sawFatal = true
		}
		if msg.Type == 'Z' {
			ss.readyForQuery(msg.Body())
		}
		if ss.hooked != nil {
			ss.hooked.backend(msg)
		} else {
			ss.cw.Write(msg.Raw)
		}
		if msg.Type == 'Z' && ss.drainable() {
			return end(errShutdown, fatalShutdown)
		}
	}
}

// counts publishes one direction's messages and bytes to its counters once per flush, not per message.
type counts struct {
	msgs, bytes prometheus.Counter
	r           *pgwire.Reader
	n           int   // messages since the last publish
	read        int64 // r.BytesRead() at the last publish
}

func (c *counts) publish() {
	if c.n > 0 {
		b := c.r.BytesRead()
		c.msgs.Add(float64(c.n))
		c.bytes.Add(float64(b - c.read))
		c.read, c.n = b, 0
	}
}

// isFatal reports whether an ErrorResponse body has severity FATAL or PANIC.
func isFatal(body []byte) bool {
	for len(body) > 1 {
		t := body[0]
		end := 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		v := string(body[1:end])
		if t == 'V' || t == 'S' {
			return v == "FATAL" || v == "PANIC"
		}
		body = body[min(end+1, len(body)):]
	}
	return false
}
