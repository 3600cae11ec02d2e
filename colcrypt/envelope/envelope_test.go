package envelope_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/keyward/keyward/colcrypt/envelope"
	"github.com/keyward/keyward/colcrypt/envelope/envelopetest"
	"github.com/keyward/keyward/memsafe"
)

type vector struct {
	Name      string `json:"name"`
	Alg       int    `json:"alg"`
	Key       string `json:"key"`
	Version   uint32 `json:"version"`
	Scope     string `json:"scope"`
	Column    string `json:"column"`
	Nonce     string `json:"nonce"`
	Plaintext string `json:"plaintext"`
	Envelope  string `json:"envelope"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 9 {
		t.Fatalf("only %d vectors", len(vs))
	}
	return vs
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func key(t testing.TB, hexKey string) *memsafe.Key {
	t.Helper()
	k, err := memsafe.FromBytes(unhex(t, hexKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

// softHSM stands in for the HSM only in these unit tests of the envelope framing: it does in software
// what the HSM does (AES-256-GCM with a nonce it chooses). The real HSM path is tested end to end with
// SoftHSM2 by the key agent and colcrypt integration tests.
type softHSM struct {
	aead    cipher.AEAD
	nonce   []byte
	version uint32 // version it claims to have used; 0 means "the one asked for"
	err     error
}

func newSoftHSM(t testing.TB, key, nonce []byte) *softHSM {
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return &softHSM{aead: g, nonce: nonce}
}

func (h *softHSM) Encrypt(_ context.Context, _ string, version uint32, pt, aad []byte) ([]byte, uint32, error) {
	if h.err != nil {
		return nil, 0, h.err
	}
	if h.version != 0 {
		version = h.version
	}
	out := append([]byte(nil), h.nonce...)
	return h.aead.Seal(out, h.nonce, pt, aad), version, nil
}

func (h *softHSM) Decrypt(_ context.Context, _ string, _ uint32, body, aad []byte) ([]byte, error) {
	if h.err != nil {
		return nil, h.err
	}
	pt, err := h.aead.Open(nil, body[:12], body[12:], aad)
	if err != nil {
		return nil, envelope.ErrOpen
	}
	return pt, nil
}

var _ envelope.HSM = (*softHSM)(nil)

// sealer unifies the software and HSM ciphers for table tests.
type sealer interface {
	Seal(dst, pt []byte, column string) ([]byte, error)
	Open(dst, env []byte, column string) ([]byte, error)
}

type hsmSealer struct{ c *envelope.HSMCipher }

func (s hsmSealer) Seal(dst, pt []byte, col string) ([]byte, error) {
	return s.c.Seal(context.Background(), dst, pt, col)
}
func (s hsmSealer) Open(dst, env []byte, col string) ([]byte, error) {
	return s.c.Open(context.Background(), dst, env, col)
}

func cipherFor(t testing.TB, v vector) sealer {
	t.Helper()
	switch envelope.Alg(v.Alg) {
	case envelope.AlgRandomized:
		c, err := envelope.NewRandomized(key(t, v.Key), v.Version, v.Scope)
		if err != nil {
			t.Fatal(err)
		}
		envelope.SetNonceSource(c, bytes.NewReader(unhex(t, v.Nonce)))
		return c
	case envelope.AlgDeterministic:
		c, err := envelope.NewDeterministic(key(t, v.Key), v.Version, v.Scope)
		if err != nil {
			t.Fatal(err)
		}
		return c
	case envelope.AlgHSM:
		c, err := envelope.NewHSM(newSoftHSM(t, unhex(t, v.Key), unhex(t, v.Nonce)), v.Version, v.Scope)
		if err != nil {
			t.Fatal(err)
		}
		return hsmSealer{c}
	}
	t.Fatalf("vector %q: alg %d", v.Name, v.Alg)
	return nil
}

// The vectors were computed by pyca/cryptography (testdata/gen_vectors.py), not by this package.
func TestKnownAnswers(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			c := cipherFor(t, v)
			pt, want := unhex(t, v.Plaintext), unhex(t, v.Envelope)
			got, err := c.Seal([]byte("pre"), pt, v.Column)
			if err != nil {
				t.Fatal(err)
			}
			if string(got[:3]) != "pre" || !bytes.Equal(got[3:], want) {
				t.Fatalf("Seal:\n got %x\nwant %x", got[3:], want)
			}
			back, err := c.Open([]byte("pre"), want, v.Column)
			if err != nil {
				t.Fatal(err)
			}
			if string(back[:3]) != "pre" || !bytes.Equal(back[3:], pt) {
				t.Fatalf("Open returned the wrong plaintext")
			}
			h, err := envelope.ParseHeader(want)
			if err != nil {
				t.Fatal(err)
			}
			if h.Alg != envelope.Alg(v.Alg) || h.KeyVersion != v.Version || h.Fingerprint != envelope.Fingerprint(v.Scope) {
				t.Fatalf("ParseHeader = %+v", h)
			}
		})
	}
}

func TestOverhead(t *testing.T) {
	for _, v := range loadVectors(t) {
		env, pt := unhex(t, v.Envelope), unhex(t, v.Plaintext)
		over := len(env) - len(pt)
		if over > envelope.MaxOverhead || envelope.MaxOverhead > 40 {
			t.Errorf("%s: overhead %d bytes, limit 40", v.Name, over)
		}
		if want := envelope.Alg(v.Alg).Overhead(); over != want {
			t.Errorf("%s: overhead %d, Alg.Overhead says %d", v.Name, over, want)
		}
	}
	if envelope.AlgDeterministic.Overhead() != 28 || envelope.AlgRandomized.Overhead() != 40 || envelope.AlgHSM.Overhead() != 40 {
		t.Errorf("overheads %d %d %d, want 40 28 40", envelope.AlgRandomized.Overhead(), envelope.AlgDeterministic.Overhead(), envelope.AlgHSM.Overhead())
	}
}

func TestRandomizedNoncesDiffer(t *testing.T) {
	c, err := envelope.NewRandomized(key(t, strings.Repeat("11", 32)), 1, "s:c")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.Seal(nil, []byte("same"), "public.t.c")
	b, _ := c.Seal(nil, []byte("same"), "public.t.c")
	if bytes.Equal(a, b) {
		t.Fatal("two randomized seals of one value are equal")
	}
}

func TestDeterministicIsDeterministic(t *testing.T) {
	k := key(t, strings.Repeat("22", 64))
	c1, _ := envelope.NewDeterministic(k, 1, "s:c")
	c2, _ := envelope.NewDeterministic(k, 1, "s:c")
	a, _ := c1.Seal(nil, []byte("same"), "public.t.c")
	b, _ := c2.Seal(nil, []byte("same"), "public.t.c")
	if !bytes.Equal(a, b) {
		t.Fatal("deterministic seals differ")
	}
	d, _ := c1.Seal(nil, []byte("same"), "public.t.d")
	if bytes.Equal(a, d) {
		t.Fatal("deterministic seals for two columns are equal")
	}
}

// Every way an envelope can fail to open gives ErrOpen and appends nothing.
func TestOpenFailures(t *testing.T) {
	vs := loadVectors(t)
	for _, v := range vs {
		env := unhex(t, v.Envelope)
		mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(env)) }
		other := v
		other.Key = strings.Repeat("ee", len(v.Key)/2)
		cases := []struct {
			name   string
			c      sealer
			env    []byte
			column string
		}{
			{"wrong column", cipherFor(t, v), env, v.Column + "x"},
			{"empty column", cipherFor(t, v), env, ""},
			{"wrong key", cipherFor(t, other), env, v.Column},
			{"truncated by one", cipherFor(t, v), env[:len(env)-1], v.Column},
			{"header only", cipherFor(t, v), env[:envelope.HeaderSize], v.Column},
			{"empty", cipherFor(t, v), nil, v.Column},
			{"trailing byte", cipherFor(t, v), append(bytes.Clone(env), 0), v.Column},
			{"flipped last byte", cipherFor(t, v), mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), v.Column},
			{"flipped body", cipherFor(t, v), mod(func(b []byte) []byte { b[envelope.HeaderSize] ^= 0x80; return b }), v.Column},
			{"bad magic", cipherFor(t, v), mod(func(b []byte) []byte { b[0] = 'k'; return b }), v.Column},
			{"format version 2", cipherFor(t, v), mod(func(b []byte) []byte { b[2] = 2; return b }), v.Column},
			{"other alg", cipherFor(t, v), mod(func(b []byte) []byte { b[3] = byte(v.Alg%3 + 1); return b }), v.Column},
			{"other version", cipherFor(t, v), mod(func(b []byte) []byte { b[7] ^= 1; return b }), v.Column},
			{"other scope", cipherFor(t, v), mod(func(b []byte) []byte { b[8] ^= 1; return b }), v.Column},
		}
		for _, c := range cases {
			t.Run(v.Name+"/"+c.name, func(t *testing.T) {
				dst := []byte("keep")
				got, err := c.c.Open(dst, c.env, c.column)
				if !errors.Is(err, envelope.ErrOpen) {
					t.Fatalf("err = %v, want ErrOpen", err)
				}
				if string(got) != "keep" {
					t.Fatalf("Open appended %d bytes on failure", len(got)-4)
				}
				if pt := unhex(t, v.Plaintext); len(pt) > 3 && strings.Contains(err.Error(), string(pt)) {
					t.Fatal("error shows the plaintext")
				}
			})
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	good := unhex(t, loadVectors(t)[0].Envelope)
	cases := []struct {
		name  string
		env   []byte
		field string
	}{
		{"empty", nil, "header"},
		{"short", good[:11], "header"},
		{"magic", append([]byte("XW"), good[2:]...), "magic"},
		{"format version 0", append([]byte{'K', 'W', 0}, good[3:]...), "format version"},
		{"format version 2", append([]byte{'K', 'W', 2}, good[3:]...), "format version"},
		{"alg 0", append([]byte{'K', 'W', 1, 0}, good[4:]...), "alg"},
		{"alg 4", append([]byte{'K', 'W', 1, 4}, good[4:]...), "alg"},
		{"key version 0", append([]byte{'K', 'W', 1, 1, 0, 0, 0, 0}, good[8:]...), "key version"},
		{"gcm body too short", good[:envelope.HeaderSize+27], "body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := envelope.ParseHeader(c.env)
			var pe *envelope.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *ParseError", err)
			}
			if pe.Field != c.field {
				t.Fatalf("field %q, want %q (%v)", pe.Field, c.field, err)
			}
		})
	}
}

func TestConstructorErrors(t *testing.T) {
	k32, k64 := key(t, strings.Repeat("01", 32)), key(t, strings.Repeat("01", 64))
	cases := map[string]func() error{
		"randomized 64-byte key":    func() error { _, err := envelope.NewRandomized(k64, 1, "s:c"); return err },
		"deterministic 32-byte key": func() error { _, err := envelope.NewDeterministic(k32, 1, "s:c"); return err },
		"version 0":                 func() error { _, err := envelope.NewRandomized(k32, 0, "s:c"); return err },
		"empty scope":               func() error { _, err := envelope.NewDeterministic(k64, 1, ""); return err },
		"hsm version 0":             func() error { _, err := envelope.NewHSM(&softHSM{}, 0, "s:c"); return err },
		"hsm nil":                   func() error { _, err := envelope.NewHSM(nil, 1, "s:c"); return err },
		"destroyed key": func() error {
			k, _ := memsafe.NewRandom(32)
			k.Destroy()
			_, err := envelope.NewRandomized(k, 1, "s:c")
			return err
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			if err := f(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestDestroy(t *testing.T) {
	k := key(t, strings.Repeat("33", 32))
	c, _ := envelope.NewRandomized(k, 1, "s:c")
	env, err := c.Seal(nil, []byte("x"), "a.b.c")
	if err != nil {
		t.Fatal(err)
	}
	c.Destroy()
	if _, err := c.Seal(nil, []byte("x"), "a.b.c"); !errors.Is(err, memsafe.ErrDestroyed) {
		t.Fatalf("Seal after Destroy: %v", err)
	}
	if _, err := c.Open(nil, env, "a.b.c"); !errors.Is(err, memsafe.ErrDestroyed) {
		t.Fatalf("Open after Destroy: %v", err)
	}
	if !k.Alive() {
		t.Fatal("Cipher.Destroy destroyed the caller's key")
	}
}

// A cipher keeps working after its memsafe.Key is destroyed (the schedule was expanded once), and does
// not touch the key's unmapped memory: this is what tink-go's AESSIV would have crashed on.
func TestKeyDestroyedAfterBuild(t *testing.T) {
	for _, v := range loadVectors(t)[:6] {
		k := key(t, v.Key)
		var c *envelope.Cipher
		var err error
		if envelope.Alg(v.Alg) == envelope.AlgRandomized {
			c, err = envelope.NewRandomized(k, v.Version, v.Scope)
		} else {
			c, err = envelope.NewDeterministic(k, v.Version, v.Scope)
		}
		if err != nil {
			t.Fatal(err)
		}
		k.Destroy()
		if got, err := c.Open(nil, unhex(t, v.Envelope), v.Column); err != nil || !bytes.Equal(got, unhex(t, v.Plaintext)) {
			t.Fatalf("%s: Open after key Destroy: %v", v.Name, err)
		}
	}
}

func TestHSMErrors(t *testing.T) {
	v := loadVectors(t)[8]
	hsm := newSoftHSM(t, unhex(t, v.Key), unhex(t, v.Nonce))
	c, err := envelope.NewHSM(hsm, v.Version, v.Scope)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	denied := errors.New("denied by policy")
	hsm.err = denied
	if _, err := c.Seal(ctx, nil, []byte("x"), v.Column); !errors.Is(err, denied) {
		t.Fatalf("Seal: %v", err)
	}
	_, err = c.Open(ctx, nil, unhex(t, v.Envelope), v.Column)
	if !errors.Is(err, denied) || errors.Is(err, envelope.ErrOpen) {
		t.Fatalf("Open with a denied HSM: %v, want the denial and not ErrOpen", err)
	}
	hsm.err, hsm.version = nil, v.Version+1
	if _, err := c.Seal(ctx, nil, []byte("x"), v.Column); err == nil {
		t.Fatal("Seal accepted a key version other than the one asked for")
	}
}

func TestStringRedacted(t *testing.T) {
	v := loadVectors(t)[1]
	c := cipherFor(t, v)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%v", c)} {
		if strings.Contains(s, v.Key[:16]) {
			t.Fatal("cipher formatting shows key bytes")
		}
	}
}

// FuzzOpen: no input may panic, and no envelope other than the genuine one may open (a success on
// anything else would be a forgery).
func FuzzOpen(f *testing.F) {
	vs := loadVectors(f)
	ciphers := make([]sealer, len(vs))
	for i, v := range vs {
		ciphers[i] = cipherFor(f, v)
		f.Add(unhex(f, v.Envelope), v.Column)
	}
	f.Fuzz(func(t *testing.T, env []byte, column string) {
		h, perr := envelope.ParseHeader(env)
		for i, c := range ciphers {
			pt, err := c.Open(nil, env, column)
			if err == nil {
				if perr != nil {
					t.Fatalf("opened an envelope ParseHeader rejects: %v", perr)
				}
				if !genuine(vs, vs[i], env, column, pt) {
					t.Fatalf("forgery: opened a modified envelope (alg %s)", h.Alg)
				}
			} else if !errors.Is(err, envelope.ErrOpen) {
				t.Fatalf("error %v is not ErrOpen", err)
			}
		}
	})
}

// genuine reports whether env, column and pt are one of the vectors sealed under the same key as v.
func genuine(vs []vector, v vector, env []byte, column string, pt []byte) bool {
	for _, w := range vs {
		if w.Alg == v.Alg && w.Key == v.Key && w.Version == v.Version && w.Scope == v.Scope &&
			w.Column == column && w.Envelope == hex.EncodeToString(env) && w.Plaintext == hex.EncodeToString(pt) {
			return true
		}
	}
	return false
}

func benchCipher(b testing.TB, alg envelope.Alg) *envelope.Cipher {
	var c *envelope.Cipher
	var err error
	if alg == envelope.AlgRandomized {
		c, err = envelope.NewRandomized(key(b, strings.Repeat("44", 32)), 1, "payroll:employees.ssn")
	} else {
		c, err = envelope.NewDeterministic(key(b, strings.Repeat("44", 64)), 1, "payroll:employees.ssn")
	}
	if err != nil {
		b.Fatal(err)
	}
	return c
}

const benchColumn = "public.employees.ssn"

func benchSeal(b *testing.B, alg envelope.Alg) {
	c := benchCipher(b, alg)
	pt, dst := make([]byte, 100), make([]byte, 0, 256)
	b.SetBytes(100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Seal(dst, pt, benchColumn); err != nil {
			b.Fatal(err)
		}
	}
}

func benchOpen(b *testing.B, alg envelope.Alg) {
	c := benchCipher(b, alg)
	env, err := c.Seal(nil, make([]byte, 100), benchColumn)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 256)
	b.SetBytes(100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Open(dst, env, benchColumn); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal100B(b *testing.B)              { benchSeal(b, envelope.AlgRandomized) }
func BenchmarkOpen100B(b *testing.B)              { benchOpen(b, envelope.AlgRandomized) }
func BenchmarkSealDeterministic100B(b *testing.B) { benchSeal(b, envelope.AlgDeterministic) }
func BenchmarkOpenDeterministic100B(b *testing.B) { benchOpen(b, envelope.AlgDeterministic) }

// Seal and Open are on the per-row path: with room in dst they must not allocate.
func TestNoAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, alg := range []envelope.Alg{envelope.AlgRandomized, envelope.AlgDeterministic} {
		c := benchCipher(t, alg)
		pt, dst := make([]byte, 100), make([]byte, 0, 256)
		env, err := c.Seal(nil, pt, benchColumn)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(200, func() { _, _ = c.Seal(dst, pt, benchColumn) }); n != 0 {
			t.Errorf("%s Seal: %.1f allocations", alg, n)
		}
		if n := testing.AllocsPerRun(200, func() { _, _ = c.Open(dst, env, benchColumn) }); n != 0 {
			t.Errorf("%s Open: %.1f allocations", alg, n)
		}
	}
}

// The software stand-in meets the HSM contract (which also shows the contract suite runs).
func TestSoftHSMContract(t *testing.T) {
	envelopetest.HSMContract(t, &randomNonceHSM{softHSM: newSoftHSM(t, bytes.Repeat([]byte{9}, 32), nil)}, "vault:x", 1)
}

// randomNonceHSM is softHSM with a fresh random nonce per call, as a real HSM does.
type randomNonceHSM struct{ *softHSM }

func (h *randomNonceHSM) Encrypt(ctx context.Context, scope string, version uint32, pt, aad []byte) ([]byte, uint32, error) {
	h.nonce = make([]byte, 12)
	if _, err := rand.Read(h.nonce); err != nil {
		return nil, 0, err
	}
	return h.softHSM.Encrypt(ctx, scope, version, pt, aad)
}

func (h *randomNonceHSM) Decrypt(ctx context.Context, scope string, version uint32, body, aad []byte) ([]byte, error) {
	if len(body) < 28 {
		return nil, envelope.ErrOpen
	}
	return h.softHSM.Decrypt(ctx, scope, version, body, aad)
}

// One Cipher serves every session of the proxy at once.
func TestConcurrentUse(t *testing.T) {
	for _, alg := range []envelope.Alg{envelope.AlgRandomized, envelope.AlgDeterministic} {
		c := benchCipher(t, alg)
		done := make(chan error, 8)
		for g := range 8 {
			go func() {
				var err error
				for i := range 200 {
					pt := []byte(fmt.Sprintf("goroutine %d value %d", g, i))
					env, e := c.Seal(nil, pt, benchColumn)
					if e != nil {
						err = e
						break
					}
					got, e := c.Open(nil, env, benchColumn)
					if e != nil || !bytes.Equal(got, pt) {
						err = fmt.Errorf("round trip failed: %v", e)
						break
					}
				}
				done <- err
			}()
		}
		for range 8 {
			if err := <-done; err != nil {
				t.Fatalf("%s: %v", alg, err)
			}
		}
	}
}
