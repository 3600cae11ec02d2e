package bind

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward/volume/luks2"
)

// openVolume opens the device (a block device or an image file) and its LUKS2 header. For writing,
// a block device is opened with O_EXCL, which the kernel refuses while the device is mounted or
// mapped: rewriting the header under an active mapping is allowed by LUKS2 but not what an operator
// running enroll on the wrong device wants.
func openVolume(path string, write bool) (*os.File, *luks2.Volume, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			flag |= os.O_EXCL
		}
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, nil, err
	}
	v, err := luks2.Open(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, v, nil
}

// backup writes the header area to a new file in dir before a write and returns its path.
func backup(v *luks2.Volume, dir, what string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("no header backup directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("header backup: %w", err)
	}
	name := fmt.Sprintf("%s-%s-%s.luks2hdr", v.UUID(), what, time.Now().UTC().Format("20060102T150405.000000000Z"))
	p := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
	if err := v.BackupToFile(p); err != nil {
		return "", fmt.Errorf("header backup: %w", err)
	}
	return p, nil
}

// writerWrap wraps the writer the header updates go through; tests wrap it to inject failures.
type writerWrap func(io.WriterAt) io.WriterAt

func (w writerWrap) wrap(f *os.File) io.WriterAt {
	if w == nil {
		return f
	}
	return w(f)
}
