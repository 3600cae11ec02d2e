package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/keyward/keyward/memsafe"
)

// pattern returns n bytes counting up from start: the test keys of the
// vectors (not secrets).
func pattern(start, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(start + i)
	}
	return b
}

func testKey(t testing.TB, start, n int) *memsafe.Key {
	t.Helper()
	k, err := memsafe.FromBytes(pattern(start, n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

// expected gives the message each vector in testdata/vectors.txt encodes.
func expected(t testing.TB) map[string]Message {
	return map[string]Message{
		"key_request_decrypt":     &KeyRequest{Op: OpDecrypt, Scope: "payroll:employees.ssn", ActingFor: "db:alice", Bits: 256},
		"key_request_encrypt_siv": &KeyRequest{Op: OpEncrypt, Scope: "payroll:employees.email", Version: 7, Bits: 512},
		"hsm_encrypt_request": &HSMEncryptRequest{Scope: "vault:cards.pan", ActingFor: "db:bob",
			AAD: []byte("public.cards.pan"), Plaintext: []byte("4111111111111111")},
		"hsm_decrypt_request":  &HSMDecryptRequest{Scope: "vault:cards.pan", Version: 3, ActingFor: "db:bob", Ciphertext: pattern(0, 28)},
		"status_request":       &StatusRequest{},
		"purge_request":        &PurgeRequest{},
		"ok":                   &OK{},
		"key_response_256":     &KeyResponse{Scope: "payroll:employees.ssn", Version: 4, Key: testKey(t, 0, 32)},
		"key_response_512":     &KeyResponse{Scope: "boot:volume/web-7/data", Version: 1, Key: testKey(t, 0x40, 64)},
		"hsm_encrypt_response": &HSMEncryptResponse{Version: 3, Ciphertext: pattern(0xa0, 44)},
		"hsm_decrypt_response": &HSMDecryptResponse{Plaintext: []byte("4111111111111111")},
		"status_response": &StatusResponse{Fields: []StatusField{
			{"upstream", "ok"}, {"cache_keys", "12"}, {"policy_version", "3f2a9c01b7d4"}}},
		"status_response_empty": &StatusResponse{},
		"error_denied":          &ErrorResponse{Code: CodeDenied, Message: `principal colcrypt-proxy may not act for "db:eve"`},
		"error_not_found":       &ErrorResponse{Code: CodeNotFound, Message: "keyring nope"},
		"error_unavailable":     &ErrorResponse{Code: CodeUnavailable},
		"error_bad_request":     &ErrorResponse{Code: CodeBadRequest, Message: "bad"},
		"error_internal":        &ErrorResponse{Code: CodeInternal, Message: "internal error"},
	}
}

type vector struct {
	name  string
	frame []byte
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	data, err := os.ReadFile("testdata/vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hx, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad vector line %q", line)
		}
		b, err := hex.DecodeString(hx)
		if err != nil {
			t.Fatalf("vector %s: %v", name, err)
		}
		vs = append(vs, vector{name, b})
	}
	return vs
}

// sameMsg compares messages; keys are compared inside locked memory and
// never printed.
func sameMsg(t *testing.T, got, want Message) {
	t.Helper()
	if gk, ok := got.(*KeyResponse); ok {
		wk, ok := want.(*KeyResponse)
		if !ok {
			t.Fatalf("got KeyResponse, want %T", want)
		}
		if gk.Scope != wk.Scope || gk.Version != wk.Version {
			t.Fatalf("KeyResponse scope/version = %q/%d, want %q/%d", gk.Scope, gk.Version, wk.Scope, wk.Version)
		}
		if !gk.Key.Equal(wk.Key) {
			t.Fatal("KeyResponse key differs from the vector's")
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestVectors(t *testing.T) {
	exp := expected(t)
	vs := loadVectors(t)
	seen := map[Type]bool{}
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			want, ok := exp[v.name]
			if !ok {
				t.Fatalf("no expected message for vector %s", v.name)
			}
			seen[want.Type()] = true

			enc, err := want.Encode(nil)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(enc, v.frame) {
				t.Fatalf("Encode differs from the vector") // may hold a test key: not printed
			}

			// Decode through a Reader, which streams keys into locked memory.
			r := NewReader(bytes.NewReader(v.frame), Options{})
			got, err := r.Recv()
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			sameMsg(t, got, want)
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after the frame: %v, want io.EOF", err)
			}

			// Decode of the body held in memory.
			body := bytes.Clone(v.frame[HeaderSize:])
			m := New(Type(v.frame[4]))
			if err := m.Decode(body); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			sameMsg(t, m, want)
		})
	}
	for tp := range typeNames {
		if !seen[tp] {
			t.Errorf("no vector for %s", tp)
		}
	}
}

