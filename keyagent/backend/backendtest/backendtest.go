// Package backendtest is the contract suite every backend.Backend implementation runs, so that the
// PKCS#11 and software backends keep exactly the same semantics. Keys derived by a backend are checked
// against the pure-Go reference (package kdf) through secrets imported with real openssl-made BYOK
// bundles, so the suite proves the HSM computes the documented derivation, not just a stable one.
package backendtest

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward/keyagent/backend"
	"github.com/keyward/keyward/keyagent/kdf"
	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/testenv"
)

// Config describes the backend under test.
type Config struct {
	// NewStore makes a fresh, empty store for one subtest and returns a function opening a backend on
	// it. The opener may be called several times (reopen, two instances on one store); the backends it
	// returns are closed by the suite (and may also be closed by t.Cleanup).
	NewStore func(t *testing.T) (open func(t *testing.T) backend.Backend)
	// OAEPSHA256 says the backend supports RSA_AES_KEY_WRAP_SHA_256; when false the suite expects
	// ErrUnsupported for it (SoftHSM 2.6 has RSA-OAEP with SHA-1 only).
	OAEPSHA256 bool
}

// Run runs the contract suite.
func Run(t *testing.T, cfg Config) {
	tests := []struct {
		name string
		fn   func(t *testing.T, cfg Config)
	}{
		{"Lifecycle", testLifecycle},
		{"DeriveVersions", testDeriveVersions},
		{"Persistence", testPersistence},
		{"TwoInstances", testTwoInstances},
		{"AEAD", testAEAD},
		{"Import", testImport},
		{"Backup", testBackup},
		{"Concurrency", testConcurrency},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, cfg) })
	}
}

var ctx = context.Background()

