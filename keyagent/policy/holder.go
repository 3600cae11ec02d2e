package policy

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Holder holds the policy in force and replaces it on reload. Readers get
// the current *Policy with one atomic load; a reload that fails validation
// keeps the policy in force.
type Holder struct {
	path string
	cur  atomic.Pointer[Policy]
	mu   sync.Mutex // serializes reloads
}

// NewHolder loads path; it fails if the file is not a valid policy.
func NewHolder(path string) (*Holder, error) {
	p, err := Load(path)
	if err != nil {
		return nil, err
	}
	h := &Holder{path: path}
	h.cur.Store(p)
	return h, nil
}

// Policy returns the policy in force.
func (h *Holder) Policy() *Policy { return h.cur.Load() }

// Path is the file the holder loads.
func (h *Holder) Path() string { return h.path }

// ReloadError is a reload that failed; Kept is the version still in force.
type ReloadError struct {
	Kept string
	Err  error
}

func (e *ReloadError) Error() string {
	return fmt.Sprintf("policy reload failed, keeping version %s: %v", e.Kept, e.Err)
}

func (e *ReloadError) Unwrap() error { return e.Err }

// Reload reads the file again. If it is valid and differs from the policy in
// force, it replaces it and returns changed=true; if it is invalid (or
// unreadable) the policy in force stays and the error is a *ReloadError.
func (h *Holder) Reload() (changed bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.cur.Load()
	p, err := Load(h.path)
	if err != nil {
		return false, &ReloadError{Kept: old.Version(), Err: err}
	}
	if p.Version() == old.Version() {
		return false, nil
	}
	h.cur.Store(p)
	return true, nil
}

// debounce lets an editor finish writing (truncate, write, rename) before a
// reload reads the file.
const debounce = 100 * time.Millisecond

// Watch reloads the policy whenever its file changes, until ctx is done.
// It watches the file's directory, so editors that replace the file by a
// rename and configuration systems that swap a symlink are both seen.
// onEvent, if not nil, is called after every reload attempt that changed
// the policy (err nil) or failed (err a *ReloadError), and for watcher
// errors. Watch returns nil when ctx ends, or an error if watching cannot
// start. SIGHUP is the caller's to wire to Reload.
func (h *Holder) Watch(ctx context.Context, onEvent func(p *Policy, err error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy watch: %w", err)
	}
	defer w.Close()
	dirs := map[string]bool{filepath.Dir(h.path): true}
	if real, err := filepath.EvalSymlinks(h.path); err == nil {
		dirs[filepath.Dir(real)] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("policy watch %s: %w", d, err)
		}
	}
	notify := func(p *Policy, err error) {
		if onEvent != nil {
			onEvent(p, err)
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			// Any change in the directory may be ours (a symlink swap
			// never names the file); Reload is a no-op when the bytes
			// did not change.
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			notify(nil, fmt.Errorf("policy watch: %w", err))
		case <-timer.C:
			changed, err := h.Reload()
			switch {
			case err != nil:
				notify(h.Policy(), err)
			case changed:
				notify(h.Policy(), nil)
			}
		}
	}
}
