package wire

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// FuzzReadFrame feeds arbitrary streams to a Reader. It must never panic,
// never grow its buffer beyond the frame cap, and every frame it accepts
// must be the one canonical encoding of the message it decoded to.
func FuzzReadFrame(f *testing.F) {
	var all []byte
	for _, v := range loadVectors(f) {
		f.Add(v.frame)
		all = append(all, v.frame...)
	}
	f.Add(all)
	f.Add([]byte{0, 0x10, 0, 0, byte(TypeHSMDecryptResponse), 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), Options{})
		pos := 0
		for {
			m, err := r.Recv()
			if len(r.buf) > max(HeaderSize+MaxFrameSize, initialBuffer) {
				t.Fatalf("buffer of %d bytes", len(r.buf))
			}
			if err != nil {
				if err != io.EOF && pos == len(data) {
					t.Fatalf("error %v at the clean end of the stream", err)
				}
				return
			}
			n := HeaderSize - 1 + int(binary.BigEndian.Uint32(data[pos:]))
			frame := data[pos : pos+n]
			pos += n
			// The in-memory decoder must agree with the streaming one.
			m2 := New(m.Type())
			if err := m2.Decode(bytes.Clone(frame[HeaderSize:])); err != nil {
				t.Fatalf("%s: Reader accepted what Decode rejects: %v", m.Type(), err)
			}
			enc2, err := m2.Encode(nil)
			if kr, ok := m2.(*KeyResponse); ok {
				kr.Key.Destroy()
			}
			if err != nil || !bytes.Equal(enc2, frame) {
				t.Fatalf("%s: Decode gives another message than Reader (%v)", m.Type(), err)
			}
			enc, err := m.Encode(nil)
			if kr, ok := m.(*KeyResponse); ok {
				kr.Key.Destroy()
			}
			if err != nil {
				t.Fatalf("decoded %s does not encode: %v", m.Type(), err)
			}
			if !bytes.Equal(enc, frame) {
				t.Fatalf("%s: accepted a non-canonical frame", m.Type())
			}
		}
	})
}