func open1(t *testing.T, cfg Config) (backend.Backend, func(t *testing.T) backend.Backend) {
	open := cfg.NewStore(t)
	return open(t), open
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func must[T any](t *testing.T, what string) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func derive(t *testing.T, b backend.Backend, scope string, version, bits int, forEncrypt bool) (*memsafe.Key, int) {
	t.Helper()
	k, v, err := b.Derive(ctx, scope, version, bits, forEncrypt)
	if err != nil {
		t.Fatalf("Derive(%s, v%d, %d): %v", scope, version, bits, err)
	}
	if k.Len() != bits/8 {
		t.Fatalf("Derive(%s): %d bytes, want %d", scope, k.Len(), bits/8)
	}
	t.Cleanup(k.Destroy)
	return k, v
}

func kcv(t *testing.T, k *memsafe.Key) string {
	t.Helper()
	s, err := kdf.KCV(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testLifecycle(t *testing.T, cfg Config) {
	b, _ := open1(t, cfg)
	if rs := must[[]backend.Keyring](t, "Keyrings")(b.Keyrings(ctx)); len(rs) != 0 {
		t.Fatalf("fresh store lists %d keyrings", len(rs))
	}
	r := must[backend.Keyring](t, "CreateKeyring")(b.CreateKeyring(ctx, "payroll", backend.KindDerive))
	if r.Name != "payroll" || r.Kind != backend.KindDerive || len(r.Versions) != 1 || r.Versions[0].N != 1 ||
		r.Versions[0].State != backend.StateActive || r.Versions[0].Created.IsZero() {
		t.Fatalf("CreateKeyring = %+v", r)
	}
	must[backend.Keyring](t, "CreateKeyring aead")(b.CreateKeyring(ctx, "vault.x-1_a", backend.KindHSMAEAD))
	_, err := b.CreateKeyring(ctx, "payroll", backend.KindDerive)
	wantErr(t, "create twice", err, backend.ErrExists)
	for _, bad := range []string{"", "Payroll", "-x", "a b", "a:b", strings.Repeat("a", 64), "é"} {
		_, err := b.CreateKeyring(ctx, bad, backend.KindDerive)
		wantErr(t, fmt.Sprintf("create %q", bad), err, backend.ErrBadInput)
	}
	_, err = b.CreateKeyring(ctx, "other", backend.Kind("rsa"))
	wantErr(t, "bad kind", err, backend.ErrBadInput)

	v := must[backend.Version](t, "Rotate")(b.Rotate(ctx, "payroll"))
	if v.N != 2 || v.State != backend.StateActive {
		t.Fatalf("Rotate = %+v", v)
	}
	_, err = b.Rotate(ctx, "nope")
	wantErr(t, "rotate unknown", err, backend.ErrNotFound)
	_, err = b.Keyring(ctx, "nope")
	wantErr(t, "keyring unknown", err, backend.ErrNotFound)

	rs := must[[]backend.Keyring](t, "Keyrings")(b.Keyrings(ctx))
	if len(rs) != 2 || rs[0].Name != "payroll" || rs[1].Name != "vault.x-1_a" || len(rs[0].Versions) != 2 || rs[1].Kind != backend.KindHSMAEAD {
		t.Fatalf("Keyrings = %+v", rs)
	}

	wantErr(t, "disable unknown version", b.SetState(ctx, "payroll", 9, backend.StateDisabled), backend.ErrNotFound)
	wantErr(t, "disable unknown ring", b.SetState(ctx, "nope", 1, backend.StateDisabled), backend.ErrNotFound)
	wantErr(t, "bad state", b.SetState(ctx, "payroll", 1, backend.State("frozen")), backend.ErrBadInput)
	if err := b.SetState(ctx, "payroll", 1, backend.StateDisabled); err != nil {
		t.Fatal(err)
	}
	if err := b.SetState(ctx, "payroll", 2, backend.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "re-enable destroyed", b.SetState(ctx, "payroll", 2, backend.StateActive), backend.ErrNotFound)
	r = must[backend.Keyring](t, "Keyring")(b.Keyring(ctx, "payroll"))
	if len(r.Versions) != 2 || r.Versions[0].State != backend.StateDisabled || r.Versions[1].State != backend.StateDestroyed {
		t.Fatalf("after disable/destroy: %+v", r)
	}
	if _, ok := r.Latest(); ok {
		t.Fatalf("Latest of a keyring without active versions: %+v", r)
	}
	// Version numbers are never reused, even after a destroy.
	if v := must[backend.Version](t, "Rotate")(b.Rotate(ctx, "payroll")); v.N != 3 {
		t.Fatalf("Rotate after destroy = v%d, want v3", v.N)
	}
	if err := b.SetState(ctx, "payroll", 1, backend.StateActive); err != nil {
		t.Fatalf("re-enable: %v", err)
	}
}

func testDeriveVersions(t *testing.T, cfg Config) {
	b, _ := open1(t, cfg)
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "payroll", backend.KindDerive))
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "vault", backend.KindHSMAEAD))

	k1, v := derive(t, b, "payroll:employees.ssn", 0, 256, true)
	if v != 1 {
		t.Fatalf("version %d, want 1", v)
	}
	k1b, _ := derive(t, b, "payroll:employees.ssn", 1, 256, false)
	if !k1.Equal(k1b) {
		t.Fatal("derivation is not deterministic")
	}
	other, _ := derive(t, b, "payroll:employees.salary", 1, 256, false)
	if other.Equal(k1) {
		t.Fatal("two scopes gave the same key")
	}
	k512, _ := derive(t, b, "payroll:employees.ssn", 1, 512, false)
	if k512.Equal(k1) || prefixEqual(t, k512, k1) {
		t.Fatal("the 512-bit key extends the 256-bit one (L must be in the PRF input)")
	}

	must[backend.Version](t, "rotate")(b.Rotate(ctx, "payroll"))
	k2, v := derive(t, b, "payroll:employees.ssn", 0, 256, true)
	if v != 2 || k2.Equal(k1) {
		t.Fatalf("after rotate: version %d, same key %v", v, k2.Equal(k1))
	}
	if k, _ := derive(t, b, "payroll:employees.ssn", 1, 256, true); !k.Equal(k1) {
		t.Fatal("version 1 changed after rotate")
	}

	// Disabled: refused for encryption, allowed to decrypt; version 0 skips it.
	if err := b.SetState(ctx, "payroll", 2, backend.StateDisabled); err != nil {
		t.Fatal(err)
	}
	_, _, err := b.Derive(ctx, "payroll:employees.ssn", 2, 256, true)
	wantErr(t, "derive disabled for encrypt", err, backend.ErrDisabled)
	if k, _ := derive(t, b, "payroll:employees.ssn", 2, 256, false); !k.Equal(k2) {
		t.Fatal("disabled version derives another key")
	}
	if _, v := derive(t, b, "payroll:employees.ssn", 0, 256, true); v != 1 {
		t.Fatalf("version 0 with v2 disabled = v%d, want v1", v)
	}
	// Destroyed: not found, forever.
	if err := b.SetState(ctx, "payroll", 1, backend.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	_, _, err = b.Derive(ctx, "payroll:employees.ssn", 1, 256, false)
	wantErr(t, "derive destroyed", err, backend.ErrNotFound)
	_, _, err = b.Derive(ctx, "payroll:employees.ssn", 0, 256, true)
	wantErr(t, "derive with no active version", err, backend.ErrNotFound)
	if err := b.SetState(ctx, "payroll", 2, backend.StateActive); err != nil {
		t.Fatal(err)
	}
	if k, v := derive(t, b, "payroll:employees.ssn", 0, 256, true); v != 2 || !k.Equal(k2) {
		t.Fatalf("re-enabled v2: got v%d", v)
	}

	bad := []struct {
		name   string
		scope  string
		ver    int
		bits   int
		target error
	}{
		{"unknown keyring", "nope:x", 0, 256, backend.ErrNotFound},
		{"unknown version", "payroll:x", 7, 256, backend.ErrNotFound},
		{"negative version", "payroll:x", -1, 256, backend.ErrBadInput},
		{"no name", "payroll:", 0, 256, backend.ErrBadInput},
		{"no colon", "payroll", 0, 256, backend.ErrBadInput},
		{"nul", "payroll:a\x00b", 0, 256, backend.ErrBadInput},
		{"128 bits", "payroll:x", 0, 128, backend.ErrBadInput},
		{"hsm-aead keyring", "vault:x", 0, 256, backend.ErrBadInput},
	}
	for _, c := range bad {
		k, _, err := b.Derive(ctx, c.scope, c.ver, c.bits, false)
		if err == nil {
			k.Destroy()
		}
		wantErr(t, c.name, err, c.target)
	}
}

