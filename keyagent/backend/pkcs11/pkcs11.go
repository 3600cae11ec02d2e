// Package pkcs11 is the HSM key backend over any PKCS#11 module (SoftHSM2 in tests), through
// github.com/miekg/pkcs11.
//
// # Objects on the token
//
// Keyring version n of keyring R is a secret-key token object labelled "keyward/R/n" (CKA_ID the same),
// created CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_MODIFIABLE=false, CKA_EXTRACTABLE=false, with
// CKA_ALLOWED_MECHANISMS limited to its kind: derive is a 32-byte CKK_GENERIC_SECRET made by
// CKM_GENERIC_SECRET_KEY_GEN with only CKA_SIGN (CKM_SHA256_HMAC); hsm-aead is a 32-byte CKK_AES with
// only CKA_ENCRYPT/CKA_DECRYPT (CKM_AES_GCM). Because such a key cannot change, its life-cycle state lives
// in a companion private data object "keyward-meta/R/n" (CKA_APPLICATION "keyward", CKA_VALUE a small
// JSON document {"kind","state","created"}). Destroying a version deletes the key object and keeps the
// data object with state "destroyed", so version numbers are never reused. The BYOK import key pair is
// labelled "keyward-import": RSA-3072, the private key usable only for CKM_RSA_PKCS_OAEP unwrapping, with
// a CKA_UNWRAP_TEMPLATE forcing what it unwraps to be sensitive and non-extractable.
//
// # Operation
//
// Derivation is kdf.Derive with C_Sign(CKM_SHA256_HMAC) as the PRF, one call per 32-byte block. For
// speed, every usable (active or disabled) version is copied into a session object (C_CopyObject,
// CKA_TOKEN=false) owned by one long-lived session; requests run on a pool of logged-in sessions.
// Version metadata is cached and re-read from the token when older than Config.MetadataTTL, when a
// request names a keyring or version the cache does not know, and on every Keyring/Keyrings call; so a
// rotation or state change made by another process (or the CLI) is seen by a running service within
// MetadataTTL for "newest version" requests, and at once for explicit versions.
//
// A lost session, login or token (CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
// ...) fails the request with backend.ErrUnavailable and drops every session; the next request opens
// new sessions, logs in again and re-creates the session copies (re-initializing the library if it
// reports CKR_CRYPTOKI_NOT_INITIALIZED). It never panics.
//
// # BYOK import
//
// The bundle RSA-OAEP(ephemeral AES-256 key) || AES-KWP(secret) is unwrapped in two C_UnwrapKey steps
// inside the HSM: CKM_RSA_PKCS_OAEP into a session AES key, then CKM_AES_KEY_WRAP_PAD into the token
// object (CKM_RSA_AES_KEY_WRAP would do both at once, but few modules have it, SoftHSM 2.6 among them).
// A module without RSA-OAEP SHA-256 (SoftHSM 2.6) reports RSA_AES_KEY_WRAP_SHA_256 as
// backend.ErrUnsupported. The KCV of the imported secret is computed in the HSM (C_Sign HMAC over 32
// zero bytes); for an hsm-aead secret, which cannot sign, on a second, session-only unwrap of it as a
// sign-only generic secret, destroyed right after.
//
// # Backup
//
// Keyring secrets are non-extractable, so the HSM refuses to wrap them, by design: they are backed up
// at the HSM level (the vendor's backup/cloning or cluster replication), or kept on premise as the
// original of a BYOK import. ExportBackup wraps derived data keys (which exist outside the HSM anyway)
// under a customer AES-256 key, see backend.SealBackup.
//
// # Not guaranteed
//
//   - C_Sign results (derived key blocks) cross the Go heap and miekg/pkcs11's C buffers once; the Go
//     copies are wiped, the library's C buffer is freed without being wiped.
//   - Two processes creating the same keyring at the same moment may both succeed in creating objects;
//     the version numbers then collide. Run keyring administration from one place at a time.
package pkcs11

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/kdf"
	"github.com/keyward/keyward/memsafe"
)

