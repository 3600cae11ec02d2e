package af

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		keyLen  int
		stripes int
		h       func() hash.Hash
	}{
		{"sha256-64x4000", 64, 4000, sha256.New},
		{"sha1-32x4000-partial-piece", 32, 4000, sha1.New}, // 32 = 20 + 12: exercises the short last piece
		{"sha512-16x1", 16, 1, sha512.New},
		{"sha256-33x3", 33, 3, sha256.New},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := make([]byte, tc.keyLen)
			rand.Read(key)
			mat := make([]byte, tc.keyLen*tc.stripes)
			if err := Split(mat, key, tc.stripes, tc.h, rand.Reader); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, tc.keyLen)
			if err := Merge(got, append(mat, 0, 0, 0), tc.stripes, tc.h); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatal("merge(split(k)) != k")
			}
			if tc.stripes > 1 {
				mat[0] ^= 1 // any damaged stripe must lose the key
				Merge(got, mat, tc.stripes, tc.h)
				if bytes.Equal(got, key) {
					t.Fatal("damaged material still merged to the key")
				}
			}
		})
	}
}

// TestKnownAnswer pins the diffusion against a value computed by hand from the LUKS1 specification:
// with stripes = 2 and an all-zero first stripe, the merged key is H(be32(0) || 0^n)[:n] XOR the last
// stripe.
func TestKnownAnswer(t *testing.T) {
	n := 16
	mat := make([]byte, 2*n)
	for i := n; i < 2*n; i++ {
		mat[i] = byte(i)
	}
	want := sha256.Sum256(make([]byte, 4+n))
	for i := 0; i < n; i++ {
		want[i] ^= byte(n + i)
	}
	got := make([]byte, n)
	if err := Merge(got, mat, 2, sha256.New); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[:n]) {
		t.Fatal("merged key differs from the expected one") // never print key bytes
	}
}

func TestSizeErrors(t *testing.T) {
	if Merge(make([]byte, 4), make([]byte, 7), 2, sha256.New) != ErrSize {
		t.Fatal("short material accepted")
	}
	if Merge(nil, nil, 1, sha256.New) != ErrSize {
		t.Fatal("empty key accepted")
	}
	if Split(make([]byte, 9), make([]byte, 4), 2, sha256.New, rand.Reader) != ErrSize {
		t.Fatal("wrong dst accepted")
	}
}

func BenchmarkMerge64x4000(b *testing.B) {
	mat := make([]byte, 64*4000)
	key := make([]byte, 64)
	for b.Loop() {
		Merge(key, mat, 4000, sha256.New)
	}
}