func prefixEqual(t *testing.T, long, short *memsafe.Key) bool {
	var eq bool
	_ = long.Use(func(l []byte) error {
		return short.Use(func(s []byte) error { eq = bytes.Equal(l[:len(s)], s); return nil })
	})
	return eq
}

func testPersistence(t *testing.T, cfg Config) {
	b, open := open1(t, cfg)
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "payroll", backend.KindDerive))
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "vault", backend.KindHSMAEAD))
	must[backend.Version](t, "rotate")(b.Rotate(ctx, "payroll"))
	must[backend.Version](t, "rotate")(b.Rotate(ctx, "payroll"))
	if err := b.SetState(ctx, "payroll", 1, backend.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	if err := b.SetState(ctx, "payroll", 2, backend.StateDisabled); err != nil {
		t.Fatal(err)
	}
	before := must[[]backend.Keyring](t, "Keyrings")(b.Keyrings(ctx))
	k2, _ := derive(t, b, "payroll:a", 2, 256, false)
	k3, _ := derive(t, b, "payroll:a", 3, 512, false)
	ct, _ := must2(t, "encrypt")(b.Encrypt(ctx, "vault", 0, []byte("hello"), []byte("aad")))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = open(t)
	after := must[[]backend.Keyring](t, "Keyrings")(b.Keyrings(ctx))
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("keyrings changed across reopen:\n%v\n%v", before, after)
	}
	if k, _ := derive(t, b, "payroll:a", 2, 256, false); !k.Equal(k2) {
		t.Fatal("v2 key changed across reopen")
	}
	if k, _ := derive(t, b, "payroll:a", 3, 512, false); !k.Equal(k3) {
		t.Fatal("v3 key changed across reopen")
	}
	pt, err := b.Decrypt(ctx, "vault", 1, ct, []byte("aad"))
	if err != nil || string(pt) != "hello" {
		t.Fatalf("decrypt after reopen: %q, %v", pt, err)
	}
}

