package luks2_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/keyward/keyward/volume/luks2"
)

// The unlock path of `volumectl unlock`: open the header, find the keyward token, open only the
// keyslot it names, and compute the dm-crypt mapping. (The image here is a header made by
// cryptsetup; its passphrase stands in for the secret the agent would provide.)
func Example() {
	img, err := os.ReadFile("testdata/pbkdf2-sha256.luks2")
	if err != nil {
		panic(err)
	}
	v, err := luks2.Open(bytes.NewReader(img)) // an *os.File in real use
	if err != nil {
		panic(err)
	}
	if _, _, err := v.FindKeywardToken("boot:volume/web-7/data"); errors.Is(err, luks2.ErrNoToken) {
		fmt.Println("no keyward token yet")
	}
	key, err := v.OpenKeyslot([]byte("kat passphrase"), 0)
	if err != nil {
		panic(err)
	}
	defer key.Destroy()
	fmt.Println("volume key:", key) // memsafe redacts it

	_, err = v.OpenKeyslot([]byte("wrong"), 0)
	fmt.Println("wrong passphrase:", errors.Is(err, luks2.ErrWrongPassphrase))

	m, err := v.Mapping(int64(len(img)) + 1<<20)
	if err != nil {
		panic(err)
	}
	fmt.Println("mapping:", m.Cipher, "sector size", m.SectorSize)
	// Output:
	// no keyward token yet
	// volume key: [REDACTED]
	// wrong passphrase: true
	// mapping: aes-xts-plain64 sector size 4096
}
