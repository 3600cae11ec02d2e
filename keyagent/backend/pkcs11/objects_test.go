package pkcs11

import (
	"bytes"
	"context"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

func checkObjects(t *testing.T, b *Backend) {
	t.Helper()
	err := b.do(context.Background(), func(c *conn, s p11.SessionHandle) error {
		for _, tc := range []struct {
			label string
			class uint
			want  map[uint][]byte
		}{
			{"keyward/payroll/1", p11.CKO_SECRET_KEY, map[uint][]byte{
				p11.CKA_TOKEN: {1}, p11.CKA_SENSITIVE: {1}, p11.CKA_EXTRACTABLE: {0}, p11.CKA_MODIFIABLE: {0},
				p11.CKA_SIGN: {1}, p11.CKA_ENCRYPT: {0}, p11.CKA_KEY_TYPE: ulongs(p11.CKK_GENERIC_SECRET),
				p11.CKA_ALLOWED_MECHANISMS: ulongs(p11.CKM_SHA256_HMAC), p11.CKA_VALUE_LEN: ulongs(32),
			}},
			{"keyward/vault/1", p11.CKO_SECRET_KEY, map[uint][]byte{
				p11.CKA_TOKEN: {1}, p11.CKA_SENSITIVE: {1}, p11.CKA_EXTRACTABLE: {0}, p11.CKA_MODIFIABLE: {0},
				p11.CKA_SIGN: {0}, p11.CKA_ENCRYPT: {1}, p11.CKA_DECRYPT: {1}, p11.CKA_KEY_TYPE: ulongs(p11.CKK_AES),
				p11.CKA_ALLOWED_MECHANISMS: ulongs(p11.CKM_AES_GCM), p11.CKA_VALUE_LEN: ulongs(32),
			}},
			{"keyward/byok/1", p11.CKO_SECRET_KEY, map[uint][]byte{
				p11.CKA_TOKEN: {1}, p11.CKA_SENSITIVE: {1}, p11.CKA_EXTRACTABLE: {0}, p11.CKA_MODIFIABLE: {0},
				p11.CKA_SIGN: {1}, p11.CKA_ENCRYPT: {0}, p11.CKA_KEY_TYPE: ulongs(p11.CKK_GENERIC_SECRET),
				p11.CKA_ALLOWED_MECHANISMS: ulongs(p11.CKM_SHA256_HMAC),
			}},
			{"keyward-import", p11.CKO_PRIVATE_KEY, map[uint][]byte{
				p11.CKA_TOKEN: {1}, p11.CKA_SENSITIVE: {1}, p11.CKA_EXTRACTABLE: {0},
				p11.CKA_UNWRAP: {1}, p11.CKA_DECRYPT: {0}, p11.CKA_SIGN: {0},
				p11.CKA_ALLOWED_MECHANISMS: ulongs(p11.CKM_RSA_PKCS_OAEP),
			}},
		} {
			hs, err := c.find(s, []*p11.Attribute{attr(p11.CKA_CLASS, tc.class), attr(p11.CKA_LABEL, tc.label)})
			if err != nil {
				return err
			}
			if len(hs) != 1 {
				t.Errorf("%s: %d objects", tc.label, len(hs))
				continue
			}
			for typ, want := range tc.want {
				as, err := c.ctx.GetAttributeValue(s, hs[0], []*p11.Attribute{attr(typ, nil)})
				if err != nil {
					t.Errorf("%s: attribute 0x%x: %v", tc.label, typ, err)
					continue
				}
				if !bytes.Equal(as[0].Value, want) {
					t.Errorf("%s: attribute 0x%x = %x, want %x", tc.label, typ, as[0].Value, want)
				}
			}
			// The secret value must not be readable.
			if as, err := c.ctx.GetAttributeValue(s, hs[0], []*p11.Attribute{attr(p11.CKA_VALUE, nil)}); err == nil && len(as[0].Value) > 0 {
				t.Errorf("%s: CKA_VALUE is readable", tc.label)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkRestrictions proves the HSM enforces what the templates ask: a derive key refuses another
// mechanism than CKM_SHA256_HMAC, and what the import key unwraps cannot be made extractable.
func checkRestrictions(t *testing.T, b *Backend, wrappedEph []byte) {
	t.Helper()
	err := b.do(context.Background(), func(c *conn, s p11.SessionHandle) error {
		_, h, err := b.resolve(c, "payroll", 1, false, "derive")
		if err != nil {
			return err
		}
		as, err := c.ctx.GetAttributeValue(s, h, []*p11.Attribute{attr(p11.CKA_TOKEN, nil)})
		switch {
		case err != nil:
			t.Error(err)
		case bytes.Equal(as[0].Value, []byte{0}):
			// a session copy, as intended
		case isCode(c.copyRefused, p11.CKR_ATTRIBUTE_READ_ONLY):
			t.Log("this module refuses session copies of non-modifiable keys; token objects are used")
		default:
			t.Errorf("derive uses the token object without the module having refused a copy (%v)", c.copyRefused)
		}
		if err := c.ctx.SignInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA512_HMAC, nil)}, h); err == nil {
			_, _ = c.ctx.Sign(s, []byte("x"))
			t.Error("a derive key accepted CKM_SHA512_HMAC (CKA_ALLOWED_MECHANISMS not enforced)")
		}
		priv, _, err := c.importKey(s, false)
		if err != nil {
			return err
		}
		oaep := []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, oaepParams("RSA_AES_KEY_WRAP_SHA_1"))}
		unwrap := func(sensitive, extractable bool) error {
			eph, err := c.ctx.UnwrapKey(s, oaep, priv, wrappedEph, []*p11.Attribute{
				attr(p11.CKA_CLASS, p11.CKO_SECRET_KEY), attr(p11.CKA_KEY_TYPE, p11.CKK_AES), attr(p11.CKA_TOKEN, false),
				attr(p11.CKA_SENSITIVE, sensitive), attr(p11.CKA_EXTRACTABLE, extractable),
			})
			if err == nil {
				_ = c.ctx.DestroyObject(s, eph)
			}
			return err
		}
		if err := unwrap(true, false); err != nil {
			t.Errorf("unwrap matching CKA_UNWRAP_TEMPLATE failed: %v", err)
		}
		if err := unwrap(false, true); err == nil {
			t.Error("the import key unwrapped into an extractable, non-sensitive key (CKA_UNWRAP_TEMPLATE not enforced)")
		} else if !isCode(err, p11.CKR_TEMPLATE_INCONSISTENT) {
			t.Logf("extractable unwrap refused with %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
