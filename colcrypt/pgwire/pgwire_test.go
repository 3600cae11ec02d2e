package pgwire

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"testing/iotest"
)

func msg(typ byte, body string) []byte { return Append(nil, typ, []byte(body)) }

func TestReaderFraming(t *testing.T) {
	stream := bytes.Join([][]byte{msg('Q', "SELECT 1\x00"), msg('S', ""), msg('d', string(bytes.Repeat([]byte("x"), 100000))), msg('X', "")}, nil)
	cases := []struct {
		name string
		src  func() io.Reader
		size int
	}{
		{"whole", func() io.Reader { return bytes.NewReader(stream) }, 0},
		{"byte at a time", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) }, 0},
		{"half reads", func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) }, 16},
		{"tiny buffer", func() io.Reader { return bytes.NewReader(stream) }, 8},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) }, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(tc.src(), tc.size, 0)
			var got []byte
			var types []byte
			for {
				m, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if m.Type != m.Raw[0] || len(m.Body()) != len(m.Raw)-5 {
					t.Fatalf("bad message %q", m.Type)
				}
				types = append(types, m.Type)
				got = append(got, m.Raw...)
			}
			if string(types) != "QSdX" || !bytes.Equal(got, stream) || r.BytesRead() != int64(len(stream)) {
				t.Fatalf("types %q, %d bytes", types, len(got))
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	cases := []struct {
		name  string
		input []byte
		max   int
		want  error
	}{
		{"length below 4", []byte{'Q', 0, 0, 0, 3}, 0, errBadLength},
		{"length above max", []byte{'d', 0, 0, 1, 0}, 100, ErrMessageTooLarge},
		{"negative length", []byte{'d', 0x80, 0, 0, 0}, 0, ErrMessageTooLarge},
		{"truncated body", []byte{'Q', 0, 0, 0, 9, 'a'}, 0, io.ErrUnexpectedEOF},
		{"truncated header", []byte{'Q', 0, 0}, 0, io.ErrUnexpectedEOF},
		{"empty", nil, 0, io.EOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.input), 0, tc.max).Next()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var pe *ParseError
			if (tc.want == errBadLength || tc.want == ErrMessageTooLarge) && !errors.As(err, &pe) {
				t.Fatalf("want *ParseError, got %T", err)
			}
		})
	}
}

func TestReadStartup(t *testing.T) {
	ssl := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	r := NewReader(bytes.NewReader(append(ssl, msg('Q', "x\x00")...)), 0, 0)
	p, err := r.ReadStartup(0)
	if err != nil || !bytes.Equal(p, ssl) {
		t.Fatalf("%x %v", p, err)
	}
	if !r.Pending() {
		t.Fatal("the following message should be pending")
	}
	if err := r.Reset(bytes.NewReader(nil)); err == nil {
		t.Fatal("Reset with buffered bytes must fail (data sent before the TLS handshake)")
	}
	for _, bad := range [][]byte{{0, 0, 0, 7, 1, 2, 3}, {0, 1, 0, 0, 0, 3, 0, 0}} {
		if _, err := NewReader(bytes.NewReader(bad), 0, 0).ReadStartup(0); err == nil {
			t.Fatalf("accepted startup %x", bad)
		}
	}
}

// timeoutReader fails with a deadline error once, then serves the rest.
type timeoutReader struct {
	parts [][]byte
	i     int
}

func (r *timeoutReader) Read(p []byte) (int, error) {
	if r.i >= len(r.parts) {
		return 0, io.EOF
	}
	part := r.parts[r.i]
	r.i++
	if part == nil {
		return 0, os.ErrDeadlineExceeded
	}
	return copy(p, part), nil
}

func TestReaderResumesAfterTimeout(t *testing.T) {
	m := msg('D', "0123456789")
	r := NewReader(&timeoutReader{parts: [][]byte{m[:3], nil, m[3:]}}, 0, 0)
	if _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("want deadline error, got %v", err)
	}
	got, err := r.Next()
	if err != nil || !bytes.Equal(got.Raw, m) {
		t.Fatalf("after timeout: %q %v", got.Raw, err)
	}
}

type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) { w.writes++; return w.Buffer.Write(p) }

func TestWriterBatches(t *testing.T) {
	var dst countingWriter
	w := NewWriter(&dst, 64)
	for i := 0; i < 5; i++ {
		w.Write(msg('D', "abc"))
	}
	if dst.writes != 0 {
		t.Fatalf("%d writes before Flush", dst.writes)
	}
	w.Flush()
	if dst.writes != 1 || dst.Len() != 40 {
		t.Fatalf("writes %d, %d bytes", dst.writes, dst.Len())
	}
	big := msg('d', string(bytes.Repeat([]byte("y"), 1000)))
	w.Write(msg('D', "abc"))
	w.Write(big) // flushes the small one, then goes straight through
	if dst.writes != 3 || w.Buffered() != 0 || !bytes.HasSuffix(dst.Bytes(), big) || w.BytesWritten() != int64(dst.Len()) {
		t.Fatalf("writes %d buffered %d", dst.writes, w.Buffered())
	}
}

func FuzzReader(f *testing.F) {
	f.Add(bytes.Join([][]byte{msg('Q', "SELECT 1\x00"), msg('S', "")}, nil), 16)
	f.Add([]byte{'Q', 0, 0, 0, 3}, 0)
	f.Add([]byte{'d', 0x7f, 0xff, 0xff, 0xff, 1, 2}, 8)
	f.Add([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}, 4)
	f.Fuzz(func(t *testing.T, data []byte, size int) {
		r := NewReader(bytes.NewReader(data), size%1024, 1<<16)
		if len(data) > 0 && data[0] == 0 {
			r.ReadStartup(0)
		}
		total := 0
		for i := 0; i < 1000; i++ {
			m, err := r.Next()
			if err != nil {
				break
			}
			if len(m.Raw) < 5 || int(uint32(m.Raw[1])<<24|uint32(m.Raw[2])<<16|uint32(m.Raw[3])<<8|uint32(m.Raw[4]))+1 != len(m.Raw) {
				t.Fatalf("inconsistent message %x", m.Raw)
			}
			total += len(m.Raw)
		}
		if total > len(data) {
			t.Fatal("returned more bytes than were read")
		}
	})
}
