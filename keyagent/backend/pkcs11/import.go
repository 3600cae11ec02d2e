package pkcs11

import (
	"context"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/kdf"
)

// importKey returns the import key pair's handles, creating it when create is set.
func (c *conn) importKey(s p11.SessionHandle, create bool) (priv, pub p11.ObjectHandle, err error) {
	find := func(class uint) ([]p11.ObjectHandle, error) {
		return c.find(s, []*p11.Attribute{attr(p11.CKA_CLASS, class), attr(p11.CKA_LABEL, importLabel)})
	}
	privs, err := find(p11.CKO_PRIVATE_KEY)
	if err != nil {
		return 0, 0, err
	}
	pubs, err := find(p11.CKO_PUBLIC_KEY)
	if err != nil {
		return 0, 0, err
	}
	if len(privs) == 1 && len(pubs) == 1 {
		return privs[0], pubs[0], nil
	}
	if len(privs) > 1 || len(pubs) > 1 || len(privs) != len(pubs) {
		return 0, 0, fmt.Errorf("token holds %d private and %d public %q keys; expected one pair", len(privs), len(pubs), importLabel)
	}
	if !create {
		return 0, 0, fmt.Errorf("%w: no import key yet: create it first (import-key)", backend.ErrNotFound)
	}
	// Whatever this key unwraps (the ephemeral AES key) is forced sensitive and non-extractable.
	tmpl := newBoolTemplate(map[uint]bool{p11.CKA_SENSITIVE: true, p11.CKA_EXTRACTABLE: false},
		[]uint{p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE})
	defer tmpl.free()
	pubT := []*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		attr(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		attr(p11.CKA_TOKEN, true),
		attr(p11.CKA_LABEL, importLabel),
		attr(p11.CKA_ID, []byte(importLabel)),
		attr(p11.CKA_MODULUS_BITS, backend.ImportKeyBits),
		attr(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		attr(p11.CKA_ENCRYPT, true),
		attr(p11.CKA_WRAP, true),
		attr(p11.CKA_VERIFY, false),
	}
	privT := []*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		attr(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		attr(p11.CKA_TOKEN, true),
		attr(p11.CKA_PRIVATE, true),
		attr(p11.CKA_SENSITIVE, true),
		attr(p11.CKA_EXTRACTABLE, false),
		attr(p11.CKA_MODIFIABLE, false),
		attr(p11.CKA_LABEL, importLabel),
		attr(p11.CKA_ID, []byte(importLabel)),
		attr(p11.CKA_UNWRAP, true),
		attr(p11.CKA_DECRYPT, false),
		attr(p11.CKA_SIGN, false),
		attr(p11.CKA_DERIVE, false),
		attr(p11.CKA_ALLOWED_MECHANISMS, ulongs(p11.CKM_RSA_PKCS_OAEP)),
		tmpl.attribute(p11.CKA_UNWRAP_TEMPLATE),
	}
	pub, priv, err = c.ctx.GenerateKeyPair(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pubT, privT)
	if err != nil {
		return 0, 0, fmt.Errorf("generate RSA-%d import key: %w", backend.ImportKeyBits, err)
	}
	return priv, pub, nil
}

// ImportPublicKey implements backend.Backend.
func (b *Backend) ImportPublicKey(ctx context.Context) (*rsa.PublicKey, error) {
	b.admin.Lock()
	defer b.admin.Unlock()
	var pk *rsa.PublicKey
	err := b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		_, pub, err := c.importKey(s, true)
		if err != nil {
			return err
		}
		pk, err = c.rsaPublic(s, pub)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("import key: %w", err)
	}
	return pk, nil
}

func oaepParams(w backend.Wrapping) *p11.OAEPParams {
	if w == backend.WrapRSAAESKeyWrapSHA256 {
		return p11.NewOAEPParams(p11.CKM_SHA256, p11.CKG_MGF1_SHA256, p11.CKZ_DATA_SPECIFIED, nil)
	}
	return p11.NewOAEPParams(p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, p11.CKZ_DATA_SPECIFIED, nil)
}

