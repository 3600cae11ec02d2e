package memsafe_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward/memsafe"
)

// maskedReader yields mask[i]^0xff: the key bytes are only ever formed inside the reader's
// destination (locked memory), never in a heap slice the memory scan could find.
type maskedReader struct {
	mask []byte
	off  int
}

func (r *maskedReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.off < len(r.mask) {
		p[n] = r.mask[r.off] ^ 0xff
		n++
		r.off++
	}
	return n, nil
}

func newMask(t *testing.T, n int) []byte {
	t.Helper()
	k, err := memsafe.NewRandom(n)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	mask := make([]byte, n)
	_ = k.Use(func(b []byte) error {
		for i := range b {
			mask[i] = b[i] ^ 0xff
		}
		return nil
	})
	return mask
}

func TestFromReaderAndUse(t *testing.T) {
	mask := newMask(t, 32)
	k, err := memsafe.FromReader(&maskedReader{mask: mask}, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	if k.Len() != 32 || !k.Alive() {
		t.Fatalf("Len=%d Alive=%t", k.Len(), k.Alive())
	}
	err = k.Use(func(b []byte) error {
		for i := range b {
			if b[i] != mask[i]^0xff {
				return fmt.Errorf("byte %d differs", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFromReaderShort(t *testing.T) {
	_, err := memsafe.FromReader(bytes.NewReader(make([]byte, 10)), 32)
	if err == nil || !strings.Contains(err.Error(), "short read") {
		t.Fatalf("want short read error, got %v", err)
	}
}

func TestFromBytesWipesSource(t *testing.T) {
	src := []byte("0123456789abcdef0123456789abcdef")
	k, err := memsafe.FromBytes(src)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	if !bytes.Equal(src, make([]byte, len(src))) {
		t.Fatal("FromBytes left the source slice unwiped")
	}
}

func TestDestroy(t *testing.T) {
	k, err := memsafe.NewRandom(32)
	if err != nil {
		t.Fatal(err)
	}
	k.Destroy()
	k.Destroy() // idempotent
	if k.Alive() {
		t.Fatal("destroyed key still alive")
	}
	called := false
	err = k.Use(func([]byte) error { called = true; return nil })
	if !errors.Is(err, memsafe.ErrDestroyed) || called {
		t.Fatalf("Use after Destroy: err=%v called=%t", err, called)
	}
	var nilKey *memsafe.Key
	nilKey.Destroy()
	if err := nilKey.Use(func([]byte) error { return nil }); !errors.Is(err, memsafe.ErrDestroyed) {
		t.Fatalf("nil key Use: %v", err)
	}
}

func TestDestroyAll(t *testing.T) {
	var keys []*memsafe.Key
	for i := 0; i < 5; i++ {
		k, err := memsafe.NewRandom(32)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if n := memsafe.DestroyAll(); n < 5 {
		t.Fatalf("DestroyAll destroyed %d keys, want >= 5", n)
	}
	for i, k := range keys {
		if k.Alive() {
			t.Fatalf("key %d alive after DestroyAll", i)
		}
	}
}

func TestConcurrentUseAndDestroy(t *testing.T) {
	k, err := memsafe.NewRandom(32)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				_ = k.Use(func(b []byte) error {
					var s byte
					for _, c := range b { // touches every byte: would fault if unmapped under us
						s ^= c
					}
					_ = s
					return nil
				})
			}
		}()
	}
	k.Destroy()
	wg.Wait()
}

func TestRedaction(t *testing.T) {
	k, err := memsafe.FromBytes([]byte("SECRETSECRETSECRETSECRETSECRET!!"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	type holder struct {
		Name string
		K    *memsafe.Key
	}
	h := holder{"x", k}
	cases := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v", "%T"} {
		cases["key "+verb] = fmt.Sprintf(verb, k)
		cases["struct "+verb] = fmt.Sprintf(verb, h)
		cases["struct ptr "+verb] = fmt.Sprintf(verb, &h)
	}
	cases["String"] = k.String()
	cases["GoString"] = k.GoString()
	js, _ := json.Marshal(h)
	cases["json"] = string(js)
	var tb, jb bytes.Buffer
	slog.New(slog.NewTextHandler(&tb, nil)).Info("m", "key", k, "holder", h)
	slog.New(slog.NewJSONHandler(&jb, nil)).Info("m", "key", k, "holder", h)
	cases["slog text"] = tb.String()
	cases["slog json"] = jb.String()
	for name, out := range cases {
		if strings.Contains(out, "SECRET") || strings.Contains(strings.ToLower(out), "5345435245") {
			t.Errorf("%s leaks the key", name)
		}
		if !strings.HasSuffix(name, "%T") && !strings.Contains(out, memsafe.Redacted) {
			t.Errorf("%s = %q, want %s in it", name, out, memsafe.Redacted)
		}
	}
}

func TestAEADBuildsOnce(t *testing.T) {
	k, err := memsafe.NewRandom(32)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	builds := 0
	a, err := memsafe.NewAEAD(k, func(key []byte) (cipher.AEAD, error) {
		builds++
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 12)
	for i := 0; i < 100; i++ {
		ct := a.AEAD().Seal(nil, nonce, []byte("hello"), nil)
		if pt, err := a.AEAD().Open(nil, nonce, ct, nil); err != nil || string(pt) != "hello" {
			t.Fatalf("round trip: %v", err)
		}
	}
	if builds != 1 {
		t.Fatalf("cipher built %d times, want 1", builds)
	}
	if s := fmt.Sprintf("%v %+v", a, a); strings.Contains(s, "0x") && !strings.Contains(s, memsafe.Redacted) {
		t.Fatalf("AEAD formatting: %q", s)
	}
	a.Destroy()
	if a.AEAD() != nil {
		t.Fatal("AEAD usable after Destroy")
	}
	if !k.Alive() {
		t.Fatal("AEAD.Destroy destroyed the key it does not own")
	}
	k.Destroy()
	if _, err := memsafe.NewAEAD(k, func([]byte) (cipher.AEAD, error) { return nil, nil }); !errors.Is(err, memsafe.ErrDestroyed) {
		t.Fatalf("NewAEAD on destroyed key: %v", err)
	}
}
