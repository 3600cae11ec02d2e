package luks2

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyward/keyward/volume/luks2/luks2test"
)

// writeImage is a small image with room for a few keyslots (each 258048 bytes for a 512-bit key).
func writeImage(t testing.TB) *image {
	return newImage(t, 4<<20, "old pass", append([]string{"--luks2-metadata-size", "16k",
		"--luks2-keyslots-size", "1M"}, fastPBKDF2...)...)
}

func (im *image) testPassphrase(pass string, slot int) error {
	out, err := im.try(pass, "open", "--test-passphrase", "--key-file", "-", "--key-slot", strconv.Itoa(slot), im.path)
	if err != nil {
		return errors.New(strings.TrimSpace(out))
	}
	return nil
}

// copyTo clones the image file into a new path (for one failure-injection run each).
func (im *image) copyTo(t testing.TB, name string) *image {
	b, err := os.ReadFile(im.path)
	if err != nil {
		t.Fatal(err)
	}
	c := *im
	c.t = t
	c.path = filepath.Join(im.dir, name)
	if err := os.WriteFile(c.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestOracleAddKeyslotAndToken(t *testing.T) {
	tests := []struct {
		name string
		kdf  KDF
	}{
		{"pbkdf2-sha256", KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}},
		{"pbkdf2-sha512", KDF{Type: "pbkdf2", Hash: "sha512", Iterations: 2000}},
		{"argon2id", KDF{Type: "argon2id", Time: 4, Memory: 8192, CPUs: 2}},
		{"argon2i", KDF{Type: "argon2i", Time: 3, Memory: 4096, CPUs: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			im := writeImage(t)
			want := im.volumeKey("old pass")
			v, f := im.open(t)
			vk, err := v.OpenKeyslot([]byte("old pass"), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer vk.Destroy()
			var backup bytes.Buffer
			if _, err := v.Backup(&backup); err != nil {
				t.Fatal(err)
			}
			seq := v.Header().SeqID
			slot, tok, err := v.AddKeywardKeyslot(f, vk, []byte("new secret"),
				KeyslotParams{Slot: -1, KDF: tc.kdf}, "boot:volume/web-7/data", 3)
			if err != nil {
				t.Fatalf("AddKeywardKeyslot: %v", err)
			}
			if slot != 1 || tok != 0 || v.Header().SeqID != seq+1 || !v.Report().Healthy() {
				t.Fatalf("slot %d token %d seqid %d (was %d) report %+v", slot, tok, v.Header().SeqID, seq, v.Report())
			}
			// cryptsetup opens both keyslots, and only with the right passphrases.
			if err := im.testPassphrase("new secret", slot); err != nil {
				t.Fatalf("cryptsetup rejects our keyslot: %v", err)
			}
			if err := im.testPassphrase("old pass", 0); err != nil {
				t.Fatalf("old keyslot broken: %v", err)
			}
			if im.testPassphrase("new secreT", slot) == nil {
				t.Fatal("cryptsetup accepted a wrong passphrase on our keyslot")
			}
			// The volume key behind our keyslot is cryptsetup's.
			if im.volumeKey("new secret") == nil {
				t.Fatal("no key")
			}
			k2, err := v.OpenKeyslot([]byte("new secret"), slot)
			if err != nil {
				t.Fatal(err)
			}
			sameKey(t, k2, want)
			k2.Destroy()
			// The token as cryptsetup exports it.
			out := im.cryptsetup("", "token", "export", "--token-id", strconv.Itoa(tok), im.path)
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("token export is not JSON: %q", out)
			}
			if got["type"] != "keyward" || got["scope"] != "boot:volume/web-7/data" || got["version"] != 3.0 ||
				len(got["keyslots"].([]any)) != 1 || got["keyslots"].([]any)[0] != "1" {
				t.Fatalf("token export: %s", out)
			}
			toks, err := v.KeywardTokens()
			if err != nil || toks[tok].Scope != "boot:volume/web-7/data" || toks[tok].Version != 3 {
				t.Fatalf("KeywardTokens: %+v %v", toks, err)
			}
			// A generic token, then removals.
			gid, err := v.AddToken(f, []byte(`{"type":"x-test","keyslots":["0"],"note":"kept as is"}`))
			if err != nil {
				t.Fatal(err)
			}
			out = im.cryptsetup("", "token", "export", "--token-id", strconv.Itoa(gid), im.path)
			if !strings.Contains(out, `"note":"kept as is"`) {
				t.Fatalf("generic token: %s", out)
			}
			if err := v.RemoveToken(f, gid); err != nil {
				t.Fatal(err)
			}
			if _, err := im.try("", "token", "export", "--token-id", strconv.Itoa(gid), im.path); err == nil {
				t.Fatal("removed token still exported")
			}
			area := v.Metadata().Keyslots[slot].Area
			before := make([]byte, area.Size)
			f.ReadAt(before, int64(area.Offset))
			if err := v.RemoveKeyslot(f, slot); err != nil {
				t.Fatal(err)
			}
			if im.testPassphrase("new secret", slot) == nil {
				t.Fatal("removed keyslot still opens")
			}
			if _, ok := v.Metadata().Tokens[tok]; ok {
				t.Fatal("keyward token of the removed keyslot is still there")
			}
			after := make([]byte, area.Size)
			f.ReadAt(after, int64(area.Offset))
			if bytes.Equal(before, after) {
				t.Fatal("keyslot area not wiped")
			}
			if err := im.testPassphrase("old pass", 0); err != nil {
				t.Fatalf("old keyslot broken after removal: %v", err)
			}
			if err := v.RemoveKeyslot(f, 0); err == nil {
				t.Fatal("removed the last keyslot")
			}
			// The backup taken first is a header cryptsetup restores.
			bpath := filepath.Join(im.dir, "hdr.bak")
			os.WriteFile(bpath, backup.Bytes(), 0o600)
			if int64(backup.Len()) != v.HeaderAreaSize() {
				t.Fatalf("backup is %d bytes, want %d", backup.Len(), v.HeaderAreaSize())
			}
			f.WriteAt(make([]byte, 64<<10), 0) // destroy both header copies
			im.cryptsetup("", "luksHeaderRestore", "--batch-mode", "--header-backup-file", bpath, im.path)
			if err := im.testPassphrase("old pass", 0); err != nil {
				t.Fatalf("restored header: %v", err)
			}
		})
	}
}

// TestInterruptedWrites cuts the writes of AddKeywardKeyslot and RemoveKeyslot at many points, torn
// writes included, and checks after each that cryptsetup still opens the volume with the passphrase
// that existed before, and that our reader agrees.
func TestInterruptedWrites(t *testing.T) {
	base := writeImage(t)
	v, f := base.open(t)
	vk, err := v.OpenKeyslot([]byte("old pass"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Destroy) // not defer: the parallel subtests run after this function returns
	// A second keyslot to remove later, added cleanly.
	if _, err := v.AddKeyslot(f, vk, []byte("second"), KeyslotParams{Slot: -1, KDF: KDF{Type: "pbkdf2", Iterations: 1000}}); err != nil {
		t.Fatal(err)
	}
	hdr := int64(v.Header().HdrSize)
	area := int64(roundUp(64*newStripes, areaAlign))

	// Measure a full add, to place cut points on the boundaries between steps.
	probe := base.copyTo(t, "probe.img")
	pv, pf := probe.open(t)
	counter := luks2test.FailAfter(pf, -1)
	if _, _, err := pv.AddKeywardKeyslot(counter, vk, []byte("new"), KeyslotParams{Slot: -1, KDF: KDF{Type: "pbkdf2", Iterations: 1000}}, "s:x", 1); err != nil {
		t.Fatal(err)
	}
	if counter.Written() != area+2*hdr {
		t.Fatalf("add wrote %d bytes, want %d", counter.Written(), area+2*hdr)
	}
	cuts := []int64{0, 1, 512, area / 2, area - 1, area, area + 1, area + 448, area + 4096, area + hdr - 1,
		area + hdr, area + hdr + 1, area + hdr + 4100, area + 2*hdr - 1}
	for _, cut := range cuts {
		t.Run("add-cut-"+strconv.FormatInt(cut, 10), func(t *testing.T) {
			t.Parallel()
			im := base.copyTo(t, "add-cut-"+strconv.FormatInt(cut, 10)+".img")
			cv, cf := im.open(t)
			fw := luks2test.FailAfter(cf, cut)
			_, _, err := cv.AddKeywardKeyslot(fw, vk, []byte("new"), KeyslotParams{Slot: -1, KDF: KDF{Type: "pbkdf2", Iterations: 1000}}, "s:x", 1)
			if !errors.Is(err, luks2test.ErrInjected) {
				t.Fatalf("got %v, want the injected failure", err)
			}
			for _, p := range []struct {
				pass string
				slot int
			}{{"old pass", 0}, {"second", 1}} {
				if err := im.testPassphrase(p.pass, p.slot); err != nil {
					t.Fatalf("keyslot %d no longer opens with cryptsetup: %v", p.slot, err)
				}
			}
			rv, err := Open(cf)
			if err != nil {
				t.Fatalf("Open after the failure: %v", err)
			}
			if k, err := rv.OpenKeyslot([]byte("old pass"), 0); err != nil {
				t.Fatalf("OpenKeyslot after the failure: %v", err)
			} else {
				k.Destroy()
			}
			// Once the secondary copy is written whole the new keyslot is live, and then it must be
			// complete; before its checksum field is written it cannot be. (Cuts inside the
			// NUL padding at the end of a copy leave nothing unwritten that differs.)
			_, live := rv.Metadata().Keyslots[2]
			if cut >= area+hdr && !live || cut <= area+offCsum && live {
				t.Fatalf("new keyslot present = %v at cut %d (report %+v)", live, cut, rv.Report())
			}
			if live {
				if err := im.testPassphrase("new", 2); err != nil {
					t.Fatalf("new keyslot referenced but unusable: %v", err)
				}
			}
			// A cut after the seqid or checksum of a copy leaves that copy torn or stale: reported.
			torn := cut > area+offCsum && cut < area+hdr-4096 || cut > area+hdr+offCsum && cut < area+2*hdr-4096
			if torn && rv.Report().Healthy() {
				t.Fatalf("a torn or stale copy was not reported: %+v", rv.Report())
			}
		})
	}

	for _, cut := range []int64{0, 1, 4096, hdr - 1, hdr, hdr + 1, 2*hdr - 1, 2 * hdr, 2*hdr + 1000} {
		t.Run("remove-cut-"+strconv.FormatInt(cut, 10), func(t *testing.T) {
			t.Parallel()
			im := base.copyTo(t, "remove-cut-"+strconv.FormatInt(cut, 10)+".img")
			cv, cf := im.open(t)
			err := cv.RemoveKeyslot(luks2test.FailAfter(cf, cut), 1)
			if !errors.Is(err, luks2test.ErrInjected) {
				t.Fatalf("got %v, want the injected failure", err)
			}
			if err := im.testPassphrase("old pass", 0); err != nil {
				t.Fatalf("keyslot 0 no longer opens with cryptsetup: %v", err)
			}
			rv, err := Open(cf)
			if err != nil {
				t.Fatalf("Open after the failure: %v", err)
			}
			// Until the header writes are complete, a still-referenced keyslot still opens.
			if _, ok := rv.Metadata().Keyslots[1]; ok {
				if err := im.testPassphrase("second", 1); err != nil {
					t.Fatalf("keyslot 1 still referenced but broken: %v", err)
				}
			}
		})
	}
}

func TestBackupToFile(t *testing.T) {
	img := readTestdata(t, "pbkdf2-sha256.luks2")
	v, err := Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.Backup(io.Discard); err != nil || n != int64(len(img)) {
		t.Fatalf("backup %d bytes, %v", n, err)
	}
	p := filepath.Join(t.TempDir(), "hdr.bak")
	if err := v.BackupToFile(p); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if !bytes.Equal(got, img) || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup differs or mode %v", st.Mode())
	}
	if err := v.BackupToFile(p); err == nil {
		t.Fatal("an existing backup was overwritten")
	}
}
