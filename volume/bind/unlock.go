package bind

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/volume/dm"
	"github.com/keyward/keyward/volume/luks2"
)

// UnlockOptions says how to unlock.
type UnlockOptions struct {
	Name string // the mapping to create, /dev/mapper/NAME (unused with Test)
	Test bool   // only check that the keyward keyslot opens; activate nothing
	// Cryptsetup, if set, is the path of cryptsetup: the keyslot is opened (or tested) by
	// `cryptsetup open --key-slot N --key-file -` with the derived passphrase on stdin, instead of
	// by this package and device-mapper ioctls.
	Cryptsetup string
	ReadOnly   bool
}

// Unlocked says what Unlock did.
type Unlocked struct {
	Enrollment        // the token and keyslot that opened (Backup is empty)
	Mapper     string // /dev/mapper/NAME; empty with Test
}

// Unlock finds the keyward tokens of the volume at path, fetches the key each names and opens the
// one keyslot it names; then activates the mapping (unless Test). With several tokens (a rotation
// cut short), the newest key version is tried first. If none opens, the error is the first token's.
func Unlock(ctx context.Context, path string, keys KeySource, o UnlockOptions) (Unlocked, error) {
	if !o.Test && (o.Name == "" || strings.ContainsAny(o.Name, "/\x00") || len(o.Name) > 127) {
		return Unlocked{}, fmt.Errorf("unlock: invalid mapping name %q", o.Name)
	}
	f, v, err := openVolume(path, false)
	if err != nil {
		return Unlocked{}, fmt.Errorf("unlock: %w", err)
	}
	defer f.Close()
	toks, err := sortedTokens(v)
	if err != nil {
		return Unlocked{}, fmt.Errorf("unlock: %s: %w", path, err)
	}

	var ctl *dm.Control
	if !o.Test {
		if o.Cryptsetup != "" {
			if _, err := os.Lstat(filepath.Join("/dev/mapper", o.Name)); err == nil {
				return Unlocked{}, fmt.Errorf("unlock: %w: /dev/mapper/%s exists", ErrBusy, o.Name)
			}
		} else {
			// Checked before fetching any key: an already unlocked volume is the common case of a
			// second run, and needs no key.
			if ctl, err = dm.Open(); err != nil {
				return Unlocked{}, fmt.Errorf("unlock: %w", err)
			}
			defer ctl.Close()
			if _, err := ctl.Status(o.Name); err == nil {
				return Unlocked{}, fmt.Errorf("unlock: %w: mapping %s already exists", ErrBusy, o.Name)
			} else if !errors.Is(err, dm.ErrNotFound) {
				return Unlocked{}, fmt.Errorf("unlock: %w", err)
			}
		}
	}

	var first error
	for _, t := range toks {
		u, err := unlockWith(ctx, f, v, path, keys, t, ctl, o)
		if err == nil {
			return u, nil
		}
		if first == nil {
			first = err
		}
	}
	return Unlocked{}, fmt.Errorf("unlock: %w", first)
}

type token struct {
	id int
	luks2.KeywardToken
}

// sortedTokens returns the keyward tokens, newest key version first.
func sortedTokens(v *luks2.Volume) ([]token, error) {
	m, err := v.KeywardTokens()
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, ErrNoToken
	}
	var out []token
	for id, t := range m {
		out = append(out, token{id, t})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Version != out[j].Version {
			return out[i].Version > out[j].Version
		}
		return out[i].id < out[j].id
	})
	return out, nil
}

