package backend

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/keyward/keyward/memsafe"
)

type backupVector struct {
	WrapKey string `json:"wrap_key"`
	Scope   string `json:"scope"`
	Version int    `json:"version"`
	Bits    int    `json:"bits"`
	DK      string `json:"dk"`
	KCV     string `json:"kcv"`
	Blob    string `json:"blob"`
}

func loadBackupVectors(t testing.TB) []backupVector {
	b, err := os.ReadFile("testdata/backup_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []backupVector
	if err := json.Unmarshal(b, &vs); err != nil || len(vs) == 0 {
		t.Fatalf("vectors: %v", err)
	}
	return vs
}

func hexKey(t testing.TB, s string) *memsafe.Key {
	b, err := hex.DecodeString(s)
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

func unhex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBackupVectors checks SealBackup/OpenBackup against blobs made by the independent gen_backup.py.
func TestBackupVectors(t *testing.T) {
	for _, v := range loadBackupVectors(t) {
		t.Run(v.Scope, func(t *testing.T) {
			wk, dk := hexKey(t, v.WrapKey), hexKey(t, v.DK)
			blob, err := SealBackup(v.Scope, v.Version, dk, wk)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(blob) != v.Blob {
				t.Fatalf("SealBackup differs from the reference blob")
			}
			r, err := OpenBackup(unhex(t, v.Blob), wk)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Key.Destroy()
			if r.Scope != v.Scope || r.Version != v.Version || r.Bits != v.Bits || r.KCV != v.KCV || !r.Key.Equal(dk) {
				t.Fatalf("OpenBackup = %+v, want scope %s v%d bits %d kcv %s", r, v.Scope, v.Version, v.Bits, v.KCV)
			}
		})
	}
}

func TestOpenBackupRejects(t *testing.T) {
	v := loadBackupVectors(t)[0]
	good := unhex(t, v.Blob)
	wk := hexKey(t, v.WrapKey)
	edit := func(i int, b byte) []byte { c := bytes.Clone(good); c[i] = b; return c }
	tests := []struct {
		name  string
		blob  []byte
		key   *memsafe.Key
		parse bool // a ParseError is expected
	}{
		{"wrong key", good, hexKey(t, "ff"+v.WrapKey[2:]), false},
		{"short key", good, hexKey(t, "0011"), false},
		{"bad magic", edit(0, 'X'), wk, true},
		{"version 2", edit(4, 2), wk, true},
		{"unknown type", edit(5, 9), wk, true},
		{"edited scope", edit(8, 'q'), wk, false},
		{"edited key version", edit(8+len(v.Scope)+3, 9), wk, false},
		{"edited kcv", edit(8+len(v.Scope)+6, good[8+len(v.Scope)+6]^1), wk, false},
		{"flipped wrapped bit", edit(len(good)-1, good[len(good)-1]^1), wk, false},
		{"trailing bytes", append(bytes.Clone(good), 0, 0, 0, 0, 0, 0, 0, 0), wk, true},
		{"truncated", good[:len(good)-8], wk, true},
		{"empty", nil, wk, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := OpenBackup(tt.blob, tt.key)
			if err == nil {
				r.Key.Destroy()
				t.Fatal("OpenBackup succeeded")
			}
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("error %v does not wrap ErrBadInput", err)
			}
			var pe *ParseError
			if errors.As(err, &pe) != tt.parse {
				t.Fatalf("error %v: ParseError=%v, want %v", err, !tt.parse, tt.parse)
			}
		})
	}
}

func FuzzParseBackup(f *testing.F) {
	for _, v := range loadBackupVectors(f) {
		f.Add(unhex(f, v.Blob))
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		h, w, err := ParseBackup(blob)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a ParseError", err)
			}
			return
		}
		if len(w) == 0 || len(w)%8 != 0 || h.Version < 1 {
			t.Fatalf("accepted bad blob: %+v", h)
		}
	})
}