const (
	keyPrefix   = "keyward/"
	metaPrefix  = "keyward-meta/"
	application = "keyward"
	importLabel = "keyward-import"
)

// Config configures Open.
type Config struct {
	Module     string // path of the PKCS#11 module (.so)
	TokenLabel string
	PIN        string // the user PIN; or
	PinFile    string // a file holding it (one trailing newline removed)
	PoolSize   int    // concurrent sessions; default 8
	// MetadataTTL bounds how long cached version metadata serves "newest version" requests; default 5s.
	MetadataTTL time.Duration
	// RetryInterval spaces reconnect attempts after a failed one, so that requests arriving while the
	// HSM is away fail fast instead of each waiting for the module; default 1s.
	RetryInterval time.Duration
	Logger        *slog.Logger // optional
}

// Backend is the PKCS#11 backend.
type Backend struct {
	cfg Config
	pin *memsafe.Key
	mod *module
	log *slog.Logger

	mu     sync.RWMutex // guards conn and closed; held for reading by every request
	conn   *conn
	closed bool

	admin sync.Mutex // serializes keyring administration in this process

	lastConnectFail time.Time // guarded by mu (write); reconnects are attempted at most once per RetryInterval
	// pinRejected stops reconnects for good once the token rejects the PIN: retrying would lock it.
	pinRejected error
}

// errPIN marks login failures caused by the PIN itself.
type errPIN struct{ msg string }

func (e *errPIN) Error() string { return e.msg }

var _ backend.Backend = (*Backend)(nil)

// conn is one generation of sessions; it is discarded whole when the token or a session is lost.
type conn struct {
	ctx  *p11.Ctx
	slot uint
	pool chan p11.SessionHandle

	mu       sync.Mutex // guards holder and everything below
	holder   p11.SessionHandle
	rings    map[string]backend.Keyring
	loadedAt time.Time
	copies   map[ringVersion]keyHandle // session copy (or token object if copying failed) per version
	// copyRefused is why the module refused a session copy (nil if it never did). SoftHSM 2.6 refuses
	// any C_CopyObject template on a CKA_MODIFIABLE=false object (CKR_ATTRIBUTE_READ_ONLY), so there the
	// token objects themselves are used: correct, about 3.5x slower per C_Sign than a session object.
	copyRefused error
	log         *slog.Logger
}

