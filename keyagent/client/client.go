// Package client is how Keyward programs talk to the local key agent: colcrypt and volumectl import
// it instead of the wire protocol.
//
// Keys come back as *memsafe.Key read straight from the socket into locked memory (a slot of
// memsafe's key slab); the caller owns each key it gets and must Destroy it. Errors wrap the sentinels
// ErrDenied, ErrNotFound, ErrUnavailable and ErrBadRequest (errors.Is), with the agent's reason in the
// message. A Client is safe for concurrent use: it keeps a small pool of connections and every call
// honours its context's deadline.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

// Sentinels, the same values as the wire protocol's.
var (
	ErrDenied      = wire.ErrDenied
	ErrNotFound    = wire.ErrNotFound
	ErrUnavailable = wire.ErrUnavailable
	ErrBadRequest  = wire.ErrBadRequest
)

// DefaultSocket is where the agent listens unless told otherwise.
const DefaultSocket = "/run/keyward/agent.sock"

// SocketPath applies the one rule every Keyward CLI uses: the --socket flag if given, else
// $KEYWARD_AGENT_SOCKET, else DefaultSocket.
func SocketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("KEYWARD_AGENT_SOCKET"); env != "" {
		return env
	}
	return DefaultSocket
}

// Op is what the caller will do with a key.
type Op = wire.Op

// Operations.
const (
	Encrypt = wire.OpEncrypt
	Decrypt = wire.OpDecrypt
)

// Request asks for a data key.
type Request struct {
	Scope     string
	Version   uint32 // 0: the newest version usable for Op
	ActingFor string // "": the caller itself; the proxy passes "db:<role>"
	Op        Op     // default Decrypt
	Bits      int    // 256 (default) or 512 (AES-SIV)
}

// Client talks to one agent socket.
type Client struct {
	path    string
	dial    func(ctx context.Context) (net.Conn, error) // nil: unix socket at path
	timeout time.Duration

	mu   sync.Mutex
	idle []*conn
}

// New returns a client of the agent at socket path. It does not connect until the first call.
func New(path string) *Client { return &Client{path: path, timeout: 10 * time.Second} }

// NewWithDialer returns a client that reaches the agent through dial instead of a unix socket: a
// virtio-serial port in a guest, for instance, carried by the hypervisor to the host agent's socket.
// name says where the agent is in error messages. Each connection dial returns carries one
// framed stream; a byte stream that cannot be opened twice at once (a character device) works as long
// as the client is used by one goroutine at a time.
func NewWithDialer(name string, dial func(ctx context.Context) (net.Conn, error)) *Client {
	return &Client{path: name, dial: dial, timeout: 10 * time.Second}
}

// GetKey asks for the decryption key of scope at version (0: newest) acting for actingFor.
func (c *Client) GetKey(ctx context.Context, scope string, version uint32, actingFor string) (*memsafe.Key, uint32, error) {
	return c.Key(ctx, Request{Scope: scope, Version: version, ActingFor: actingFor})
}

// Key asks for a data key.
func (c *Client) Key(ctx context.Context, r Request) (*memsafe.Key, uint32, error) {
	if r.Op == 0 {
		r.Op = Decrypt
	}
	if r.Bits == 0 {
		r.Bits = 256
	}
	m, err := c.call(ctx, &wire.KeyRequest{Op: r.Op, Scope: r.Scope, Version: r.Version, ActingFor: r.ActingFor, Bits: uint16(r.Bits)})
	if err != nil {
		return nil, 0, err
	}
	kr, ok := m.(*wire.KeyResponse)
	if !ok {
		return nil, 0, fmt.Errorf("%w: agent answered %T to a key request", ErrUnavailable, m)
	}
	if kr.Scope != r.Scope || (r.Version != 0 && kr.Version != r.Version) || kr.Key.Len()*8 != r.Bits {
		kr.Key.Destroy()
		return nil, 0, fmt.Errorf("%w: agent answered for another scope, version or size", ErrUnavailable)
	}
	return kr.Key, kr.Version, nil
}

// Encrypt seals plaintext inside the HSM with the scope's hsm-aead key (version 0: newest).
func (c *Client) Encrypt(ctx context.Context, scope string, version uint32, actingFor string, plaintext, aad []byte) ([]byte, uint32, error) {
	m, err := c.call(ctx, &wire.HSMEncryptRequest{Scope: scope, Version: version, ActingFor: actingFor, AAD: aad, Plaintext: plaintext})
	if err != nil {
		return nil, 0, err
	}
	r, ok := m.(*wire.HSMEncryptResponse)
	if !ok {
		return nil, 0, fmt.Errorf("%w: unexpected %T", ErrUnavailable, m)
	}
	return r.Ciphertext, r.Version, nil
}

