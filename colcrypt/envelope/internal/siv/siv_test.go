package siv

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	tinksiv "github.com/tink-crypto/tink-go/v2/daead/subtle"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	if s == "-" {
		return []byte{}
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 5297 appendix A.1 (deterministic authenticated encryption, one associated-data string).
func TestRFC5297A1(t *testing.T) {
	key := unhex(t, "fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff")
	ad := unhex(t, "10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627")
	pt := unhex(t, "11223344 55667788 99aabbcc ddee")
	want := unhex(t, "85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c")
	s, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	got := s.Seal(nil, nil, pt, ad)
	if !bytes.Equal(got, want) {
		t.Fatalf("Seal = %x, want %x", got, want)
	}
	back, err := s.Open(nil, nil, got, ad)
	if err != nil || !bytes.Equal(back, pt) {
		t.Fatalf("Open = %x, %v", back, err)
	}
}

// Vectors produced by pyca/cryptography (testdata/gen_pyca.py), an independent implementation.
func TestPycaVectors(t *testing.T) {
	f, err := os.Open("testdata/pyca_vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			t.Fatalf("line %d: %d fields", n+1, len(fields))
		}
		key, ad, pt, want := unhex(t, fields[0]), unhex(t, fields[1]), unhex(t, fields[2]), unhex(t, fields[3])
		s, err := New(key)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Seal([]byte("prefix"), nil, pt, ad); !bytes.Equal(got[6:], want) || string(got[:6]) != "prefix" {
			t.Errorf("line %d (key %d bytes, pt %d, ad %d): Seal mismatch", n+1, len(key), len(pt), len(ad))
		}
		if got, err := s.Open(nil, nil, want, ad); err != nil || !bytes.Equal(got, pt) {
			t.Errorf("line %d: Open failed: %v", n+1, err)
		}
		n++
	}
	if n < 90 {
		t.Fatalf("only %d vectors", n)
	}
}

// Differential test against tink-go's AES-SIV on random inputs of every small length.
func TestAgainstTink(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	lengths := []int{511, 512, 513, 1000, 4096 + 7}
	for n := range 80 {
		lengths = append(lengths, n)
	}
	for _, ptLen := range lengths {
		key := buf(64)
		ad, pt := buf(r.IntN(70)), buf(ptLen)
		ours, err := New(key)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := tinksiv.NewAESSIV(bytes.Clone(key))
		if err != nil {
			t.Fatal(err)
		}
		want, err := ref.EncryptDeterministically(pt, ad)
		if err != nil {
			t.Fatal(err)
		}
		if got := ours.Seal(nil, nil, pt, ad); !bytes.Equal(got, want) {
			t.Fatalf("pt %d bytes, ad %d bytes: differs from tink", len(pt), len(ad))
		}
		if back, err := ours.Open(nil, nil, want, ad); err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("pt %d bytes: cannot open tink's ciphertext: %v", len(pt), err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	s, err := New(bytes.Repeat([]byte{7}, 64))
	if err != nil {
		t.Fatal(err)
	}
	ad, pt := []byte("public.t.c"), []byte("hello, deterministic world")
	ct := s.Seal(nil, nil, pt, ad)
	cases := map[string]struct{ ct, ad []byte }{
		"wrong ad":     {ct, []byte("public.t.d")},
		"empty":        {nil, ad},
		"short":        {ct[:15], ad},
		"truncated":    {ct[:len(ct)-1], ad},
		"extended":     {append(bytes.Clone(ct), 0), ad},
		"flipped iv":   {flip(ct, 0), ad},
		"flipped body": {flip(ct, 20), ad},
		"flipped last": {flip(ct, len(ct)-1), ad},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dst := make([]byte, 0, 64)
			got, err := s.Open(dst, nil, c.ct, c.ad)
			if err == nil || got != nil {
				t.Fatalf("Open accepted a bad input")
			}
			if !bytes.Equal(dst[:cap(dst)], make([]byte, cap(dst))) {
				t.Fatalf("unauthenticated plaintext left in dst")
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func TestBadKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 65} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New accepted a %d-byte key", n)
		}
	}
}

func BenchmarkSeal100B(b *testing.B) {
	s, _ := New(make([]byte, 64))
	pt, ad, dst := make([]byte, 100), []byte("public.employees.ssn"), make([]byte, 0, 256)
	b.SetBytes(100)
	b.ReportAllocs()
	for b.Loop() {
		s.Seal(dst, nil, pt, ad)
	}
}
