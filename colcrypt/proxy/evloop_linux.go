//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/colcrypt/pgwire"
)

// The event loop relays plaintext sessions without hooks with an epoll set of its own.
//
// Go's netpoller is edge-triggered and per goroutine: a goroutine reading a socket must see EAGAIN
// before it parks, and every wake-up of every session goes through the scheduler (epoll on one thread,
// futex to hand the goroutine to another). For a relay whose only work per message is to frame it and
// copy it on, that is most of the cost: about 9 syscalls per pgbench transaction where PgBouncer makes
// 4.7. An evloop is PgBouncer's design in Go: one goroutine, one level-triggered epoll set for many
// sessions, and per readiness event exactly one read and one write. Go's netpoller watches only the
// epoll set itself: when a poll of the set finds nothing ready, the loop parks like any goroutine
// (holding no thread, so it works the same with GOMAXPROCS=1), and one wake-up then serves a batch of
// events. Measured (strace -c over 16 000 pgbench -S transactions): 5.0 syscalls per transaction,
// PgBouncer 4.6-4.7 (both: 2 reads, 2 sends; here 0.9 epoll_pwait and a few futex and nanosleep
// calls of the Go runtime), and the same CPU per transaction. (An earlier version blocked a locked OS thread in epoll_wait; in the colcrypt process
// that cost 1.4-1.7x PgBouncer's CPU per transaction, and it would starve other goroutines for up to a
// scheduler tick with GOMAXPROCS=1.)
//
// Both directions of a session are framed as they stream through (type byte and length only; a message
// larger than the buffer streams without being held), so the loop keeps everything the goroutine relay
// knows: the requests awaiting a ReadyForQuery (idle tracking, drain), the transaction status, a FATAL
// from the server, Terminate, and malformed client framing.
//
// The loop never blocks on a peer: a write that would block pauses reading from the other side until it
// drains. Ending a session (which may mean a cancel, a Terminate, or a last ErrorResponse to a slow
// client) is handed to a goroutine, so one session's end never stalls the others.

// loopBufferSize is the buffer of each direction of a loop session. A direction holds a buffer only
// while bytes pass through it: an idle session costs no buffer memory, and the loop keeps up to
// loopSpareBuffers of them for reuse.
const (
	loopBufferSize   = pgwire.DefaultBufferSize
	loopSpareBuffers = 64
)

// loopThreads returns how many event loops a Server runs: cfg.RelayThreads, or by default one per four
// usable CPUs (PgBouncer relays everything on one thread; a loop saturates well after PostgreSQL does).
// Each loop is one goroutine, so at most one CPU.
func loopThreads(cfg int) int {
	if cfg > 0 {
		return cfg
	}
	return max(1, (runtime.GOMAXPROCS(0)+3)/4)
}

const (
	reqAdd = iota
	reqCheck
	reqKill
	reqStop
)

type loopReq struct {
	ls   *loopSession
	kind int
}

// evloop is one relay goroutine and its epoll set.
type evloop struct {
	srv    *Server
	epfd   int
	ep     *os.File        // the epoll set, registered with Go's netpoller: readable when it has events
	rc     syscall.RawConn // ep's
	wakefd int             // eventfd: other goroutines post requests and write it
	done   chan struct{}

	mu      sync.Mutex
	queue   []loopReq
	stopped bool

	ends  []*loopEnd // by file descriptor; touched only by the loop goroutine
	spare [][]byte   // free buffers
	// messages and bytes relayed since the metrics were last published (once per batch of events)
	msgsIn, msgsOut, bytesIn, bytesOut int64
}

// why a loop session ends
type endReason int

const (
	endNone        endReason = iota
	endTerminate             // the client sent Terminate (forwarded)
	endClientGone            // EOF or error from the client
	endBadFrontend           // malformed client framing
	endServerGone            // EOF, error or malformed framing from PostgreSQL
	endDrain                 // shutdown, and the session is idle outside a transaction
	endIdle                  // idle timeout
	endKilled                // shutdown timeout
)

