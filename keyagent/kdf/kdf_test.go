package kdf

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/keyward/keyward/memsafe"
)

type vector struct {
	Secret    string `json:"secret"`
	Scope     string `json:"scope"`
	Bits      int    `json:"bits"`
	DK        string `json:"dk"`
	KCV       string `json:"kcv"`
	SecretKCV string `json:"secret_kcv"`
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
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func keyFromHex(t testing.TB, h string) *memsafe.Key {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	k, err := memsafe.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

// TestVectors checks Derive and KCV against vectors computed by the independent testdata/gen.py.
func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Scope+"/"+v.KCV, func(t *testing.T) {
			secret := keyFromHex(t, v.Secret)
			dk, err := Derive(HMACPRF(secret), v.Scope, v.Bits)
			if err != nil {
				t.Fatal(err)
			}
			defer dk.Destroy()
			want := keyFromHex(t, v.DK)
			if dk.Len() != v.Bits/8 {
				t.Fatalf("len %d, want %d", dk.Len(), v.Bits/8)
			}
			if !dk.Equal(want) {
				// Test keys are public vectors, but we still print only check values.
				got, _ := KCV(dk)
				t.Fatalf("derived key kcv %s, want dk with kcv %s", got, v.KCV)
			}
			for _, c := range []struct {
				name string
				k    *memsafe.Key
				want string
			}{{"dk", dk, v.KCV}, {"secret", secret, v.SecretKCV}} {
				got, err := KCV(c.k)
				if err != nil || got != c.want {
					t.Errorf("KCV(%s) = %q, %v; want %q", c.name, got, err, c.want)
				}
			}
		})
	}
}

func TestMessage(t *testing.T) {
	got := hex.EncodeToString(Message(2, "a:b", 512))
	want := "00000002" + hex.EncodeToString([]byte("keyward-dk-v1")) + "00" + hex.EncodeToString([]byte("a:b")) + "00000200"
	if got != want {
		t.Fatalf("Message = %s, want %s", got, want)
	}
}

func TestParseScope(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
		ring     string
	}{
		{"simple", "payroll:employees.ssn", true, "payroll"},
		{"path name", "boot:volume/web-7/data", true, "boot"},
		{"colon in name", "a:b:c", true, "a"},
		{"utf8 name", "crm:kunden.straße", true, "crm"},
		{"empty", "", false, ""},
		{"no colon", "payroll", false, ""},
		{"empty ring", ":x", false, ""},
		{"empty name", "payroll:", false, ""},
		{"upper ring", "Payroll:x", false, ""},
		{"ring starts with dash", "-a:x", false, ""},
		{"nul", "a:b\x00c", false, ""},
		{"newline", "a:b\nc", false, ""},
		{"bad utf8", "a:\xff", false, ""},
		{"too long", "a:" + strings.Repeat("x", MaxScopeLen), false, ""},
		{"ring too long", strings.Repeat("a", 64) + ":x", false, ""},
		{"ring max", strings.Repeat("a", 63) + ":x", true, strings.Repeat("a", 63)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseScope(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseScope(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if tt.ok && (s.Keyring != tt.ring || s.String() != tt.in) {
				t.Fatalf("ParseScope(%q) = %+v", tt.in, s)
			}
		})
	}
}

func TestDeriveErrors(t *testing.T) {
	secret := keyFromHex(t, strings.Repeat("11", 32))
	short := func([]byte) ([]byte, error) { return make([]byte, 16), nil }
	failing := func([]byte) ([]byte, error) { return nil, errors.New("hsm gone") }
	tests := []struct {
		name  string
		prf   PRF
		scope string
		bits  int
	}{
		{"bits 128", HMACPRF(secret), "a:b", 128},
		{"bits 0", HMACPRF(secret), "a:b", 0},
		{"bad scope", HMACPRF(secret), "nocolon", 256},
		{"short prf", short, "a:b", 256},
		{"failing prf", failing, "a:b", 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, err := Derive(tt.prf, tt.scope, tt.bits); err == nil {
				k.Destroy()
				t.Fatal("Derive succeeded")
			}
		})
	}
}

func FuzzParseScope(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(v.Scope)
	}
	f.Add("a:\x00")
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			return
		}
		if sc.String() != s {
			t.Fatalf("round trip %q -> %q", s, sc.String())
		}
		if CheckKeyring(sc.Keyring) != nil || sc.Name == "" || strings.ContainsRune(s, 0) {
			t.Fatalf("accepted invalid scope %q", s)
		}
	})
}
