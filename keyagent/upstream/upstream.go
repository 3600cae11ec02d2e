// Package upstream is where the key agent gets keys it does not have cached: a list of key service
// endpoints over mutual TLS 1.3 (Remote), or a backend in the agent's own process (Embedded) for
// single-node setups.
//
// Remote tries its endpoints in order, starting with the last one that answered; an endpoint that
// fails at the transport level (refused, reset, timed out, TLS failure) or answers "unavailable" is
// put in exponential backoff and the next one is tried. A definitive answer (denied, not found, bad
// request) is returned at once: asking another instance of the same stateless service would only
// repeat it. When every endpoint fails the error wraps wire.ErrUnavailable, which the agent's cache
// turns into offline-grace service of keys it already holds.
//
// Keys arrive straight into memsafe (the wire reader streams them into locked memory).
package upstream

import (
	"context"

	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

// KeyRequest is what the agent asks its upstream for.
type KeyRequest struct {
	Op        wire.Op
	Scope     string
	Version   uint32 // 0: newest
	Bits      int
	ActingFor string
}

// Upstream is the source of keys and in-HSM operations behind the agent's cache.
type Upstream interface {
	Key(ctx context.Context, req KeyRequest) (*memsafe.Key, uint32, error)
	Encrypt(ctx context.Context, req *wire.HSMEncryptRequest) (*wire.HSMEncryptResponse, error)
	Decrypt(ctx context.Context, req *wire.HSMDecryptRequest) (*wire.HSMDecryptResponse, error)
	// Health lists each endpoint (or "embedded") with "ok" or its last error.
	Health() []wire.StatusField
	Close() error
}
