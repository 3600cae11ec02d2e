package bind

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/volume/luks2"
)

// EnrollOptions says what to enroll.
type EnrollOptions struct {
	Scope   string // the data key's scope, e.g. "boot:volume/web-7/data"
	Version uint32 // key version; 0: the newest
	// Existing is a passphrase that opens the volume now (the recovery passphrase). It is only used to
	// recover the volume key and is left as it is.
	Existing *memsafe.Key
	// BackupDir receives a copy of the header area before the first write (required).
	BackupDir string

	wrap writerWrap // test seam: failure injection
}

// Enrollment describes a keyward keyslot.
type Enrollment struct {
	Keyslot, Token int
	Scope          string
	Version        uint32
	Backup         string // the header backup taken before writing ("" when nothing was written)
}

// Enroll adds a keyward keyslot and token to the volume at path. The order is: refuse a second
// binding for the scope, fetch the key (fails fast on a denied scope before the slow recovery KDF),
// recover the volume key with the existing passphrase, back the header up, write, and check that the
// new keyslot opens with the derived passphrase.
func Enroll(ctx context.Context, path string, keys KeySource, o EnrollOptions) (Enrollment, error) {
	if o.Scope == "" {
		return Enrollment{}, errors.New("enroll: no scope")
	}
	if o.Existing == nil {
		return Enrollment{}, errors.New("enroll: no existing passphrase")
	}
	f, v, err := openVolume(path, true)
	if err != nil {
		return Enrollment{}, fmt.Errorf("enroll: %w", err)
	}
	defer f.Close()
	toks, err := v.KeywardTokens()
	if err != nil {
		return Enrollment{}, fmt.Errorf("enroll: %w", err)
	}
	for id, t := range toks {
		if t.Scope == o.Scope {
			return Enrollment{}, fmt.Errorf("enroll: %w: token %d, keyslots %v, %s version %d", ErrEnrolled, id, t.Keyslots, t.Scope, t.Version)
		}
	}

	pass, ver, err := passphraseFor(ctx, keys, v, o.Scope, o.Version)
	if err != nil {
		return Enrollment{}, fmt.Errorf("enroll: %w", err)
	}
	defer pass.Destroy()

	var vk *memsafe.Key
	err = o.Existing.Use(func(p []byte) error {
		var err error
		vk, _, err = v.OpenAnyKeyslot(p)
		return err
	})
	if errors.Is(err, luks2.ErrWrongPassphrase) {
		return Enrollment{}, fmt.Errorf("enroll: %w", ErrRecovery)
	}
	if err != nil {
		return Enrollment{}, fmt.Errorf("enroll: %w", err)
	}
	defer vk.Destroy()

	e, err := addBinding(f, v, vk, pass, o.Scope, ver, o.BackupDir, "enroll", o.wrap)
	if err != nil {
		return e, fmt.Errorf("enroll: %w", err)
	}
	return e, nil
}

// addBinding backs the header up, adds the keyslot and token, and checks the keyslot opens.
func addBinding(f *os.File, v *luks2.Volume, vk, pass *memsafe.Key, scope string, ver uint32, backupDir, what string, wrap writerWrap) (Enrollment, error) {
	bk, err := backup(v, backupDir, what)
	if err != nil {
		return Enrollment{}, err
	}
	e := Enrollment{Scope: scope, Version: ver, Backup: bk}
	err = pass.Use(func(p []byte) error {
		var err error
		e.Keyslot, e.Token, err = v.AddKeywardKeyslot(wrap.wrap(f), vk, p, luks2.KeyslotParams{
			Slot: -1, KDF: luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: Iterations},
		}, scope, int(ver))
		if err != nil {
			return fmt.Errorf("write keyslot (header backup in %s): %w", bk, err)
		}
		// AddKeywardKeyslot re-read the header; prove the new keyslot opens from what is on disk.
		k, err := v.OpenKeyslot(p, e.Keyslot)
		if err != nil {
			return fmt.Errorf("new keyslot %d does not open after writing (header backup in %s): %w", e.Keyslot, bk, err)
		}
		k.Destroy()
		return nil
	})
	return e, err
}