func unlockWith(ctx context.Context, f *os.File, v *luks2.Volume, path string, keys KeySource, t token, ctl *dm.Control, o UnlockOptions) (Unlocked, error) {
	if len(t.Keyslots) != 1 || t.Version < 0 {
		return Unlocked{}, fmt.Errorf("token %d: malformed keyward token (keyslots %v, version %d)", t.id, t.Keyslots, t.Version)
	}
	slot := t.Keyslots[0]
	u := Unlocked{Enrollment: Enrollment{Keyslot: slot, Token: t.id, Scope: t.Scope, Version: uint32(t.Version)}}
	pass, _, err := passphraseFor(ctx, keys, v, t.Scope, uint32(t.Version))
	if err != nil {
		return Unlocked{}, fmt.Errorf("token %d: %w", t.id, err)
	}
	defer pass.Destroy()

	if o.Cryptsetup != "" {
		if err := cryptsetupOpen(ctx, o.Cryptsetup, path, slot, pass, o); err != nil {
			return Unlocked{}, fmt.Errorf("token %d keyslot %d: %w", t.id, slot, err)
		}
		if !o.Test {
			u.Mapper = filepath.Join("/dev/mapper", o.Name)
		}
		return u, nil
	}

	vk, err := openToken(v, pass, t)
	if err != nil {
		return Unlocked{}, err
	}
	defer vk.Destroy()
	if o.Test {
		return u, nil
	}
	size, err := dm.Size(f)
	if err != nil {
		return Unlocked{}, err
	}
	m, err := v.Mapping(size)
	if err != nil {
		return Unlocked{}, err
	}
	node, err := ctl.ActivateCrypt(o.Name, dm.CryptUUID(v.UUID(), o.Name), dm.CryptTarget{
		Cipher: m.Cipher, Key: vk, IVOffset: m.IVOffset, Device: path, Offset: m.Offset, Length: m.Length,
		SectorSize: m.SectorSize, Options: m.Options, ReadOnly: o.ReadOnly,
	})
	if errors.Is(err, dm.ErrExists) {
		return Unlocked{}, fmt.Errorf("%w: %w", ErrBusy, err)
	}
	if err != nil {
		return Unlocked{}, fmt.Errorf("activate %s: %w", o.Name, err)
	}
	u.Mapper = node
	return u, nil
}

// openToken opens the one keyslot token t names with pass (the caller checked that it names one).
// A passphrase that does not open it is ErrWrongKey; every error names the token and keyslot.
func openToken(v *luks2.Volume, pass *memsafe.Key, t token) (*memsafe.Key, error) {
	slot := t.Keyslots[0]
	var vk *memsafe.Key
	err := pass.Use(func(p []byte) error {
		var err error
		vk, err = v.OpenKeyslot(p, slot)
		return err
	})
	if errors.Is(err, luks2.ErrWrongPassphrase) {
		return nil, fmt.Errorf("token %d keyslot %d (%s version %d): %w", t.id, slot, t.Scope, t.Version, ErrWrongKey)
	}
	if err != nil {
		return nil, fmt.Errorf("token %d keyslot %d: %w", t.id, slot, err)
	}
	return vk, nil
}

// cryptsetupOpen runs `cryptsetup open` on the one keyslot with the passphrase on stdin.
func cryptsetupOpen(ctx context.Context, bin, path string, slot int, pass *memsafe.Key, o UnlockOptions) error {
	args := []string{"open", "--type", "luks2", "--key-slot", strconv.Itoa(slot), "--key-file", "-"}
	if o.ReadOnly {
		args = append(args, "--readonly")
	}
	if o.Test {
		args = append(args, "--test-passphrase", path)
	} else {
		args = append(args, path, o.Name)
	}
	var out bytes.Buffer
	err := pass.Use(func(p []byte) error {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdin = bytes.NewReader(p)
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd.Run()
	})
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		// cryptsetup's documented exit codes: 2 no permission (bad passphrase), 5 device exists/busy.
		switch ee.ExitCode() {
		case 2:
			return ErrWrongKey
		case 5:
			return fmt.Errorf("%w: cryptsetup: %s", ErrBusy, strings.TrimSpace(out.String()))
		}
		return fmt.Errorf("cryptsetup: %v: %s", err, strings.TrimSpace(out.String()))
	}
	return err
}

// Lock removes mapping name (what `cryptsetup close` does).
func Lock(name string) error {
	ctl, err := dm.Open()
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer ctl.Close()
	err = ctl.Remove(name)
	if errors.Is(err, dm.ErrBusy) {
		return fmt.Errorf("lock %s: %w: %w (still mounted or open?)", name, ErrBusy, err)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", name, err)
	}
	return nil
}
