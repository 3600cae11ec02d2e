// Package colkeys is the process-wide cache of column keys and ciphers that colcrypt's proxy and its
// migration commands share.
//
// A Keys holds, for the life of the process, one envelope cipher per (scope, key version, alg): the
// key schedule is built once from the memsafe.Key the agent returned (the Key itself stays owned by
// the cache and is wiped by Close), never once per value. Who may use which key is not decided here:
// the key agent decides, on behalf of an identity ("db:<role>"), and this package remembers its
// answer per (identity, scope, op) for a TTL (a denial for a shorter one), then asks again. So a
// policy change reaches a running proxy within one TTL; a cached cipher alone never grants access to
// an identity the agent has not (recently) allowed.
//
// Modes:
//   - randomized: AES-256-GCM, 256-bit keys (envelope alg 1);
//   - deterministic: AES-SIV with 512-bit keys (alg 2); MatchSealers returns one sealer per live key
//     version so an equality predicate can match values written under any of them;
//   - hsm: every seal and open is one request to the agent, which has the HSM do it (alg 3); no key
//     enters this process. The newest version is learnt by a probe encryption of an empty value
//     (cached with the TTL).
//
// Open reads the key version and alg from the envelope's header, so values written under older
// versions (after a rotation) or in another mode (during a migration) open as long as their key
// version lives.
//
// Guarantees: no key bytes in errors or logs; every failure to open a value (tampered, truncated,
// sealed for another column or scope, not an envelope) wraps envelope.ErrOpen; every refusal by the
// agent wraps ErrDenied (and client.ErrDenied). Non-guarantees: key schedules live in the Go heap (see
// memsafe.AEAD); ciphers are kept until Close even after the agent's cache expired the key (a
// version that was destroyed in the key service still opens here until the process restarts or
// Close is called; authorization is re-checked every TTL regardless).
package colkeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/keyward/keyward/colcrypt/envelope"
	"github.com/keyward/keyward/keyagent/client"
	"github.com/keyward/keyward/memsafe"
)

// Modes, as spelled in colcrypt.yaml.
const (
	Randomized    = "randomized"
	Deterministic = "deterministic"
	HSM           = "hsm"
)

// Defaults.
const (
	DefaultTTL     = time.Minute
	DefaultDenyTTL = 5 * time.Second
	DefaultTimeout = 5 * time.Second
)

var (
	// ErrDenied: the agent refused the identity the key for this scope and operation. It wraps
	// client.ErrDenied.
	ErrDenied = fmt.Errorf("colkeys: %w", client.ErrDenied)
	// ErrMode: the column's mode is not one this package knows, or the operation does not apply to it
	// (MatchSealers on a randomized column).
	ErrMode = errors.New("colkeys: mode")
	// ErrClosed: the Keys was closed.
	ErrClosed = errors.New("colkeys: closed")
)

// Column names a protected column and how it is encrypted.
type Column struct {
	Table string // "schema.table"
	Name  string // column name as stored in pg_attribute
	Scope string // key scope, "keyring:name"
	Mode  string // randomized | deterministic | hsm
}

// AADName is "schema.table.column", the name bound into every envelope's associated data.
func (c Column) AADName() string { return c.Table + "." + c.Name }

// Sealer seals new values of one column with one key version.
type Sealer interface {
	// Seal appends the envelope of plaintext to dst. ctx bounds the agent round trip of hsm columns
	// (software modes ignore it).
	Seal(ctx context.Context, dst, plaintext []byte) ([]byte, error)
	// Version is the key version written into each envelope.
	Version() uint32
}

// Config configures New.
type Config struct {
	Agent   *client.Client
	TTL     time.Duration // authorization re-check interval; 0: DefaultTTL
	DenyTTL time.Duration // how long a denial is remembered; 0: min(TTL, DefaultDenyTTL)
	Timeout time.Duration // per agent request when the caller's ctx has no deadline; 0: DefaultTimeout
	Logger  *slog.Logger  // nil: discard
	now     func() time.Time
}

// Keys is the cache. It is safe for concurrent use.
type Keys struct {
	agent   *client.Client
	ttl     time.Duration
	denyTTL time.Duration
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time

	mu      sync.RWMutex
	closed  bool
	ciphers map[cipherKey]*softEntry
	hsms    map[hsmKey]*envelope.HSMCipher
	auth    map[authKey]authEntry
	newest  map[authKey]versionEntry // (identity, scope, alg, Encrypt): newest version usable to seal
	live    map[authKey]liveEntry    // (identity, scope, alg, Decrypt): live versions for matching
}

type cipherKey struct {
	scope   string
	version uint32
	alg     envelope.Alg
}