// Open loads the module, finds the token, logs in and prepares the session pool.
func Open(cfg Config) (*Backend, error) {
	if cfg.Module == "" || cfg.TokenLabel == "" {
		return nil, fmt.Errorf("pkcs11: %w: module and token label are required", backend.ErrBadInput)
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 8
	}
	if cfg.MetadataTTL <= 0 {
		cfg.MetadataTTL = 5 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	pin, err := readPIN(cfg)
	if err != nil {
		return nil, err
	}
	cfg.PIN = ""
	mod, err := acquireModule(cfg.Module)
	if err != nil {
		pin.Destroy()
		return nil, err
	}
	b := &Backend{cfg: cfg, pin: pin, mod: mod, log: cfg.Logger}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	c, err := b.connect()
	if err != nil {
		pin.Destroy()
		mod.release()
		return nil, err
	}
	b.conn = c
	return b, nil
}

func readPIN(cfg Config) (*memsafe.Key, error) {
	if cfg.PinFile != "" {
		pin, err := backend.ReadSecretFile(cfg.PinFile)
		if err != nil {
			return nil, fmt.Errorf("pkcs11: pin file: %w", err)
		}
		return pin, nil
	}
	if cfg.PIN == "" {
		return nil, fmt.Errorf("pkcs11: %w: no PIN (pin or pin_file)", backend.ErrBadInput)
	}
	return memsafe.FromBytes([]byte(cfg.PIN))
}

// connect finds the token, opens the holder and pool sessions and logs in.
func (b *Backend) connect() (*conn, error) {
	ctx := b.mod.ctx
	slots, err := ctx.GetSlotList(true)
	if isCode(err, p11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		if err = b.mod.reinitialize(); err == nil {
			slots, err = ctx.GetSlotList(true)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11: list slots: %w: %v", backend.ErrUnavailable, err)
	}
	var labels []string
	slot, found := uint(0), false
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		label := strings.TrimRight(ti.Label, " \x00")
		if label == b.cfg.TokenLabel {
			slot, found = s, true
			break
		}
		labels = append(labels, strconv.Quote(label))
	}
	if !found {
		return nil, fmt.Errorf("pkcs11: token %q not found in %s (tokens present: %s): %w",
			b.cfg.TokenLabel, b.cfg.Module, strings.Join(labels, ", "), backend.ErrNotFound)
	}
	c := &conn{ctx: ctx, slot: slot, pool: make(chan p11.SessionHandle, b.cfg.PoolSize), copies: map[ringVersion]keyHandle{}, log: b.log}
	open := func() (p11.SessionHandle, error) {
		return ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	}
	if c.holder, err = open(); err != nil {
		return nil, fmt.Errorf("pkcs11: open session on token %q: %w: %v", b.cfg.TokenLabel, backend.ErrUnavailable, err)
	}
	err = b.pin.Use(func(pin []byte) error { return ctx.Login(c.holder, p11.CKU_USER, string(pin)) })
	switch {
	case err == nil, isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN):
	case isCode(err, p11.CKR_PIN_INCORRECT):
		c.close()
		return nil, &errPIN{fmt.Sprintf("pkcs11: the PIN for token %q is wrong (CKR_PIN_INCORRECT)", b.cfg.TokenLabel)}
	case isCode(err, p11.CKR_PIN_LOCKED):
		c.close()
		return nil, &errPIN{fmt.Sprintf("pkcs11: the PIN for token %q is locked (CKR_PIN_LOCKED)", b.cfg.TokenLabel)}
	default:
		c.close()
		return nil, fmt.Errorf("pkcs11: login to token %q: %w: %v", b.cfg.TokenLabel, backend.ErrUnavailable, err)
	}
	for range b.cfg.PoolSize {
		s, err := open()
		if err != nil {
			c.close()
			return nil, fmt.Errorf("pkcs11: open session: %w: %v", backend.ErrUnavailable, err)
		}
		c.pool <- s
	}
	c.mu.Lock()
	err = c.reloadLocked()
	c.mu.Unlock()
	if err != nil {
		c.close()
		return nil, fmt.Errorf("pkcs11: read keyrings: %w: %v", backend.ErrUnavailable, err)
	}
	return c, nil
}

// close closes every session of this generation; the session copies go with the holder session.
func (c *conn) close() {
	if c.holder != 0 {
		_ = c.ctx.CloseSession(c.holder)
	}
	for {
		select {
		case s := <-c.pool:
			_ = c.ctx.CloseSession(s)
		default:
			return
		}
	}
}

