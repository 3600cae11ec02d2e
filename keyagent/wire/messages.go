package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/keyward/keyward/memsafe"
)

// Op is what a caller will do with a key.
type Op uint8

// Operations.
const (
	OpEncrypt Op = 1
	OpDecrypt Op = 2
)

func (o Op) String() string {
	switch o {
	case OpEncrypt:
		return "encrypt"
	case OpDecrypt:
		return "decrypt"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

func (o Op) valid() bool { return o == OpEncrypt || o == OpDecrypt }

func validBits(b uint16) bool { return b == 256 || b == 512 }

func validKeyLen(n int) bool { return n == 32 || n == 64 }

// KeyRequest asks for the data key of a scope.
type KeyRequest struct {
	Op        Op
	Scope     string
	Version   uint32 // 0: the newest version
	ActingFor string // "": the caller itself
	Bits      uint16 // 256 or 512
}

func (*KeyRequest) Type() Type { return TypeKeyRequest }

func (m *KeyRequest) Encode(dst []byte) ([]byte, error) {
	if !m.Op.valid() {
		return dst, invalidf(TypeKeyRequest, "op %d", m.Op)
	}
	if !validBits(m.Bits) {
		return dst, invalidf(TypeKeyRequest, "bits %d (want 256 or 512)", m.Bits)
	}
	dst, start := appendHeader(dst, TypeKeyRequest)
	dst = append(dst, byte(m.Op))
	dst = binary.BigEndian.AppendUint16(dst, m.Bits)
	dst = binary.BigEndian.AppendUint32(dst, m.Version)
	var err error
	if dst, err = appendStr(dst, TypeKeyRequest, "scope", m.Scope, true); err != nil {
		return dst[:start], err
	}
	if dst, err = appendStr(dst, TypeKeyRequest, "acting_for", m.ActingFor, false); err != nil {
		return dst[:start], err
	}
	return finish(dst, start, TypeKeyRequest)
}

func (m *KeyRequest) Decode(body []byte) error {
	d := decoder{b: body, t: TypeKeyRequest}
	d.begin()
	off := d.off
	op := Op(d.u8())
	if d.err == nil && !op.valid() {
		d.failAt(off, ErrMalformed, fmt.Sprintf("op %d", op))
	}
	off = d.off
	bits := d.u16()
	if d.err == nil && !validBits(bits) {
		d.failAt(off, ErrMalformed, fmt.Sprintf("bits %d", bits))
	}
	ver := d.u32()
	sc := d.str("scope", true)
	af := d.str("acting_for", false)
	if err := d.done(); err != nil {
		return err
	}
	*m = KeyRequest{Op: op, Scope: sc, Version: ver, ActingFor: af, Bits: bits}
	return nil
}

// KeyResponse carries a data key. Key is in locked memory; the message never
// prints it.
type KeyResponse struct {
	Scope   string
	Version uint32 // >= 1
	Key     *memsafe.Key
}

func (*KeyResponse) Type() Type { return TypeKeyResponse }

// Encode appends the frame, key included: the caller must wipe dst once it
// has been written (Writer and WriteMsg do).
func (m *KeyResponse) Encode(dst []byte) ([]byte, error) {
	if m.Version == 0 {
		return dst, invalidf(TypeKeyResponse, "version 0")
	}
	if m.Key == nil {
		return dst, invalidf(TypeKeyResponse, "no key")
	}
	if n := m.Key.Len(); !validKeyLen(n) {
		return dst, invalidf(TypeKeyResponse, "key of %d bytes (want 32 or 64)", n)
	}
	dst, start := appendHeader(dst, TypeKeyResponse)
	dst = binary.BigEndian.AppendUint32(dst, m.Version)
	var err error
	if dst, err = appendStr(dst, TypeKeyResponse, "scope", m.Scope, true); err != nil {
		return dst[:start], err
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(m.Key.Len()))
	// If append must grow dst, the old array holds only the header: the key
	// bytes are only ever written into the array that is returned.
	if err := m.Key.Use(func(b []byte) error {
		dst = append(dst, b...)
		return nil
	}); err != nil {
		return dst[:start], fmt.Errorf("wire: encode %s: %w", TypeKeyResponse, err)
	}
	return finish(dst, start, TypeKeyResponse)
}

// keyPrefix reads the fields in front of the key and checks that the key is
// exactly the rest of a body of bodyLen bytes.
func (d *decoder) keyPrefix(bodyLen int) (sc string, ver uint32, keyLen int) {
	d.begin()
	off := d.off
	ver = d.u32()
	if d.err == nil && ver == 0 {
		d.failAt(off, ErrMalformed, "version 0")
	}
	sc = d.str("scope", true)
	off = d.off
	keyLen = int(d.u16())
	if d.err != nil {
		return "", 0, 0
	}
	switch rest := bodyLen - d.off; {
	case !validKeyLen(keyLen):
		d.failAt(off, ErrMalformed, fmt.Sprintf("key_len %d", keyLen))
	case rest < keyLen:
		d.failAt(d.off, ErrTruncated, fmt.Sprintf("key needs %d bytes, %d left", keyLen, rest))
	case rest > keyLen:
		d.failAt(d.off+keyLen, ErrTrailingBytes, fmt.Sprintf("%d bytes after the key", rest-keyLen))
	}
	return sc, ver, keyLen
}

// Decode parses a body held in memory. It copies the key into locked memory
// and wipes the key bytes in body. m.Key is replaced, not destroyed. Reader
// decodes a KeyResponse without this heap step; prefer it.
func (m *KeyResponse) Decode(body []byte) error {
	d := decoder{b: body, t: TypeKeyResponse}
	sc, ver, keyLen := d.keyPrefix(len(body))
	if d.err != nil {
		return d.err
	}
	k, err := memsafe.FromBytes(body[d.off : d.off+keyLen])
	if err != nil {
		return fmt.Errorf("wire: decode %s: %w", TypeKeyResponse, err)
	}
	*m = KeyResponse{Scope: sc, Version: ver, Key: k}
	return nil
}

// HSMEncryptRequest asks the key service to encrypt inside the HSM with the
// scope's hsm-aead key (AES-256-GCM).
type HSMEncryptRequest struct {
	Scope     string
	Version   uint32 // 0: the newest version
	ActingFor string
	AAD       []byte
	Plaintext []byte
}

func (*HSMEncryptRequest) Type() Type { return TypeHSMEncryptRequest }

func (m *HSMEncryptRequest) Encode(dst []byte) ([]byte, error) {
	return encodeHSMRequest(dst, TypeHSMEncryptRequest, m.Scope, m.Version, m.ActingFor, m.AAD, m.Plaintext)
}

func (m *HSMEncryptRequest) Decode(body []byte) error {
	sc, ver, af, aad, data, err := decodeHSMRequest(body, TypeHSMEncryptRequest, "plaintext")
	if err != nil {
		return err
	}
	*m = HSMEncryptRequest{Scope: sc, Version: ver, ActingFor: af, AAD: aad, Plaintext: data}
	return nil
}

// HSMDecryptRequest asks the key service to decrypt inside the HSM.
type HSMDecryptRequest struct {
	Scope      string
	Version    uint32
	ActingFor  string
	AAD        []byte
	Ciphertext []byte
}

func (*HSMDecryptRequest) Type() Type { return TypeHSMDecryptRequest }

func (m *HSMDecryptRequest) Encode(dst []byte) ([]byte, error) {
	return encodeHSMRequest(dst, TypeHSMDecryptRequest, m.Scope, m.Version, m.ActingFor, m.AAD, m.Ciphertext)
}

func (m *HSMDecryptRequest) Decode(body []byte) error {
	sc, ver, af, aad, data, err := decodeHSMRequest(body, TypeHSMDecryptRequest, "ciphertext")
	if err != nil {
		return err
	}
	*m = HSMDecryptRequest{Scope: sc, Version: ver, ActingFor: af, AAD: aad, Ciphertext: data}
	return nil
}

func encodeHSMRequest(dst []byte, t Type, sc string, ver uint32, af string, aad, data []byte) ([]byte, error) {
	dst, start := appendHeader(dst, t)
	dst = binary.BigEndian.AppendUint32(dst, ver)
	var err error
	if dst, err = appendStr(dst, t, "scope", sc, true); err != nil {
		return dst[:start], err
	}
	if dst, err = appendStr(dst, t, "acting_for", af, false); err != nil {
		return dst[:start], err
	}
	if len(aad)+len(data) > MaxFrameSize {
		return dst[:start], invalidf(t, "%d bytes of data exceed the frame cap", len(aad)+len(data))
	}
	dst = appendBytes(dst, aad)
	dst = appendBytes(dst, data)
	return finish(dst, start, t)
}

func decodeHSMRequest(body []byte, t Type, dataName string) (sc string, ver uint32, af string, aad, data []byte, err error) {
	d := decoder{b: body, t: t}
	d.begin()
	ver = d.u32()
	sc = d.str("scope", true)
	af = d.str("acting_for", false)
	aad = d.bytes("aad")
	data = d.bytes(dataName)
	if err := d.done(); err != nil {
		return "", 0, "", nil, nil, err
	}
	return sc, ver, af, aad, data, nil
}

// HSMEncryptResponse is the result of an HSMEncryptRequest.
type HSMEncryptResponse struct {
	Version    uint32 // the key version used, >= 1
	Ciphertext []byte
}

func (*HSMEncryptResponse) Type() Type { return TypeHSMEncryptResponse }

func (m *HSMEncryptResponse) Encode(dst []byte) ([]byte, error) {
	if m.Version == 0 {
		return dst, invalidf(TypeHSMEncryptResponse, "version 0")
	}
	if len(m.Ciphertext) > MaxFrameSize {
		return dst, invalidf(TypeHSMEncryptResponse, "ciphertext exceeds the frame cap")
	}
	dst, start := appendHeader(dst, TypeHSMEncryptResponse)
	dst = binary.BigEndian.AppendUint32(dst, m.Version)
	dst = appendBytes(dst, m.Ciphertext)
	return finish(dst, start, TypeHSMEncryptResponse)
}

func (m *HSMEncryptResponse) Decode(body []byte) error {
	d := decoder{b: body, t: TypeHSMEncryptResponse}
	d.begin()
	off := d.off
	ver := d.u32()
	if d.err == nil && ver == 0 {
		d.failAt(off, ErrMalformed, "version 0")
	}
	ct := d.bytes("ciphertext")
	if err := d.done(); err != nil {
		return err
	}
	*m = HSMEncryptResponse{Version: ver, Ciphertext: ct}
	return nil
}

// HSMDecryptResponse is the result of an HSMDecryptRequest.
type HSMDecryptResponse struct {
	Plaintext []byte
}

func (*HSMDecryptResponse) Type() Type { return TypeHSMDecryptResponse }

func (m *HSMDecryptResponse) Encode(dst []byte) ([]byte, error) {
	if len(m.Plaintext) > MaxFrameSize {
		return dst, invalidf(TypeHSMDecryptResponse, "plaintext exceeds the frame cap")
	}
	dst, start := appendHeader(dst, TypeHSMDecryptResponse)
	dst = appendBytes(dst, m.Plaintext)
	return finish(dst, start, TypeHSMDecryptResponse)
}

func (m *HSMDecryptResponse) Decode(body []byte) error {
	d := decoder{b: body, t: TypeHSMDecryptResponse}
	d.begin()
	pt := d.bytes("plaintext")
	if err := d.done(); err != nil {
		return err
	}
	*m = HSMDecryptResponse{Plaintext: pt}
	return nil
}

// StatusRequest asks for a StatusResponse.
type StatusRequest struct{}

func (*StatusRequest) Type() Type { return TypeStatusRequest }

func (m *StatusRequest) Encode(dst []byte) ([]byte, error) {
	return encodeEmpty(dst, TypeStatusRequest)
}

func (m *StatusRequest) Decode(body []byte) error { return decodeEmpty(body, TypeStatusRequest) }

// PurgeRequest asks the agent to wipe its key cache now; the answer is OK.
type PurgeRequest struct{}

func (*PurgeRequest) Type() Type { return TypePurgeRequest }

func (m *PurgeRequest) Encode(dst []byte) ([]byte, error) { return encodeEmpty(dst, TypePurgeRequest) }

func (m *PurgeRequest) Decode(body []byte) error { return decodeEmpty(body, TypePurgeRequest) }

// OK is the answer to a request that returns nothing.
type OK struct{}

func (*OK) Type() Type { return TypeOK }

func (m *OK) Encode(dst []byte) ([]byte, error) { return encodeEmpty(dst, TypeOK) }

func (m *OK) Decode(body []byte) error { return decodeEmpty(body, TypeOK) }

func encodeEmpty(dst []byte, t Type) ([]byte, error) {
	dst, start := appendHeader(dst, t)
	return finish(dst, start, t)
}

func decodeEmpty(body []byte, t Type) error {
	d := decoder{b: body, t: t}
	d.begin()
	return d.done()
}

// StatusField is one name=value pair of a StatusResponse.
type StatusField struct {
	Name, Value string
}

// StatusResponse reports a daemon's state as ordered name=value pairs
// (for example upstream=ok, cache_keys=12, policy_version=3f2a…).
type StatusResponse struct {
	Fields []StatusField
}

func (*StatusResponse) Type() Type { return TypeStatusResponse }

// Get returns the value of the first field called name.
func (m *StatusResponse) Get(name string) (string, bool) {
	for _, f := range m.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

func (m *StatusResponse) Encode(dst []byte) ([]byte, error) {
	if len(m.Fields) > MaxStatusFields {
		return dst, invalidf(TypeStatusResponse, "%d fields (max %d)", len(m.Fields), MaxStatusFields)
	}
	dst, start := appendHeader(dst, TypeStatusResponse)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(m.Fields)))
	var err error
	for _, f := range m.Fields {
		if dst, err = appendStr(dst, TypeStatusResponse, "name", f.Name, true); err != nil {
			return dst[:start], err
		}
		if dst, err = appendStr(dst, TypeStatusResponse, "value", f.Value, false); err != nil {
			return dst[:start], err
		}
	}
	return finish(dst, start, TypeStatusResponse)
}

func (m *StatusResponse) Decode(body []byte) error {
	d := decoder{b: body, t: TypeStatusResponse}
	d.begin()
	off := d.off
	n := int(d.u16())
	if d.err == nil && n > MaxStatusFields {
		d.failAt(off, ErrMalformed, fmt.Sprintf("%d fields (max %d)", n, MaxStatusFields))
	}
	var fields []StatusField
	if d.err == nil && n > 0 {
		// Each field takes at least 5 bytes (two lengths and a non-empty
		// name), so a lying count cannot make us allocate much.
		if n*5 > len(body)-d.off {
			d.failAt(off, ErrTruncated, fmt.Sprintf("%d fields cannot fit in %d bytes", n, len(body)-d.off))
		} else {
			fields = make([]StatusField, 0, n)
		}
	}
	for i := 0; i < n && d.err == nil; i++ {
		name := d.str("name", true)
		value := d.str("value", false)
		fields = append(fields, StatusField{Name: name, Value: value})
	}
	if err := d.done(); err != nil {
		return err
	}
	*m = StatusResponse{Fields: fields}
	return nil
}
