package proxy

import (
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/keyward/keyward/colcrypt/pgwire"
)

type nopHooks struct{}

func (nopHooks) Frontend(*FrontendMessage) Verdict { return Pass() }
func (nopHooks) Backend(*BackendMessage) Verdict   { return Pass() }
func (nopHooks) Close()                            {}

// BenchmarkTrackerDataRow is the per-row cost of the hooked path (bookkeeping and a no-op hook) for
// one DataRow of a result.
func BenchmarkTrackerDataRow(b *testing.B) {
	srv := New(Config{})
	ss := &session{srv: srv, sw: pgwire.NewWriter(io.Discard, 0), cw: pgwire.NewWriter(io.Discard, 0)}
	ss.info.params = map[string]string{}
	tr := newTracker(ss, nopHooks{})
	q, _ := (&pgproto3.Query{String: "SELECT * FROM t"}).Encode(nil)
	if err := tr.frontend(pgwire.Message{Type: 'Q', Raw: q}); err != nil {
		b.Fatal(err)
	}
	rd, _ := (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 25}, {Name: []byte("b"), DataTypeOID: 23}}}).Encode(nil)
	tr.backend(pgwire.Message{Type: 'T', Raw: rd})
	row, _ := (&pgproto3.DataRow{Values: [][]byte{[]byte("some text value"), []byte("42")}}).Encode(nil)
	m := pgwire.Message{Type: 'D', Raw: row}
	b.ReportAllocs()
	b.SetBytes(int64(len(row)))
	for b.Loop() {
		tr.backend(m)
		if ss.cw.Buffered() > 32<<10 {
			ss.cw.Flush()
		}
	}
}

// BenchmarkRawFraming is the per-message cost of the fast path: framing and batching.
func BenchmarkRawFraming(b *testing.B) {
	row, _ := (&pgproto3.DataRow{Values: [][]byte{[]byte("some text value"), []byte("42")}}).Encode(nil)
	var stream []byte
	for len(stream) < 1<<20 {
		stream = append(stream, row...)
	}
	src := &loopReader{data: stream}
	r := pgwire.NewReader(src, 0, 0)
	w := pgwire.NewWriter(io.Discard, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(row)))
	for b.Loop() {
		if !r.Pending() {
			w.Flush()
		}
		m, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		w.Write(m.Raw)
	}
}

// loopReader serves data over and over.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}
