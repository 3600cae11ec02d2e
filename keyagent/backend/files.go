package backend

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"

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

// ReadSecretFile reads a short secret (the soft backend's passphrase, a PKCS#11 PIN) from the file at
// path into locked memory, dropping one trailing newline ("\n" or "\r\n"). The read buffer is wiped, so
// no copy stays on the heap. An empty secret, or one of 4096 bytes or more, is ErrBadInput. Errors name
// the file, never its contents.
func ReadSecretFile(path string) (*memsafe.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	defer clear(buf)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, fmt.Errorf("%s: empty or unreadable: %w", path, ErrBadInput)
	}
	if n == len(buf) {
		return nil, fmt.Errorf("%s is too long (max 4095 bytes): %w", path, ErrBadInput)
	}
	p := buf[:n]
	if len(p) > 0 && p[len(p)-1] == '\n' {
		p = p[:len(p)-1]
		if len(p) > 0 && p[len(p)-1] == '\r' {
			p = p[:len(p)-1]
		}
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("%s is empty: %w", path, ErrBadInput)
	}
	return memsafe.FromBytes(p)
}
