package pbkdf2

import (
	"bytes"
	stdpbkdf2 "crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"testing"
)

func TestRFC6070(t *testing.T) {
	tests := []struct {
		name     string
		pw, salt string
		iter     int
		want     string
	}{
		{"iter1", "password", "salt", 1, "0c60c80f961f0e71f3a9b524af6012062fe037a6"},
		{"iter2", "password", "salt", 2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"},
		{"iter4096", "password", "salt", 4096, "4b007901b765489abead49d926f721d065a429c1"},
		{"long", "passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096,
			"3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"},
		{"nul", "pass\x00word", "sa\x00lt", 4096, "56fa6aa75548099dcc37d7f03425e0c3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, _ := hex.DecodeString(tc.want)
			got := make([]byte, len(want))
			if err := Key(got, []byte(tc.pw), []byte(tc.salt), tc.iter, sha1.New); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("derived key differs from the vector") // never print derived keys
			}
		})
	}
}

func TestAgainstStdlib(t *testing.T) {
	hashes := map[string]func() hash.Hash{"sha1": sha1.New, "sha256": sha256.New, "sha512": sha512.New}
	for name, h := range hashes {
		for _, n := range []int{1, 20, 32, 33, 64, 100} {
			got := make([]byte, n)
			if err := Key(got, []byte("pw"), []byte("0123456789abcdef"), 7, h); err != nil {
				t.Fatal(err)
			}
			want, err := stdpbkdf2.Key(h, "pw", []byte("0123456789abcdef"), 7, n)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s len %d: mismatch", name, n)
			}
		}
	}
}

func TestRejects(t *testing.T) {
	if Key(make([]byte, 4), nil, nil, 0, sha256.New) == nil {
		t.Fatal("iter 0 accepted")
	}
	if Key(nil, nil, nil, 1, sha256.New) == nil {
		t.Fatal("empty output accepted")
	}
}

// The speed claim: this []byte PBKDF2 costs the same as crypto/pbkdf2 (compare the two lines).
func BenchmarkOurs1000(b *testing.B) {
	dst := make([]byte, 64)
	for b.Loop() {
		Key(dst, []byte("passphrase"), []byte("0123456789abcdef0123456789abcdef"), 1000, sha256.New)
	}
}

func BenchmarkStdlib1000(b *testing.B) {
	for b.Loop() {
		stdpbkdf2.Key(sha256.New, "passphrase", []byte("0123456789abcdef0123456789abcdef"), 1000, 64)
	}
}
