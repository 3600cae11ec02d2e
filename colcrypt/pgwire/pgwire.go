// Package pgwire frames the PostgreSQL v3 protocol as raw bytes, so that a proxy can forward a message
// exactly as it arrived without decoding and re-encoding it.
//
// Wire format (protocol 3.0 and 3.2, "Message Formats" in the PostgreSQL docs):
//
//	startup phase:   int32 length (including itself) | int32 code | body      (no type byte)
//	normal messages: byte type | int32 length (including itself, not the type) | body
//
// A Reader hands out each message as a slice of its own buffer (no copy): the slice is valid until the
// next call to Next or ReadStartup. Reads fill the whole buffer when the kernel has data, so a burst of
// small messages (DataRows, a pipeline) costs one read syscall, and the caller can ask Pending whether a
// complete message is already buffered: a proxy flushes its output just before it would block on input.
//
// Guarantees: a length field outside [4, max] is a *ParseError and nothing is allocated for it; a read
// error (including a deadline) leaves any partial message buffered, so Next can be called again after a
// timeout. Non-guarantees: the package knows nothing about message semantics (which types exist, which
// are legal in which state); that belongs to the caller, which decodes with pgproto3 where it must.
package pgwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Default sizes. 64 KiB covers the common messages and makes a 100k-row result a few hundred reads.
const (
	DefaultBufferSize = 64 << 10
	// DefaultMaxMessage is the largest message accepted by default (Postgres' own limit for a field is 1 GiB).
	DefaultMaxMessage = 1 << 30
	// MaxStartupMessage mirrors Postgres' MAX_STARTUP_PACKET_LENGTH.
	MaxStartupMessage = 10000
)

// ErrMessageTooLarge is wrapped by the *ParseError for a length above the reader's limit.
var ErrMessageTooLarge = errors.New("message too large")

// ParseError reports malformed framing.
type ParseError struct {
	Type   byte // message type, 0 in the startup phase
	Length int64
	Err    error
}