// do runs fn with a pooled session of a working connection, re-connecting first if the last one was
// lost, and drops the connection when fn reports a lost session or token.
func (b *Backend) do(ctx context.Context, fn func(c *conn, s p11.SessionHandle) error) error {
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return fmt.Errorf("pkcs11 backend closed: %w", backend.ErrUnavailable)
	}
	c := b.conn
	if c == nil {
		b.mu.RUnlock()
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return fmt.Errorf("pkcs11 backend closed: %w", backend.ErrUnavailable)
		}
		if b.conn == nil {
			if b.pinRejected != nil {
				b.mu.Unlock()
				return fmt.Errorf("%w: %v; not retrying (it would lock the token): fix the PIN and restart", backend.ErrUnavailable, b.pinRejected)
			}
			if wait := b.cfg.RetryInterval - time.Since(b.lastConnectFail); wait > 0 {
				b.mu.Unlock()
				return fmt.Errorf("%w: HSM token %q unreachable; next reconnect attempt in %v", backend.ErrUnavailable, b.cfg.TokenLabel, wait.Round(time.Millisecond))
			}
			nc, err := b.connect()
			if err != nil {
				b.lastConnectFail = time.Now()
				var pe *errPIN
				if errors.As(err, &pe) {
					b.pinRejected = err
				}
				b.mu.Unlock()
				b.log.Warn("pkcs11 reconnect failed", "token", b.cfg.TokenLabel, "err", err)
				if !errors.Is(err, backend.ErrUnavailable) {
					err = fmt.Errorf("%w: %v", backend.ErrUnavailable, err)
				}
				return err
			}
			b.log.Info("pkcs11 reconnected", "token", b.cfg.TokenLabel)
			b.conn = nc
		}
		b.mu.Unlock()
		return b.do(ctx, fn)
	}
	var s p11.SessionHandle
	select {
	case s = <-c.pool:
	case <-ctx.Done():
		b.mu.RUnlock()
		return fmt.Errorf("%w: waiting for an HSM session: %v", backend.ErrUnavailable, ctx.Err())
	}
	err := fn(c, s)
	c.pool <- s
	b.mu.RUnlock()
	if err != nil && lost(err) {
		b.mu.Lock()
		if b.conn == c {
			b.conn = nil
			c.close()
		}
		b.mu.Unlock()
		b.log.Warn("pkcs11 session or token lost; reconnecting on the next request", "token", b.cfg.TokenLabel, "err", err)
		return fmt.Errorf("%w: HSM session or token lost (%v); retry", backend.ErrUnavailable, err)
	}
	return err
}

// find returns the objects matching template.
func (c *conn) find(s p11.SessionHandle, template []*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := c.ctx.FindObjectsInit(s, template); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for {
		hs, _, err := c.ctx.FindObjects(s, 64)
		if err != nil {
			_ = c.ctx.FindObjectsFinal(s)
			return nil, err
		}
		all = append(all, hs...)
		if len(hs) < 64 {
			break
		}
	}
	return all, c.ctx.FindObjectsFinal(s)
}

// meta is a version's mutable metadata. SoftHSM (like many modules) makes a data object's CKA_VALUE
// read-only, so an update creates a new object with a higher Seq and then destroys the old one; a
// crash in between leaves two, and the higher Seq wins.
type meta struct {
	Seq     uint64        `json:"seq"`
	Kind    backend.Kind  `json:"kind"`
	State   backend.State `json:"state"`
	Created time.Time     `json:"created"`
}

func parseLabel(prefix, label string) (ring string, n int, ok bool) {
	rest, ok := strings.CutPrefix(label, prefix)
	if !ok {
		return "", 0, false
	}
	ring, ns, ok := strings.Cut(rest, "/")
	if !ok || backend.CheckName(ring) != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 1 || strconv.Itoa(n) != ns {
		return "", 0, false
	}
	return ring, n, true
}

func label(prefix, ring string, n int) string { return prefix + ring + "/" + strconv.Itoa(n) }