// TestReaderChunking decodes all vectors back to back through readers that
// deliver the bytes in awkward pieces, which exercises both ways a key
// reaches locked memory (from the buffer and straight from the stream).
func TestReaderChunking(t *testing.T) {
	exp := expected(t)
	vs := loadVectors(t)
	var stream []byte
	for _, v := range vs {
		stream = append(stream, v.frame...)
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data err": iotest.DataErrReader,
	}
	for name, wrap := range readers {
		t.Run(name, func(t *testing.T) {
			r := NewReader(wrap(bytes.NewReader(stream)), Options{})
			for _, v := range vs {
				got, err := r.Recv()
				if err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
				sameMsg(t, got, exp[v.name])
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("at the end: %v, want io.EOF", err)
			}
		})
	}
}

func TestSkip(t *testing.T) {
	vs := loadVectors(t)
	var stream []byte
	for _, v := range vs {
		stream = append(stream, v.frame...)
	}
	r := NewReader(iotest.HalfReader(bytes.NewReader(stream)), Options{})
	for i, v := range vs {
		tp, err := r.Next()
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		if tp != Type(v.frame[4]) {
			t.Fatalf("%s: type %s", v.name, tp)
		}
		if i%2 == 0 {
			if err := r.Skip(); err != nil {
				t.Fatal(err)
			}
		} // odd frames: skipped implicitly by the next Next
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
}

// withLength rewrites the length field to match a changed body.
func withLength(frame []byte) []byte {
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	return frame
}

func vectorByName(t *testing.T, name string) []byte {
	for _, v := range loadVectors(t) {
		if v.name == name {
			return bytes.Clone(v.frame)
		}
	}
	t.Fatalf("no vector %s", name)
	return nil
}

func TestMalformed(t *testing.T) {
	tests := []struct {
		name  string
		frame func(t *testing.T) []byte
		want  error
	}{
		{"zero length", func(*testing.T) []byte { return []byte{0, 0, 0, 0, 1} }, ErrMalformed},
		{"length one (no version)", func(*testing.T) []byte { return []byte{0, 0, 0, 1, 4} }, ErrMalformed},
		{"oversized", func(*testing.T) []byte { return []byte{0, 0x10, 0, 1, 1} }, ErrFrameTooLarge},
		{"4 GiB", func(*testing.T) []byte { return []byte{0xff, 0xff, 0xff, 0xff, 1} }, ErrFrameTooLarge},
		{"unknown type", func(*testing.T) []byte { return []byte{0, 0, 0, 2, 0x42, 1} }, ErrUnknownType},
		{"type zero", func(*testing.T) []byte { return []byte{0, 0, 0, 2, 0, 1} }, ErrUnknownType},
		{"unknown version", func(t *testing.T) []byte {
			f := vectorByName(t, "key_request_decrypt")
			f[5] = 2
			return f
		}, ErrUnknownVersion},
		{"unknown version of key response", func(t *testing.T) []byte {
			f := vectorByName(t, "key_response_256")
			f[5] = 0
			return f
		}, ErrUnknownVersion},
		{"trailing byte", func(t *testing.T) []byte {
			return withLength(append(vectorByName(t, "key_request_decrypt"), 0))
		}, ErrTrailingBytes},
		{"trailing byte after key", func(t *testing.T) []byte {
			return withLength(append(vectorByName(t, "key_response_256"), 0))
		}, ErrTrailingBytes},
		{"trailing byte on empty message", func(t *testing.T) []byte {
			return withLength(append(vectorByName(t, "ok"), 0))
		}, ErrTrailingBytes},
		{"body shorter than fields", func(t *testing.T) []byte {
			f := vectorByName(t, "key_request_decrypt")
			return withLength(f[:len(f)-1])
		}, ErrTruncated},
		{"key shorter than key_len", func(t *testing.T) []byte {
			f := vectorByName(t, "key_response_256")
			return withLength(f[:len(f)-1])
		}, ErrTruncated},
		{"bad op", func(t *testing.T) []byte {
			f := vectorByName(t, "key_request_decrypt")
			f[6] = 3
			return f
		}, ErrMalformed},
		{"bad bits", func(t *testing.T) []byte {
			f := vectorByName(t, "key_request_decrypt")
			f[8] = 0x80 // 256 -> 384
			return f
		}, ErrMalformed},
		{"bad key_len", func(t *testing.T) []byte {
			f := vectorByName(t, "key_response_256")
			off := HeaderSize + 1 + 4 + 2 + len("payroll:employees.ssn")
			binary.BigEndian.PutUint16(f[off:], 16)
			return f
		}, ErrMalformed},
		{"key version zero", func(t *testing.T) []byte {
			f := vectorByName(t, "key_response_256")
			binary.BigEndian.PutUint32(f[6:], 0)
			return f
		}, ErrMalformed},
		{"empty scope", func(*testing.T) []byte {
			return withLength([]byte{0, 0, 0, 0, 1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		}, ErrMalformed},
		{"invalid utf8 scope", func(t *testing.T) []byte {
			f := vectorByName(t, "key_request_decrypt")
			f[HeaderSize+1+1+2+4+2] = 0xff
			return f
		}, ErrMalformed},
		{"string over MaxStringLen", func(*testing.T) []byte {
			body := []byte{1, 5}
			body = binary.BigEndian.AppendUint16(body, MaxStringLen+1)
			body = append(body, bytes.Repeat([]byte("a"), MaxStringLen+1)...)
			return withLength(append([]byte{0, 0, 0, 0, byte(TypeErrorResponse)}, body...))
		}, ErrMalformed},
		{"bad error code", func(t *testing.T) []byte {
			f := vectorByName(t, "error_bad_request")
			f[6] = 9
			return f
		}, ErrMalformed},
		{"status count lies", func(*testing.T) []byte {
			return withLength([]byte{0, 0, 0, 0, byte(TypeStatusResponse), 1, 0xff, 0xff})
		}, ErrMalformed},
		{"status count too high for body", func(*testing.T) []byte {
			return withLength([]byte{0, 0, 0, 0, byte(TypeStatusResponse), 1, 0, 5, 0, 1, 'a', 0, 0})
		}, ErrTruncated},
		{"bytes length past the end", func(t *testing.T) []byte {
			f := vectorByName(t, "hsm_decrypt_response")
			binary.BigEndian.PutUint32(f[6:], 0xffffffff)
			return f
		}, ErrTruncated},
		{"stream ends in header", func(t *testing.T) []byte { return vectorByName(t, "ok")[:3] }, io.ErrUnexpectedEOF},
		{"stream ends in body", func(t *testing.T) []byte {
			f := vectorByName(t, "key_request_decrypt")
			return f[:len(f)-2]
		}, io.ErrUnexpectedEOF},
		{"stream ends in key", func(t *testing.T) []byte {
			f := vectorByName(t, "key_response_512")
			return f[:len(f)-10]
		}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.frame(t)
			r := NewReader(bytes.NewReader(frame), Options{})
			_, err := r.Recv()
			if !errors.Is(err, tt.want) {
				t.Fatalf("Recv error = %v, want %v", err, tt.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError", err)
			}
			// Sticky: the stream is out of step.
			if _, err2 := r.Next(); err2 == nil || err2 == io.EOF {
				t.Fatalf("Next after a failed frame = %v", err2)
			}
			// The same body through Message.Decode fails the same way
			// (stream-level failures aside).
			if tt.want == io.ErrUnexpectedEOF || errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrUnknownType) || len(frame) < HeaderSize+1 {
				return
			}
			if m := New(Type(frame[4])); m != nil {
				if err := m.Decode(bytes.Clone(frame[HeaderSize:])); !errors.Is(err, tt.want) {
					t.Fatalf("Decode error = %v, want %v", err, tt.want)
				}
			}
		})
	}
}

// TestTruncatedEverywhere cuts every vector's body at every length.
func TestTruncatedEverywhere(t *testing.T) {
	for _, v := range loadVectors(t) {
		body := v.frame[HeaderSize:]
		for n := 0; n < len(body); n++ {
			m := New(Type(v.frame[4]))
			err := m.Decode(bytes.Clone(body[:n]))
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut to %d bytes: %v", v.name, n, err)
			}
			// And as a stream that ends early.
			r := NewReader(bytes.NewReader(v.frame[:HeaderSize+n]), Options{})
			if _, err := r.Recv(); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%s: stream cut after %d body bytes: %v", v.name, n, err)
			}
		}
	}
}