// unsupportedOAEP reports a module's refusal of the OAEP parameters themselves (as opposed to a bundle
// that does not decrypt).
func unsupportedOAEP(err error) bool {
	for _, code := range []uint{p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_MECHANISM_INVALID, p11.CKR_ARGUMENTS_BAD} {
		if isCode(err, code) {
			return true
		}
	}
	return false
}

// Import implements backend.Backend.
func (b *Backend) Import(ctx context.Context, name string, kind backend.Kind, bundle []byte, w backend.Wrapping) (backend.Version, string, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.Version{}, "", err
	}
	if _, err := backend.ParseKind(string(kind)); err != nil {
		return backend.Version{}, "", err
	}
	if _, err := backend.ParseWrapping(string(w)); err != nil {
		return backend.Version{}, "", err
	}
	wEph, wSecret, err := backend.SplitBundle(bundle, backend.ImportKeyBits/8, kind)
	if err != nil {
		return backend.Version{}, "", err
	}
	b.admin.Lock()
	defer b.admin.Unlock()
	var out backend.Version
	var kcv string
	err = b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		r, exists, n, err := c.nextVersion(name)
		if err != nil {
			return err
		}
		if exists && r.Kind != kind {
			return fmt.Errorf("%w: keyring %q is of kind %s, not %s", backend.ErrBadInput, name, r.Kind, kind)
		}
		priv, _, err := c.importKey(s, false)
		if err != nil {
			return err
		}

		// Step 1: RSA-OAEP unwrap of the ephemeral AES-256 key into a session object that can only unwrap.
		oaep := oaepParams(w)
		eph, err := c.ctx.UnwrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, oaep)}, priv, wEph, []*p11.Attribute{
			attr(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			attr(p11.CKA_KEY_TYPE, p11.CKK_AES),
			attr(p11.CKA_TOKEN, false),
			attr(p11.CKA_SENSITIVE, true),
			attr(p11.CKA_EXTRACTABLE, false),
			attr(p11.CKA_UNWRAP, true),
			attr(p11.CKA_ENCRYPT, false),
			attr(p11.CKA_DECRYPT, false),
			attr(p11.CKA_WRAP, false),
		})
		switch {
		case err != nil && lost(err):
			return err
		case err != nil && w == backend.WrapRSAAESKeyWrapSHA256 && unsupportedOAEP(err):
			return fmt.Errorf("%w: this HSM does not support RSA-OAEP with SHA-256 (%v); wrap the bundle with %s",
				backend.ErrUnsupported, err, backend.WrapRSAAESKeyWrapSHA1)
		case err != nil:
			return fmt.Errorf("%w: the ephemeral key does not decrypt with RSA-OAEP %s under this import key "+
				"(wrong --wrapping, or a bundle made for another import key): %v", backend.ErrBadInput, w.HashName(), err)
		}
		defer c.ctx.DestroyObject(s, eph)
		// Modules do not always record CKA_VALUE_LEN on unwrap (SoftHSM 2.6 leaves 0); when they do,
		// the ephemeral key must be AES-256.
		if l, err := c.valueLen(s, eph); err == nil && l != 0 && l != 32 {
			return fmt.Errorf("%w: the ephemeral key is not an AES-256 key (%d bytes)", backend.ErrBadInput, l)
		}

		// Step 2: AES-KWP unwrap of the secret into the keyring's token object.
		lbl := label(keyPrefix, name, n)
		t := keyTemplate(lbl, kind == backend.KindDerive)
		kwp := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}
		h, err := c.unwrapToToken(s, kwp, eph, wSecret, t)
		if err != nil {
			if lost(err) {
				return err
			}
			return fmt.Errorf("%w: the secret does not unwrap under the ephemeral key (AES-KWP, RFC 5649): %v", backend.ErrBadInput, err)
		}
		// SplitBundle bounded the secret to the padded size; an exact length is checked when the module
		// records it, and otherwise by the self-tests below (HMAC needs >= 32 bytes, AES exactly 32).
		if l, err := c.valueLen(s, h); err == nil && l != 0 && !backend.SecretSizeOK(kind, l) {
			_ = c.ctx.DestroyObject(s, h)
			return fmt.Errorf("%w: imported %s secret is %d bytes", backend.ErrBadInput, kind, l)
		}

		// KCV, computed in the HSM.
		kh := h
		if kind == backend.KindHSMAEAD {
			// An AES key cannot HMAC; unwrap the same secret once more as a session-only signing key.
			kh, err = c.ctx.UnwrapKey(s, kwp, eph, wSecret, []*p11.Attribute{
				attr(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
				attr(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
				attr(p11.CKA_TOKEN, false),
				attr(p11.CKA_SENSITIVE, true),
				attr(p11.CKA_EXTRACTABLE, false),
				attr(p11.CKA_SIGN, true),
			})
			if err != nil {
				_ = c.ctx.DestroyObject(s, h)
				return fmt.Errorf("kcv: %w", err)
			}
			defer c.ctx.DestroyObject(s, kh)
		}
		mac, err := hmacPRF(c, s, kh)(make([]byte, 32))
		if err == nil && kind == backend.KindHSMAEAD {
			err = c.gcmSelfTest(s, h)
		}
		if err != nil {
			_ = c.ctx.DestroyObject(s, h)
			if lost(err) {
				return err
			}
			return fmt.Errorf("%w: the imported secret is not a usable %s key (wrong length?): %v", backend.ErrBadInput, kind, err)
		}
		kcv = kdf.KCVFromMAC(mac)
		clear(mac)
		out, err = c.commitVersion(s, h, name, kind, n)
		return err
	})
	if err != nil {
		return backend.Version{}, "", fmt.Errorf("import %s: %w", name, err)
	}
	return out, kcv, nil
}

