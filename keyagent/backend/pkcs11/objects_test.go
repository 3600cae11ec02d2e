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