// TestLyingLengthAllocatesLittle: a header announcing a large frame costs
// memory only as the bytes arrive.
func TestLyingLengthAllocatesLittle(t *testing.T) {
	frame := []byte{0, 0x10, 0, 0, byte(TypeHSMDecryptResponse), 1} // MaxFrameSize, 1 body byte sent
	r := NewReader(bytes.NewReader(frame), Options{})
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Next = %v", err)
	}
	if len(r.buf) > 2*initialBuffer {
		t.Fatalf("buffer grew to %d bytes for a 6-byte input", len(r.buf))
	}
	allocs := testing.AllocsPerRun(50, func() {
		r := NewReader(bytes.NewReader(frame), Options{})
		_, _ = r.Next()
	})
	if allocs > 8 {
		t.Fatalf("%v allocations for a lying header", allocs)
	}
}

func TestMaxFrameOption(t *testing.T) {
	f := (&HSMDecryptResponse{Plaintext: make([]byte, 1000)}).mustEncode(t)
	if _, err := NewReader(bytes.NewReader(f), Options{MaxFrame: 512}).Recv(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("1000-byte frame with a 512 cap: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(f), Options{MaxFrame: 2048}).Recv(); err != nil {
		t.Fatalf("1000-byte frame with a 2048 cap: %v", err)
	}
}

func (m *HSMDecryptResponse) mustEncode(t *testing.T) []byte {
	t.Helper()
	b, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLargeFrames(t *testing.T) {
	// The largest HSMDecryptResponse that fits: frame length = MaxFrameSize.
	n := MaxFrameSize - 1 - 1 - 4
	big := &HSMDecryptResponse{Plaintext: bytes.Repeat([]byte{0xab}, n)}
	f, err := big.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(f); got != MaxFrameSize {
		t.Fatalf("length %d", got)
	}
	r := NewReader(iotest.HalfReader(bytes.NewReader(f)), Options{})
	m, err := r.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.(*HSMDecryptResponse).Plaintext, big.Plaintext) {
		t.Fatal("plaintext differs")
	}
	if r.buf != nil {
		t.Fatalf("a %d-byte buffer was kept after a large frame", len(r.buf))
	}
	big.Plaintext = append(big.Plaintext, 0)
	if _, err := big.Encode(nil); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("one byte over the cap: %v", err)
	}
}