// reloadLocked re-reads every version's metadata from the token and refreshes the session copies.
func (c *conn) reloadLocked() error {
	hs, err := c.find(c.holder, []*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_DATA),
		attr(p11.CKA_APPLICATION, application),
	})
	if err != nil {
		return err
	}
	type entry struct {
		ring string
		n    int
		m    meta
	}
	latest := map[string]entry{}
	for _, h := range hs {
		as, err := c.ctx.GetAttributeValue(c.holder, h, []*p11.Attribute{attr(p11.CKA_LABEL, nil), attr(p11.CKA_VALUE, nil)})
		if err != nil {
			return err
		}
		ring, n, ok := parseLabel(metaPrefix, string(as[0].Value))
		if !ok {
			continue
		}
		var m meta
		if json.Unmarshal(as[1].Value, &m) != nil {
			continue // not ours, or damaged: ignored rather than fatal for every other keyring
		}
		key := label(metaPrefix, ring, n)
		if e, ok := latest[key]; !ok || m.Seq > e.m.Seq {
			latest[key] = entry{ring, n, m}
		}
	}
	rings := map[string]backend.Keyring{}
	for _, e := range latest {
		r := rings[e.ring]
		r.Name, r.Kind = e.ring, e.m.Kind
		r.Versions = append(r.Versions, backend.Version{N: e.n, State: e.m.State, Created: e.m.Created})
		rings[e.ring] = r
	}
	for name, r := range rings {
		sort.Slice(r.Versions, func(i, j int) bool { return r.Versions[i].N < r.Versions[j].N })
		rings[name] = r
	}
	// Drop session copies of versions that are gone or destroyed.
	for key, kh := range c.copies {
		if v, ok := rings[key.ring].Version(key.n); !ok || v.State == backend.StateDestroyed {
			if kh.session { // never a token object: that is SetState's job alone
				_ = c.ctx.DestroyObject(c.holder, kh.h)
			}
			delete(c.copies, key)
		}
	}
	c.rings, c.loadedAt = rings, time.Now()
	return nil
}

// handleLocked returns the session copy of ring version n, making it on first use.
func (c *conn) handleLocked(ring string, n int) (p11.ObjectHandle, error) {
	key := ringVersion{ring, n}
	if kh, ok := c.copies[key]; ok {
		return kh.h, nil
	}
	hs, err := c.find(c.holder, []*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		attr(p11.CKA_LABEL, label(keyPrefix, ring, n)),
	})
	if err != nil {
		return 0, err
	}
	if len(hs) != 1 {
		return 0, fmt.Errorf("keyring %q version %d: %d key objects on the token: %w", ring, n, len(hs), backend.ErrNotFound)
	}
	h, err := c.ctx.CopyObject(c.holder, hs[0], []*p11.Attribute{attr(p11.CKA_TOKEN, false)})
	if err != nil {
		if lost(err) {
			return 0, err
		}
		// Some modules refuse to copy non-modifiable keys: use the token object (slower, still correct).
		if c.copyRefused == nil {
			c.log.Info("pkcs11 module refuses session copies of keyring keys; using token objects", "err", err)
		}
		c.copyRefused = err
		c.copies[key] = keyHandle{h: hs[0]}
		return hs[0], nil
	}
	c.copies[key] = keyHandle{h: h, session: true}
	return h, nil
}

// ringVersion names a keyring version in the session-copy map (a struct, not a "ring/n" string, so
// that the per-request lookup builds nothing).
type ringVersion struct {
	ring string
	n    int
}

// keyHandle is the object used for a keyring version: a session copy, or the token object itself.
type keyHandle struct {
	h       p11.ObjectHandle
	session bool
}

// resolve picks a version and returns its object handle, refreshing the metadata when stale or when the
// request names something the cache does not know.
func (b *Backend) resolve(c *conn, ringName string, n int, forEncrypt bool, kind backend.Kind) (backend.Version, p11.ObjectHandle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pick := func() (backend.Version, error) {
		r, ok := c.rings[ringName]
		if !ok {
			return backend.Version{}, fmt.Errorf("keyring %q: %w", ringName, backend.ErrNotFound)
		}
		if err := backend.CheckKind(r, kind); err != nil {
			return backend.Version{}, err
		}
		return backend.PickVersion(r, n, forEncrypt)
	}
	fresh := time.Since(c.loadedAt) < b.cfg.MetadataTTL
	v, err := pick()
	if !fresh || errors.Is(err, backend.ErrNotFound) {
		if rerr := c.reloadLocked(); rerr != nil {
			return backend.Version{}, 0, rerr
		}
		v, err = pick()
	}
	if err != nil {
		return backend.Version{}, 0, err
	}
	h, err := c.handleLocked(ringName, v.N)
	return v, h, err
}

