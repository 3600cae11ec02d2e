package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelKey maps the key data the proxy gave a client to the real backend's.
type cancelKey struct {
	pid           uint32
	secret        []byte
	backendPID    uint32
	backendSecret []byte
}

type cancelMap struct {
	mu sync.Mutex
	m  map[uint32]*cancelKey
}

// issue makes up a process id (unique among live sessions) and a secret as long as the backend's
// (4 bytes in protocol 3.0, up to 256 in 3.2), so a client learns nothing about the real backend and
// cannot cancel sessions that are not its own.
func (c *cancelMap) issue(backendPID uint32, backendSecret []byte) (*cancelKey, error) {
	secret, err := newSecret(max(len(backendSecret), 4))
	if err != nil {
		return nil, err
	}
	k := &cancelKey{secret: secret, backendPID: backendPID, backendSecret: append([]byte(nil), backendSecret...)}
	c.mu.Lock()
	defer c.mu.Unlock()
	for range 100 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		pid := binary.BigEndian.Uint32(b[:]) & 0x7fffffff // positive, like a real pid
		if _, taken := c.m[pid]; pid == 0 || taken {
			continue
		}
		k.pid = pid
		c.m[pid] = k
		return k, nil
	}
	return nil, errors.New("no free cancel key")
}

func (c *cancelMap) remove(k *cancelKey) {
	c.mu.Lock()
	if c.m[k.pid] == k {
		delete(c.m, k.pid)
	}
	c.mu.Unlock()
}

func (c *cancelMap) lookup(pid uint32, secret []byte) *cancelKey {
	c.mu.Lock()
	k := c.m[pid]
	c.mu.Unlock()
	if k == nil || len(secret) != len(k.secret) || subtle.ConstantTimeCompare(secret, k.secret) != 1 {
		return nil
	}
	return k
}

// forwardCancel sends the backend's CancelRequest for a matching proxy key. As in PostgreSQL, the
// requester gets no answer either way.
func (s *Server) forwardCancel(ctx context.Context, pid uint32, secret []byte) {
	k := s.cancels.lookup(pid, secret)
	if k == nil {
		s.metrics.cancels.WithLabelValues("unknown_key").Inc()
		s.log.Info("cancel request with an unknown key")
		return
	}
	c, err := s.dialUpstream(ctx)
	if err != nil {
		s.metrics.cancels.WithLabelValues("error").Inc()
		s.log.Warn("cancel request: connect to the database server", "err", err)
		return
	}
	defer c.Close()
	out, err := (&pgproto3.CancelRequest{ProcessID: k.backendPID, SecretKey: k.backendSecret}).Encode(nil)
	if err == nil {
		_, err = c.Write(out)
	}
	if err != nil {
		s.metrics.cancels.WithLabelValues("error").Inc()
		s.log.Warn("cancel request: send", "err", err)
		return
	}
	// PostgreSQL closes the connection once it has processed the request.
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	_, _ = io.Copy(io.Discard, c)
	s.metrics.cancels.WithLabelValues("forwarded").Inc()
}