type softEntry struct {
	key    *memsafe.Key
	cipher *envelope.Cipher
}

type hsmKey struct {
	identity, scope string
	version         uint32
}

type authKey struct {
	identity, scope string
	alg             envelope.Alg
	op              client.Op
}

type authEntry struct {
	err     error // nil: allowed
	expires time.Time
}

type versionEntry struct {
	version uint32
	err     error
	expires time.Time
}

type liveEntry struct {
	versions []uint32
	expires  time.Time
}

// New returns an empty cache that asks cfg.Agent.
func New(cfg Config) *Keys {
	k := &Keys{agent: cfg.Agent, ttl: cfg.TTL, denyTTL: cfg.DenyTTL, timeout: cfg.Timeout, log: cfg.Logger, now: cfg.now,
		ciphers: map[cipherKey]*softEntry{}, hsms: map[hsmKey]*envelope.HSMCipher{},
		auth: map[authKey]authEntry{}, newest: map[authKey]versionEntry{}, live: map[authKey]liveEntry{}}
	if k.ttl <= 0 {
		k.ttl = DefaultTTL
	}
	if k.denyTTL <= 0 {
		k.denyTTL = min(k.ttl, DefaultDenyTTL)
	}
	if k.timeout <= 0 {
		k.timeout = DefaultTimeout
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	if k.now == nil {
		k.now = time.Now
	}
	return k
}

// AlgFor returns the envelope alg of a mode.
func AlgFor(mode string) (envelope.Alg, error) {
	switch mode {
	case Randomized:
		return envelope.AlgRandomized, nil
	case Deterministic:
		return envelope.AlgDeterministic, nil
	case HSM:
		return envelope.AlgHSM, nil
	}
	return 0, fmt.Errorf("%w %q unknown (randomized, deterministic or hsm)", ErrMode, mode)
}

func bits(alg envelope.Alg) int {
	if alg == envelope.AlgDeterministic {
		return 512
	}
	return 256
}

func (k *Keys) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, k.timeout)
}

// agentErr turns an agent error into this package's: denials wrap ErrDenied, the rest keeps its
// client sentinel.
func agentErr(err error, identity string, col Column, op client.Op) error {
	if errors.Is(err, client.ErrDenied) {
		return fmt.Errorf("%w: %s may not %s with scope %q: %v", ErrDenied, identity, opName(op), col.Scope, err)
	}
	return fmt.Errorf("colkeys: key for scope %q (%s, acting for %s): %w", col.Scope, opName(op), identity, err)
}

func opName(op client.Op) string {
	if op == client.Encrypt {
		return "encrypt"
	}
	return "decrypt"
}

// Sealer returns a sealer of new values for col with the newest key version usable for encryption,
// on behalf of identity.
func (k *Keys) Sealer(ctx context.Context, identity string, col Column) (Sealer, error) {
	alg, err := AlgFor(col.Mode)
	if err != nil {
		return nil, err
	}
	ak := authKey{identity, col.Scope, alg, client.Encrypt}
	now := k.now()
	k.mu.RLock()
	if k.closed {
		k.mu.RUnlock()
		return nil, ErrClosed
	}
	if e, ok := k.newest[ak]; ok && now.Before(e.expires) {
		k.mu.RUnlock()
		if e.err != nil {
			return nil, e.err
		}
		return k.sealerFor(ctx, identity, col, alg, e.version)
	}
	k.mu.RUnlock()

	v, err := k.fetchNewest(ctx, identity, col, alg, client.Encrypt)
	if err != nil {
		return nil, err
	}
	return k.sealerFor(ctx, identity, col, alg, v)
}

// fetchNewest asks the agent for the newest version of col's key usable for op on behalf of identity,
// caching the key's cipher and the answer (a denial too).
func (k *Keys) fetchNewest(ctx context.Context, identity string, col Column, alg envelope.Alg, op client.Op) (uint32, error) {
	ctx, cancel := k.ctx(ctx)
	defer cancel()
	ak := authKey{identity, col.Scope, alg, op}
	var v uint32
	var err error
	if alg == envelope.AlgHSM {
		// The version is part of the associated data, so it must be known before sealing: an
		// encryption of nothing tells it, and proves the identity may encrypt.
		_, v, err = k.agent.Encrypt(ctx, col.Scope, 0, identity, nil, []byte("keyward colkeys version probe"))
	} else {
		v, err = k.fetchKey(ctx, identity, col, alg, 0, op)
	}
	if err != nil {
		err = agentErr(err, identity, col, op)
		if errors.Is(err, ErrDenied) {
			k.remember(ak, 0, err, k.denyTTL)
		}
		return 0, err
	}
	k.remember(ak, v, nil, k.ttl)
	return v, nil
}