func (b *Backend) readRings(ctx context.Context) (map[string]backend.Keyring, error) {
	var rings map[string]backend.Keyring
	err := b.do(ctx, func(c *conn, _ p11.SessionHandle) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.reloadLocked(); err != nil {
			return err
		}
		// Callers get their own copies: the cache's slices must not be shared.
		rings = make(map[string]backend.Keyring, len(c.rings))
		for k, r := range c.rings {
			r.Versions = slices.Clone(r.Versions)
			rings[k] = r
		}
		return nil
	})
	return rings, err
}

// Keyrings implements backend.Backend.
func (b *Backend) Keyrings(ctx context.Context) ([]backend.Keyring, error) {
	rings, err := b.readRings(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]backend.Keyring, 0, len(rings))
	for _, r := range rings {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Keyring implements backend.Backend.
func (b *Backend) Keyring(ctx context.Context, name string) (backend.Keyring, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.Keyring{}, err
	}
	rings, err := b.readRings(ctx)
	if err != nil {
		return backend.Keyring{}, err
	}
	r, ok := rings[name]
	if !ok {
		return backend.Keyring{}, fmt.Errorf("keyring %q: %w", name, backend.ErrNotFound)
	}
	return r, nil
}

func (c *conn) writeMeta(s p11.SessionHandle, ring string, n int, m meta) error {
	lbl := label(metaPrefix, ring, n)
	old, err := c.find(s, []*p11.Attribute{attr(p11.CKA_CLASS, p11.CKO_DATA), attr(p11.CKA_LABEL, lbl)})
	if err != nil {
		return err
	}
	for _, h := range old {
		as, err := c.ctx.GetAttributeValue(s, h, []*p11.Attribute{attr(p11.CKA_VALUE, nil)})
		if err != nil {
			return err
		}
		var om meta
		if json.Unmarshal(as[0].Value, &om) == nil && om.Seq >= m.Seq {
			m.Seq = om.Seq + 1
		}
	}
	val, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err = c.ctx.CreateObject(s, []*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_DATA),
		attr(p11.CKA_TOKEN, true),
		attr(p11.CKA_PRIVATE, true),
		attr(p11.CKA_LABEL, lbl),
		attr(p11.CKA_APPLICATION, application),
		attr(p11.CKA_VALUE, val),
	}); err != nil {
		return err
	}
	for _, h := range old {
		if err := c.ctx.DestroyObject(s, h); err != nil {
			return err
		}
	}
	return nil
}

// nextVersion re-reads the token and returns the keyring (if any) and its next version number.
func (c *conn) nextVersion(name string) (backend.Keyring, bool, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reloadLocked(); err != nil {
		return backend.Keyring{}, false, 0, err
	}
	r, ok := c.rings[name]
	n := 1
	if ok && len(r.Versions) > 0 {
		n = r.Versions[len(r.Versions)-1].N + 1
	}
	return r, ok, n, nil
}

// addVersion generates a fresh secret as version n and records it active.
func (c *conn) addVersion(s p11.SessionHandle, name string, kind backend.Kind, n int) (backend.Version, error) {
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_GENERIC_SECRET_KEY_GEN, nil)}
	if kind == backend.KindHSMAEAD {
		mech = []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}
	}
	t := append(keyTemplate(label(keyPrefix, name, n), kind == backend.KindDerive), attr(p11.CKA_VALUE_LEN, 32))
	h, err := c.ctx.GenerateKey(s, mech, t)
	if err != nil {
		return backend.Version{}, fmt.Errorf("generate %s key: %w", kind, err)
	}
	return c.commitVersion(s, h, name, kind, n)
}

func (c *conn) commitVersion(s p11.SessionHandle, h p11.ObjectHandle, name string, kind backend.Kind, n int) (backend.Version, error) {
	v := backend.Version{N: n, State: backend.StateActive, Created: time.Now().UTC().Truncate(time.Second)}
	if err := c.writeMeta(s, name, n, meta{Kind: kind, State: v.State, Created: v.Created}); err != nil {
		_ = c.ctx.DestroyObject(s, h)
		return backend.Version{}, fmt.Errorf("record version metadata: %w", err)
	}
	c.mu.Lock()
	_ = c.reloadLocked()
	c.mu.Unlock()
	return v, nil
}