// loopSession is the loop's state for one session.
type loopSession struct {
	ss       *session
	l        *evloop
	client   loopEnd
	server   loopEnd
	ended    bool // set by the loop goroutine only
	sawFatal bool // the server sent FATAL: the client needs no second one when it closes
	why      endReason
	err      error      // the I/O error or framing error that ended it
	done     chan error // the session's result, once finish has closed both sockets
	// bytes read from the client and the server in the startup phase, before the loop
	startIn, startOut int64
}

// loopEnd is one socket of a loop session, with the bytes read from it on their way to its peer.
type loopEnd struct {
	fd   int
	ls   *loopSession
	peer *loopEnd
	in   flow
	mask uint32 // events currently registered
}

// flow is one direction of a session: buf[w:s] is framed and waits to be written to the peer;
// buf[s:r] is the start of a message header not yet complete (at most 4 bytes).
type flow struct {
	buf      []byte
	w, s, r  int
	left     int  // bytes of the current message's body not yet passed
	typ      byte // type of the current message
	head     [64]byte
	nhead    int   // bytes of the current body kept in head (enough for a severity or a status byte)
	n        int64 // bytes read from the socket
	maxLen   int   // largest message length accepted
	parseErr error // the malformed header that stopped the flow (a *pgwire.ParseError)
}

func (f *flow) pending() []byte { return f.buf[f.w:f.s] }

// newEvloop creates an epoll set and starts its goroutine.
func newEvloop(s *Server) (*evloop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	// Go's netpoller watches the epoll set itself: the loop parks like any goroutine when there is
	// nothing to do (holding no thread and no P), and runs batches of events without blocking.
	ep := os.NewFile(uintptr(epfd), "evloop")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		unix.Close(wfd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	l := &evloop{srv: s, epfd: epfd, ep: ep, rc: rc, wakefd: wfd, done: make(chan struct{})}
	go l.run()
	return l, nil
}

// post hands a request to the loop goroutine. Requests to a stopped loop are dropped.
func (l *evloop) post(r loopReq) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, r)
	if r.kind == reqStop {
		l.stopped = true
	}
	l.mu.Unlock()
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:])
	return true
}

// stop ends the loop goroutine (and any session still on it) and waits for it.
func (l *evloop) stop() {
	if l.post(loopReq{kind: reqStop}) {
		<-l.done
	}
}

func (l *evloop) run() {
	defer close(l.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := l.wait(events)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.srv.log.Error("relay loop: epoll_wait", "err", err)
			n = 0 // keep serving requests; sessions end on their own errors
			time.Sleep(10 * time.Millisecond)
		}
		woken := false
		for i := range events[:n] {
			ev := &events[i]
			fd := int(ev.Fd)
			if fd == l.wakefd {
				woken = true
				continue
			}
			if fd >= len(l.ends) || l.ends[fd] == nil {
				continue // its session ended earlier in this batch
			}
			l.event(l.ends[fd], ev.Events)
		}
		l.publish()
		if woken && l.requests() {
			for _, e := range l.ends {
				if e != nil && e == &e.ls.client {
					e.ls.end(endKilled, nil)
				}
			}
			l.ep.Close()
			unix.Close(l.wakefd)
			return
		}
	}
}

// wait returns the next batch of ready events: it polls the epoll set without blocking and, when
// nothing is ready, parks on Go's netpoller until the set becomes readable.
func (l *evloop) wait(events []unix.EpollEvent) (n int, err error) {
	rerr := l.rc.Read(func(fd uintptr) bool {
		r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])),
			uintptr(len(events)), 0, 0, 0)
		n, err = int(r), nil
		if errno != 0 {
			n, err = 0, errno
		}
		return n > 0 || err != nil
	})
	if rerr != nil {
		return 0, rerr
	}
	return n, err
}

