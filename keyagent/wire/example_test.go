package wire_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

// serveConn is the shape of a server loop: one response per request, an
// ErrorResponse for failures, and the connection closed on a protocol error.
func serveConn(nc net.Conn, lookup func(*wire.KeyRequest) (*memsafe.Key, uint32, error)) {
	defer nc.Close()
	c := wire.NewConn(nc, wire.Options{IdleTimeout: 5 * time.Minute, FrameTimeout: 10 * time.Second})
	var req wire.KeyRequest
	for {
		t, err := c.Next()
		if err != nil {
			var pe *wire.ParseError
			if errors.As(err, &pe) {
				_ = c.WriteMsg(wire.ErrorFrom(err)) // tell the peer, then hang up
			}
			return
		}
		if t != wire.TypeKeyRequest {
			_ = c.Skip()
			_ = c.WriteMsg(&wire.ErrorResponse{Code: wire.CodeBadRequest, Message: "unsupported " + t.String()})
			continue
		}
		if err := c.Decode(&req); err != nil {
			_ = c.WriteMsg(wire.ErrorFrom(err))
			return
		}
		key, version, err := lookup(&req)
		var resp wire.Message = &wire.KeyResponse{Scope: req.Scope, Version: version, Key: key}
		if err != nil {
			resp = wire.ErrorFrom(err)
		}
		if err := c.WriteMsg(resp); err != nil {
			return
		}
	}
}

func Example() {
	dir, err := os.MkdirTemp("", "wire-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()

	key, _ := memsafe.NewRandom(32)
	defer key.Destroy()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		serveConn(nc, func(r *wire.KeyRequest) (*memsafe.Key, uint32, error) {
			if r.ActingFor != "db:alice" {
				return nil, 0, fmt.Errorf("%w: %s may not use %s", wire.ErrDenied, r.ActingFor, r.Scope)
			}
			return key, 4, nil
		})
	}()

	nc, err := net.Dial("unix", path)
	if err != nil {
		fmt.Println(err)
		return
	}
	c := wire.NewConn(nc, wire.Options{})
	defer c.Close()

	m, err := c.Call(&wire.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:alice", Bits: 256})
	if err != nil {
		fmt.Println(err)
		return
	}
	kr := m.(*wire.KeyResponse)
	fmt.Println(kr.Scope, kr.Version, kr.Key, kr.Key.Len())
	kr.Key.Destroy()

	_, err = c.Call(&wire.KeyRequest{Op: wire.OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:eve", Bits: 256})
	fmt.Println(errors.Is(err, wire.ErrDenied), err)
	// Output:
	// payroll:employees.ssn 4 [REDACTED] 32
	// true denied: db:eve may not use payroll:employees.ssn
}
