package luks2

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyward/keyward/memsafe"
	"github.com/keyward/keyward/testenv"
)

// Fast KDF settings for images made in tests (the real cost is measured in the bench scenario).
var (
	fastPBKDF2  = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	fastArgon2i = []string{"--pbkdf", "argon2i", "--pbkdf-memory", "8192", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}
	fastArgonID = []string{"--pbkdf", "argon2id", "--pbkdf-memory", "8192", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2"}
)

type image struct {
	t    testing.TB
	cs   string // cryptsetup path
	path string
	dir  string
}

// cryptsetup runs cryptsetup with args, failing the test with its output on error.
func (im *image) cryptsetup(stdin string, args ...string) string {
	im.t.Helper()
	out, err := im.try(stdin, args...)
	if err != nil {
		im.t.Fatalf("cryptsetup %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (im *image) try(stdin string, args ...string) (string, error) {
	cmd := exec.Command(im.cs, append([]string{"--disable-locks"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// newImage makes a plain file of size bytes and formats it with luksFormat and the given options.
func newImage(t testing.TB, size int64, pass string, opts ...string) *image {
	t.Helper()
	cs := testenv.Require(t, "cryptsetup")
	dir := t.TempDir()
	im := &image{t: t, cs: cs, path: filepath.Join(dir, "disk.img"), dir: dir}
	if err := os.WriteFile(im.path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(im.path, size); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"luksFormat", "--type", "luks2", "--batch-mode", "--key-file", "-"}, opts...)
	im.cryptsetup(pass, append(args, im.path)...)
	return im
}

// volumeKey is what `cryptsetup luksDump --dump-volume-key` prints ("MK dump:" in 2.6).
func (im *image) volumeKey(pass string) []byte {
	im.t.Helper()
	out := im.cryptsetup(pass, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", "-", im.path)
	var hexs strings.Builder
	in := false
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "MK dump:"); i >= 0 {
			in = true
			line = line[i+len("MK dump:"):]
		} else if in && !strings.HasPrefix(line, "\t") {
			break
		}
		if in {
			hexs.WriteString(strings.ReplaceAll(strings.TrimSpace(line), " ", ""))
		}
	}
	k, err := hex.DecodeString(hexs.String())
	if err != nil || len(k) == 0 {
		im.t.Fatalf("cannot parse the volume key dump (%d hex chars)", hexs.Len())
	}
	return k
}

func (im *image) open(t testing.TB) (*Volume, *os.File) {
	t.Helper()
	f, err := os.OpenFile(im.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	v, err := Open(f)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return v, f
}

// sameKey compares without ever printing key bytes.
func sameKey(t testing.TB, k *memsafe.Key, want []byte) {
	t.Helper()
	var eq bool
	if err := k.Use(func(b []byte) error { eq = bytes.Equal(b, want); return nil }); err != nil {
		t.Fatal(err)
	}
	if !eq {
		t.Fatalf("recovered volume key (%d bytes) differs from cryptsetup's (%d bytes)", k.Len(), len(want))
	}
}

func TestOracleOpenKeyslot(t *testing.T) {
	tests := []struct {
		name string
		opts []string
	}{
		{"pbkdf2-sha256", append([]string{"--hash", "sha256"}, fastPBKDF2...)},
		{"pbkdf2-sha1", append([]string{"--hash", "sha1"}, fastPBKDF2...)},
		{"pbkdf2-sha512", append([]string{"--hash", "sha512"}, fastPBKDF2...)},
		{"argon2i", fastArgon2i},
		{"argon2id", fastArgonID},
		{"aes-xts-256bit-key", append([]string{"--key-size", "256"}, fastPBKDF2...)},
		{"sector-512", append([]string{"--sector-size", "512"}, fastPBKDF2...)},
		{"cbc-essiv", append([]string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}, fastPBKDF2...)},
		{"xts-plain", append([]string{"--cipher", "aes-xts-plain"}, fastPBKDF2...)},
		{"metadata-64k", append([]string{"--luks2-metadata-size", "64k"}, fastPBKDF2...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			im := newImage(t, 20<<20, "correct horse", tc.opts...)
			want := im.volumeKey("correct horse")
			v, _ := im.open(t)
			if !v.Report().Healthy() {
				t.Fatalf("fresh image reported unhealthy: %+v", v.Report())
			}
			k, err := v.OpenKeyslot([]byte("correct horse"), 0)
			if err != nil {
				t.Fatalf("OpenKeyslot: %v", err)
			}
			defer k.Destroy()
			sameKey(t, k, want)
			if _, err := v.OpenKeyslot([]byte("correct horsf"), 0); err != ErrWrongPassphrase {
				t.Fatalf("wrong passphrase: got %v, want ErrWrongPassphrase", err)
			}
			k2, slot, err := v.OpenAnyKeyslot([]byte("correct horse"))
			if err != nil || slot != 0 {
				t.Fatalf("OpenAnyKeyslot: slot %d, %v", slot, err)
			}
			k2.Destroy()
		})
	}
}

func TestOracleConvertedFromLUKS1(t *testing.T) {
	cs := testenv.Require(t, "cryptsetup")
	dir := t.TempDir()
	im := &image{t: t, cs: cs, path: filepath.Join(dir, "l1.img"), dir: dir}
	os.WriteFile(im.path, nil, 0o600)
	os.Truncate(im.path, 8<<20)
	im.cryptsetup("old pass", "luksFormat", "--type", "luks1", "--batch-mode", "--key-file", "-",
		"--hash", "sha1", "--pbkdf-force-iterations", "1000", im.path)
	im.cryptsetup("", "convert", "--type", "luks2", "--batch-mode", im.path)
	want := im.volumeKey("old pass")
	v, _ := im.open(t)
	did, _ := v.Metadata().DigestFor(0)
	if n := len(v.Metadata().Digests[did].Digest); n != 20 {
		t.Fatalf("converted digest is %d bytes, want 20", n)
	}
	k, err := v.OpenKeyslot([]byte("old pass"), 0)
	if err != nil {
		t.Fatalf("OpenKeyslot: %v", err)
	}
	defer k.Destroy()
	sameKey(t, k, want)
}

// TestOracleKnownPlaintext encrypts a file of known sectors in place with `cryptsetup reencrypt
// --encrypt` (offline) and reads it back through DecryptSector.
func TestOracleKnownPlaintext(t *testing.T) {
	for _, tc := range []struct {
		ss     int
		cipher []string
	}{
		{512, nil}, {4096, nil},
		{512, []string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}},
		{4096, []string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}},
		{4096, []string{"--cipher", "aes-xts-plain"}},
	} {
		ss := tc.ss
		t.Run(strconv.Itoa(ss)+strings.Join(tc.cipher, ""), func(t *testing.T) {
			t.Parallel()
			cs := testenv.Require(t, "cryptsetup")
			dir := t.TempDir()
			im := &image{t: t, cs: cs, path: filepath.Join(dir, "re.img"), dir: dir}
			const size = 6 << 20
			plain := make([]byte, 0, size)
			for i := 0; len(plain) < size; i++ {
				s := fmt.Appendf(nil, "sector %08d ", i)
				plain = append(plain, s...)
				plain = append(plain, bytes.Repeat([]byte{'.'}, 512-len(s))...)
			}
			if err := os.WriteFile(im.path, plain, 0o600); err != nil {
				t.Fatal(err)
			}
			im.cryptsetup("pw", append([]string{"reencrypt", "--encrypt", "--type", "luks2", "--batch-mode",
				"--key-file", "-", "--reduce-device-size", "2M", "--sector-size", strconv.Itoa(ss),
				"--luks2-metadata-size", "16k", "--luks2-keyslots-size", "256k", "--force-offline-reencrypt"},
				append(append(tc.cipher, fastPBKDF2...), im.path)...)...)
			v, _ := im.open(t)
			_, seg := v.DataSegment()
			if seg.SectorSize != ss {
				t.Fatalf("sector size %d, want %d", seg.SectorSize, ss)
			}
			k, err := v.OpenKeyslot([]byte("pw"), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Destroy()
			// The data is shifted forward by --reduce-device-size: plaintext byte 0 is segment byte 0.
			nSectors := uint64(size-2<<20-int(seg.Offset)) / uint64(ss)
			got := make([]byte, ss)
			for _, n := range []uint64{0, 1, 7, nSectors / 2, nSectors - 1} {
				if err := v.DecryptSector(k, n, got); err != nil {
					t.Fatal(err)
				}
				want := plain[n*uint64(ss) : (n+1)*uint64(ss)]
				if !bytes.Equal(got, want) {
					t.Fatalf("sector %d: decrypted %q..., want %q...", n, got[:16], want[:16])
				}
			}
		})
	}
}

// TestOracleLuksAddKey mixes keyslots made by cryptsetup luksAddKey with one of ours, in both orders
// of writing, so each side reads and rewrites the other's header.
func TestOracleLuksAddKey(t *testing.T) {
	im := newImage(t, 8<<20, "first", append([]string{"--luks2-keyslots-size", "2M"}, fastPBKDF2...)...)
	want := im.volumeKey("first")
	addKey := func(newPass string, args ...string) {
		// --key-file carries the existing passphrase; the new one comes on stdin.
		kf := filepath.Join(im.dir, "existing")
		os.WriteFile(kf, []byte("first"), 0o600)
		im.cryptsetup(newPass, append(append([]string{"luksAddKey", "--batch-mode", "--key-file", kf}, args...), im.path, "-")...)
	}
	addKey("second", append([]string{"--key-slot", "5"}, fastArgonID...)...)

	v, f := im.open(t)
	vk, err := v.OpenKeyslot([]byte("second"), 5)
	if err != nil {
		t.Fatalf("luksAddKey'd argon2id slot: %v", err)
	}
	sameKey(t, vk, want)
	slot, _, err := v.AddKeywardKeyslot(f, vk, []byte("ours"), KeyslotParams{Slot: -1, KDF: KDF{Type: "pbkdf2", Iterations: 1000}}, "boot:volume/x", 2)
	vk.Destroy()
	if err != nil || slot != 1 {
		t.Fatalf("slot %d: %v", slot, err)
	}
	// cryptsetup writes on top of our header...
	addKey("third", append([]string{"--key-slot", "3", "--hash", "sha512"}, fastPBKDF2...)...)
	im.cryptsetup("", "luksKillSlot", "--batch-mode", im.path, "0")
	// ...and we read its result.
	v, _ = im.open(t)
	if !v.Report().Healthy() {
		t.Fatalf("report %+v", v.Report())
	}
	for _, p := range []struct {
		pass string
		slot int
	}{{"second", 5}, {"ours", 1}, {"third", 3}} {
		k, got, err := v.OpenAnyKeyslot([]byte(p.pass))
		if err != nil || got != p.slot {
			t.Fatalf("%s: slot %d, %v", p.pass, got, err)
		}
		sameKey(t, k, want)
		k.Destroy()
	}
	if _, ok := v.Metadata().Keyslots[0]; ok {
		t.Fatal("killed keyslot 0 still listed")
	}
	toks, err := v.KeywardTokens()
	if err != nil || len(toks) != 1 || toks[0].Keyslots[0] != 1 || toks[0].Version != 2 {
		t.Fatalf("our token after cryptsetup's writes: %+v %v", toks, err)
	}
}
