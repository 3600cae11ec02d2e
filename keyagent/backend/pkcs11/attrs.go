package pkcs11

import (
	"encoding/binary"
	"unsafe"

	p11 "github.com/miekg/pkcs11"
)

// ulongs encodes a CK_ULONG array (e.g. CKA_ALLOWED_MECHANISMS) in the platform's layout: on the Unix
// platforms cgo supports, CK_ULONG is C unsigned long, the size of a pointer.
func ulongs(vs ...uint) []byte {
	size := int(unsafe.Sizeof(uintptr(0)))
	b := make([]byte, size*len(vs))
	for i, v := range vs {
		if size == 8 {
			binary.NativeEndian.PutUint64(b[i*8:], uint64(v))
		} else {
			binary.NativeEndian.PutUint32(b[i*4:], uint32(v))
		}
	}
	return b
}

func attr(t uint, v any) *p11.Attribute { return p11.NewAttribute(t, v) }

// keyTemplate is the template of a keyring version's token object. The secret can never leave the HSM
// (sensitive, non-extractable), its attributes cannot change (not modifiable), and it can do only what
// its kind needs.
func keyTemplate(label string, derive bool) []*p11.Attribute {
	t := []*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		attr(p11.CKA_TOKEN, true),
		attr(p11.CKA_PRIVATE, true),
		attr(p11.CKA_SENSITIVE, true),
		attr(p11.CKA_EXTRACTABLE, false),
		attr(p11.CKA_MODIFIABLE, false),
		attr(p11.CKA_LABEL, label),
		attr(p11.CKA_ID, []byte(label)),
		attr(p11.CKA_WRAP, false),
		attr(p11.CKA_UNWRAP, false),
		attr(p11.CKA_DERIVE, false),
		attr(p11.CKA_VERIFY, false),
	}
	if derive {
		return append(t,
			attr(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
			attr(p11.CKA_SIGN, true),
			attr(p11.CKA_ENCRYPT, false),
			attr(p11.CKA_DECRYPT, false),
			attr(p11.CKA_ALLOWED_MECHANISMS, ulongs(p11.CKM_SHA256_HMAC)),
		)
	}
	return append(t,
		attr(p11.CKA_KEY_TYPE, p11.CKK_AES),
		attr(p11.CKA_SIGN, false),
		attr(p11.CKA_ENCRYPT, true),
		attr(p11.CKA_DECRYPT, true),
		attr(p11.CKA_ALLOWED_MECHANISMS, ulongs(p11.CKM_AES_GCM)),
	)
}