// requests runs the posted requests; it reports whether the loop must stop.
func (l *evloop) requests() (stop bool) {
	var b [8]byte
	_, _ = unix.Read(l.wakefd, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, r := range q {
		switch r.kind {
		case reqAdd:
			l.add(r.ls)
		case reqCheck:
			if !r.ls.ended {
				r.ls.check()
			}
		case reqKill:
			if !r.ls.ended {
				r.ls.end(endKilled, nil)
			}
		case reqStop:
			stop = true
		}
	}
	return stop
}

func (l *evloop) publish() {
	m := l.srv.metrics
	for _, c := range [...]struct {
		n *int64
		c prometheus.Counter
	}{{&l.msgsIn, m.msgsIn}, {&l.msgsOut, m.msgsOut}, {&l.bytesIn, m.bytesIn}, {&l.bytesOut, m.bytesOut}} {
		if *c.n != 0 {
			c.c.Add(float64(*c.n))
			*c.n = 0
		}
	}
}

// add registers a new session and relays what its readers had buffered at hand-over.
func (l *evloop) add(ls *loopSession) {
	for max(ls.client.fd, ls.server.fd) >= len(l.ends) {
		l.ends = append(l.ends, make([]*loopEnd, max(len(l.ends), 64))...)
	}
	for _, e := range []*loopEnd{&ls.client, &ls.server} {
		e.mask = unix.EPOLLIN
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, e.fd, &unix.EpollEvent{Events: e.mask, Fd: int32(e.fd)}); err != nil {
			l.ends[ls.client.fd] = &ls.client // so that end removes whatever was added
			ls.end(endKilled, fmt.Errorf("epoll_ctl add: %w", err))
			return
		}
		l.ends[e.fd] = e
	}
	for _, e := range []*loopEnd{&ls.client, &ls.server} {
		if !ls.ended && e.in.r > 0 {
			l.forward(e)
		}
	}
}

// event handles the readiness of one socket.
func (l *evloop) event(e *loopEnd, ev uint32) {
	ls := e.ls
	if ev&unix.EPOLLOUT != 0 && e.mask&unix.EPOLLOUT != 0 {
		l.flush(e.peer) // e can take more of what its peer sent
		if ls.ended {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
		return
	}
	if (e.in.buf == nil || e.in.r < len(e.in.buf)) && (e.mask&unix.EPOLLIN != 0 || ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0) {
		l.read(e)
	}
	if !ls.ended && ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		// hung up while we were not reading from it (its peer is slow): nothing more will come
		ls.end(ls.gone(e), nil)
	}
}

// read reads once from e and forwards what can be forwarded.
func (l *evloop) read(e *loopEnd) {
	f := &e.in
	if f.buf == nil {
		f.buf = l.getBuffer()
	}
	n, errno := rawRead(e.fd, f.buf[f.r:])
	if errno == unix.EAGAIN || errno == unix.EINTR {
		l.putBuffer(f)
		return
	}
	if n <= 0 {
		var err error
		if errno != 0 {
			err = errno
		}
		e.ls.end(e.ls.gone(e), err)
		return
	}
	f.r += n
	f.n += int64(n)
	if e == &e.ls.client {
		l.bytesIn += int64(n)
	} else {
		l.bytesOut += int64(n)
	}
	l.forward(e)
}

// forward frames what e has read and writes the complete part to its peer.
func (l *evloop) forward(e *loopEnd) {
	ls := e.ls
	why := ls.scan(e)
	l.flush(e)
	if why != endNone && !ls.ended {
		ls.end(why, e.in.parseErr)
	}
}