func must2(t *testing.T, what string) func(a []byte, n int, err error) ([]byte, int) {
	return func(a []byte, n int, err error) ([]byte, int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return a, n
	}
}

func testTwoInstances(t *testing.T, cfg Config) {
	a, open := open1(t, cfg)
	b := open(t)
	must[backend.Keyring](t, "create")(a.CreateKeyring(ctx, "payroll", backend.KindDerive))
	ka, _ := derive(t, a, "payroll:employees.ssn", 0, 512, true)
	kb, v := derive(t, b, "payroll:employees.ssn", 0, 512, true)
	if v != 1 || !ka.Equal(kb) {
		t.Fatal("two backends on one store derive different keys")
	}
	must[backend.Version](t, "rotate")(a.Rotate(ctx, "payroll"))
	ka2, _ := derive(t, a, "payroll:employees.ssn", 2, 256, true)
	kb2, _ := derive(t, b, "payroll:employees.ssn", 2, 256, true)
	if !ka2.Equal(kb2) {
		t.Fatal("a version rotated by one instance derives differently in the other")
	}
	if r := must[backend.Keyring](t, "Keyring")(b.Keyring(ctx, "payroll")); len(r.Versions) != 2 {
		t.Fatalf("second instance sees %d versions, want 2", len(r.Versions))
	}
	_, err := b.CreateKeyring(ctx, "payroll", backend.KindDerive)
	wantErr(t, "create in second instance", err, backend.ErrExists)
}

func testAEAD(t *testing.T, cfg Config) {
	b, _ := open1(t, cfg)
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "vault", backend.KindHSMAEAD))
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "payroll", backend.KindDerive))
	aad := []byte("public.cards.pan")
	for _, pt := range [][]byte{nil, []byte("4111111111111111"), bytes.Repeat([]byte{0xa5}, 4000)} {
		ct, v := must2(t, "encrypt")(b.Encrypt(ctx, "vault", 0, pt, aad))
		if v != 1 || len(ct) != len(pt)+backend.GCMNonceSize+backend.GCMTagSize {
			t.Fatalf("Encrypt: v%d, %d bytes for %d", v, len(ct), len(pt))
		}
		got, err := b.Decrypt(ctx, "vault", 1, ct, aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("round trip of %d bytes: %v", len(pt), err)
		}
		ct2, _ := must2(t, "encrypt")(b.Encrypt(ctx, "vault", 0, pt, aad))
		if bytes.Equal(ct[:12], ct2[:12]) {
			t.Fatal("nonce reused")
		}
	}
	ct, _ := must2(t, "encrypt")(b.Encrypt(ctx, "vault", 0, []byte("secret value"), aad))
	flip := func(i int) []byte { c := bytes.Clone(ct); c[i] ^= 0x01; return c }
	tampered := []struct {
		name string
		ct   []byte
		aad  []byte
	}{
		{"nonce", flip(0), aad},
		{"body", flip(13), aad},
		{"tag", flip(len(ct) - 1), aad},
		{"aad", ct, []byte("public.cards.cvv")},
		{"no aad", ct, nil},
		{"truncated", ct[:len(ct)-1], aad},
		{"too short", ct[:20], aad},
	}
	for _, c := range tampered {
		if _, err := b.Decrypt(ctx, "vault", 1, c.ct, c.aad); !errors.Is(err, backend.ErrBadInput) {
			t.Fatalf("tampered %s: error %v, want ErrBadInput", c.name, err)
		}
	}
	must[backend.Version](t, "rotate")(b.Rotate(ctx, "vault"))
	ct2, v := must2(t, "encrypt")(b.Encrypt(ctx, "vault", 0, []byte("v2"), aad))
	if v != 2 {
		t.Fatalf("encrypt after rotate used v%d", v)
	}
	if _, err := b.Decrypt(ctx, "vault", 1, ct2, aad); !errors.Is(err, backend.ErrBadInput) {
		t.Fatalf("v2 ciphertext opened with v1: %v", err)
	}
	_, err := b.Decrypt(ctx, "vault", 0, ct, aad)
	wantErr(t, "decrypt version 0", err, backend.ErrBadInput)
	_, _, err = b.Encrypt(ctx, "payroll", 0, []byte("x"), nil)
	wantErr(t, "encrypt with derive keyring", err, backend.ErrBadInput)
	_, err = b.Decrypt(ctx, "nope", 1, ct, aad)
	wantErr(t, "decrypt unknown keyring", err, backend.ErrNotFound)

	if err := b.SetState(ctx, "vault", 1, backend.StateDisabled); err != nil {
		t.Fatal(err)
	}
	_, _, err = b.Encrypt(ctx, "vault", 1, []byte("x"), nil)
	wantErr(t, "encrypt with disabled version", err, backend.ErrDisabled)
	if pt, err := b.Decrypt(ctx, "vault", 1, ct, aad); err != nil || string(pt) != "secret value" {
		t.Fatalf("decrypt with disabled version: %v", err)
	}
	if err := b.SetState(ctx, "vault", 1, backend.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	_, err = b.Decrypt(ctx, "vault", 1, ct, aad)
	wantErr(t, "decrypt with destroyed version", err, backend.ErrNotFound)
}