func (k *Keys) remember(ak authKey, v uint32, err error, ttl time.Duration) {
	exp := k.now().Add(ttl)
	k.mu.Lock()
	if ak.op == client.Encrypt {
		k.newest[ak] = versionEntry{version: v, err: err, expires: exp}
	}
	// Any answer about a scope and op is an authorization answer too.
	k.auth[ak] = authEntry{err: err, expires: exp}
	k.mu.Unlock()
}

// fetchKey gets a software key from the agent and makes sure its cipher is cached. It returns the
// version the agent used.
func (k *Keys) fetchKey(ctx context.Context, identity string, col Column, alg envelope.Alg, version uint32, op client.Op) (uint32, error) {
	key, v, err := k.agent.Key(ctx, client.Request{Scope: col.Scope, Version: version, ActingFor: identity, Op: op, Bits: bits(alg)})
	if err != nil {
		return 0, err
	}
	ck := cipherKey{col.Scope, v, alg}
	k.mu.RLock()
	_, have := k.ciphers[ck]
	k.mu.RUnlock()
	if have {
		key.Destroy()
		return v, nil
	}
	var c *envelope.Cipher
	if alg == envelope.AlgDeterministic {
		c, err = envelope.NewDeterministic(key, v, col.Scope)
	} else {
		c, err = envelope.NewRandomized(key, v, col.Scope)
	}
	if err != nil {
		key.Destroy()
		return 0, fmt.Errorf("colkeys: scope %q version %d: %w", col.Scope, v, err)
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		c.Destroy()
		key.Destroy()
		return 0, ErrClosed
	}
	if _, have := k.ciphers[ck]; have {
		k.mu.Unlock()
		c.Destroy()
		key.Destroy()
		return v, nil
	}
	k.ciphers[ck] = &softEntry{key: key, cipher: c}
	k.mu.Unlock()
	k.log.Debug("column key cached", "scope", col.Scope, "version", v, "alg", alg.String())
	return v, nil
}

func (k *Keys) sealerFor(ctx context.Context, identity string, col Column, alg envelope.Alg, v uint32) (Sealer, error) {
	if alg == envelope.AlgHSM {
		return hsmSealer{c: k.hsmCipher(identity, col.Scope, v), column: col.AADName()}, nil
	}
	k.mu.RLock()
	e := k.ciphers[cipherKey{col.Scope, v, alg}]
	k.mu.RUnlock()
	if e == nil {
		// Authorized (cached answer) but the cipher is not here: fetch it.
		if _, err := k.fetchKey(ctx, identity, col, alg, v, client.Encrypt); err != nil {
			return nil, agentErr(err, identity, col, client.Encrypt)
		}
		k.mu.RLock()
		e = k.ciphers[cipherKey{col.Scope, v, alg}]
		k.mu.RUnlock()
		if e == nil {
			return nil, ErrClosed
		}
	}
	return softSealer{c: e.cipher, column: col.AADName()}, nil
}

func (k *Keys) hsmCipher(identity, scope string, v uint32) *envelope.HSMCipher {
	hk := hsmKey{identity, scope, v}
	k.mu.RLock()
	c := k.hsms[hk]
	k.mu.RUnlock()
	if c != nil {
		return c
	}
	c, _ = envelope.NewHSM(agentHSM{agent: k.agent, identity: identity}, v, scope) // v >= 1 and scope non-empty here
	k.mu.Lock()
	if old := k.hsms[hk]; old != nil {
		c = old
	} else {
		k.hsms[hk] = c
	}
	k.mu.Unlock()
	return c
}

// Open opens the envelope env of col on behalf of identity and appends the plaintext to dst. The key
// version and alg come from the envelope's header.
func (k *Keys) Open(ctx context.Context, identity string, col Column, env, dst []byte) ([]byte, error) {
	h, err := envelope.ParseHeader(env)
	if err != nil {
		return dst, fmt.Errorf("%w: %w", envelope.ErrOpen, err)
	}
	// The ciphers check the scope fingerprint of the header themselves.
	if h.Alg == envelope.AlgHSM {
		ctx, cancel := k.ctx(ctx)
		defer cancel()
		out, err := k.hsmCipher(identity, col.Scope, h.KeyVersion).Open(ctx, dst, env, col.AADName())
		if err != nil && !errors.Is(err, envelope.ErrOpen) {
			return dst, agentErr(err, identity, col, client.Decrypt)
		}
		return out, err
	}
	c, err := k.decrypter(ctx, identity, col, h.Alg, h.KeyVersion)
	if err != nil {
		return dst, err
	}
	return c.Open(dst, env, col.AADName())
}