// flush writes what e has read to its peer, then sets both sockets' interest: a flow whose bytes are
// not all written stops reading until the peer has taken them.
func (l *evloop) flush(e *loopEnd) {
	f := &e.in
	for f.w < f.s {
		n, errno := rawWrite(e.peer.fd, f.buf[f.w:f.s])
		if errno == unix.EAGAIN {
			break
		}
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || n <= 0 {
			e.ls.end(e.ls.gone(e.peer), errno)
			return
		}
		f.w += n
	}
	if f.w == f.s {
		// all written: keep only the partial header, at the front
		f.r = copy(f.buf, f.buf[f.s:f.r])
		f.w, f.s = 0, 0
		l.putBuffer(f)
	}
	l.arm(e)
	l.arm(e.peer)
}

// getBuffer returns a buffer for a flow that has none.
func (l *evloop) getBuffer() []byte {
	if n := len(l.spare); n > 0 {
		b := l.spare[n-1]
		l.spare = l.spare[:n-1]
		return b
	}
	return make([]byte, loopBufferSize)
}

// putBuffer takes back the buffer of a flow that holds no bytes.
func (l *evloop) putBuffer(f *flow) {
	if f.r != 0 || f.buf == nil {
		return
	}
	if len(f.buf) == loopBufferSize && len(l.spare) < loopSpareBuffers {
		l.spare = append(l.spare, f.buf)
	}
	f.buf = nil
}

// arm registers the events e needs: readable unless what it sent is still waiting for its peer,
// writable while its peer's bytes are waiting for it.
func (l *evloop) arm(e *loopEnd) {
	var want uint32
	if e.in.w == e.in.s {
		want |= unix.EPOLLIN
	}
	if p := &e.peer.in; p.w < p.s {
		want |= unix.EPOLLOUT
	}
	if want == e.mask {
		return
	}
	e.mask = want
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, e.fd, &unix.EpollEvent{Events: want, Fd: int32(e.fd)}); err != nil {
		e.ls.end(endKilled, fmt.Errorf("epoll_ctl mod: %w", err))
	}
}

// gone is the reason a session ends when e can no longer be read or written.
func (ls *loopSession) gone(e *loopEnd) endReason {
	if e == &ls.client {
		return endClientGone
	}
	return endServerGone
}

// scan frames the bytes e has read, from f.s on, and reports whether the session must end after the
// framed part has been written. Message bodies stream through: only the 5-byte header of a message is
// ever held back, and the first bytes of the bodies the relay needs to look at are copied aside.
func (ls *loopSession) scan(e *loopEnd) endReason {
	f := &e.in
	front := e == &ls.client
	for f.s < f.r {
		if f.left > 0 {
			k := min(f.left, f.r-f.s)
			if (f.typ == 'E' || f.typ == 'Z') && f.nhead < len(f.head) {
				f.nhead += copy(f.head[f.nhead:], f.buf[f.s:f.s+k])
			}
			f.s += k
			f.left -= k
			if f.left > 0 {
				break
			}
			if why := ls.complete(f, front); why != endNone {
				f.r = f.s // nothing after the last message is relayed
				return why
			}
			continue
		}
		if f.r-f.s < 5 {
			break
		}
		typ, length, err := pgwire.Header(f.buf[f.s:f.r], f.maxLen)
		if err != nil {
			f.parseErr = err
			f.r = f.s
			if front {
				return endBadFrontend
			}
			return endServerGone
		}
		f.s += 5
		f.typ, f.left, f.nhead = typ, length-4, 0
		if front {
			ls.l.msgsIn++
			if typ == 'Q' || typ == 'S' || typ == 'F' {
				ls.ss.sent.Add(1)
			}
		} else {
			ls.l.msgsOut++
		}
		if f.left == 0 {
			if why := ls.complete(f, front); why != endNone {
				f.r = f.s
				return why
			}
		}
	}
	return endNone
}

