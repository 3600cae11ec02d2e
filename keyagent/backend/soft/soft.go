// Package soft is the software key backend: keyrings sealed in one file under a passphrase, for demos and
// small setups without an HSM. It has the same semantics as the PKCS#11 backend (the backendtest contract
// suite runs on both); derive uses crypto/hmac, hsm-aead uses crypto/aes GCM in this process.
//
// # File format, version 1 (integers big-endian)
//
//	offset  size  field
//	0       4     magic "KWKS"
//	4       1     format version, 0x01
//	5       4     Argon2id time (passes, >= 1)
//	9       4     Argon2id memory in KiB (>= 8*threads)
//	13      1     Argon2id threads (>= 1)
//	14      16    salt
//	30      12    AES-GCM nonce (fresh on every write)
//	42      ...   AES-256-GCM(KEK, payload, AAD = bytes 0..42), 16-byte tag at the end
//
// KEK = Argon2id(passphrase, salt, time, memory, threads, 32 bytes); the passphrase is the content of the
// passphrase file with one trailing newline removed. The parameters are in the header so that a file keeps
// opening when the defaults change; a file is never rewritten with other parameters.
//
// payload = uint16 ring count, then per keyring (strictly sorted by name): uint8 name length, name, uint8 kind
// (1 derive, 2 hsm-aead), uint32 version count, then per version (ascending): uint32 number, uint8 state
// (1 active, 2 disabled, 3 destroyed), int64 creation time in Unix nanoseconds, uint8 secret length
// (0 exactly when destroyed), secret; then uint16 length and PKCS#8 DER of the BYOK import RSA key (0 if
// none). Trailing bytes are an error.
//
// # Guarantees
//
//   - Writes are atomic: a temporary file in the same directory is written, fsynced and renamed over the
//     store, then the directory is fsynced. A crash leaves the old or the new store, never a mix.
//   - A file that does not open (wrong passphrase, corruption: one opaque ErrUnseal, as for any AEAD; or a
//     ParseError for a malformed header) is reported and never overwritten.
//   - Secrets are held in memsafe. Processes sharing the file see each other's changes: every operation
//     checks whether the file changed and reloads it, and writers serialize on an flock of <path>.lock.
//
// # Not guaranteed
//
//   - Secrets pass through the Go heap briefly while the file is sealed or opened, and AES/HMAC key
//     schedules and the RSA import key (math/big) live in the heap while used; the buffers we own are wiped.
//   - Protection is only as strong as the passphrase: use a long random one.
package soft

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/backend/internal/kwp"
	"github.com/keyward/keyward/keyagent/kdf"
	"github.com/keyward/keyward/memsafe"
)

// ErrUnseal means the store file did not decrypt: wrong passphrase or a corrupted file.
var ErrUnseal = errors.New("sealed store does not open: wrong passphrase or corrupted file")

// Argon2Params are the Argon2id cost parameters of a new store.
type Argon2Params struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultArgon2 follows RFC 9106's second recommended option (64 MiB, 3 passes).
var DefaultArgon2 = Argon2Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