// Cipher returns the software cipher that opens envelopes of col with header h on behalf of
// identity, and the time until which the authorization it rests on holds: a caller on a hot path
// (the proxy decrypting rows) may keep it until then instead of calling Open per value, which
// does this lookup each time. For hsm envelopes (no key in this process) it fails with ErrMode.
func (k *Keys) Cipher(ctx context.Context, identity string, col Column, h envelope.Header) (*envelope.Cipher, time.Time, error) {
	if h.Alg == envelope.AlgHSM {
		return nil, time.Time{}, fmt.Errorf("%w: hsm envelopes are opened by the HSM (use Open)", ErrMode)
	}
	c, err := k.decrypter(ctx, identity, col, h.Alg, h.KeyVersion)
	if err != nil {
		return nil, time.Time{}, err
	}
	k.mu.RLock()
	a := k.auth[authKey{identity, col.Scope, h.Alg, client.Decrypt}]
	k.mu.RUnlock()
	return c, a.expires, nil
}

// decrypter returns the cipher of (scope, version, alg) if identity is (recently) allowed to decrypt
// with the scope's keys.
func (k *Keys) decrypter(ctx context.Context, identity string, col Column, alg envelope.Alg, v uint32) (*envelope.Cipher, error) {
	ak := authKey{identity, col.Scope, alg, client.Decrypt}
	ck := cipherKey{col.Scope, v, alg}
	now := k.now()
	k.mu.RLock()
	if k.closed {
		k.mu.RUnlock()
		return nil, ErrClosed
	}
	a, authed := k.auth[ak]
	e := k.ciphers[ck]
	k.mu.RUnlock()
	if authed && now.Before(a.expires) {
		if a.err != nil {
			return nil, a.err
		}
		if e != nil {
			return e.cipher, nil
		}
	}
	// Ask the agent: it decides, and its answer carries the key if we lack it.
	cctx, cancel := k.ctx(ctx)
	defer cancel()
	if _, err := k.fetchKey(cctx, identity, col, alg, v, client.Decrypt); err != nil {
		err = agentErr(err, identity, col, client.Decrypt)
		if errors.Is(err, ErrDenied) {
			k.remember(ak, 0, err, k.denyTTL)
		}
		return nil, err
	}
	k.remember(ak, v, nil, k.ttl)
	k.mu.RLock()
	e = k.ciphers[ck]
	k.mu.RUnlock()
	if e == nil {
		return nil, ErrClosed
	}
	return e.cipher, nil
}

// MatchSealers returns one sealer per live key version of a deterministic column (newest first), for
// equality predicates that must match values written under any of them. Live versions are the newest
// one the agent gives for decryption and every older one it still serves (a destroyed version,
// NotFound, is skipped); the list is cached with the TTL.
func (k *Keys) MatchSealers(ctx context.Context, identity string, col Column) ([]Sealer, error) {
	alg, err := AlgFor(col.Mode)
	if err != nil {
		return nil, err
	}
	if alg != envelope.AlgDeterministic {
		return nil, fmt.Errorf("%w: column %s is %s, equality needs deterministic", ErrMode, col.AADName(), col.Mode)
	}
	ak := authKey{identity, col.Scope, alg, client.Decrypt}
	now := k.now()
	k.mu.RLock()
	le, ok := k.live[ak]
	a, authed := k.auth[ak]
	k.mu.RUnlock()
	var versions []uint32
	switch {
	case authed && now.Before(a.expires) && a.err != nil:
		return nil, a.err
	case ok && now.Before(le.expires) && authed && now.Before(a.expires):
		versions = le.versions
	default:
		versions, err = k.liveVersions(ctx, identity, col, alg)
		if err != nil {
			return nil, err
		}
	}
	out := make([]Sealer, 0, len(versions))
	for _, v := range versions {
		c, err := k.decrypter(ctx, identity, col, alg, v)
		if err != nil {
			return nil, err
		}
		out = append(out, softSealer{c: c, column: col.AADName()})
	}
	return out, nil
}