// unwrapToToken unwraps into a token object with template t. Some modules (SoftHSM 2.6) refuse
// CKA_MODIFIABLE in an unwrap template; then the key is unwrapped as a session object and copied to the
// token with CKA_MODIFIABLE=false (which C_CopyObject may set), and the session object destroyed.
func (c *conn) unwrapToToken(s p11.SessionHandle, m []*p11.Mechanism, kek p11.ObjectHandle, wrapped []byte, t []*p11.Attribute) (p11.ObjectHandle, error) {
	h, err := c.ctx.UnwrapKey(s, m, kek, wrapped, t)
	if err == nil || !isCode(err, p11.CKR_ATTRIBUTE_READ_ONLY) {
		return h, err
	}
	var st []*p11.Attribute
	for _, a := range t {
		switch a.Type {
		case p11.CKA_MODIFIABLE:
		case p11.CKA_TOKEN:
			st = append(st, attr(p11.CKA_TOKEN, false))
		default:
			st = append(st, a)
		}
	}
	tmp, err := c.ctx.UnwrapKey(s, m, kek, wrapped, st)
	if err != nil {
		return 0, err
	}
	defer c.ctx.DestroyObject(s, tmp)
	return c.ctx.CopyObject(s, tmp, []*p11.Attribute{attr(p11.CKA_TOKEN, true), attr(p11.CKA_MODIFIABLE, false)})
}

// gcmSelfTest encrypts an empty message, proving h is a usable AES-256-GCM key.
func (c *conn) gcmSelfTest(s p11.SessionHandle, h p11.ObjectHandle) error {
	params := p11.NewGCMParams(make([]byte, backend.GCMNonceSize), nil, backend.GCMTagSize*8)
	defer params.Free()
	if err := c.ctx.EncryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
		return err
	}
	_, err := c.ctx.Encrypt(s, nil)
	return err
}

func (c *conn) valueLen(s p11.SessionHandle, h p11.ObjectHandle) (int, error) {
	as, err := c.ctx.GetAttributeValue(s, h, []*p11.Attribute{attr(p11.CKA_VALUE_LEN, nil)})
	if err != nil {
		return 0, err
	}
	v := as[0].Value
	switch len(v) {
	case 8:
		return int(binary.NativeEndian.Uint64(v)), nil
	case 4:
		return int(binary.NativeEndian.Uint32(v)), nil
	}
	return 0, errors.New("bad CKA_VALUE_LEN")
}
