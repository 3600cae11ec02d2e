package backend

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"

	"github.com/keyward/keyward/keyagent/confile"
	"github.com/keyward/keyward/memsafe"
)

// Pinger is implemented by backends that can check their store is reachable (for status requests).
type Pinger interface {
	Ping(ctx context.Context) error
}

// PublicKeyPEM encodes the BYOK import public key as a "PUBLIC KEY" (SubjectPublicKeyInfo) PEM block, the
// form `openssl pkeyutl -encrypt -pubin -inkey` and the cloud import tools take.
func PublicKeyPEM(pub *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ReadWrapKey reads a customer backup key file: exactly 32 raw bytes (e.g. `openssl rand 32`), read
// straight into locked memory.
func ReadWrapKey(path string) (*memsafe.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	defer f.Close()
	k, err := memsafe.FromReader(f, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: backup key file %s must hold exactly 32 raw bytes (AES-256)", ErrBadInput, path)
	}
	var one [1]byte
	if n, _ := io.ReadFull(f, one[:]); n != 0 {
		k.Destroy()
		return nil, fmt.Errorf("%w: backup key file %s is longer than 32 bytes (it must be raw, not hex or base64)", ErrBadInput, path)
	}
	return k, nil
}

// ReadSecretFile reads the secret file a config names (the soft backend's passphrase, a PKCS#11 PIN)
// with confile.ReadSecretFile (which refuses files others can read and drops one trailing newline) and
// moves it into locked memory at once, wiping the read buffer. Errors wrap ErrBadInput and name the
// file, never its contents.
func ReadSecretFile(path string) (*memsafe.Key, error) {
	b, err := confile.ReadSecretFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	return memsafe.FromBytes(b)
}
