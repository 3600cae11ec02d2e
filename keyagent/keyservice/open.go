package keyservice

import (
	"fmt"
	"log/slog"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/backend/pkcs11"
	"github.com/keyward/keyward/keyagent/backend/soft"
)

// OpenBackend opens the backend a config names. The key agent's embedded mode uses it too, so a
// single node runs the same backend code in-process.
func OpenBackend(c BackendConfig, log *slog.Logger) (backend.Backend, error) {
	switch {
	case c.PKCS11 != nil:
		b, err := pkcs11.Open(pkcs11.Config{
			Module: c.PKCS11.Module, TokenLabel: c.PKCS11.TokenLabel, PinFile: c.PKCS11.PinFile,
			PoolSize: c.PKCS11.Sessions, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("open pkcs11 backend: %w", err)
		}
		return b, nil
	case c.Soft != nil:
		b, err := soft.Open(soft.Config{Path: c.Soft.Path, PassphraseFile: c.Soft.PassphraseFile})
		if err != nil {
			return nil, fmt.Errorf("open soft backend: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("no backend configured")
}