// Decrypt opens, inside the HSM, what Encrypt sealed under version.
func (c *Client) Decrypt(ctx context.Context, scope string, version uint32, actingFor string, ciphertext, aad []byte) ([]byte, error) {
	m, err := c.call(ctx, &wire.HSMDecryptRequest{Scope: scope, Version: version, ActingFor: actingFor, AAD: aad, Ciphertext: ciphertext})
	if err != nil {
		return nil, err
	}
	r, ok := m.(*wire.HSMDecryptResponse)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected %T", ErrUnavailable, m)
	}
	return r.Plaintext, nil
}

// Status returns the agent's status fields (policy permitting).
func (c *Client) Status(ctx context.Context) ([]wire.StatusField, error) {
	m, err := c.call(ctx, &wire.StatusRequest{})
	if err != nil {
		return nil, err
	}
	r, ok := m.(*wire.StatusResponse)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected %T", ErrUnavailable, m)
	}
	return r.Fields, nil
}

// Purge asks the agent to wipe every cached key now (policy permitting).
func (c *Client) Purge(ctx context.Context) error {
	_, err := c.call(ctx, &wire.PurgeRequest{})
	return err
}

// Close closes pooled connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.idle {
		_ = k.Close()
	}
	c.idle = nil
	return nil
}

func (c *Client) call(ctx context.Context, req wire.Message) (wire.Message, error) {
	m, pooled, err := c.callOnce(ctx, req)
	var re *wire.RemoteError
	if err != nil && pooled && !errors.As(err, &re) && ctx.Err() == nil {
		// A pooled connection the agent closed (restart, idle timeout): retry once on a new one.
		m, _, err = c.callOnce(ctx, req)
	}
	return m, err
}

func (c *Client) callOnce(ctx context.Context, req wire.Message) (wire.Message, bool, error) {
	conn, pooled, err := c.conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("%w: agent at %s: %v", ErrUnavailable, c.path, err)
	}
	conn.arm(ctx, c.timeout)
	m, err := conn.Call(req)
	var re *wire.RemoteError
	switch {
	case err == nil, errors.As(err, &re):
		c.put(conn)
		return m, pooled, err
	case ctx.Err() != nil:
		_ = conn.Close()
		return nil, pooled, fmt.Errorf("%w: agent: %w", ErrUnavailable, ctx.Err())
	default:
		_ = conn.Close()
		return nil, pooled, fmt.Errorf("%w: agent at %s: %v", ErrUnavailable, c.path, err)
	}
}

// conn is a pooled connection and the deadline last set on it.
type conn struct {
	*wire.Conn
	deadline time.Time
	fixed    bool // deadline came from a context
}

// arm sets the call's deadline: the context's, or else one between timeout/2 and timeout from now,
// left in place across calls (re-arming the runtime timer per call is a measurable share of a
// cache-hit request).
func (k *conn) arm(ctx context.Context, timeout time.Duration) {
	if dl, ok := ctx.Deadline(); ok {
		k.deadline, k.fixed = dl, true
		_ = k.NetConn().SetDeadline(dl)
		return
	}
	now := time.Now()
	if !k.fixed && k.deadline.After(now.Add(timeout/2)) {
		return
	}
	k.deadline, k.fixed = now.Add(timeout), false
	_ = k.NetConn().SetDeadline(k.deadline)
}

func (c *Client) conn(ctx context.Context) (*conn, bool, error) {
	c.mu.Lock()
	if n := len(c.idle); n > 0 {
		k := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return k, true, nil
	}
	c.mu.Unlock()
	if c.dial != nil {
		nc, err := c.dial(ctx)
		if err != nil {
			return nil, false, err
		}
		return &conn{Conn: wire.NewConn(nc, wire.Options{NewKey: newKey})}, false, nil
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, false, err
	}
	return &conn{Conn: wire.NewConn(nc, wire.Options{NewKey: newKey})}, false, nil
}

// newKey reads each received key into a slot of memsafe's key slab: a fresh memguard buffer per
// response (mmap, mlock and mprotect for each key, and again to free it) costs more than the whole
// round trip to the agent. memsafe.SlotSize documents what a slab key gives up against a memguard one.
func newKey(r io.Reader, n int) (*memsafe.Key, error) {
	if n > memsafe.SlotSize {
		return memsafe.FromReader(r, n)
	}
	return memsafe.SlabFromReader(r, n)
}

func (c *Client) put(k *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.idle) >= 32 {
		_ = k.Close()
		return
	}
	c.idle = append(c.idle, k)
}
