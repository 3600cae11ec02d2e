package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/keyward/keyward/memsafe"
)

// Options tune a Reader, Writer or Conn. The zero value is usable: the
// protocol's frame cap and no timeouts.
type Options struct {
	// MaxFrame lowers the frame cap below MaxFrameSize (0: MaxFrameSize).
	// The agent's socket, which never carries HSM payloads larger than a
	// column value, may use a smaller cap.
	MaxFrame int
	// IdleTimeout bounds the wait for the first byte of the next frame
	// (servers: how long an idle client may hold a connection). 0: none.
	IdleTimeout time.Duration
	// FrameTimeout bounds reading the rest of a frame once its first byte
	// arrived, and writing a frame, so a peer that stalls mid-frame cannot
	// hold a goroutine forever. 0: none.
	FrameTimeout time.Duration
	// NewKey moves a key of n bytes from r into locked memory; nil means
	// memsafe.FromReader. A client that cannot afford a fresh guarded
	// allocation per response (memguard maps, locks and guards pages for
	// each) can plug in a pool of locked buffers here. It must read exactly
	// n bytes from r into locked memory and nowhere else.
	NewKey func(r io.Reader, n int) (*memsafe.Key, error)
}

func (o Options) maxFrame() int {
	if o.MaxFrame <= 0 || o.MaxFrame > MaxFrameSize {
		return MaxFrameSize
	}
	return o.MaxFrame
}

// Buffer sizes: small frames (every request, every key) fit in the initial
// buffer; a buffer grown for a large HSM payload is dropped after use so
// that hundreds of idle connections do not each pin a megabyte.
const (
	initialBuffer = 4096
	keepBuffer    = 64 << 10
)

type readDeadliner interface{ SetReadDeadline(time.Time) error }

// Reader reads frames from a stream: Next reads a frame's header, then Decode
// (or Skip) consumes its body. A Reader is not safe for concurrent use.
//
// After any error other than io.EOF from Next, the stream is out of step and
// the connection should be closed.
type Reader struct {
	rd   io.Reader
	dl   readDeadliner // rd, if it can time out
	opts Options
	max  int

	buf  []byte
	r, w int // buffered bytes: buf[r:w]

	typ     Type
	bodyLen int  // body bytes of the current frame (after the type byte)
	pending bool // Next returned and the body is not consumed yet
	err     error

	deadline time.Time // the read deadline currently set on dl
}

// NewReader returns a Reader on rd. If rd has SetReadDeadline (a net.Conn),
// the timeouts of opts apply.
func NewReader(rd io.Reader, opts Options) *Reader {
	r := &Reader{rd: rd, opts: opts, max: opts.maxFrame()}
	if dl, ok := rd.(readDeadliner); ok && (opts.IdleTimeout > 0 || opts.FrameTimeout > 0) {
		r.dl = dl
	}
	return r
}

// setDeadline makes the read deadline fall between d/2 and d from now. Deadlines are coarse on
// purpose: re-arming the runtime timer for every frame is a measurable part of a cache-hit request,
// and a timeout that fires somewhat early is as good a defence against a stalled peer.
func (r *Reader) setDeadline(d time.Duration) error {
	if r.dl == nil || d <= 0 {
		return nil
	}
	now := time.Now()
	if !r.deadline.IsZero() && r.deadline.After(now.Add(d/2)) && !r.deadline.After(now.Add(d)) {
		return nil
	}
	r.deadline = now.Add(d)
	return r.dl.SetReadDeadline(r.deadline)
}

// frameBuffered reports whether the whole next frame is already in the buffer.
func (r *Reader) frameBuffered() bool {
	if r.w-r.r < HeaderSize {
		return false
	}
	length := int64(binary.BigEndian.Uint32(r.buf[r.r:]))
	return int64(r.w-r.r) >= 4+length
}

