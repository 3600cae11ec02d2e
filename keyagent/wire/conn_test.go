package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyward/keyward/memsafe"
)

// unixPair returns both ends of a real unix socket connection.
func unixPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// serve answers requests the way the agent would, until the stream ends.
func serve(t *testing.T, nc net.Conn, key *memsafe.Key, done chan<- error) {
	c := NewConn(nc, Options{IdleTimeout: 5 * time.Second, FrameTimeout: 5 * time.Second})
	for {
		tp, err := c.Next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			done <- err
			return
		}
		var resp Message
		switch tp {
		case TypeKeyRequest:
			var req KeyRequest
			if err := c.Decode(&req); err != nil {
				done <- err
				return
			}
			if req.ActingFor == "db:eve" {
				resp = ErrorFrom(errors.Join(ErrDenied, errors.New("not a member")))
			} else {
				resp = &KeyResponse{Scope: req.Scope, Version: 3, Key: key}
			}
		case TypeStatusRequest:
			if err := c.Decode(&StatusRequest{}); err != nil {
				done <- err
				return
			}
			resp = &StatusResponse{Fields: []StatusField{{"upstream", "ok"}}}
		default:
			_ = c.Skip()
			resp = &ErrorResponse{Code: CodeBadRequest, Message: "unsupported " + tp.String()}
		}
		if err := c.WriteMsg(resp); err != nil {
			done <- err
			return
		}
	}
}

func TestConnCall(t *testing.T) {
	cn, sn := unixPair(t)
	key := testKey(t, 0x20, 32)
	done := make(chan error, 1)
	go serve(t, sn, key, done)
	c := NewConn(cn, Options{})

	m, err := c.Call(&KeyRequest{Op: OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:alice", Bits: 256})
	if err != nil {
		t.Fatal(err)
	}
	kr := m.(*KeyResponse)
	if kr.Scope != "payroll:employees.ssn" || kr.Version != 3 || !kr.Key.Equal(key) {
		t.Fatal("wrong key response")
	}
	kr.Key.Destroy()

	_, err = c.Call(&KeyRequest{Op: OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:eve", Bits: 256})
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("acting for db:eve: %v, want ErrDenied", err)
	}
	_, err = c.Call(&PurgeRequest{})
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("purge: %v, want ErrBadRequest", err)
	}
	m, err = c.Call(&StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := m.(*StatusResponse).Get("upstream"); v != "ok" {
		t.Fatalf("status upstream = %q", v)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}

func TestConnPipelining(t *testing.T) {
	cn, sn := unixPair(t)
	key := testKey(t, 0x20, 64)
	done := make(chan error, 1)
	go serve(t, sn, key, done)

	// Three requests in one write; three responses in order.
	var batch []byte
	scopes := []string{"a:1", "b:2", "c:3"}
	for _, s := range scopes {
		var err error
		if batch, err = (&KeyRequest{Op: OpEncrypt, Scope: s, Bits: 512}).Encode(batch); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cn.Write(batch); err != nil {
		t.Fatal(err)
	}
	r := NewReader(cn, Options{})
	for _, s := range scopes {
		m, err := r.Recv()
		if err != nil {
			t.Fatal(err)
		}
		kr := m.(*KeyResponse)
		if kr.Scope != s || !kr.Key.Equal(key) {
			t.Fatalf("response for %s out of order or wrong", s)
		}
		kr.Key.Destroy()
	}
	cn.Close()
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}

func TestTimeouts(t *testing.T) {
	tests := []struct {
		name string
		send []byte // then stall
		opts Options
	}{
		{"idle", nil, Options{IdleTimeout: 100 * time.Millisecond}},
		{"stall in header", []byte{0, 0}, Options{FrameTimeout: 100 * time.Millisecond}},
		{"stall in body", []byte{0, 0, 0, 10, byte(TypeKeyRequest), 1}, Options{FrameTimeout: 100 * time.Millisecond}},
		{"stall in key", func() []byte {
			f := vectorByName(t, "key_response_256")
			return f[:len(f)-5]
		}(), Options{IdleTimeout: time.Hour, FrameTimeout: 100 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cn, sn := unixPair(t)
			if _, err := cn.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err := NewConn(sn, tt.opts).Recv()
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("Recv = %v, want a timeout", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("timed out after %v", d)
			}
		})
	}
}

func TestHotPathAllocs(t *testing.T) {
	req := &KeyRequest{Op: OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:alice", Bits: 256}
	frame, err := req.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := testKey(t, 0, 32)
	resp := &KeyResponse{Scope: req.Scope, Version: 1, Key: key}

	src := &loopReader{frame: frame}
	r := NewReader(src, Options{})
	w := NewWriter(io.Discard, Options{})
	var got KeyRequest
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		if err := r.Decode(&got); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteMsg(resp); err != nil {
			t.Fatal(err)
		}
	})
	// The two strings of the request, and the closure handed to Key.Use.
	if allocs > 4 {
		t.Fatalf("%v allocations per served request", allocs)
	}
	t.Logf("%v allocations per served request", allocs)
}

// loopReader returns the same frame forever.
type loopReader struct {
	frame []byte
	off   int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.frame[l.off:])
	l.off = (l.off + n) % len(l.frame)
	return n, nil
}

func BenchmarkServeKeyRequest(b *testing.B) {
	req := &KeyRequest{Op: OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:alice", Bits: 256}
	frame, _ := req.Encode(nil)
	key := testKey(b, 0, 32)
	resp := &KeyResponse{Scope: req.Scope, Version: 1, Key: key}
	r := NewReader(&loopReader{frame: frame}, Options{})
	w := NewWriter(io.Discard, Options{})
	var got KeyRequest
	b.ReportAllocs()
	for b.Loop() {
		_, _ = r.Next()
		_ = r.Decode(&got)
		_ = w.WriteMsg(resp)
	}
}

func BenchmarkReadKeyResponse(b *testing.B) {
	key := testKey(b, 0, 32)
	frame, _ := (&KeyResponse{Scope: "payroll:employees.ssn", Version: 1, Key: key}).Encode(nil)
	r := NewReader(&loopReader{frame: bytes.Clone(frame)}, Options{})
	b.ReportAllocs()
	for b.Loop() {
		m, err := r.Recv()
		if err != nil {
			b.Fatal(err)
		}
		m.(*KeyResponse).Key.Destroy()
	}
}
