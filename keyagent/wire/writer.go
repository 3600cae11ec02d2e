package wire

import (
	"io"
	"net"
	"sync"
	"time"
)

type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// Writer writes frames, one Write call per frame, from a send buffer that
// it reuses and wipes after every frame. A Writer is not safe for concurrent
// use.
type Writer struct {
	wr       io.Writer
	dl       writeDeadliner
	opts     Options
	buf      []byte
	deadline time.Time // the write deadline currently set on dl
}

// NewWriter returns a Writer on wr. If wr has SetWriteDeadline (a net.Conn)
// and opts.FrameTimeout is set, every frame must be written within it.
func NewWriter(wr io.Writer, opts Options) *Writer {
	w := &Writer{wr: wr, opts: opts}
	if dl, ok := wr.(writeDeadliner); ok && opts.FrameTimeout > 0 {
		w.dl = dl
	}
	return w
}

// WriteMsg encodes m and writes it as one frame.
func (w *Writer) WriteMsg(m Message) error {
	b, err := m.Encode(w.buf[:0])
	if err != nil {
		return err
	}
	err = w.write(b)
	clear(b)
	if cap(b) <= keepBuffer {
		w.buf = b[:0]
	} else {
		w.buf = nil
	}
	return err
}

func (w *Writer) write(b []byte) error {
	if w.dl != nil {
		// Coarse, as for reads: a deadline between FrameTimeout/2 and FrameTimeout from now.
		now, d := time.Now(), w.opts.FrameTimeout
		if w.deadline.IsZero() || !w.deadline.After(now.Add(d/2)) || w.deadline.After(now.Add(d)) {
			w.deadline = now.Add(d)
			if err := w.dl.SetWriteDeadline(w.deadline); err != nil {
				return err
			}
		}
	}
	_, err := w.wr.Write(b)
	return err
}

var scratch = sync.Pool{New: func() any { b := make([]byte, 0, initialBuffer); return &b }}

// WriteMsg encodes m and writes it to w in one Write call, from a pooled
// buffer that is wiped afterwards. Prefer a net.Conn or a Writer for w: a
// bufio.Writer keeps its own copy of the frame (a key, for a KeyResponse)
// until it is overwritten.
func WriteMsg(w io.Writer, m Message) error {
	p := scratch.Get().(*[]byte)
	b, err := m.Encode((*p)[:0])
	if err == nil {
		_, err = w.Write(b)
	}
	clear(b)
	if cap(b) <= keepBuffer {
		*p = b[:0]
		scratch.Put(p)
	}
	return err
}

// Conn is a framed connection: a Reader and a Writer on one net.Conn.
type Conn struct {
	*Reader
	*Writer
	nc net.Conn
}

// NewConn wraps nc.
func NewConn(nc net.Conn, opts Options) *Conn {
	return &Conn{Reader: NewReader(nc, opts), Writer: NewWriter(nc, opts), nc: nc}
}

// NetConn returns the underlying connection (for deadlines, peer
// credentials and Close).
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Call sends req and reads the response. An ErrorResponse comes back as its
// Err() (errors.Is ErrDenied, ...), with a nil message.
func (c *Conn) Call(req Message) (Message, error) {
	if err := c.WriteMsg(req); err != nil {
		return nil, err
	}
	m, err := c.Recv()
	if err != nil {
		return nil, err
	}
	if e, ok := m.(*ErrorResponse); ok {
		return nil, e.Err()
	}
	return m, nil
}
