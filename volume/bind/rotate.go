package bind

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/volume/luks2"
)

// RotateOptions says which binding to rotate.
type RotateOptions struct {
	Scope     string // "": the volume's keyward scope (an error if it has several)
	BackupDir string // receives a copy of the header area before the first write (required)

	wrap writerWrap // test seam: failure injection
}

// Rotation says what Rotate did.
type Rotation struct {
	Current Enrollment   // the binding to the newest key version
	Added   bool         // Current was enrolled by this call
	Removed []Enrollment // older bindings of the scope that were removed
	Backup  string       // the header backup ("" when nothing was written)
}

// Rotate binds the volume to the newest version of its scope's key, then removes the keyslots of
// older versions. The volume key comes from the existing keyward keyslot, so no recovery passphrase is
// needed. It is idempotent: a rotation cut short (new keyslot added, old one still there) is finished
// by running it again, and until then Unlock opens either keyslot.
func Rotate(ctx context.Context, path string, keys KeySource, o RotateOptions) (Rotation, error) {
	f, v, err := openVolume(path, true)
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate: %w", err)
	}
	defer f.Close()
	all, err := sortedTokens(v)
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate: %s: %w", path, err)
	}
	scope := o.Scope
	var toks []token
	for _, t := range all {
		if scope == "" {
			scope = t.Scope
		} else if o.Scope == "" && t.Scope != scope {
			return Rotation{}, fmt.Errorf("rotate: the volume is bound to several scopes (%s, %s): name one", scope, t.Scope)
		}
		if t.Scope == scope {
			toks = append(toks, t)
		}
	}
	if len(toks) == 0 {
		return Rotation{}, fmt.Errorf("rotate: %w for scope %s", ErrNoToken, scope)
	}

	pass, newest, err := passphraseFor(ctx, keys, v, scope, 0)
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate: %w", err)
	}
	defer pass.Destroy()

	var r Rotation
	for _, t := range toks {
		if uint32(t.Version) == newest && len(t.Keyslots) == 1 {
			if vk, err := openToken(v, pass, t); err == nil {
				vk.Destroy()
				r.Current = Enrollment{Keyslot: t.Keyslots[0], Token: t.id, Scope: scope, Version: newest}
				break
			}
		}
	}
	if r.Current.Scope == "" {
		vk, err := volumeKey(ctx, v, keys, toks)
		if err != nil {
			return Rotation{}, fmt.Errorf("rotate: %w", err)
		}
		r.Current, err = addBinding(f, v, vk, pass, scope, newest, o.BackupDir, "rotate", o.wrap)
		vk.Destroy()
		r.Backup = r.Current.Backup
		if err != nil {
			return r, fmt.Errorf("rotate: %w", err)
		}
		r.Added = true
	}

	for _, t := range toks {
		if t.id == r.Current.Token {
			continue
		}
		if r.Backup == "" {
			if r.Backup, err = backup(v, o.BackupDir, "rotate"); err != nil {
				return r, fmt.Errorf("rotate: %w", err)
			}
		}
		for _, slot := range t.Keyslots {
			if err := v.RemoveKeyslot(o.wrap.wrap(f), slot); err != nil && !errors.Is(err, luks2.ErrNoKeyslot) {
				return r, fmt.Errorf("rotate: remove keyslot %d of version %d (header backup in %s): %w", slot, t.Version, r.Backup, err)
			}
		}
		// RemoveKeyslot drops a keyward token left without keyslots; a token naming none is ours to drop.
		if _, ok := v.Metadata().Tokens[t.id]; ok {
			if err := v.RemoveToken(o.wrap.wrap(f), t.id); err != nil {
				return r, fmt.Errorf("rotate: remove token %d (header backup in %s): %w", t.id, r.Backup, err)
			}
		}
		e := Enrollment{Token: t.id, Scope: t.Scope, Version: uint32(t.Version), Keyslot: -1}
		if len(t.Keyslots) == 1 {
			e.Keyslot = t.Keyslots[0]
		}
		r.Removed = append(r.Removed, e)
	}
	return r, nil
}

// volumeKey recovers the volume key through the existing keyward keyslots, newest first.
func volumeKey(ctx context.Context, v *luks2.Volume, keys KeySource, toks []token) (*memsafe.Key, error) {
	var first error
	for _, t := range toks {
		if len(t.Keyslots) != 1 {
			continue
		}
		vk, err := func() (*memsafe.Key, error) {
			pass, _, err := passphraseFor(ctx, keys, v, t.Scope, uint32(t.Version))
			if err != nil {
				return nil, err
			}
			defer pass.Destroy()
			return openToken(v, pass, t)
		}()
		if err == nil {
			return vk, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = ErrNoToken
	}
	return nil, first
}