func TestEncodeInvalid(t *testing.T) {
	k16 := testKey(t, 0, 16)
	k32 := testKey(t, 0, 32)
	long := strings.Repeat("a", MaxStringLen+1)
	tests := []struct {
		name string
		m    Message
	}{
		{"key request no op", &KeyRequest{Scope: "a:b", Bits: 256}},
		{"key request bad bits", &KeyRequest{Op: OpDecrypt, Scope: "a:b", Bits: 128}},
		{"key request empty scope", &KeyRequest{Op: OpDecrypt, Bits: 256}},
		{"key request long scope", &KeyRequest{Op: OpDecrypt, Scope: long, Bits: 256}},
		{"key request invalid utf8", &KeyRequest{Op: OpDecrypt, Scope: "a:\xff", Bits: 256}},
		{"key response no key", &KeyResponse{Scope: "a:b", Version: 1}},
		{"key response 16-byte key", &KeyResponse{Scope: "a:b", Version: 1, Key: k16}},
		{"key response version 0", &KeyResponse{Scope: "a:b", Key: k32}},
		{"key response empty scope", &KeyResponse{Version: 1, Key: k32}},
		{"hsm encrypt empty scope", &HSMEncryptRequest{}},
		{"hsm encrypt response version 0", &HSMEncryptResponse{}},
		{"status empty name", &StatusResponse{Fields: []StatusField{{"", "x"}}}},
		{"status too many", &StatusResponse{Fields: make([]StatusField, MaxStatusFields+1)}},
		{"error code 0", &ErrorResponse{}},
		{"error code 6", &ErrorResponse{Code: 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("prefix")
			out, err := tt.m.Encode(dst)
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("Encode error = %v, want ErrInvalidMessage", err)
			}
			if string(out) != "prefix" {
				t.Fatalf("Encode left %d bytes after a failure", len(out)-len(dst))
			}
		})
	}
	destroyed := testKey(t, 0, 32)
	destroyed.Destroy()
	if _, err := (&KeyResponse{Scope: "a:b", Version: 1, Key: destroyed}).Encode(nil); !errors.Is(err, memsafe.ErrDestroyed) {
		t.Fatalf("destroyed key: %v", err)
	}
}