func (p Argon2Params) check() error {
	if p.Time < 1 || p.Threads < 1 || p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > 4<<20 || p.Time > 1000 {
		return fmt.Errorf("argon2id parameters out of range (time %d, memory %d KiB, threads %d)", p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

// Config configures Open.
type Config struct {
	Path           string // the sealed store; created (empty) when it does not exist
	PassphraseFile string // file holding the passphrase
	// Argon2 applies only when a new store is created; zero means DefaultArgon2. Tests use small values.
	Argon2 Argon2Params
}

// Backend is the software backend.
type Backend struct {
	cfg  Config
	pass *memsafe.Key // kept to re-derive the KEK if another process recreated the file

	mu     sync.Mutex
	closed bool
	hdr    header
	kek    *memsafe.Key
	s      *store
	stat   fileID
}

var _ backend.Backend = (*Backend)(nil)

type store struct {
	rings     map[string]*ring
	importKey *memsafe.Key // PKCS#8 DER
}

type ring struct {
	kind     backend.Kind
	versions []*version
}

type version struct {
	n       int
	state   backend.State
	created time.Time
	secret  *memsafe.Key
	aead    *memsafe.AEAD // hsm-aead only, built on first use
}

func (s *store) names() []string {
	n := make([]string, 0, len(s.rings))
	for k := range s.rings {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func (s *store) destroy() {
	if s == nil {
		return
	}
	for _, r := range s.rings {
		for _, v := range r.versions {
			v.destroy()
		}
	}
	s.importKey.Destroy()
}

func (v *version) destroy() {
	if v.aead != nil {
		v.aead.Destroy()
		v.aead = nil
	}
	v.secret.Destroy()
	v.secret = nil
}

func (r *ring) describe(name string) backend.Keyring {
	k := backend.Keyring{Name: name, Kind: r.kind}
	for _, v := range r.versions {
		k.Versions = append(k.Versions, backend.Version{N: v.n, State: v.state, Created: v.created})
	}
	return k
}

func (r *ring) version(n int) *version {
	for _, v := range r.versions {
		if v.n == n {
			return v
		}
	}
	return nil
}

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st != nil {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id, nil
}

// Open opens (or creates) the sealed store.
func Open(cfg Config) (*Backend, error) {
	if cfg.Path == "" || cfg.PassphraseFile == "" {
		return nil, fmt.Errorf("soft backend: %w: path and passphrase file are required", backend.ErrBadInput)
	}
	if cfg.Argon2 == (Argon2Params{}) {
		cfg.Argon2 = DefaultArgon2
	}
	if err := cfg.Argon2.check(); err != nil {
		return nil, fmt.Errorf("soft backend: %w: %v", backend.ErrBadInput, err)
	}
	pass, err := backend.ReadSecretFile(cfg.PassphraseFile)
	if err != nil {
		return nil, fmt.Errorf("soft backend: passphrase file: %w", err)
	}
	b := &Backend{cfg: cfg, pass: pass}
	unlock, err := b.flock()
	if err != nil {
		pass.Destroy()
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(cfg.Path); errors.Is(err, fs.ErrNotExist) {
		b.hdr.params = cfg.Argon2
		if _, err := rand.Read(b.hdr.salt[:]); err != nil {
			pass.Destroy()
			return nil, err
		}
		if b.kek, err = deriveKEK(pass, b.hdr); err != nil {
			pass.Destroy()
			return nil, err
		}
		b.s = &store{rings: map[string]*ring{}}
		if err := b.writeLocked(); err != nil {
			b.Close()
			return nil, err
		}
		return b, nil
	}
	if err := b.loadLocked(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func deriveKEK(pass *memsafe.Key, h header) (*memsafe.Key, error) {
	var kek *memsafe.Key
	err := pass.Use(func(p []byte) error {
		k := argon2.IDKey(p, h.salt[:], h.params.Time, h.params.MemoryKiB, h.params.Threads, 32)
		var err error
		kek, err = memsafe.FromBytes(k)
		return err
	})
	return kek, err
}

// flock takes the cross-process writer lock.
func (b *Backend) flock() (func(), error) {
	f, err := os.OpenFile(b.cfg.Path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("soft backend: lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("soft backend: lock %s: %w", f.Name(), err)
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

func gcm(kek *memsafe.Key) (cipher.AEAD, error) {
	var a cipher.AEAD
	err := kek.Use(func(k []byte) error {
		blk, err := aes.NewCipher(k)
		if err != nil {
			return err
		}
		a, err = cipher.NewGCM(blk)
		return err
	})
	return a, err
}

// loadLocked reads and opens the file, replacing the in-memory store. On failure the current state is
// kept.
func (b *Backend) loadLocked() error {
	id, err := statID(b.cfg.Path)
	if err != nil {
		return fmt.Errorf("soft backend: %w: %v", backend.ErrUnavailable, err)
	}
	raw, err := os.ReadFile(b.cfg.Path)
	if err != nil {
		return fmt.Errorf("soft backend: %w: %v", backend.ErrUnavailable, err)
	}
	h, err := parseHeader(raw)
	if err != nil {
		return fmt.Errorf("soft backend: %s: %w", b.cfg.Path, err)
	}
	kek := b.kek
	if kek == nil || h.salt != b.hdr.salt || h.params != b.hdr.params {
		if kek, err = deriveKEK(b.pass, h); err != nil {
			return err
		}
	}
	a, err := gcm(kek)
	if err != nil {
		return err
	}
	pt, err := a.Open(nil, h.nonce[:], raw[headerSize:], raw[:headerSize])
	if err != nil {
		if kek != b.kek {
			kek.Destroy()
		}
		return fmt.Errorf("soft backend: %s: %w", b.cfg.Path, ErrUnseal)
	}
	s, err := parsePayload(pt)
	clear(pt)
	if err != nil {
		if kek != b.kek {
			kek.Destroy()
		}
		return fmt.Errorf("soft backend: %s: %w", b.cfg.Path, err)
	}
	if kek != b.kek {
		b.kek.Destroy()
		b.kek = kek
	}
	b.s.destroy()
	b.s, b.hdr, b.stat = s, h, id
	return nil
}

// syncLocked reloads the store if another process changed the file.
func (b *Backend) syncLocked() error {
	if b.closed {
		return fmt.Errorf("soft backend closed: %w", backend.ErrUnavailable)
	}
	id, err := statID(b.cfg.Path)
	if err != nil {
		return fmt.Errorf("soft backend: %w: %v", backend.ErrUnavailable, err)
	}
	if id == b.stat {
		return nil
	}
	return b.loadLocked()
}

// writeLocked seals the in-memory store and replaces the file atomically.
func (b *Backend) writeLocked() error {
	pt, err := marshalPayload(b.s)
	if err != nil {
		return err
	}
	defer clear(pt)
	h := b.hdr
	if _, err := rand.Read(h.nonce[:]); err != nil {
		return err
	}
	a, err := gcm(b.kek)
	if err != nil {
		return err
	}
	hb := h.marshal()
	out := a.Seal(hb, h.nonce[:], pt, hb)
	dir := filepath.Dir(b.cfg.Path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(b.cfg.Path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("soft backend: write store: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(out); err != nil {
		return fmt.Errorf("soft backend: write store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("soft backend: write store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("soft backend: write store: %w", err)
	}
	if err := os.Rename(tmp.Name(), b.cfg.Path); err != nil {
		return fmt.Errorf("soft backend: write store: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("soft backend: sync %s: %w", dir, err)
		}
	}
	b.hdr = h
	b.stat, err = statID(b.cfg.Path)
	return err
}

// mutate runs fn on the current store under both locks and persists the result. fn returns an undo
// function that restores the in-memory state if the write fails.
func (b *Backend) mutate(fn func() (undo func(), err error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("soft backend closed: %w", backend.ErrUnavailable)
	}
	unlock, err := b.flock()
	if err != nil {
		return fmt.Errorf("%w: %v", backend.ErrUnavailable, err)
	}
	defer unlock()
	if err := b.syncLocked(); err != nil {
		return err
	}
	undo, err := fn()
	if err != nil {
		return err
	}
	if err := b.writeLocked(); err != nil {
		undo()
		return fmt.Errorf("%w: %v", backend.ErrUnavailable, err)
	}
	return nil
}

func newVersion(kind backend.Kind, n int, secret *memsafe.Key) (*version, error) {
	if secret == nil {
		var err error
		if secret, err = memsafe.NewRandom(32); err != nil {
			return nil, err
		}
	}
	return &version{n: n, state: backend.StateActive, created: time.Now().UTC().Truncate(time.Second), secret: secret}, nil
}

// CreateKeyring implements backend.Backend.
func (b *Backend) CreateKeyring(ctx context.Context, name string, kind backend.Kind) (backend.Keyring, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.Keyring{}, err
	}
	if _, err := backend.ParseKind(string(kind)); err != nil {
		return backend.Keyring{}, err
	}
	var out backend.Keyring
	err := b.mutate(func() (func(), error) {
		if b.s.rings[name] != nil {
			return nil, fmt.Errorf("keyring %q: %w", name, backend.ErrExists)
		}
		v, err := newVersion(kind, 1, nil)
		if err != nil {
			return nil, err
		}
		r := &ring{kind: kind, versions: []*version{v}}
		b.s.rings[name] = r
		out = r.describe(name)
		return func() { delete(b.s.rings, name); v.destroy() }, nil
	})
	return out, err
}

func (b *Backend) ringLocked(name string) (*ring, error) {
	if err := backend.CheckName(name); err != nil {
		return nil, err
	}
	r := b.s.rings[name]
	if r == nil {
		return nil, fmt.Errorf("keyring %q: %w", name, backend.ErrNotFound)
	}
	return r, nil
}

func (b *Backend) addVersionLocked(name string, secret *memsafe.Key) (backend.Version, func(), error) {
	r, err := b.ringLocked(name)
	if err != nil {
		return backend.Version{}, nil, err
	}
	n := 1
	if len(r.versions) > 0 {
		n = r.versions[len(r.versions)-1].n + 1
	}
	v, err := newVersion(r.kind, n, secret)
	if err != nil {
		return backend.Version{}, nil, err
	}
	r.versions = append(r.versions, v)
	undo := func() { r.versions = r.versions[:len(r.versions)-1]; v.destroy() }
	return backend.Version{N: v.n, State: v.state, Created: v.created}, undo, nil
}

// Rotate implements backend.Backend.
func (b *Backend) Rotate(ctx context.Context, name string) (backend.Version, error) {
	var out backend.Version
	err := b.mutate(func() (func(), error) {
		v, undo, err := b.addVersionLocked(name, nil)
		out = v
		return undo, err
	})
	return out, err
}

// Keyrings implements backend.Backend.
func (b *Backend) Keyrings(ctx context.Context) ([]backend.Keyring, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.syncLocked(); err != nil {
		return nil, err
	}
	out := []backend.Keyring{}
	for _, n := range b.s.names() {
		out = append(out, b.s.rings[n].describe(n))
	}
	return out, nil
}

// Keyring implements backend.Backend.
func (b *Backend) Keyring(ctx context.Context, name string) (backend.Keyring, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.syncLocked(); err != nil {
		return backend.Keyring{}, err
	}
	r, err := b.ringLocked(name)
	if err != nil {
		return backend.Keyring{}, err
	}
	return r.describe(name), nil
}

// SetState implements backend.Backend.
func (b *Backend) SetState(ctx context.Context, name string, n int, s backend.State) error {
	var doomed *version
	err := b.mutate(func() (func(), error) {
		r, err := b.ringLocked(name)
		if err != nil {
			return nil, err
		}
		if _, err := backend.CheckTransition(r.describe(name), n, s); err != nil {
			return nil, err
		}
		v := r.version(n)
		old, sec, aead := v.state, v.secret, v.aead
		v.state = s
		if s == backend.StateDestroyed {
			// The file must not hold the secret; the key itself is wiped once that file is on disk.
			v.secret, v.aead = nil, nil
			doomed = &version{secret: sec, aead: aead}
			return func() { v.state, v.secret, v.aead, doomed = old, sec, aead, nil }, nil
		}
		return func() { v.state = old }, nil
	})
	if doomed != nil {
		doomed.destroy() // users holding the key now get memsafe.ErrDestroyed, reported as not found
	}
	return err
}

// usable returns version material for an operation, resolved under the lock. Secrets are used outside
// the lock: a concurrently destroyed key fails with memsafe.ErrDestroyed, reported as not found.
func (b *Backend) usable(ringName string, n int, forEncrypt bool, kind backend.Kind) (material, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.syncLocked(); err != nil {
		return material{}, err
	}
	r, err := b.ringLocked(ringName)
	if err != nil {
		return material{}, err
	}
	desc := r.describe(ringName)
	if err := backend.CheckKind(desc, kind); err != nil {
		return material{}, err
	}
	pv, err := backend.PickVersion(desc, n, forEncrypt)
	if err != nil {
		return material{}, err
	}
	v := r.version(pv.N)
	if kind == backend.KindHSMAEAD && v.aead == nil {
		if v.aead, err = memsafe.NewAEAD(v.secret, func(k []byte) (cipher.AEAD, error) {
			blk, err := aes.NewCipher(k)
			if err != nil {
				return nil, err
			}
			return cipher.NewGCM(blk)
		}); err != nil {
			return material{}, err
		}
	}
	return material{n: v.n, secret: v.secret, aead: v.aead}, nil
}

// material is what an operation needs of a version, captured under the lock.
type material struct {
	n      int
	secret *memsafe.Key
	aead   *memsafe.AEAD
}

func gone(ringName string, n int, err error) error {
	if errors.Is(err, memsafe.ErrDestroyed) {
		return fmt.Errorf("keyring %q version %d: %w", ringName, n, backend.ErrNotFound)
	}
	return err
}

// Derive implements backend.Backend.
func (b *Backend) Derive(ctx context.Context, scope string, n int, bits int, forEncrypt bool) (*memsafe.Key, int, error) {
	sc, err := backend.CheckScope(scope)
	if err != nil {
		return nil, 0, err
	}
	if err := kdf.CheckBits(bits); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", backend.ErrBadInput, err)
	}
	v, err := b.usable(sc.Keyring, n, forEncrypt, backend.KindDerive)
	if err != nil {
		return nil, 0, err
	}
	dk, err := kdf.Derive(kdf.HMACPRF(v.secret), scope, bits)
	if err != nil {
		return nil, 0, gone(sc.Keyring, v.n, err)
	}
	return dk, v.n, nil
}

// Encrypt implements backend.Backend.
func (b *Backend) Encrypt(ctx context.Context, ringName string, n int, plaintext, aad []byte) ([]byte, int, error) {
	v, err := b.usable(ringName, n, true, backend.KindHSMAEAD)
	if err != nil {
		return nil, 0, err
	}
	a := v.aead.AEAD()
	if a == nil {
		return nil, 0, gone(ringName, v.n, memsafe.ErrDestroyed)
	}
	out := make([]byte, backend.GCMNonceSize, backend.GCMNonceSize+len(plaintext)+backend.GCMTagSize)
	if _, err := rand.Read(out); err != nil {
		return nil, 0, err
	}
	return a.Seal(out, out, plaintext, aad), v.n, nil
}

// Decrypt implements backend.Backend.
func (b *Backend) Decrypt(ctx context.Context, ringName string, n int, ct, aad []byte) ([]byte, error) {
	if err := backend.CheckDecryptVersion(n); err != nil {
		return nil, err
	}
	v, err := b.usable(ringName, n, false, backend.KindHSMAEAD)
	if err != nil {
		return nil, err
	}
	if len(ct) < backend.GCMNonceSize+backend.GCMTagSize {
		return nil, fmt.Errorf("%w: ciphertext too short", backend.ErrBadInput)
	}
	a := v.aead.AEAD()
	if a == nil {
		return nil, gone(ringName, v.n, memsafe.ErrDestroyed)
	}
	pt, err := a.Open(nil, ct[:backend.GCMNonceSize], ct[backend.GCMNonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: message authentication failed", backend.ErrBadInput)
	}
	return pt, nil
}

// ImportPublicKey implements backend.Backend.
func (b *Backend) ImportPublicKey(ctx context.Context) (*rsa.PublicKey, error) {
	var pub *rsa.PublicKey
	err := b.mutate(func() (func(), error) {
		if b.s.importKey != nil {
			priv, err := b.importKeyLocked()
			if err != nil {
				return nil, err
			}
			pub = &priv.PublicKey
			return nil, errNoChange
		}
		priv, err := rsa.GenerateKey(rand.Reader, backend.ImportKeyBits)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		k, err := memsafe.FromBytes(der)
		if err != nil {
			return nil, err
		}
		b.s.importKey = k
		pub = &priv.PublicKey
		return func() { b.s.importKey = nil; k.Destroy() }, nil
	})
	if errors.Is(err, errNoChange) {
		err = nil
	}
	return pub, err
}

var errNoChange = errors.New("no change")

func (b *Backend) importKeyLocked() (*rsa.PrivateKey, error) {
	var priv *rsa.PrivateKey
	err := b.s.importKey.Use(func(der []byte) error {
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return err
		}
		var ok bool
		if priv, ok = k.(*rsa.PrivateKey); !ok {
			return errors.New("import key is not RSA")
		}
		return nil
	})
	return priv, err
}

// Import implements backend.Backend.
func (b *Backend) Import(ctx context.Context, name string, kind backend.Kind, bundle []byte, w backend.Wrapping) (backend.Version, string, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.Version{}, "", err
	}
	if _, err := backend.ParseKind(string(kind)); err != nil {
		return backend.Version{}, "", err
	}
	var h func() hash.Hash
	switch w {
	case backend.WrapRSAAESKeyWrapSHA1:
		h = sha1.New
	case backend.WrapRSAAESKeyWrapSHA256:
		h = sha256.New
	default:
		_, err := backend.ParseWrapping(string(w))
		return backend.Version{}, "", err
	}
	wEph, wSecret, err := backend.SplitBundle(bundle, backend.ImportKeyBits/8, kind)
	if err != nil {
		return backend.Version{}, "", err
	}
	var out backend.Version
	var kcv string
	err = b.mutate(func() (func(), error) {
		if b.s.importKey == nil {
			return nil, fmt.Errorf("%w: no import key yet: create it first (import-key)", backend.ErrNotFound)
		}
		if r := b.s.rings[name]; r != nil && r.kind != kind {
			return nil, fmt.Errorf("%w: keyring %q is of kind %s, not %s", backend.ErrBadInput, name, r.kind, kind)
		}
		priv, err := b.importKeyLocked()
		if err != nil {
			return nil, err
		}
		eph, err := rsa.DecryptOAEP(h(), nil, priv, wEph, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: the ephemeral key does not decrypt with RSA-OAEP %s under this import key "+
				"(wrong --wrapping, or a bundle made for another import key)", backend.ErrBadInput, w.HashName())
		}
		defer clear(eph)
		if len(eph) != 32 {
			return nil, fmt.Errorf("%w: the ephemeral key is %d bytes, want 32 (AES-256)", backend.ErrBadInput, len(eph))
		}
		sec, err := kwp.Unwrap(eph, wSecret)
		if err != nil {
			return nil, fmt.Errorf("%w: the secret does not unwrap under the ephemeral key (AES-KWP, RFC 5649)", backend.ErrBadInput)
		}
		if !backend.SecretSizeOK(kind, len(sec)) {
			clear(sec)
			return nil, fmt.Errorf("%w: imported %s secret is %d bytes", backend.ErrBadInput, kind, len(sec))
		}
		secret, err := memsafe.FromBytes(sec)
		if err != nil {
			return nil, err
		}
		if kcv, err = kdf.KCV(secret); err != nil {
			secret.Destroy()
			return nil, err
		}
		created := false
		if b.s.rings[name] == nil {
			b.s.rings[name] = &ring{kind: kind}
			created = true
		}
		v, undo, err := b.addVersionLocked(name, secret)
		if err != nil {
			secret.Destroy()
			return nil, err
		}
		out = v
		return func() {
			undo()
			if created {
				delete(b.s.rings, name)
			}
		}, nil
	})
	return out, kcv, err
}

// ExportBackup implements backend.Backend.
func (b *Backend) ExportBackup(ctx context.Context, scope string, n, bits int, wrapKey *memsafe.Key) ([]byte, int, error) {
	return backend.ExportBackup(ctx, b, scope, n, bits, wrapKey)
}

// RestoreBackup implements backend.Backend.
func (b *Backend) RestoreBackup(ctx context.Context, blob []byte, wrapKey *memsafe.Key) (backend.Restored, error) {
	return backend.RestoreBackup(ctx, b, blob, wrapKey)
}

// Close implements backend.Backend: it wipes every secret held.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.s.destroy()
	b.kek.Destroy()
	b.pass.Destroy()
	return nil
}

var _ backend.Pinger = (*Backend)(nil)

// Ping checks that the store file is still readable and opens.
func (b *Backend) Ping(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.syncLocked()
}
