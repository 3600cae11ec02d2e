package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	policyA = "version: 1\nprincipals:\n  a: {uid: 1}\nroles:\n  r: {grants: [{scopes: [\"k:*\"], ops: [decrypt]}]}\nmembers:\n  a: [r]\n"
	policyB = "version: 1\nprincipals:\n  a: {uid: 2}\nroles:\n  r: {grants: [{scopes: [\"k:*\"], ops: [decrypt]}]}\nmembers:\n  a: [r]\n"
	invalid = "version: 1\nprincipals:\n  a: {uid: 1, bogus: true}\n"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write then rename, as editors and config managers do.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func allowsUID(p *Policy, uid uint32) bool {
	return p.Decide(Request{Caller: Caller{UID: uid}, Scope: "k:x", Op: OpDecrypt}).Allowed
}

func TestHolderReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyA)
	h, err := NewHolder(path)
	if err != nil {
		t.Fatal(err)
	}
	v1 := h.Policy().Version()
	if !allowsUID(h.Policy(), 1) {
		t.Fatal("policy A not in force")
	}

	if changed, err := h.Reload(); err != nil || changed {
		t.Fatalf("reload of the same file: changed=%v err=%v", changed, err)
	}

	writeFile(t, path, invalid)
	changed, err := h.Reload()
	var re *ReloadError
	if !errors.As(err, &re) || changed {
		t.Fatalf("reload of a bad file: changed=%v err=%v", changed, err)
	}
	if re.Kept != v1 || !strings.Contains(err.Error(), "keeping version "+v1) || !strings.Contains(err.Error(), `key "principals.a.bogus"`) {
		t.Fatalf("reload error: %v", err)
	}
	if h.Policy().Version() != v1 || !allowsUID(h.Policy(), 1) {
		t.Fatal("a bad reload replaced the policy")
	}

	os.Remove(path)
	if _, err := h.Reload(); !errors.As(err, &re) || !allowsUID(h.Policy(), 1) {
		t.Fatalf("reload of a missing file: %v", err)
	}

	writeFile(t, path, policyB)
	if changed, err := h.Reload(); err != nil || !changed {
		t.Fatalf("reload of a new file: changed=%v err=%v", changed, err)
	}
	if allowsUID(h.Policy(), 1) || !allowsUID(h.Policy(), 2) {
		t.Fatal("policy B not in force")
	}
}

func TestNewHolderRejectsBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, invalid)
	if _, err := NewHolder(path); err == nil {
		t.Fatal("NewHolder accepted an invalid file")
	}
}

type events struct {
	mu  sync.Mutex
	got []error
	ch  chan struct{}
}

func (e *events) on(_ *Policy, err error) {
	e.mu.Lock()
	e.got = append(e.got, err)
	e.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
	default:
	}
}

func (e *events) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-e.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no reload within 5s")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.got[len(e.got)-1]
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, policyA)
	h, err := NewHolder(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ev := &events{ch: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { done <- h.Watch(ctx, ev.on) }()
	time.Sleep(100 * time.Millisecond) // let the watch start

	writeFile(t, path, policyB)
	if err := ev.wait(t); err != nil {
		t.Fatalf("reload after a valid edit: %v", err)
	}
	if !allowsUID(h.Policy(), 2) {
		t.Fatal("edit not applied")
	}

	writeFile(t, path, invalid)
	var re *ReloadError
	if err := ev.wait(t); !errors.As(err, &re) {
		t.Fatalf("reload after a bad edit: %v", err)
	}
	if !allowsUID(h.Policy(), 2) {
		t.Fatal("bad edit replaced the policy")
	}

	// An in-place write (no rename) is seen too.
	if err := os.WriteFile(path, []byte(policyA), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ev.wait(t); err != nil {
		t.Fatalf("reload after an in-place write: %v", err)
	}
	if !allowsUID(h.Policy(), 1) {
		t.Fatal("in-place edit not applied")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not stop")
	}
}

// TestWatchSymlinkSwap: configuration systems (Kubernetes ConfigMaps) swap a
// directory symlink; the policy path itself never changes.
func TestWatchSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"v1": policyA, "v2": policyB} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "policy.yaml"), content)
	}
	if err := os.Symlink("v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink("..data/policy.yaml", path); err != nil {
		t.Fatal(err)
	}
	h, err := NewHolder(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := &events{ch: make(chan struct{}, 1)}
	go h.Watch(ctx, ev.on)
	time.Sleep(100 * time.Millisecond)

	if err := os.Symlink("v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := ev.wait(t); err != nil {
		t.Fatal(err)
	}
	if !allowsUID(h.Policy(), 2) {
		t.Fatal("symlink swap not applied")
	}
}
