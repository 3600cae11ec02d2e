package bind

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/volume/luks2"
)

// KeySource serves data keys; *client.Client is one.
type KeySource interface {
	GetKey(ctx context.Context, scope string, version uint32, actingFor string) (*memsafe.Key, uint32, error)
}

var _ KeySource = (*client.Client)(nil)

// Agent returns a client of the agent at path: a unix socket, or a character device (a virtio-serial
// port such as /dev/vport0p1 in a guest, whose other end the hypervisor connects to the host agent's
// socket), opened as a byte stream. The agent then sees the hypervisor as its caller.
func Agent(path string) *client.Client {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return client.New(path)
	}
	return client.NewWithDialer(path, func(ctx context.Context) (net.Conn, error) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		return &fileConn{f: f}, nil
	})
}

// fileConn is a character device as a net.Conn. Deadlines work when the device is pollable (virtio
// ports are); otherwise SetDeadline fails and the client's context is the only bound.
type fileConn struct{ f *os.File }

func (c *fileConn) Read(b []byte) (int, error)         { return c.f.Read(b) }
func (c *fileConn) Write(b []byte) (int, error)        { return c.f.Write(b) }
func (c *fileConn) Close() error                       { return c.f.Close() }
func (c *fileConn) LocalAddr() net.Addr                { return devAddr(c.f.Name()) }
func (c *fileConn) RemoteAddr() net.Addr               { return devAddr(c.f.Name()) }
func (c *fileConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *fileConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *fileConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

type devAddr string

func (a devAddr) Network() string { return "chardev" }
func (a devAddr) String() string  { return string(a) }

// passphraseFor fetches the 256-bit data key of (scope, version), with the scope in the error's
// context, and derives the keyslot passphrase of v from it; the data key is destroyed at once. It
// also returns the key version the agent served. The caller must Destroy the passphrase.
func passphraseFor(ctx context.Context, keys KeySource, v *luks2.Volume, scope string, version uint32) (*memsafe.Key, uint32, error) {
	dk, ver, err := keys.GetKey(ctx, scope, version, "")
	if err != nil {
		return nil, 0, fmt.Errorf("key %s version %s: %w", scope, versionString(version), err)
	}
	pass, err := Passphrase(dk, v.UUID())
	dk.Destroy()
	if err != nil {
		return nil, 0, err
	}
	return pass, ver, nil
}

func versionString(v uint32) string {
	if v == 0 {
		return "newest"
	}
	return fmt.Sprint(v)
}