// Bundle makes a BYOK bundle for secret with real openssl commands, as a customer following the cloud
// KMS import instructions would: RSA-OAEP(ephemeral AES-256 key) || AES-KWP(secret). oaepHash is "sha1"
// or "sha256" (used for both OAEP and MGF1).
func Bundle(t *testing.T, pub *rsa.PublicKey, secret []byte, oaepHash string) []byte {
	t.Helper()
	ossl := testenv.Require(t, "openssl")
	dir := t.TempDir()
	pubPEM, err := backend.PublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pemPath := write("import.pem", pubPEM)
	secretPath := write("secret", secret)
	run := func(args ...string) []byte {
		out, err := exec.Command(ossl, args...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("openssl %s: %v: %s", args[0], err, ee.Stderr)
			}
			t.Fatalf("openssl %s: %v", args[0], err)
		}
		return out
	}
	ephPath := filepath.Join(dir, "eph")
	run("rand", "-out", ephPath, "32")
	eph, err := os.ReadFile(ephPath)
	if err != nil {
		t.Fatal(err)
	}
	wrappedEph := run("pkeyutl", "-encrypt", "-pubin", "-inkey", pemPath, "-pkeyopt", "rsa_padding_mode:oaep",
		"-pkeyopt", "rsa_oaep_md:"+oaepHash, "-pkeyopt", "rsa_mgf1_md:"+oaepHash, "-in", ephPath)
	wrappedSecret := run("enc", "-id-aes256-wrap-pad", "-K", hex.EncodeToString(eph), "-iv", "A65959A6", "-in", secretPath)
	return append(wrappedEph, wrappedSecret...)
}

// OpenSSLKCV computes the KCV of secret with openssl alone (HMAC-SHA256 over 32 zero bytes).
func OpenSSLKCV(t *testing.T, secret []byte) string {
	t.Helper()
	ossl := testenv.Require(t, "openssl")
	zeros := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(zeros, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ossl, "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:"+hex.EncodeToString(secret), "-r", zeros).Output()
	if err != nil {
		t.Fatalf("openssl dgst: %v", err)
	}
	return string(out[:6])
}

