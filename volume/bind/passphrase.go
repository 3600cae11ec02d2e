package bind

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/keyward/keyward/memsafe"
)

// Label is the context string of the passphrase derivation; it versions the binding.
const Label = "keyward-luks2-v1"

// Iterations is the PBKDF2-SHA256 iteration count of keyward keyslots.
const Iterations = 1000

// PassphraseLen is the length of a derived passphrase: 64 hex characters.
const PassphraseLen = 2 * sha256.Size

// Passphrase derives the keyslot passphrase of the volume with LUKS2 UUID uuid from the data key dk
// (see the package doc). The caller owns the result and must Destroy it.
func Passphrase(dk *memsafe.Key, uuid string) (*memsafe.Key, error) {
	if uuid == "" {
		return nil, errors.New("bind: empty volume uuid")
	}
	// buf holds the MAC then its hex form; both are wiped (FromBytes wipes what it copies).
	buf := make([]byte, sha256.Size+PassphraseLen)
	err := dk.Use(func(k []byte) error {
		if len(k) != 32 {
			return errors.New("bind: the data key is not 256 bits")
		}
		m := hmac.New(sha256.New, k)
		m.Write([]byte(Label))
		m.Write([]byte{0})
		m.Write([]byte(uuid))
		m.Sum(buf[:0])
		return nil
	})
	if err != nil {
		clear(buf)
		return nil, err
	}
	hex.Encode(buf[sha256.Size:], buf[:sha256.Size])
	clear(buf[:sha256.Size])
	return memsafe.FromBytes(buf[sha256.Size:])
}