func (k *Keys) liveVersions(ctx context.Context, identity string, col Column, alg envelope.Alg) ([]uint32, error) {
	ak := authKey{identity, col.Scope, alg, client.Decrypt}
	newest, err := k.fetchNewest(ctx, identity, col, alg, client.Decrypt)
	if err != nil {
		return nil, err
	}
	versions := []uint32{newest}
	cctx, cancel := k.ctx(ctx)
	defer cancel()
	for v := newest - 1; v >= 1; v-- {
		if _, err := k.fetchKey(cctx, identity, col, alg, v, client.Decrypt); err != nil {
			if errors.Is(err, client.ErrNotFound) {
				continue // destroyed: nothing can be stored under it any more
			}
			return nil, agentErr(err, identity, col, client.Decrypt)
		}
		versions = append(versions, v)
	}
	k.mu.Lock()
	k.live[ak] = liveEntry{versions: versions, expires: k.now().Add(k.ttl)}
	k.mu.Unlock()
	return versions, nil
}

// Authorize reports whether identity may (still) use col's keys for op, asking the agent when the
// cached answer is older than the TTL. It returns nil, an error wrapping ErrDenied, or the agent's
// failure. The proxy calls it once per result description to apply on_denied before any row.
func (k *Keys) Authorize(ctx context.Context, identity string, col Column, op client.Op) error {
	alg, err := AlgFor(col.Mode)
	if err != nil {
		return err
	}
	ak := authKey{identity, col.Scope, alg, op}
	k.mu.RLock()
	a, ok := k.auth[ak]
	closed := k.closed
	k.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if ok && k.now().Before(a.expires) {
		return a.err
	}
	if op == client.Encrypt {
		_, err := k.Sealer(ctx, identity, col)
		return err
	}
	if alg != envelope.AlgHSM {
		_, err := k.fetchNewest(ctx, identity, col, alg, client.Decrypt)
		return err
	}
	// hsm: a decryption of a body that cannot authenticate is refused by the agent's policy before
	// it reaches the HSM when identity may not decrypt; otherwise the HSM rejects the body.
	cctx, cancel := k.ctx(ctx)
	defer cancel()
	_, err = k.agent.Decrypt(cctx, col.Scope, 1, identity, make([]byte, 28), []byte("keyward colkeys authorization probe"))
	switch {
	case err == nil, isAuthFailure(err), errors.Is(err, client.ErrNotFound):
		k.remember(ak, 0, nil, k.ttl)
		return nil
	case errors.Is(err, client.ErrDenied):
		err = agentErr(err, identity, col, op)
		k.remember(ak, 0, err, k.denyTTL)
		return err
	}
	return agentErr(err, identity, col, op)
}

// Forget drops the cached authorization answers and version lists (not the ciphers), so the next
// request of every identity asks the agent again: for tests and for a policy reload signal.
func (k *Keys) Forget() {
	k.mu.Lock()
	clear(k.auth)
	clear(k.newest)
	clear(k.live)
	k.mu.Unlock()
}

// Close destroys every cipher and key. Later calls fail with ErrClosed.
func (k *Keys) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	k.closed = true
	for ck, e := range k.ciphers {
		e.cipher.Destroy()
		e.key.Destroy()
		delete(k.ciphers, ck)
	}
	clear(k.hsms)
	clear(k.auth)
	clear(k.newest)
	clear(k.live)
}

type softSealer struct {
	c      *envelope.Cipher
	column string
}

func (s softSealer) Seal(_ context.Context, dst, plaintext []byte) ([]byte, error) {
	return s.c.Seal(dst, plaintext, s.column)
}
func (s softSealer) Version() uint32 { return s.c.KeyVersion() }

type hsmSealer struct {
	c      *envelope.HSMCipher
	column string
}

func (s hsmSealer) Seal(ctx context.Context, dst, plaintext []byte) ([]byte, error) {
	return s.c.Seal(ctx, dst, plaintext, s.column)
}
func (s hsmSealer) Version() uint32 { return s.c.KeyVersion() }

// agentHSM adapts the agent client to envelope.HSM for one identity.
type agentHSM struct {
	agent    *client.Client
	identity string
}

var _ envelope.HSM = agentHSM{}

func (a agentHSM) Encrypt(ctx context.Context, scope string, version uint32, plaintext, aad []byte) ([]byte, uint32, error) {
	return a.agent.Encrypt(ctx, scope, version, a.identity, plaintext, aad)
}

func (a agentHSM) Decrypt(ctx context.Context, scope string, version uint32, ct, aad []byte) ([]byte, error) {
	pt, err := a.agent.Decrypt(ctx, scope, version, a.identity, ct, aad)
	if err != nil && !errors.Is(err, envelope.ErrOpen) && isAuthFailure(err) {
		return nil, fmt.Errorf("%w: %v", envelope.ErrOpen, err)
	}
	return pt, err
}

// isAuthFailure tells an HSM authentication failure (the key service's "bad input") from denial and
// unavailability.
func isAuthFailure(err error) bool { return errors.Is(err, client.ErrBadRequest) }
