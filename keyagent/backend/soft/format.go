package soft

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/memsafe"
)

// File layout constants; see the package doc for the format.
const (
	magic      = "KWKS"
	formatV1   = 1
	saltSize   = 16
	nonceSize  = 12
	headerSize = 4 + 1 + 4 + 4 + 1 + saltSize + nonceSize // 42
)

type header struct {
	params Argon2Params
	salt   [saltSize]byte
	nonce  [nonceSize]byte
}

func (h *header) marshal() []byte {
	b := make([]byte, 0, headerSize)
	b = append(b, magic...)
	b = append(b, formatV1)
	b = binary.BigEndian.AppendUint32(b, h.params.Time)
	b = binary.BigEndian.AppendUint32(b, h.params.MemoryKiB)
	b = append(b, h.params.Threads)
	b = append(b, h.salt[:]...)
	return append(b, h.nonce[:]...)
}

func parseErr(off int, format string, a ...any) error {
	return &backend.ParseError{What: "sealed store", Offset: off, Msg: fmt.Sprintf(format, a...)}
}

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize+16 {
		return h, parseErr(len(b), "file is %d bytes, too short for a sealed store", len(b))
	}
	if string(b[:4]) != magic {
		return h, parseErr(0, "not a Keyward sealed store (bad magic)")
	}
	if b[4] != formatV1 {
		return h, parseErr(4, "unknown format version %d", b[4])
	}
	h.params = Argon2Params{
		Time:      binary.BigEndian.Uint32(b[5:]),
		MemoryKiB: binary.BigEndian.Uint32(b[9:]),
		Threads:   b[13],
	}
	if err := h.params.check(); err != nil {
		return h, parseErr(5, "%v", err)
	}
	copy(h.salt[:], b[14:14+saltSize])
	copy(h.nonce[:], b[14+saltSize:headerSize])
	return h, nil
}

// Payload kinds and states, as stored.
var (
	kindCode  = map[backend.Kind]byte{backend.KindDerive: 1, backend.KindHSMAEAD: 2}
	stateCode = map[backend.State]byte{backend.StateActive: 1, backend.StateDisabled: 2, backend.StateDestroyed: 3}
)

func decode[T comparable](m map[T]byte, c byte) (T, bool) {
	for k, v := range m {
		if v == c {
			return k, true
		}
	}
	var zero T
	return zero, false
}

// marshalPayload encodes the store. The returned buffer holds secrets: the caller wipes it.
func marshalPayload(s *store) ([]byte, error) {
	b := make([]byte, 0, 4096)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.rings)))
	for _, name := range s.names() {
		r := s.rings[name]
		b = append(b, byte(len(name)))
		b = append(b, name...)
		b = append(b, kindCode[r.kind])
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.versions)))
		for _, v := range r.versions {
			b = binary.BigEndian.AppendUint32(b, uint32(v.n))
			b = append(b, stateCode[v.state])
			b = binary.BigEndian.AppendUint64(b, uint64(v.created.UnixNano()))
			if v.secret == nil {
				b = append(b, 0)
				continue
			}
			err := v.secret.Use(func(k []byte) error {
				b = append(b, byte(len(k)))
				b = append(b, k...)
				return nil
			})
			if err != nil {
				clear(b)
				return nil, err
			}
		}
	}
	if s.importKey == nil {
		return binary.BigEndian.AppendUint16(b, 0), nil
	}
	err := s.importKey.Use(func(der []byte) error {
		b = binary.BigEndian.AppendUint16(b, uint16(len(der)))
		b = append(b, der...)
		return nil
	})
	if err != nil {
		clear(b)
		return nil, err
	}
	return b, nil
}

// parsePayload decodes a payload into a store whose secrets are in memsafe. It wipes nothing: the caller
// wipes p.
func parsePayload(p []byte) (*store, error) {
	s := &store{rings: map[string]*ring{}}
	off := 0
	fail := func(format string, a ...any) (*store, error) {
		s.destroy()
		return nil, parseErr(headerSize+off, "payload: "+format, a...)
	}
	need := func(n int) bool { return len(p)-off >= n }
	if !need(2) {
		return fail("truncated")
	}
	nr := int(binary.BigEndian.Uint16(p[off:]))
	off += 2
	prev := ""
	for range nr {
		if !need(1) {
			return fail("truncated")
		}
		nl := int(p[off])
		off++
		if !need(nl + 5) {
			return fail("truncated")
		}
		name := string(p[off : off+nl])
		off += nl
		if backend.CheckName(name) != nil || name <= prev {
			return fail("bad, duplicate or unsorted keyring name")
		}
		prev = name
		kind, ok := decode(kindCode, p[off])
		if !ok {
			return fail("unknown kind %d", p[off])
		}
		off++
		nv := int(binary.BigEndian.Uint32(p[off:]))
		off += 4
		r := &ring{kind: kind}
		s.rings[name] = r
		for range nv {
			if !need(14) {
				return fail("truncated")
			}
			v := &version{n: int(binary.BigEndian.Uint32(p[off:]))}
			st, ok := decode(stateCode, p[off+4])
			if !ok {
				return fail("unknown state %d", p[off+4])
			}
			v.state = st
			v.created = time.Unix(0, int64(binary.BigEndian.Uint64(p[off+5:]))).UTC()
			sl := int(p[off+13])
			off += 14
			if !need(sl) || (sl == 0) != (st == backend.StateDestroyed) || (sl != 0 && !backend.SecretSizeOK(kind, sl)) {
				return fail("bad secret length %d", sl)
			}
			if len(r.versions) > 0 && v.n <= r.versions[len(r.versions)-1].n || v.n < 1 {
				return fail("versions out of order")
			}
			if sl > 0 {
				tmp := make([]byte, sl)
				copy(tmp, p[off:off+sl])
				k, err := memsafe.FromBytes(tmp)
				if err != nil {
					return fail("%v", err)
				}
				v.secret = k
				off += sl
			}
			r.versions = append(r.versions, v)
		}
	}
	if !need(2) {
		return fail("truncated")
	}
	il := int(binary.BigEndian.Uint16(p[off:]))
	off += 2
	if !need(il) {
		return fail("truncated")
	}
	if il > 0 {
		tmp := make([]byte, il)
		copy(tmp, p[off:off+il])
		k, err := memsafe.FromBytes(tmp)
		if err != nil {
			return fail("%v", err)
		}
		s.importKey = k
		off += il
	}
	if off != len(p) {
		return fail("%d trailing bytes", len(p)-off)
	}
	return s, nil
}
