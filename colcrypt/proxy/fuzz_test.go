package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/pgwire"
)

// fuzzHooks refuses some messages and rewrites others, so the fuzzer reaches every branch of the
// bookkeeping.
type fuzzHooks struct{ n int }

func (h *fuzzHooks) Frontend(m *FrontendMessage) Verdict {
	h.n++
	switch h.n % 5 {
	case 1:
		return Refuse(&pgproto3.ErrorResponse{Code: "42501", Message: "no"})
	case 2:
		return Replace(m.Raw)
	}
	return Pass()
}

func (h *fuzzHooks) Backend(m *BackendMessage) Verdict {
	h.n++
	if m.Request != nil && m.Request.Fields != nil {
		_ = m.Request.Format(h.n % 4)
	}
	switch h.n % 7 {
	case 1:
		return Refuse(&pgproto3.ErrorResponse{Code: "XX000", Message: "no"})
	case 2:
		return Replace(m.Raw)
	}
	return Pass()
}

func (h *fuzzHooks) Close() {}

func enc(msgs ...interface{ Encode([]byte) ([]byte, error) }) []byte {
	var b []byte
	for _, m := range msgs {
		b, _ = m.Encode(b)
	}
	return b
}

// FuzzClientMessages feeds arbitrary bytes to the client-side message reader and the per-session
// bookkeeping of the hooked path (and, reusing the bytes, to the server-side bookkeeping): malformed
// input must end in an error, never a panic or a hang.
func FuzzClientMessages(f *testing.F) {
	f.Add(enc(&pgproto3.Parse{Name: "s1", Query: "SELECT $1"}, &pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("x")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		enc(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 25}}},
			&pgproto3.DataRow{Values: [][]byte{[]byte("v")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(enc(&pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{}, &pgproto3.Close{ObjectType: 'S', Name: "s1"}),
		enc(&pgproto3.CopyInResponse{}, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "22P02"}, &pgproto3.ReadyForQuery{TxStatus: 'E'}))
	f.Add([]byte{'B', 0, 0, 0, 10, 0, 0, 0xff, 0xff, 0, 0}, []byte{'T', 0, 0, 0, 6, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, client, server []byte) {
		srv := New(Config{UpstreamAddr: "127.0.0.1:1"})
		ss := &session{srv: srv, sw: pgwire.NewWriter(io.Discard, 0), cw: pgwire.NewWriter(io.Discard, 0)}
		ss.info.params = map[string]string{}
		tr := newTracker(ss, &fuzzHooks{})
		ss.hooked = tr
		cr := pgwire.NewReader(bytes.NewReader(client), 64, 1<<20)
		sr := pgwire.NewReader(bytes.NewReader(server), 64, 1<<20)
		for i := 0; i < 2000; i++ {
			progressed := false
			if m, err := cr.Next(); err == nil {
				progressed = true
				if err := tr.frontend(m); err != nil {
					break // the session would end with 08P01
				}
			}
			if m, err := sr.Next(); err == nil {
				progressed = true
				tr.backend(m)
			}
			if !progressed {
				break
			}
		}
	})
}

// FuzzStartup feeds arbitrary bytes to a session's startup phase (SSLRequest, GSSENCRequest,
// CancelRequest, StartupMessage); the database is unreachable, so every path ends in an error.
func FuzzStartup(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30})
	f.Add(append([]byte{0, 0, 0, 17, 0, 3, 0, 0}, "user\x00bob\x00\x00"...))
	f.Add([]byte{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Add([]byte{0, 0, 0, 3})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	srv := New(Config{UpstreamAddr: "127.0.0.1:1", ConnectTimeout: 50 * time.Millisecond, StartupTimeout: 2 * time.Second, MaxConnections: 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			srv.handle(context.Background(), server)
			close(done)
		}()
		client.Write(data)
		client.(*net.TCPConn).CloseWrite() // EOF after the data: the session must end by itself
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(client); err != nil && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("session did not end: %v", err)
		}
		<-done
	})
}
