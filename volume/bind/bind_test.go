package bind

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/testenv"
	"github.com/keyward/keyward/volume/luks2"
	"github.com/keyward/keyward/volume/luks2/luks2test"
)

// TestPassphraseVectors pins the derivation to testdata/passphrase-vectors.json, computed
// independently with Python's hmac module.
func TestPassphraseVectors(t *testing.T) {
	data, err := os.ReadFile("testdata/passphrase-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []struct {
			Name       string `json:"name"`
			DataKeyHex string `json:"data_key_hex"`
			UUID       string `json:"uuid"`
			Passphrase string `json:"passphrase"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range file.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			kb, err := hex.DecodeString(v.DataKeyHex)
			if err != nil || len(kb) != 32 {
				t.Fatal(err)
			}
			dk := keyOf(t, func(b []byte) { copy(b, kb) })
			p, err := Passphrase(dk, v.UUID)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Destroy()
			_ = p.Use(func(b []byte) error {
				if string(b) != v.Passphrase {
					t.Errorf("passphrase does not match the vector") // no key material in failure messages
				}
				return nil
			})
		})
	}
	for _, tc := range []struct {
		name string
		uuid string
		key  *memsafe.Key
	}{
		{"empty uuid", "", keyOfLen(t, 32)},
		{"short key", "u", keyOfLen(t, 16)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Passphrase(tc.key, tc.uuid); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func keyOf(t testing.TB, fill func([]byte)) *memsafe.Key {
	b := make([]byte, 32)
	fill(b)
	k, err := memsafe.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

func keyOfLen(t testing.TB, n int) *memsafe.Key {
	k, err := memsafe.NewRandom(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

// staticKeys is a key source with fixed random keys per (scope, version): the agent itself is
// exercised by the CLI tests; here the subject is the LUKS2 side, checked against real cryptsetup.
type staticKeys struct {
	mu     sync.Mutex
	keys   map[string][]byte // "scope@version"
	newest map[string]uint32
	denied map[string]bool
}

func newStaticKeys() *staticKeys {
	return &staticKeys{keys: map[string][]byte{}, newest: map[string]uint32{}, denied: map[string]bool{}}
}

func (s *staticKeys) rotate(scope string) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.newest[scope]++
	b := make([]byte, 32)
	rand.Read(b)
	s.keys[fmt.Sprintf("%s@%d", scope, s.newest[scope])] = b
	return s.newest[scope]
}

func (s *staticKeys) GetKey(_ context.Context, scope string, version uint32, _ string) (*memsafe.Key, uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied[scope] {
		return nil, 0, fmt.Errorf("%w: no grant", client.ErrDenied)
	}
	if version == 0 {
		version = s.newest[scope]
	}
	b, ok := s.keys[fmt.Sprintf("%s@%d", scope, version)]
	if !ok {
		return nil, 0, fmt.Errorf("%w: no such key", client.ErrNotFound)
	}
	k, err := memsafe.FromBytes(bytes.Clone(b))
	return k, version, err
}

type image struct {
	t    testing.TB
	cs   string
	path string
	dir  string
}

const recovery = "recovery passphrase"

// newImage makes a LUKS2 image with real cryptsetup, its keyslot 0 opening with recovery.
func newImage(t testing.TB) *image {
	t.Helper()
	im := &image{t: t, cs: testenv.Require(t, "cryptsetup"), dir: t.TempDir()}
	im.path = filepath.Join(im.dir, "disk.img")
	luks2test.Format(t, im.cs, im.path, recovery)
	return im
}

// testPassphrase is `cryptsetup open --test-passphrase --key-slot N`.
func (im *image) testPassphrase(pass string, slot int) error {
	return luks2test.TestPassphrase(im.cs, im.path, pass, slot)
}

func (im *image) clone(t testing.TB) *image {
	c := *im
	c.t, c.dir = t, t.TempDir()
	c.path = filepath.Join(c.dir, "disk.img")
	b, err := os.ReadFile(im.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return &c
}

// derived computes the passphrase the binding should have, independently of Enroll.
func derived(t testing.TB, keys *staticKeys, im *image, scope string, version uint32) string {
	t.Helper()
	f, err := os.Open(im.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := luks2.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	dk, _, err := keys.GetKey(context.Background(), scope, version, "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Passphrase(dk, v.UUID())
	if err != nil {
		t.Fatal(err)
	}
	var s string
	_ = p.Use(func(b []byte) error { s = string(b); return nil })
	return s
}

func secret(t testing.TB, s string) *memsafe.Key {
	k, err := memsafe.FromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

const scope = "boot:volume/test/data"

func TestEnrollUnlockRotate(t *testing.T) {
	ctx := context.Background()
	keys := newStaticKeys()
	keys.rotate(scope)
	im := newImage(t)
	bdir := filepath.Join(im.dir, "backups")

	e, err := Enroll(ctx, im.path, keys, EnrollOptions{Scope: scope, Existing: secret(t, recovery), BackupDir: bdir})
	if err != nil {
		t.Fatal(err)
	}
	if e.Keyslot != 1 || e.Version != 1 || e.Backup == "" {
		t.Fatalf("enrollment %+v", e)
	}
	if fi, err := os.Stat(e.Backup); err != nil || fi.Size() != 32<<10+1<<20 {
		t.Fatalf("backup %v %v", fi, err)
	}
	// The real cryptsetup opens our keyslot with the independently derived passphrase, and the
	// recovery keyslot is untouched.
	if err := im.testPassphrase(derived(t, keys, im, scope, 1), e.Keyslot); err != nil {
		t.Fatalf("cryptsetup on the keyward keyslot: %v", err)
	}
	if err := im.testPassphrase(recovery, 0); err != nil {
		t.Fatalf("recovery keyslot: %v", err)
	}
	for _, cs := range []string{"", im.cs} {
		u, err := Unlock(ctx, im.path, keys, UnlockOptions{Test: true, Cryptsetup: cs})
		if err != nil {
			t.Fatalf("unlock --test (cryptsetup %q): %v", cs, err)
		}
		if u.Keyslot != e.Keyslot || u.Token != e.Token || u.Mapper != "" {
			t.Fatalf("unlocked %+v", u)
		}
	}

	// A second enrollment for the same scope is refused; Rotate is the way.
	if _, err := Enroll(ctx, im.path, keys, EnrollOptions{Scope: scope, Existing: secret(t, recovery), BackupDir: bdir}); !errors.Is(err, ErrEnrolled) {
		t.Fatalf("second enroll: %v", err)
	}

	// Rotation with nothing new to do is a no-op.
	r, err := Rotate(ctx, im.path, keys, RotateOptions{BackupDir: bdir})
	if err != nil || r.Added || len(r.Removed) != 0 || r.Backup != "" {
		t.Fatalf("no-op rotate: %+v %v", r, err)
	}
	keys.rotate(scope)
	r, err = Rotate(ctx, im.path, keys, RotateOptions{BackupDir: bdir})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Added || r.Current.Version != 2 || len(r.Removed) != 1 || r.Removed[0].Keyslot != 1 {
		t.Fatalf("rotation %+v", r)
	}
	if err := im.testPassphrase(derived(t, keys, im, scope, 2), r.Current.Keyslot); err != nil {
		t.Fatalf("cryptsetup on the rotated keyslot: %v", err)
	}
	if err := im.testPassphrase(derived(t, keys, im, scope, 1), 1); err == nil {
		t.Fatal("the old keyslot still opens")
	}
	u, err := Unlock(ctx, im.path, keys, UnlockOptions{Test: true})
	if err != nil || u.Version != 2 {
		t.Fatalf("unlock after rotate: %+v %v", u, err)
	}
	f, _ := os.Open(im.path)
	v, err := luks2.Open(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if toks, _ := v.KeywardTokens(); len(toks) != 1 || len(v.Metadata().Keyslots) != 2 {
		t.Fatalf("after rotate: tokens %v keyslots %v", toks, v.Metadata().SortedKeyslots())
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	keys := newStaticKeys()
	keys.rotate(scope)
	keys.rotate("boot:volume/other")
	base := newImage(t)
	enrolled := base.clone(t)
	if _, err := Enroll(ctx, enrolled.path, keys, EnrollOptions{Scope: scope, Existing: secret(t, recovery), BackupDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	// A token moved to the recovery keyslot: the derived passphrase would open keyslot 1, but Unlock
	// must try only the keyslot the token names.
	moved := enrolled.clone(t)
	func() {
		fh, err := os.OpenFile(moved.path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		v, err := luks2.Open(fh)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.RemoveToken(fh, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := v.AddToken(fh, []byte(`{"type":"keyward","keyslots":["0"],"scope":"`+scope+`","version":1}`)); err != nil {
			t.Fatal(err)
		}
	}()
	notLUKS := filepath.Join(t.TempDir(), "plain.img")
	os.WriteFile(notLUKS, make([]byte, 1<<20), 0o600)

	wrongKeys := newStaticKeys() // same scope and version, another key
	wrongKeys.rotate(scope)
	denied := newStaticKeys()
	denied.denied[scope] = true

	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"unlock not luks2", func() error {
			_, err := Unlock(ctx, notLUKS, keys, UnlockOptions{Test: true})
			return err
		}, luks2.ErrNotLUKS2},
		{"unlock no token", func() error {
			_, err := Unlock(ctx, base.path, keys, UnlockOptions{Test: true})
			return err
		}, ErrNoToken},
		{"unlock wrong key", func() error {
			_, err := Unlock(ctx, enrolled.path, wrongKeys, UnlockOptions{Test: true})
			return err
		}, ErrWrongKey},
		{"unlock wrong key cryptsetup", func() error {
			_, err := Unlock(ctx, enrolled.path, wrongKeys, UnlockOptions{Test: true, Cryptsetup: base.cs})
			return err
		}, ErrWrongKey},
		{"unlock only the named keyslot", func() error {
			_, err := Unlock(ctx, moved.path, keys, UnlockOptions{Test: true})
			return err
		}, ErrWrongKey},
		{"unlock denied", func() error {
			_, err := Unlock(ctx, enrolled.path, denied, UnlockOptions{Test: true})
			return err
		}, client.ErrDenied},
		{"unlock agent unreachable", func() error {
			_, err := Unlock(ctx, enrolled.path, Agent(filepath.Join(t.TempDir(), "none.sock")), UnlockOptions{Test: true})
			return err
		}, client.ErrUnavailable},
		{"enroll denied", func() error {
			_, err := Enroll(ctx, base.clone(t).path, denied, EnrollOptions{Scope: scope, Existing: secret(t, recovery), BackupDir: t.TempDir()})
			return err
		}, client.ErrDenied},
		{"enroll wrong recovery", func() error {
			_, err := Enroll(ctx, base.clone(t).path, keys, EnrollOptions{Scope: scope, Existing: secret(t, "nope"), BackupDir: t.TempDir()})
			return err
		}, ErrRecovery},
		{"rotate no token", func() error {
			_, err := Rotate(ctx, base.path, keys, RotateOptions{BackupDir: t.TempDir()})
			return err
		}, ErrNoToken},
		{"rotate other scope", func() error {
			_, err := Rotate(ctx, enrolled.path, keys, RotateOptions{Scope: "boot:volume/other", BackupDir: t.TempDir()})
			return err
		}, ErrNoToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestInterruptedWrites cuts enroll and rotate at many points and checks, with the real cryptsetup,
// that the volume still opens with what opened it before.
func TestInterruptedWrites(t *testing.T) {
	ctx := context.Background()
	keys := newStaticKeys()
	keys.rotate(scope)
	base := newImage(t)

	// Measure a full enroll, then cut inside each step (area, secondary copy, primary copy).
	probe := base.clone(t)
	var counter *luks2test.FailingWriterAt
	o := EnrollOptions{Scope: scope, Existing: secret(t, recovery), BackupDir: t.TempDir(),
		wrap: func(w io.WriterAt) io.WriterAt { counter = luks2test.FailAfter(w, -1); return counter }}
	if _, err := Enroll(ctx, probe.path, keys, o); err != nil {
		t.Fatal(err)
	}
	total := counter.Written()
	for _, cut := range []int64{0, 1, total / 3, total - 32<<10, total - 16<<10 - 1, total - 16<<10, total - 1} {
		t.Run("enroll-cut-"+strconv.FormatInt(cut, 10), func(t *testing.T) {
			t.Parallel() // each run has its own copy of the image
			im := base.clone(t)
			o := o
			o.wrap = func(w io.WriterAt) io.WriterAt { return luks2test.FailAfter(w, cut) }
			_, err := Enroll(ctx, im.path, keys, o)
			if !errors.Is(err, luks2test.ErrInjected) {
				t.Fatalf("got %v, want the injected failure", err)
			}
			if !strings.Contains(err.Error(), "header backup in "+o.BackupDir) {
				t.Fatalf("the error does not name the backup: %v", err)
			}
			if err := im.testPassphrase(recovery, 0); err != nil {
				t.Fatalf("recovery passphrase no longer opens: %v", err)
			}
		})
	}

	// Rotation cut part-way: the volume opens with the keyward key (old or new) and recovery, and a
	// second Rotate finishes the job.
	enrolled := base.clone(t)
	if _, err := Enroll(ctx, enrolled.path, keys, EnrollOptions{Scope: scope, Existing: secret(t, recovery), BackupDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	keys.rotate(scope)
	// One failing writer per run, shared by every write of that run (add, then remove).
	once := func(budget int64) (writerWrap, func() int64) {
		var fw *luks2test.FailingWriterAt
		return func(w io.WriterAt) io.WriterAt {
				if fw == nil {
					fw = luks2test.FailAfter(w, budget)
				}
				return fw
			}, func() int64 {
				return fw.Written()
			}
	}
	wrap, written := once(-1)
	if _, err := Rotate(ctx, enrolled.clone(t).path, keys, RotateOptions{BackupDir: t.TempDir(), wrap: wrap}); err != nil {
		t.Fatal(err)
	}
	total = written()
	const hdrs = 2 * 16 << 10
	add := total - hdrs - (total-2*hdrs)/2 // area + both copies; the removal writes both copies then wipes an area
	for _, cut := range []int64{0, add / 2, add - hdrs/2, add - 1, add, add + 1, add + hdrs/2, add + hdrs, add + hdrs + 1000, total - 1} {
		t.Run("rotate-cut-"+strconv.FormatInt(cut, 10), func(t *testing.T) {
			t.Parallel()
			im := enrolled.clone(t)
			wrap, _ := once(cut)
			_, err := Rotate(ctx, im.path, keys, RotateOptions{BackupDir: t.TempDir(), wrap: wrap})
			if !errors.Is(err, luks2test.ErrInjected) {
				t.Fatalf("got %v, want the injected failure", err)
			}
			if err := im.testPassphrase(recovery, 0); err != nil {
				t.Fatalf("recovery passphrase no longer opens: %v", err)
			}
			if _, err := Unlock(ctx, im.path, keys, UnlockOptions{Test: true, Cryptsetup: im.cs}); err != nil {
				t.Fatalf("unlock after a cut rotation: %v", err)
			}
			r, err := Rotate(ctx, im.path, keys, RotateOptions{BackupDir: t.TempDir()})
			if err != nil || r.Current.Version != 2 {
				t.Fatalf("finishing the rotation: %+v %v", r, err)
			}
			if u, err := Unlock(ctx, im.path, keys, UnlockOptions{Test: true, Cryptsetup: im.cs}); err != nil || u.Version != 2 {
				t.Fatalf("unlock after finishing: %+v %v", u, err)
			}
		})
	}
}
