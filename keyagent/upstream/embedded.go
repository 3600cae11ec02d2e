package upstream

import (
	"context"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/keyservice"
	"github.com/keyward/keyward/keyagent/scope"
	"github.com/keyward/keyward/keyagent/wire"
	"github.com/keyward/keyward/memsafe"
)

// Embedded serves keys from a backend in this process. It applies the same in-HSM AAD binding as the
// key service, so ciphertexts are interchangeable between an embedded and a remote setup.
type Embedded struct {
	B backend.Backend
}

var _ Upstream = (*Embedded)(nil)

// Key derives in the backend.
func (e *Embedded) Key(ctx context.Context, req KeyRequest) (*memsafe.Key, uint32, error) {
	k, v, err := e.B.Derive(ctx, req.Scope, int(req.Version), req.Bits, req.Op == wire.OpEncrypt)
	if err != nil {
		return nil, 0, keyservice.WireError(err)
	}
	return k, uint32(v), nil
}

// Encrypt runs AES-GCM in the backend.
func (e *Embedded) Encrypt(ctx context.Context, req *wire.HSMEncryptRequest) (*wire.HSMEncryptResponse, error) {
	ct, v, err := e.B.Encrypt(ctx, scope.Keyring(req.Scope), int(req.Version), req.Plaintext, keyservice.HSMAAD(req.Scope, req.AAD))
	if err != nil {
		return nil, keyservice.WireError(err)
	}
	return &wire.HSMEncryptResponse{Version: uint32(v), Ciphertext: ct}, nil
}

// Decrypt runs AES-GCM in the backend.
func (e *Embedded) Decrypt(ctx context.Context, req *wire.HSMDecryptRequest) (*wire.HSMDecryptResponse, error) {
	pt, err := e.B.Decrypt(ctx, scope.Keyring(req.Scope), int(req.Version), req.Ciphertext, keyservice.HSMAAD(req.Scope, req.AAD))
	if err != nil {
		return nil, keyservice.WireError(err)
	}
	return &wire.HSMDecryptResponse{Plaintext: pt}, nil
}

// Health reports the backend as one endpoint.
func (e *Embedded) Health() []wire.StatusField {
	if _, err := e.B.Keyrings(context.Background()); err != nil {
		return []wire.StatusField{{Name: "upstream.embedded", Value: err.Error()}}
	}
	return []wire.StatusField{{Name: "upstream.embedded", Value: "ok"}}
}

// Close closes the backend.
func (e *Embedded) Close() error { return e.B.Close() }