func (e *ParseError) Error() string {
	if e.Type == 0 {
		return fmt.Sprintf("pgwire: startup packet length %d: %v", e.Length, e.Err)
	}
	return fmt.Sprintf("pgwire: message %q length %d: %v", e.Type, e.Length, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

var errBadLength = errors.New("invalid length")

// Message is one framed message. Raw is the whole message as it was on the wire (type byte, length,
// body); it aliases the Reader's buffer and is valid only until the next read.
type Message struct {
	Type byte
	Raw  []byte
}

// Body returns the message body (after the type byte and length).
func (m Message) Body() []byte { return m.Raw[5:] }

// Reader frames messages from an io.Reader.
type Reader struct {
	src        io.Reader
	buf        []byte
	start, end int
	size       int // default buffer size, to shrink back to after a large message
	max        int
	n          int64 // bytes read from src
}

// NewReader returns a Reader with a buffer of size bytes (DefaultBufferSize if <= 0) accepting messages
// up to max bytes (DefaultMaxMessage if <= 0).
func NewReader(src io.Reader, size, max int) *Reader {
	if size <= 0 {
		size = DefaultBufferSize
	}
	if max <= 0 {
		max = DefaultMaxMessage
	}
	return &Reader{src: src, buf: make([]byte, size), size: size, max: max}
}

// Reset points the reader at a new source (for example after a TLS handshake). It fails if bytes are
// still buffered: data that arrived before the handshake must never be treated as if it came inside it.
func (r *Reader) Reset(src io.Reader) error {
	if r.start != r.end {
		return errors.New("pgwire: unencrypted data buffered before the TLS handshake")
	}
	r.src = src
	r.start, r.end = 0, 0
	return nil
}

// Peek returns the next n bytes without consuming them; valid until the next read.
func (r *Reader) Peek(n int) ([]byte, error) {
	if err := r.need(n); err != nil {
		return nil, err
	}
	return r.buf[r.start : r.start+n], nil
}

// TakeBuffered returns a copy of the bytes buffered and not yet returned, and forgets them: the
// caller hands them to another reader (a TLS server reading a handshake the client sent first).
func (r *Reader) TakeBuffered() []byte {
	b := append([]byte(nil), r.buf[r.start:r.end]...)
	r.start, r.end = 0, 0
	return b
}

// Buffered returns the number of bytes buffered and not yet returned.
func (r *Reader) Buffered() int { return r.end - r.start }

// BytesRead returns the number of bytes read from the source so far.
func (r *Reader) BytesRead() int64 { return r.n }

// Pending reports whether a complete message is buffered, i.e. whether Next will return without
// reading from the source.
func (r *Reader) Pending() bool {
	n := r.end - r.start
	if n < 5 {
		return false
	}
	l := int(binary.BigEndian.Uint32(r.buf[r.start+1:]))
	return n >= 1+l && l >= 4
}

// Next returns the next complete message.
func (r *Reader) Next() (Message, error) {
	if err := r.need(5); err != nil {
		return Message{}, err
	}
	typ, l, err := Header(r.buf[r.start:], r.max)
	if err != nil {
		return Message{}, err
	}
	total := l + 1
	if err := r.need(total); err != nil {
		return Message{}, err
	}
	m := Message{Type: typ, Raw: r.buf[r.start : r.start+total : r.start+total]}
	r.start += total
	return m, nil
}

// Header decodes the 5-byte header at the start of b (at least 5 bytes): the type byte and the length
// word, which counts itself and the body but not the type. A length below 4 or above max is a
// *ParseError. Reader.Next checks every message with it; a caller framing a stream itself (the
// proxy's event loop) uses it to apply the same rules.
func Header(b []byte, max int) (typ byte, length int, err error) {
	typ = b[0]
	l := int64(binary.BigEndian.Uint32(b[1:5]))
	switch {
	case l < 4:
		return typ, 0, &ParseError{Type: typ, Length: l, Err: errBadLength}
	case l > int64(max):
		return typ, 0, &ParseError{Type: typ, Length: l, Err: ErrMessageTooLarge}
	}
	return typ, int(l), nil
}

// ReadStartup returns the next startup-phase packet (length-prefixed, no type byte), including its
// length word. max bounds it (MaxStartupMessage if <= 0).
func (r *Reader) ReadStartup(max int) ([]byte, error) {
	if max <= 0 {
		max = MaxStartupMessage
	}
	if err := r.need(4); err != nil {
		return nil, err
	}
	l := int64(binary.BigEndian.Uint32(r.buf[r.start:]))
	if l < 8 || l > int64(max) {
		return nil, &ParseError{Length: l, Err: errBadLength}
	}
	if err := r.need(int(l)); err != nil {
		return nil, err
	}
	p := r.buf[r.start : r.start+int(l) : r.start+int(l)]
	r.start += int(l)
	return p, nil
}

// need makes at least n bytes available at buf[start:].
func (r *Reader) need(n int) error {
	if r.end-r.start >= n {
		return nil
	}
	if r.start == r.end {
		r.start, r.end = 0, 0
		if len(r.buf) > 4*r.size && n <= r.size {
			r.buf = make([]byte, r.size) // give back the memory of a past large message
		}
	}
	if n > len(r.buf) {
		nb := make([]byte, n)
		r.end = copy(nb, r.buf[r.start:r.end])
		r.start = 0
		r.buf = nb
	} else if r.start+n > len(r.buf) {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	for r.end-r.start < n {
		k, err := r.src.Read(r.buf[r.end:])
		r.end += k
		r.n += int64(k)
		if err != nil {
			if r.end-r.start >= n {
				return nil
			}
			if err == io.EOF && r.end != r.start {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// Writer batches messages into one buffer and writes them in one syscall on Flush (or when the
// buffer is full). Large messages are written straight through once the buffer is empty.
type Writer struct {
	dst io.Writer
	buf []byte
	n   int64
	err error
}

// NewWriter returns a Writer with a buffer of size bytes (DefaultBufferSize if <= 0).
func NewWriter(dst io.Writer, size int) *Writer {
	if size <= 0 {
		size = DefaultBufferSize
	}
	return &Writer{dst: dst, buf: make([]byte, 0, size)}
}

// Reset points the writer at a new destination. Buffered bytes are dropped.
func (w *Writer) Reset(dst io.Writer) { w.dst, w.buf, w.err = dst, w.buf[:0], nil }

// Write buffers p (one or more complete messages). It never retains p.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(w.buf)+len(p) > cap(w.buf) {
		if err := w.Flush(); err != nil {
			return 0, err
		}
		if len(p) >= cap(w.buf) {
			n, err := w.dst.Write(p)
			w.n += int64(n)
			if err != nil {
				w.err = err
			}
			return n, err
		}
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// Buffered returns the number of bytes waiting for Flush.
func (w *Writer) Buffered() int { return len(w.buf) }

// BytesWritten returns the number of bytes written to the destination so far.
func (w *Writer) BytesWritten() int64 { return w.n }

// Flush writes the buffered bytes. After a write error every call returns that error.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.dst.Write(w.buf)
	w.n += int64(n)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
	}
	return err
}

// Append appends a message of type typ with the given body to dst, with its length word.
func Append(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+4))
	return append(dst, body...)
}