// fill makes at least n bytes available in buf[r:w], growing the buffer only
// as data arrives and never beyond n (n is at most HeaderSize+max).
func (r *Reader) fill(n int) error {
	for r.w-r.r < n {
		if r.w == len(r.buf) {
			r.makeRoom(n)
		}
		m, err := r.rd.Read(r.buf[r.w:])
		r.w += m
		if r.w-r.r >= n {
			return nil
		}
		if err != nil {
			return err
		}
		if m == 0 {
			return io.ErrNoProgress
		}
	}
	return nil
}

// makeRoom frees space at the end of buf: first by moving the unread bytes
// to the front (wiping where they were), then by growing.
func (r *Reader) makeRoom(n int) {
	if r.r > 0 {
		k := copy(r.buf, r.buf[r.r:r.w])
		clear(r.buf[max(k, r.r):r.w])
		r.w, r.r = k, 0
		if r.w < len(r.buf) {
			return
		}
	}
	size := max(2*len(r.buf), initialBuffer)
	size = min(size, max(n, initialBuffer))
	if size <= len(r.buf) {
		size = len(r.buf) + initialBuffer // cannot happen while n > w; be safe
	}
	nb := make([]byte, size)
	copy(nb, r.buf[:r.w])
	clear(r.buf)
	r.buf = nb
}

// consume marks n buffered bytes read and wipes them.
func (r *Reader) consume(n int) {
	clear(r.buf[r.r : r.r+n])
	r.r += n
	if r.r == r.w {
		r.r, r.w = 0, 0
		if len(r.buf) > keepBuffer {
			r.buf = nil
		}
	}
}

// Next reads the header of the next frame and returns its type. It returns
// io.EOF if the stream ended cleanly between frames. A body left unread by
// the previous call is skipped.
func (r *Reader) Next() (Type, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.pending {
		if err := r.Skip(); err != nil {
			return 0, err
		}
	}
	if r.w == r.r {
		if err := r.setDeadline(r.opts.IdleTimeout); err != nil {
			return 0, r.fail(err)
		}
		if err := r.fill(1); err != nil {
			if err == io.EOF {
				r.err = io.EOF
				return 0, io.EOF
			}
			return 0, r.fail(err)
		}
	}
	// A frame that arrived whole (the usual case) needs no frame deadline: nothing is left to wait for.
	if !r.frameBuffered() {
		if err := r.setDeadline(r.opts.FrameTimeout); err != nil {
			return 0, r.fail(err)
		}
	}
	if err := r.fill(HeaderSize); err != nil {
		return 0, r.fail(eofIsTruncation(err))
	}
	length := binary.BigEndian.Uint32(r.buf[r.r:])
	t := Type(r.buf[r.r+4])
	// The cap is checked here, before any buffer is sized for the frame.
	switch {
	case length < 2:
		return 0, r.fail(&ParseError{Type: t, Offset: -1, Err: ErrMalformed, Detail: fmt.Sprintf("frame length %d (min 2)", length)})
	case int64(length) > int64(r.max):
		return 0, r.fail(&ParseError{Type: t, Offset: -1, Err: ErrFrameTooLarge, Detail: fmt.Sprintf("frame length %d (max %d)", length, r.max)})
	case !t.Known():
		return 0, r.fail(&ParseError{Type: t, Offset: -1, Err: ErrUnknownType})
	}
	r.consume(HeaderSize)
	r.typ, r.bodyLen, r.pending = t, int(length)-1, true
	// A key is streamed into locked memory by Decode; everything else is
	// buffered whole.
	if t != TypeKeyResponse {
		if err := r.fill(r.bodyLen); err != nil {
			return 0, r.fail(eofIsTruncation(err))
		}
	}
	return t, nil
}

func eofIsTruncation(err error) error {
	if err == io.EOF {
		return &ParseError{Offset: -1, Err: io.ErrUnexpectedEOF, Detail: "stream ended inside a frame"}
	}
	return err
}

// fail makes err sticky: the stream is out of step after a failed frame.
func (r *Reader) fail(err error) error {
	var pe *ParseError
	if errors.As(err, &pe) && pe.Type == 0 {
		pe.Type = r.typ
	}
	r.err = err
	r.pending = false
	clear(r.buf)
	return err
}