// CreateKeyring implements backend.Backend.
func (b *Backend) CreateKeyring(ctx context.Context, name string, kind backend.Kind) (backend.Keyring, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.Keyring{}, err
	}
	if _, err := backend.ParseKind(string(kind)); err != nil {
		return backend.Keyring{}, err
	}
	b.admin.Lock()
	defer b.admin.Unlock()
	var out backend.Keyring
	err := b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		_, exists, _, err := c.nextVersion(name)
		if err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("keyring %q: %w", name, backend.ErrExists)
		}
		v, err := c.addVersion(s, name, kind, 1)
		if err != nil {
			return err
		}
		out = backend.Keyring{Name: name, Kind: kind, Versions: []backend.Version{v}}
		return nil
	})
	return out, err
}

// Rotate implements backend.Backend.
func (b *Backend) Rotate(ctx context.Context, name string) (backend.Version, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.Version{}, err
	}
	b.admin.Lock()
	defer b.admin.Unlock()
	var out backend.Version
	err := b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		r, exists, n, err := c.nextVersion(name)
		if err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("keyring %q: %w", name, backend.ErrNotFound)
		}
		out, err = c.addVersion(s, name, r.Kind, n)
		return err
	})
	return out, err
}

// SetState implements backend.Backend.
func (b *Backend) SetState(ctx context.Context, name string, n int, st backend.State) error {
	if err := backend.CheckName(name); err != nil {
		return err
	}
	b.admin.Lock()
	defer b.admin.Unlock()
	return b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		r, exists, _, err := c.nextVersion(name)
		if err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("keyring %q: %w", name, backend.ErrNotFound)
		}
		v, err := backend.CheckTransition(r, n, st)
		if err != nil {
			return err
		}
		if st == backend.StateDestroyed {
			hs, err := c.find(s, []*p11.Attribute{attr(p11.CKA_CLASS, p11.CKO_SECRET_KEY), attr(p11.CKA_LABEL, label(keyPrefix, name, n))})
			if err != nil {
				return err
			}
			for _, h := range hs {
				if err := c.ctx.DestroyObject(s, h); err != nil {
					return fmt.Errorf("destroy %s: %w", label(keyPrefix, name, n), err)
				}
			}
		}
		if err := c.writeMeta(s, name, n, meta{Kind: r.Kind, State: st, Created: v.Created}); err != nil {
			return fmt.Errorf("record state: %w", err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.reloadLocked()
	})
}

// hmacPRF is kdf's PRF computed by the HSM.
func hmacPRF(c *conn, s p11.SessionHandle, h p11.ObjectHandle) kdf.PRF {
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}
	return func(msg []byte) ([]byte, error) {
		if err := c.ctx.SignInit(s, mech, h); err != nil {
			return nil, err
		}
		return c.ctx.Sign(s, msg)
	}
}

// Derive implements backend.Backend. This is the direct in-process derivation (C_Sign per block).
func (b *Backend) Derive(ctx context.Context, scope string, n int, bits int, forEncrypt bool) (*memsafe.Key, int, error) {
	sc, err := backend.CheckScope(scope)
	if err != nil {
		return nil, 0, err
	}
	if err := kdf.CheckBits(bits); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", backend.ErrBadInput, err)
	}
	var dk *memsafe.Key
	var used int
	err = b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		v, h, err := b.resolve(c, sc.Keyring, n, forEncrypt, backend.KindDerive)
		if err != nil {
			return err
		}
		used = v.N
		dk, err = kdf.Derive(hmacPRF(c, s, h), scope, bits)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("derive %s: %w", scope, err)
	}
	return dk, used, nil
}