// complete handles the end of a message.
func (ls *loopSession) complete(f *flow, front bool) endReason {
	ss := ls.ss
	if front {
		if f.typ == 'X' {
			return endTerminate
		}
		return endNone
	}
	switch f.typ {
	case 'E':
		if isFatal(f.head[:f.nhead]) {
			ls.sawFatal = true
		}
	case 'Z':
		ss.readyForQuery(f.head[:f.nhead])
		if ss.drainable() {
			return endDrain
		}
	}
	return endNone
}

// check ends the session if the server is draining or the idle timeout has passed (reaper, shutdown).
func (ls *loopSession) check() {
	switch {
	case ls.ss.drainable():
		ls.end(endDrain, nil)
	case ls.ss.idleExpired():
		ls.end(endIdle, nil)
	}
}

// end takes the session off the loop and hands its last writes and the closing of its sockets to a
// goroutine. The loop never touches the session again.
func (ls *loopSession) end(why endReason, err error) {
	if ls.ended {
		return
	}
	ls.ended, ls.why, ls.err = true, why, err
	l := ls.l
	for _, e := range []*loopEnd{&ls.client, &ls.server} {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
		l.ends[e.fd] = nil
	}
	go ls.finish()
}

// finish runs off the loop: it delivers what was still waiting, tells each side why the session
// ends (as the goroutine relay does), closes both sockets and reports the session's result.
func (ls *loopSession) finish() {
	ss := ls.ss
	s := ss.srv
	toClient, toServer := ls.server.in.pending(), ls.client.in.pending()
	for _, fd := range []int{ls.client.fd, ls.server.fd} {
		_ = unix.SetNonblock(fd, false)
		tv := unix.NsecToTimeval(int64(5 * time.Second))
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	var result error
	switch ls.why {
	case endTerminate:
		writeAll(ls.server.fd, toServer)
	case endClientGone, endBadFrontend, endKilled:
		if ls.why != endKilled {
			ss.cancelIfBusy()
			writeAll(ls.server.fd, toServer, terminateMsg)
		}
		if ls.why == endBadFrontend {
			s.metrics.errors.WithLabelValues("protocol").Inc()
			var pe *pgwire.ParseError
			errors.As(ls.err, &pe)
			writeAll(ls.client.fd, toClient, fatalInvalidFrontend(pe))
			result = ls.err
		}
		if ls.why == endKilled {
			result = errors.New("closed at the end of the shutdown timeout")
		}
	case endServerGone:
		var fatalMsg []byte
		if !ls.sawFatal {
			s.metrics.errors.WithLabelValues("upstream_lost").Inc()
			fatalMsg = fatalUpstreamLost
		}
		writeAll(ls.client.fd, toClient, fatalMsg)
		result = errUpstreamGone
		if ls.err != nil {
			result = errors.Join(errUpstreamGone, ls.err)
		}
		if ls.sawFatal {
			result = nil
		}
	case endDrain:
		writeAll(ls.client.fd, toClient, fatalShutdown)
		writeAll(ls.server.fd, toServer, terminateMsg)
		result = errShutdown
	case endIdle:
		writeAll(ls.client.fd, toClient, fatalIdleTimeout)
		writeAll(ls.server.fd, toServer, terminateMsg)
		result = errIdleTimeout
	}
	unix.Close(ls.client.fd)
	unix.Close(ls.server.fd)
	ls.done <- result
}

// writeAll writes the byte slices to a blocking socket (with a send timeout), stopping at the first
// error: the session is ending, so a peer that cannot take them loses them.
func writeAll(fd int, bufs ...[]byte) {
	for _, b := range bufs {
		for len(b) > 0 {
			n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return
			}
			b = b[n:]
		}
	}
}

// rawRead and rawWrite are read and send(MSG_NOSIGNAL) on a non-blocking socket, without the
// scheduler hand-off of syscall.Syscall: they never block.
func rawRead(fd int, b []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), errno
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_NOSIGNAL, 0, 0)
	return int(n), errno
}