func randomSecret(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func noSecretIn(t *testing.T, err error, secret []byte) {
	t.Helper()
	if err != nil && strings.Contains(strings.ToLower(err.Error()), hex.EncodeToString(secret)) {
		t.Fatal("an error message contains key material")
	}
}

func testImport(t *testing.T, cfg Config) {
	b, open := open1(t, cfg)
	pub := must[*rsa.PublicKey](t, "ImportPublicKey")(b.ImportPublicKey(ctx))
	if pub.N.BitLen() != backend.ImportKeyBits {
		t.Fatalf("import key is %d bits", pub.N.BitLen())
	}
	if again := must[*rsa.PublicKey](t, "ImportPublicKey")(b.ImportPublicKey(ctx)); !again.Equal(pub) {
		t.Fatal("ImportPublicKey made a second key")
	}

	// A derive secret imported with a real openssl bundle derives exactly what the pure-Go reference
	// derives from the original secret, and its printed KCV matches openssl's.
	secret := randomSecret(t, 32)
	v, gotKCV, err := b.Import(ctx, "byok", backend.KindDerive, Bundle(t, pub, secret, "sha1"), backend.WrapRSAAESKeyWrapSHA1)
	noSecretIn(t, err, secret)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if v.N != 1 || v.State != backend.StateActive {
		t.Fatalf("Import = %+v", v)
	}
	if want := OpenSSLKCV(t, secret); gotKCV != want {
		t.Fatalf("import KCV %s, openssl says %s", gotKCV, want)
	}
	ref, err := memsafe.FromBytes(bytes.Clone(secret))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Destroy()
	if kcv(t, ref) != gotKCV {
		t.Fatal("kdf.KCV disagrees with openssl")
	}
	for _, c := range []struct {
		scope string
		bits  int
	}{{"byok:employees.ssn", 256}, {"byok:volume/web-7/data", 512}, {"byok:ünïcode", 256}} {
		want, err := kdf.Derive(kdf.HMACPRF(ref), c.scope, c.bits)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := derive(t, b, c.scope, 1, c.bits, true)
		if !got.Equal(want) {
			t.Fatalf("Derive(%s, %d) differs from the kdf reference (kcv %s, want %s)", c.scope, c.bits, kcv(t, got), kcv(t, want))
		}
		want.Destroy()
	}

	// A second import adds a version; a 64-byte derive secret is accepted.
	secret64 := randomSecret(t, 64)
	v, k64, err := b.Import(ctx, "byok", backend.KindDerive, Bundle(t, pub, secret64, "sha1"), backend.WrapRSAAESKeyWrapSHA1)
	if err != nil || v.N != 2 || k64 != OpenSSLKCV(t, secret64) {
		t.Fatalf("second import: %+v %s %v", v, k64, err)
	}

	// hsm-aead import: ciphertexts open with plain Go AES-GCM under the original secret.
	aesSecret := randomSecret(t, 32)
	if _, k, err := b.Import(ctx, "vault", backend.KindHSMAEAD, Bundle(t, pub, aesSecret, "sha1"), backend.WrapRSAAESKeyWrapSHA1); err != nil || k != OpenSSLKCV(t, aesSecret) {
		t.Fatalf("aead import: kcv %s, %v", k, err)
	}
	ct, _ := must2(t, "encrypt")(b.Encrypt(ctx, "vault", 0, []byte("pan"), []byte("aad")))
	blk, _ := aes.NewCipher(aesSecret)
	g, _ := cipher.NewGCM(blk)
	if pt, err := g.Open(nil, ct[:12], ct[12:], []byte("aad")); err != nil || string(pt) != "pan" {
		t.Fatalf("backend GCM does not match the reference AES-256-GCM: %v", err)
	}

	// SHA-256 OAEP: works where supported, else a clear ErrUnsupported.
	s256 := randomSecret(t, 32)
	b256 := Bundle(t, pub, s256, "sha256")
	_, k, err := b.Import(ctx, "byok256", backend.KindDerive, b256, backend.WrapRSAAESKeyWrapSHA256)
	noSecretIn(t, err, s256)
	if cfg.OAEPSHA256 {
		if err != nil || k != OpenSSLKCV(t, s256) {
			t.Fatalf("SHA-256 import: %s %v", k, err)
		}
	} else {
		wantErr(t, "SHA-256 import on a backend without it", err, backend.ErrUnsupported)
		if !strings.Contains(err.Error(), "SHA-256") {
			t.Fatalf("unsupported error does not name SHA-256: %v", err)
		}
	}

	bad := []struct {
		name   string
		ring   string
		kind   backend.Kind
		bundle []byte
		w      backend.Wrapping
		target error
	}{
		{"wrong oaep hash", "bad1", backend.KindDerive, b256, backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"truncated bundle", "bad2", backend.KindDerive, b256[:len(b256)-8], backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"odd length", "bad3", backend.KindDerive, b256[:len(b256)-1], backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"only rsa part", "bad4", backend.KindDerive, b256[:384], backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"empty", "bad5", backend.KindDerive, nil, backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"corrupted secret", "bad6", backend.KindDerive, flipLast(Bundle(t, pub, secret, "sha1")), backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"short derive secret", "bad7", backend.KindDerive, Bundle(t, pub, randomSecret(t, 16), "sha1"), backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"48-byte aes secret", "bad8", backend.KindHSMAEAD, Bundle(t, pub, randomSecret(t, 48), "sha1"), backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"kind mismatch", "byok", backend.KindHSMAEAD, Bundle(t, pub, aesSecret, "sha1"), backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
		{"unknown wrapping", "bad9", backend.KindDerive, b256, backend.Wrapping("RSA_OAEP_3072_SHA256"), backend.ErrBadInput},
		{"bad name", "Bad", backend.KindDerive, b256, backend.WrapRSAAESKeyWrapSHA1, backend.ErrBadInput},
	}
	for _, c := range bad {
		_, _, err := b.Import(ctx, c.ring, c.kind, c.bundle, c.w)
		wantErr(t, c.name, err, c.target)
		noSecretIn(t, err, secret)
		if c.ring != "byok" {
			if _, err := b.Keyring(ctx, c.ring); !errors.Is(err, backend.ErrNotFound) && !errors.Is(err, backend.ErrBadInput) {
				t.Fatalf("%s: failed import left keyring %q behind (%v)", c.name, c.ring, err)
			}
		}
	}
	if r := must[backend.Keyring](t, "Keyring")(b.Keyring(ctx, "byok")); len(r.Versions) != 2 {
		t.Fatalf("failed imports changed byok: %+v", r)
	}

	// The import key and imported keys survive a reopen.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t)
	if again := must[*rsa.PublicKey](t, "ImportPublicKey")(b.ImportPublicKey(ctx)); !again.Equal(pub) {
		t.Fatal("import key changed across reopen")
	}
	want, _ := kdf.Derive(kdf.HMACPRF(ref), "byok:employees.ssn", 256)
	defer want.Destroy()
	if got, _ := derive(t, b, "byok:employees.ssn", 1, 256, false); !got.Equal(want) {
		t.Fatal("imported key derives differently after reopen")
	}
}

func flipLast(b []byte) []byte { b[len(b)-1] ^= 1; return b }

func testBackup(t *testing.T, cfg Config) {
	b, _ := open1(t, cfg)
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "payroll", backend.KindDerive))
	must[backend.Version](t, "rotate")(b.Rotate(ctx, "payroll"))
	wk, err := memsafe.NewRandom(32)
	if err != nil {
		t.Fatal(err)
	}
	defer wk.Destroy()
	for _, bits := range []int{256, 512} {
		blob, v, err := b.ExportBackup(ctx, "payroll:employees.ssn", 1, bits, wk)
		if err != nil || v != 1 {
			t.Fatalf("ExportBackup: v%d %v", v, err)
		}
		dk, _ := derive(t, b, "payroll:employees.ssn", 1, bits, false)
		r, err := b.RestoreBackup(ctx, blob, wk)
		if err != nil {
			t.Fatalf("RestoreBackup: %v", err)
		}
		if !r.Verified || r.Scope != "payroll:employees.ssn" || r.Version != 1 || r.Bits != bits || r.KCV != kcv(t, dk) || !r.Key.Equal(dk) {
			t.Fatalf("RestoreBackup = %+v, want kcv %s", r, kcv(t, dk))
		}
		r.Key.Destroy()
	}
	blob, v, err := b.ExportBackup(ctx, "payroll:x", 0, 256, wk)
	if err != nil || v != 2 {
		t.Fatalf("ExportBackup latest: v%d, %v", v, err)
	}
	dk, _ := derive(t, b, "payroll:x", 2, 256, false)

	_, _, err = b.ExportBackup(ctx, "payroll", 1, 256, wk)
	wantErr(t, "keyring-level backup", err, backend.ErrUnsupported)
	other, _ := memsafe.NewRandom(32)
	defer other.Destroy()
	_, err = b.RestoreBackup(ctx, blob, other)
	wantErr(t, "restore with the wrong key", err, backend.ErrBadInput)
	short, _ := memsafe.NewRandom(16)
	defer short.Destroy()
	_, _, err = b.ExportBackup(ctx, "payroll:x", 0, 256, short)
	wantErr(t, "16-byte backup key", err, backend.ErrBadInput)
	_, err = b.RestoreBackup(ctx, blob[:len(blob)-3], wk)
	wantErr(t, "truncated blob", err, backend.ErrBadInput)

	// After the version is destroyed the backup is all that is left, and it still restores.
	if err := b.SetState(ctx, "payroll", 2, backend.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	r, err := b.RestoreBackup(ctx, blob, wk)
	if err != nil || r.Verified || !r.Key.Equal(dk) {
		t.Fatalf("restore after destroy: %+v %v", r, err)
	}
	r.Key.Destroy()
}

func testConcurrency(t *testing.T, cfg Config) {
	b, _ := open1(t, cfg)
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "payroll", backend.KindDerive))
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "vault", backend.KindHSMAEAD))
	const workers, rounds = 16, 25
	want := make([]*memsafe.Key, workers)
	for i := range want {
		want[i], _ = derive(t, b, fmt.Sprintf("payroll:col%d", i), 1, 256, true)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scope := fmt.Sprintf("payroll:col%d", i)
			for range rounds {
				k, _, err := b.Derive(ctx, scope, 0, 256, true)
				if err != nil {
					errs <- err
					return
				}
				eq := k.Equal(want[i])
				k.Destroy()
				if !eq {
					errs <- fmt.Errorf("worker %d: concurrent derive gave another key", i)
					return
				}
				ct, v, err := b.Encrypt(ctx, "vault", 0, []byte(scope), nil)
				if err == nil {
					var pt []byte
					pt, err = b.Decrypt(ctx, "vault", v, ct, nil)
					if err == nil && string(pt) != scope {
						err = fmt.Errorf("worker %d: concurrent decrypt mismatch", i)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// A rotation in the middle must not disturb readers of version 1.
	if _, err := b.Rotate(ctx, "vault"); err != nil {
		t.Error(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testClosed(t *testing.T, cfg Config) {
	b, _ := open1(t, cfg)
	must[backend.Keyring](t, "create")(b.CreateKeyring(ctx, "payroll", backend.KindDerive))
	p, canPing := b.(backend.Pinger)
	if canPing {
		if err := p.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if canPing {
		wantErr(t, "ping after close", p.Ping(ctx), backend.ErrUnavailable)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, _, err := b.Derive(ctx, "payroll:x", 0, 256, false)
	wantErr(t, "derive after close", err, backend.ErrUnavailable)
	_, err = b.Keyrings(ctx)
	wantErr(t, "list after close", err, backend.ErrUnavailable)
}
