package agent

import (
	"errors"
	"net"

	"github.com/keyward/keyward/keyagent/peercred"
	"github.com/keyward/keyward/keyagent/policy"
)

// Peer is a connected caller as the kernel reports it.
type Peer struct {
	Caller policy.Caller
	// Alive reports whether the process that connected still runs (false once it exited, even if
	// its pid was reused): a connection handed to another process after its creator exited is refused.
	Alive func() bool
	Close func()
}

// ReadPeer is the default CredFunc: SO_PEERCRED, /proc/<pid>/exe and a pidfd (keyagent/peercred).
func ReadPeer(c *net.UnixConn) (Peer, error) {
	cr, err := peercred.Read(c)
	if err != nil {
		return Peer{}, err
	}
	if cr.Exe == "" && cr.ExeErr != nil && errors.Is(cr.ExeErr, peercred.ErrPIDReused) {
		cr.Close()
		return Peer{}, cr.ExeErr
	}
	return Peer{
		Caller: policy.Caller{UID: cr.UID, GID: cr.GID, PID: cr.PID, Exe: cr.Exe},
		Alive:  cr.Alive,
		Close:  func() { _ = cr.Close() },
	}, nil
}
