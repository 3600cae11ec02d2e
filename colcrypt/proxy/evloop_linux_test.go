//go:build linux

package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/pgwire"
)

// These tests drive the event loop over real loopback sockets, byte by byte where it matters, with
// the test playing both the client and PostgreSQL; the integration tests (relay_test.go and
// lifecycle_test.go, run once per relay) cover it against a real PostgreSQL and real clients.

// loopPair is a session on an event loop: client is the test's end of the client connection, server
// the test's end of the backend connection.
type loopPair struct {
	ss             *session
	client, server net.Conn
	result         chan error
}

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func newLoopServer(t *testing.T, cfg Config) *Server {
	s := New(cfg)
	t.Cleanup(s.stopLoops)
	return s
}

// startLoopSession hands a session to the loop as handle does after authentication; buffered bytes
// stand for what the readers had read past the startup phase.
func startLoopSession(t *testing.T, s *Server, clientBuffered, serverBuffered []byte) *loopPair {
	t.Helper()
	testClient, proxyClient := tcpPair(t)
	proxyServer, testServer := tcpPair(t)
	ss := &session{srv: s, id: s.nextID.Add(1), client: proxyClient, server: proxyServer,
		cr: pgwire.NewReader(io.MultiReader(bytes.NewReader(clientBuffered), proxyClient), 0, s.cfg.MaxClientMessage),
		cw: pgwire.NewWriter(proxyClient, 0),
		sr: pgwire.NewReader(io.MultiReader(bytes.NewReader(serverBuffered), proxyServer), 0, 0),
		sw: pgwire.NewWriter(proxyServer, 0)}
	if len(clientBuffered) > 0 {
		ss.cr.Peek(len(clientBuffered))
	}
	if len(serverBuffered) > 0 {
		ss.sr.Peek(len(serverBuffered))
	}
	ss.txStatus.Store('I')
	if !s.attachLoop(ss) {
		t.Fatal("session not attached to an event loop")
	}
	s.add(ss)
	p := &loopPair{ss: ss, client: testClient, server: testServer, result: make(chan error, 1)}
	go func() {
		p.result <- ss.relay()
		s.remove(ss)
	}()
	return p
}

func (p *loopPair) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.result:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end")
		return nil
	}
}

// readN reads exactly n bytes from c.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// readAll reads until EOF.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read to EOF: %v", err)
	}
	return b
}

// dribble writes b one byte at a time, pausing so the loop sees most bytes in reads of their own.
// It stops at the first error (the session may end before it is done).
func dribble(c net.Conn, b []byte) {
	for i := range b {
		if _, err := c.Write(b[i : i+1]); err != nil {
			return
		}
		if i%3 == 0 {
			time.Sleep(200 * time.Microsecond)
		}
	}
}