// connFD returns a duplicate of a connection's socket, which stays non-blocking, and closes the
// connection, which takes the socket out of Go's netpoller. It fails for connections that are not
// plain sockets (TLS).
func connFD(c any) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T is not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return fd, nil
}

// attachLoop moves a session that needs no hooks and has no TLS on either side from its connections to
// an event loop. It reports false, leaving the session as it was, when the session stays on the
// goroutine relay.
func (s *Server) attachLoop(ss *session) bool {
	if s.cfg.RelayThreads < 0 || ss.hooked != nil || ss.clientTLS || s.cfg.UpstreamTLS != TLSDisable ||
		ss.cw.Buffered() > 0 || ss.sw.Buffered() > 0 {
		return false
	}
	l := s.loopFor(ss.id)
	if l == nil {
		return false
	}
	cfd, err := connFD(ss.client)
	if err != nil {
		return false
	}
	sfd, err := connFD(ss.server)
	if err != nil {
		unix.Close(cfd)
		return false
	}
	// From here on the session's sockets are the duplicates; closing the connections takes the
	// originals out of Go's netpoller (Close does not shut the socket down).
	ss.client.Close()
	ss.server.Close()
	ls := &loopSession{ss: ss, l: l, done: make(chan error, 1), startIn: ss.cr.BytesRead(), startOut: ss.sr.BytesRead()}
	ls.client = loopEnd{fd: cfd, ls: ls, peer: &ls.server, in: newFlow(ss.cr.TakeBuffered(), s.cfg.MaxClientMessage)}
	ls.server = loopEnd{fd: sfd, ls: ls, peer: &ls.client, in: newFlow(ss.sr.TakeBuffered(), pgwire.DefaultMaxMessage)}
	// The startup phase's readers and writers (64 KiB each) are not needed any more.
	ss.cr, ss.cw, ss.sr, ss.sw = nil, nil, nil, nil
	ss.loop = ls
	if !l.post(loopReq{ls: ls, kind: reqAdd}) {
		ls.why = endKilled
		go ls.finish()
	}
	return true
}

// newFlow returns a flow holding the bytes a reader had buffered past the startup phase.
func newFlow(buffered []byte, maxLen int) flow {
	if len(buffered) == 0 {
		return flow{maxLen: maxLen}
	}
	buf := make([]byte, max(loopBufferSize, len(buffered)))
	return flow{buf: buf, r: copy(buf, buffered), maxLen: maxLen}
}

// loopFor returns the event loop for a session, starting the loops on first use.
func (s *Server) loopFor(id uint64) *evloop {
	s.loopMu.Lock()
	defer s.loopMu.Unlock()
	if s.loops == nil {
		for range loopThreads(s.cfg.RelayThreads) {
			l, err := newEvloop(s)
			if err != nil {
				s.log.Warn("relay loop unavailable; relaying with goroutines", "err", err)
				break
			}
			s.loops = append(s.loops, l)
		}
		if len(s.loops) == 0 {
			return nil
		}
	}
	return s.loops[id%uint64(len(s.loops))]
}

// stopLoops ends the event loops (after the sessions have ended).
func (s *Server) stopLoops() {
	s.loopMu.Lock()
	loops := s.loops
	s.loops = nil
	s.loopMu.Unlock()
	for _, l := range loops {
		l.stop()
	}
}

// wait returns the session's result once it has ended.
func (ls *loopSession) wait() error { return <-ls.done }

// kill asks the loop to close the session now.
func (ls *loopSession) kill() { ls.l.post(loopReq{ls: ls, kind: reqKill}) }

// wake asks the loop to check whether the session should end (drain, idle timeout).
func (ls *loopSession) wake() { ls.l.post(loopReq{ls: ls, kind: reqCheck}) }

// bytes returns the bytes read from the client and from the server over the whole session; valid
// after wait.
func (ls *loopSession) bytes() (in, out int64) {
	return ls.startIn + ls.client.in.n, ls.startOut + ls.server.in.n
}