// Decode decodes the body of the frame returned by the last Next into m,
// whose type must match. Its error is sticky like Next's.
func (r *Reader) Decode(m Message) error {
	if r.err != nil {
		return r.err
	}
	if !r.pending {
		return errors.New("wire: Decode without Next")
	}
	if m.Type() != r.typ {
		return fmt.Errorf("wire: Decode: frame is %s, not %s", r.typ, m.Type())
	}
	if kr, ok := m.(*KeyResponse); ok {
		return r.decodeKey(kr)
	}
	r.pending = false
	err := m.Decode(r.buf[r.r : r.r+r.bodyLen])
	r.consume(r.bodyLen)
	if err != nil {
		return r.fail(err)
	}
	return nil
}

// decodeKey reads the fields before the key from the buffer, then moves the
// key into locked memory: first the key bytes that the last read already
// pulled into the buffer (wiped right after), then the rest straight from the
// stream.
func (r *Reader) decodeKey(m *KeyResponse) error {
	r.pending = false
	const fixed = 1 + 4 + 2 // version, key_version, scope length
	if r.bodyLen < fixed {
		return r.fail(&ParseError{Type: r.typ, Offset: r.bodyLen, Err: ErrTruncated, Detail: "body too short"})
	}
	if err := r.fill(fixed); err != nil {
		return r.fail(eofIsTruncation(err))
	}
	scopeLen := int(binary.BigEndian.Uint16(r.buf[r.r+5:]))
	prefix := fixed + scopeLen + 2
	if prefix > r.bodyLen {
		prefix = r.bodyLen // let keyPrefix report the truncation
	}
	if err := r.fill(prefix); err != nil {
		return r.fail(eofIsTruncation(err))
	}
	d := decoder{b: r.buf[r.r : r.r+prefix], t: TypeKeyResponse}
	sc, ver, keyLen := d.keyPrefix(r.bodyLen)
	if d.err != nil {
		return r.fail(d.err)
	}
	r.consume(prefix)
	newKey := r.opts.NewKey
	if newKey == nil {
		newKey = memsafe.FromReader
	}
	k, err := newKey(&keySource{r: r, n: keyLen}, keyLen)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = &ParseError{Type: r.typ, Offset: prefix, Err: io.ErrUnexpectedEOF, Detail: "stream ended inside the key"}
		}
		return r.fail(err)
	}
	*m = KeyResponse{Scope: sc, Version: ver, Key: k}
	return nil
}

// keySource serves the key's bytes to memsafe.FromReader.
type keySource struct {
	r *Reader
	n int // key bytes not yet served
}

func (s *keySource) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(len(p), s.n)]
	r := s.r
	if r.w > r.r {
		k := copy(p, r.buf[r.r:min(r.w, r.r+len(p))])
		r.consume(k) // wipes the copy in the receive buffer
		s.n -= k
		return k, nil
	}
	// Nothing buffered: read into p, the locked memory, never beyond the key.
	k, err := r.rd.Read(p)
	s.n -= k
	if err == io.EOF && s.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return k, err
}

// Skip discards the body of the current frame, wiping it.
func (r *Reader) Skip() error {
	if !r.pending {
		return nil
	}
	r.pending = false
	left := r.bodyLen
	for left > 0 {
		if r.w == r.r {
			if err := r.fill(1); err != nil {
				return r.fail(eofIsTruncation(err))
			}
		}
		k := min(left, r.w-r.r)
		r.consume(k)
		left -= k
	}
	return nil
}

// Recv reads the next frame into a new message of its type. An
// ErrorResponse is returned as a message, not as an error.
func (r *Reader) Recv() (Message, error) {
	t, err := r.Next()
	if err != nil {
		return nil, err
	}
	m := New(t)
	if err := r.Decode(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Buffered reports how many bytes of following frames are already buffered.
func (r *Reader) Buffered() int { return r.w - r.r }
