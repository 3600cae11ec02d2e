// Package luks2test holds test seams for code that writes LUKS2 headers: a writer that fails
// part-way, to prove that an interrupted write leaves the volume openable, and the few cryptsetup
// calls (format an image, test a passphrase) that the tests of LUKS2 users check against.
package luks2test

import (
	"errors"
	"io"
	"sync"
)

// ErrInjected is the error a FailingWriterAt returns once its budget is spent.
var ErrInjected = errors.New("luks2test: injected write failure")

// FailingWriterAt passes writes through to W until Budget bytes have been written in total, then
// writes only what is left of the budget (a torn write) and fails every later write with
// ErrInjected. A negative Budget never fails (it only counts, in Written).
type FailingWriterAt struct {
	W       io.WriterAt
	mu      sync.Mutex
	budget  int64
	written int64
}

var _ io.WriterAt = (*FailingWriterAt)(nil)

// FailAfter returns a writer that fails after n bytes (never if n < 0).
func FailAfter(w io.WriterAt, n int64) *FailingWriterAt {
	return &FailingWriterAt{W: w, budget: n}
}

// WriteAt implements io.WriterAt.
func (f *FailingWriterAt) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.budget < 0 {
		n, err := f.W.WriteAt(p, off)
		f.written += int64(n)
		return n, err
	}
	left := f.budget - f.written
	if left <= 0 {
		return 0, ErrInjected
	}
	if int64(len(p)) <= left {
		n, err := f.W.WriteAt(p, off)
		f.written += int64(n)
		return n, err
	}
	n, err := f.W.WriteAt(p[:left], off)
	f.written += int64(n)
	if err != nil {
		return n, err
	}
	return n, ErrInjected
}

// Written is the number of bytes passed through so far.
func (f *FailingWriterAt) Written() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

// Sync forwards to W when it can sync (an *os.File), so the code under test keeps its barriers.
func (f *FailingWriterAt) Sync() error {
	if s, ok := f.W.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}
