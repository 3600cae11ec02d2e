package pkcs11

/*
#include <stdlib.h>
*/
import "C"

import (
	"encoding/binary"
	"unsafe"

	p11 "github.com/miekg/pkcs11"
)

// cTemplate is a CK_ATTRIBUTE array in C memory, the value of an array attribute such as
// CKA_UNWRAP_TEMPLATE. miekg/pkcs11 copies attribute values byte for byte, so an array attribute's
// value must be the raw CK_ATTRIBUTE structs whose pValue pointers point to C memory that outlives the
// call; free it afterwards.
type cTemplate struct {
	bytes  []byte
	allocs []unsafe.Pointer
}

// newBoolTemplate lays out {type, pValue, ulValueLen} structs (three CK_ULONG-sized words each, the
// layout of CK_ATTRIBUTE on the platforms cgo supports) for boolean attributes.
func newBoolTemplate(attrs map[uint]bool, order []uint) *cTemplate {
	w := int(unsafe.Sizeof(uintptr(0)))
	t := &cTemplate{bytes: make([]byte, 0, 3*w*len(order))}
	put := func(v uint64) {
		if w == 8 {
			t.bytes = binary.NativeEndian.AppendUint64(t.bytes, v)
		} else {
			t.bytes = binary.NativeEndian.AppendUint32(t.bytes, uint32(v))
		}
	}
	for _, typ := range order {
		p := C.malloc(1)
		v := byte(0)
		if attrs[typ] {
			v = 1
		}
		*(*byte)(p) = v
		t.allocs = append(t.allocs, p)
		put(uint64(typ))
		put(uint64(uintptr(p)))
		put(1)
	}
	return t
}

func (t *cTemplate) attribute(typ uint) *p11.Attribute { return p11.NewAttribute(typ, t.bytes) }

func (t *cTemplate) free() {
	for _, p := range t.allocs {
		C.free(p)
	}
	t.allocs = nil
}