func TestKeyBytesWiped(t *testing.T) {
	key := pattern(0x11, 32) // a distinctive test pattern
	k := testKey(t, 0x11, 32)
	m := &KeyResponse{Scope: "payroll:employees.ssn", Version: 2, Key: k}

	t.Run("writer buffer", func(t *testing.T) {
		var out bytes.Buffer
		w := NewWriter(&out, Options{})
		if err := w.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(out.Bytes(), key) {
			t.Fatal("frame does not contain the key")
		}
		if bytes.Contains(w.buf[:cap(w.buf)], key) {
			t.Fatal("send buffer still holds the key")
		}
	})
	t.Run("reader buffer", func(t *testing.T) {
		f, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		stream := append(f, vectorByName(t, "ok")...)
		for _, wrap := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.HalfReader, iotest.OneByteReader} {
			r := NewReader(wrap(bytes.NewReader(stream)), Options{})
			got, err := r.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !got.(*KeyResponse).Key.Equal(k) {
				t.Fatal("key differs")
			}
			if bytes.Contains(r.buf, key[:8]) {
				t.Fatal("receive buffer still holds key bytes")
			}
			if _, err := r.Recv(); err != nil { // the OK behind it is intact
				t.Fatal(err)
			}
		}
	})
	t.Run("decode wipes its input", func(t *testing.T) {
		f, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got KeyResponse
		if err := got.Decode(f[HeaderSize:]); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(f, key[:8]) {
			t.Fatal("Decode left the key in its input")
		}
	})
	t.Run("package WriteMsg", func(t *testing.T) {
		var out bytes.Buffer
		if err := WriteMsg(&out, m); err != nil {
			t.Fatal(err)
		}
		p := scratch.Get().(*[]byte)
		defer scratch.Put(p)
		if bytes.Contains((*p)[:cap(*p)], key) {
			t.Fatal("pooled buffer still holds the key")
		}
	})
	t.Run("formatting", func(t *testing.T) {
		for _, s := range []string{sprint("%v", m), sprint("%+v", m), sprint("%#v", m)} {
			if strings.Contains(s, hex.EncodeToString(key[:4])) || strings.Contains(s, string(key[:4])) {
				t.Fatal("formatting a KeyResponse shows key bytes")
			}
			if !strings.Contains(s, memsafe.Redacted) {
				t.Fatalf("formatting lacks %s", memsafe.Redacted)
			}
		}
	})
}

func TestWriteMsgThroughBufio(t *testing.T) {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	if err := WriteMsg(bw, &OK{}); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), vectorByName(t, "ok")) {
		t.Fatalf("got %x", out.Bytes())
	}
}

func TestDecodeTypeMismatch(t *testing.T) {
	r := NewReader(bytes.NewReader(vectorByName(t, "ok")), Options{})
	if err := r.Decode(&OK{}); err == nil {
		t.Fatal("Decode without Next succeeded")
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if err := r.Decode(&KeyRequest{}); err == nil {
		t.Fatal("Decode into the wrong type succeeded")
	}
	if err := r.Decode(&OK{}); err != nil {
		t.Fatalf("Decode into the right type after a mismatch: %v", err)
	}
}

func TestTypeString(t *testing.T) {
	if TypeKeyRequest.String() != "KeyRequest" || Type(0x42).String() != "Type(0x42)" {
		t.Fatal("Type.String")
	}
	if !TypeOK.IsResponse() || TypeKeyRequest.IsResponse() {
		t.Fatal("IsResponse")
	}
	for tp := range typeNames {
		if New(tp) == nil || New(tp).Type() != tp {
			t.Fatalf("New(%s)", tp)
		}
		if tp.IsResponse() != (tp >= 0x80) {
			t.Fatalf("%s: response bit", tp)
		}
	}
	if New(0x42) != nil {
		t.Fatal("New of an unknown type")
	}
}