func TestLoopRelaysByteByByte(t *testing.T) {
	s := newLoopServer(t, Config{})
	// pipelined bytes the client sent right after authentication, still in the proxy's reader
	early := enc(&pgproto3.Query{String: "SELECT 0"})
	p := startLoopSession(t, s, early, nil)
	if got := readN(t, p.server, len(early)); !bytes.Equal(got, early) {
		t.Fatalf("buffered bytes relayed as %q", got)
	}
	front := enc(&pgproto3.Parse{Query: "SELECT $1"}, &pgproto3.Bind{Parameters: [][]byte{[]byte("x")}},
		&pgproto3.Execute{}, &pgproto3.Sync{}, &pgproto3.Query{String: "BEGIN"})
	go dribble(p.client, front)
	if got := readN(t, p.server, len(front)); !bytes.Equal(got, front) {
		t.Fatalf("server got %q, want %q", got, front)
	}
	if sent := p.ss.sent.Load(); sent != 3 {
		t.Fatalf("requests counted: %d, want 3 (Query, Sync, Query)", sent)
	}
	back := enc(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
		&pgproto3.DataRow{Values: [][]byte{[]byte("x")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.CommandComplete{CommandTag: []byte("BEGIN")}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
	go dribble(p.server, back)
	if got := readN(t, p.client, len(back)); !bytes.Equal(got, back) {
		t.Fatalf("client got %q, want %q", got, back)
	}
	if !p.ss.idle() || p.ss.txStatus.Load() != 'T' {
		t.Fatalf("idle=%v status=%q after three ReadyForQuery, want idle in 'T'", p.ss.idle(), rune(p.ss.txStatus.Load()))
	}
	// Terminate ends the session; nothing after it is relayed.
	p.client.Write(append(enc(&pgproto3.Terminate{}), "junk"...))
	if got := readAll(t, p.server); !bytes.Equal(got, []byte{'X', 0, 0, 0, 4}) {
		t.Fatalf("server got %q after Terminate", got)
	}
	if err := p.wait(t); err != nil {
		t.Fatalf("session result after Terminate: %v", err)
	}
	// (the junk after Terminate is read with it, or never)
	if in, out := p.ss.bytesRead(); in != int64(len(early)+len(front)+5+4) && in != int64(len(early)+len(front)+5) || out != int64(len(back)) {
		t.Fatalf("bytes counted %d in, %d out", in, out)
	}
}

func TestLoopLargeMessagesAndBackpressure(t *testing.T) {
	s := newLoopServer(t, Config{RelayThreads: 1})
	p := startLoopSession(t, s, nil, nil)
	other := startLoopSession(t, s, nil, nil) // same loop: must not stall while p's client is slow

	// A 5 MiB CopyData streams through a 64 KiB buffer.
	big := make([]byte, 5<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	msg := enc(&pgproto3.CopyData{Data: big})
	go p.client.Write(msg)
	if got := readN(t, p.server, len(msg)); !bytes.Equal(got, msg) {
		t.Fatal("large client message changed on the way")
	}

	// 40 MiB of DataRows to a client that does not read for a while.
	var rows bytes.Buffer
	rng := rand.New(rand.NewPCG(1, 2))
	for rows.Len() < 40<<20 {
		v := make([]byte, rng.IntN(3000))
		for i := range v {
			v[i] = byte(rng.Uint32())
		}
		rows.Write(enc(&pgproto3.DataRow{Values: [][]byte{v, nil}}))
	}
	rows.Write(enc(&pgproto3.ReadyForQuery{TxStatus: 'I'}))
	want := sha256.Sum256(rows.Bytes())
	go p.server.Write(rows.Bytes())
	time.Sleep(200 * time.Millisecond) // the kernel buffers fill up; the loop must pause that flow
	q := enc(&pgproto3.Query{String: "SELECT 1"})
	other.client.Write(q)
	if got := readN(t, other.server, len(q)); !bytes.Equal(got, q) {
		t.Fatal("other session")
	}
	z := enc(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	other.server.Write(z)
	if got := readN(t, other.client, len(z)); !bytes.Equal(got, z) {
		t.Fatal("other session reply")
	}
	got := sha256.Sum256(readN(t, p.client, rows.Len()))
	if got != want {
		t.Fatal("rows changed on the way to a slow client")
	}
	p.client.Close()
	if got := readAll(t, p.server); !bytes.Equal(got, []byte{'X', 0, 0, 0, 4}) {
		t.Fatalf("server got %q after the client vanished, want Terminate", got)
	}
	if err := p.wait(t); err != nil {
		t.Fatalf("client gone: %v", err)
	}
}

func TestLoopMalformedClientFraming(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  []byte
	}{
		{"length below 4", []byte{'Q', 0, 0, 0, 3}},
		{"length above the limit", []byte{'Q', 0, 0x11, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopServer(t, Config{MaxClientMessage: 1 << 20})
			p := startLoopSession(t, s, nil, nil)
			good := enc(&pgproto3.Sync{})
			go dribble(p.client, append(append(good, tc.bad...), "more"...))
			// the good message, then Terminate: never the malformed header
			if got, want := readAll(t, p.server), append(good, 'X', 0, 0, 0, 4); !bytes.Equal(got, want) {
				t.Fatalf("server got %q, want %q", got, want)
			}
			fe := pgproto3.NewFrontend(p.client, io.Discard)
			p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, err := fe.Receive()
			if e, ok := m.(*pgproto3.ErrorResponse); err != nil || !ok || e.Code != "08P01" {
				t.Fatalf("client got %#v %v, want FATAL 08P01", m, err)
			}
			var pe *pgwire.ParseError
			if err := p.wait(t); !errors.As(err, &pe) {
				t.Fatalf("session result %v, want a ParseError", err)
			}
		})
	}
}

func TestLoopServerGone(t *testing.T) {
	fatal := enc(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
	for _, tc := range []struct {
		name      string
		last      []byte
		want08006 bool
	}{
		{"after its own FATAL", fatal, false},
		{"without a word", nil, true},
		{"mid-message", enc(&pgproto3.DataRow{Values: [][]byte{[]byte("abc")}})[:7], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopServer(t, Config{})
			p := startLoopSession(t, s, nil, nil)
			dribble(p.server, tc.last)
			p.server.Close()
			got := readAll(t, p.client)
			if !bytes.HasPrefix(got, tc.last) {
				t.Fatalf("client got %q, want %q first", got, tc.last)
			}
			has08006 := bytes.Contains(got[len(tc.last):], []byte("C08006"))
			if has08006 != tc.want08006 {
				t.Fatalf("client got %q after the server's bytes; want 08006: %v", got[len(tc.last):], tc.want08006)
			}
			err := p.wait(t)
			if tc.want08006 != (err != nil) {
				t.Fatalf("session result %v", err)
			}
		})
	}
}

func TestLoopDrainAndIdleTimeout(t *testing.T) {
	s := newLoopServer(t, Config{IdleTimeout: time.Hour})
	idle := startLoopSession(t, s, nil, nil)
	busy := startLoopSession(t, s, nil, nil)
	inTx := startLoopSession(t, s, nil, nil)
	busy.client.Write(enc(&pgproto3.Query{String: "SELECT pg_sleep(1)"}))
	readN(t, busy.server, 24)
	inTx.client.Write(enc(&pgproto3.Query{String: "BEGIN"}))
	readN(t, inTx.server, 11)
	inTx.server.Write(enc(&pgproto3.ReadyForQuery{TxStatus: 'T'}))
	readN(t, inTx.client, 6)

	s.draining.Store(true)
	for _, p := range []*loopPair{idle, busy, inTx} {
		p.ss.wake()
	}
	if got := readAll(t, idle.client); !bytes.Contains(got, []byte("C57P01")) {
		t.Fatalf("idle session got %q, want FATAL 57P01", got)
	}
	if got := readAll(t, idle.server); !bytes.Equal(got, []byte{'X', 0, 0, 0, 4}) {
		t.Fatalf("server of the idle session got %q, want Terminate", got)
	}
	idle.wait(t)
	// the busy session ends right after its ReadyForQuery, which it gets first
	z := enc(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	busy.server.Write(z)
	got := readAll(t, busy.client)
	if !bytes.HasPrefix(got, z) || !bytes.Contains(got, []byte("C57P01")) {
		t.Fatalf("busy session got %q, want its ReadyForQuery, then FATAL 57P01", got)
	}
	busy.wait(t)
	// a session in a transaction is left alone until the shutdown timeout kills it
	select {
	case err := <-inTx.result:
		t.Fatalf("session in a transaction ended on drain: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	inTx.ss.kill()
	if err := inTx.wait(t); err == nil {
		t.Fatal("killed session reported no error")
	}

	s2 := newLoopServer(t, Config{IdleTimeout: 50 * time.Millisecond})
	p := startLoopSession(t, s2, nil, nil)
	p.ss.idleSince.Store(time.Now().Add(-time.Second).UnixNano())
	p.ss.wake()
	if got := readAll(t, p.client); !bytes.Contains(got, []byte("C57P05")) {
		t.Fatalf("idle session got %q, want FATAL 57P05", got)
	}
	p.wait(t)
}

// FuzzLoopScan checks the loop's streaming framer against pgwire.Reader: for any bytes, cut into
// reads anywhere, the loop forwards exactly the messages pgwire frames (and not the bytes of a
// malformed header), and counts the same requests.
func FuzzLoopScan(f *testing.F) {
	f.Add(enc(&pgproto3.Query{String: "SELECT 1"}, &pgproto3.Sync{}, &pgproto3.Terminate{}), uint64(1))
	f.Add(append(enc(&pgproto3.CopyData{Data: make([]byte, 300)}), 'Q', 0, 0, 0, 2), uint64(7))
	f.Add([]byte{'Q', 0, 0}, uint64(3))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		const maxLen = 1 << 12
		// what pgwire frames before its first error (or the end)
		var want []byte
		var wantReq uint64
		r := pgwire.NewReader(bytes.NewReader(in), 64, maxLen)
		for {
			m, err := r.Next()
			if err != nil {
				break
			}
			want = append(want, m.Raw...)
			if m.Type == 'Q' || m.Type == 'S' || m.Type == 'F' {
				wantReq++
			}
			if m.Type == 'X' {
				break
			}
		}
		ls := &loopSession{ss: &session{srv: New(Config{})}, l: &evloop{}}
		e := &ls.client
		e.in = flow{buf: make([]byte, 64), maxLen: maxLen}
		fl := &e.in
		rng := rand.New(rand.NewPCG(seed, 0))
		var out []byte
		rest := in
		ended := false
		for len(rest) > 0 && !ended {
			k := min(len(rest), len(fl.buf)-fl.r, 1+rng.IntN(80))
			fl.r += copy(fl.buf[fl.r:], rest[:k])
			rest = rest[k:]
			ended = ls.scan(e) != endNone
			out = append(out, fl.buf[fl.w:fl.s]...)
			fl.r = copy(fl.buf, fl.buf[fl.s:fl.r])
			fl.w, fl.s = 0, 0
		}
		// Bodies stream: a message cut short by the end of the input is partly forwarded, which
		// pgwire (holding whole messages) never does. Compare up to what pgwire framed.
		if !bytes.HasPrefix(out, want) {
			t.Fatalf("forwarded %x, pgwire framed %x", out, want)
		}
		extra := out[len(want):]
		if len(extra) > 0 {
			// only the header and part of the body of one well-formed, incomplete message
			if len(extra) < 5 || len(in) < len(want)+5 {
				t.Fatalf("forwarded %d bytes past the framed messages: %x", len(extra), extra)
			}
			l := int(binary.BigEndian.Uint32(extra[1:]))
			if l < 4 || l > maxLen || len(extra) >= 1+l {
				t.Fatalf("forwarded bytes of a malformed or complete-but-unframed message: %x", extra)
			}
		}
		if len(extra) > 0 && bytes.IndexByte([]byte("QSF"), extra[0]) >= 0 {
			wantReq++ // counted when its header arrived
		}
		if got := ls.ss.sent.Load(); got != wantReq {
			t.Fatalf("requests counted %d, pgwire %d", got, wantReq)
		}
	})
}