// Encrypt implements backend.Backend (AES-256-GCM in the HSM; the 96-bit nonce is random from crypto/rand,
// so it does not depend on the HSM's IV generation, which modules implement differently).
func (b *Backend) Encrypt(ctx context.Context, ring string, n int, plaintext, aad []byte) ([]byte, int, error) {
	if err := backend.CheckName(ring); err != nil {
		return nil, 0, err
	}
	var out []byte
	var used int
	err := b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		v, h, err := b.resolve(c, ring, n, true, backend.KindHSMAEAD)
		if err != nil {
			return err
		}
		used = v.N
		iv := make([]byte, backend.GCMNonceSize)
		if _, err := rand.Read(iv); err != nil {
			return err
		}
		params := p11.NewGCMParams(iv, aad, backend.GCMTagSize*8)
		defer params.Free()
		if err := c.ctx.EncryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		ct, err := c.ctx.Encrypt(s, plaintext)
		if err != nil {
			return err
		}
		out = append(iv, ct...)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("hsm encrypt with %s: %w", ring, err)
	}
	return out, used, nil
}

// Decrypt implements backend.Backend.
func (b *Backend) Decrypt(ctx context.Context, ring string, n int, ct, aad []byte) ([]byte, error) {
	if err := backend.CheckName(ring); err != nil {
		return nil, err
	}
	if err := backend.CheckDecryptVersion(n); err != nil {
		return nil, err
	}
	var out []byte
	err := b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		_, h, err := b.resolve(c, ring, n, false, backend.KindHSMAEAD)
		if err != nil {
			return err
		}
		if len(ct) < backend.GCMNonceSize+backend.GCMTagSize {
			return fmt.Errorf("%w: ciphertext too short", backend.ErrBadInput)
		}
		params := p11.NewGCMParams(ct[:backend.GCMNonceSize], aad, backend.GCMTagSize*8)
		defer params.Free()
		if err := c.ctx.DecryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		out, err = c.ctx.Decrypt(s, ct[backend.GCMNonceSize:])
		if err != nil {
			if lost(err) {
				return err
			}
			return fmt.Errorf("%w: message authentication failed", backend.ErrBadInput)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm decrypt with %s: %w", ring, err)
	}
	return out, nil
}

// ExportBackup implements backend.Backend.
func (b *Backend) ExportBackup(ctx context.Context, scope string, n, bits int, wrapKey *memsafe.Key) ([]byte, int, error) {
	return backend.ExportBackup(ctx, b, scope, n, bits, wrapKey)
}

// RestoreBackup implements backend.Backend.
func (b *Backend) RestoreBackup(ctx context.Context, blob []byte, wrapKey *memsafe.Key) (backend.Restored, error) {
	return backend.RestoreBackup(ctx, b, blob, wrapKey)
}

// Close implements backend.Backend: it closes the sessions (destroying the session copies) and releases
// the module.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.conn != nil {
		b.conn.close()
		b.conn = nil
	}
	b.pin.Destroy()
	b.mod.release()
	return nil
}

// rsaPublic reads an RSA public key object.
func (c *conn) rsaPublic(s p11.SessionHandle, h p11.ObjectHandle) (*rsa.PublicKey, error) {
	as, err := c.ctx.GetAttributeValue(s, h, []*p11.Attribute{attr(p11.CKA_MODULUS, nil), attr(p11.CKA_PUBLIC_EXPONENT, nil)})
	if err != nil {
		return nil, err
	}
	e := new(big.Int).SetBytes(as[1].Value)
	if !e.IsInt64() || e.Int64() > 1<<31 {
		return nil, errors.New("import key: bad public exponent")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(as[0].Value), E: int(e.Int64())}, nil
}

var _ backend.Pinger = (*Backend)(nil)

// Ping checks that a session to the token works (reconnecting if needed).
func (b *Backend) Ping(ctx context.Context) error {
	return b.do(ctx, func(c *conn, s p11.SessionHandle) error {
		_, err := c.ctx.GetSessionInfo(s)
		return err
	})
}
