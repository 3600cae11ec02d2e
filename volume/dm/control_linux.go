package dm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/memsafe"
)

// request is the ioctl request number of a DM command on this architecture.
func request(cmd uintptr) uintptr {
	switch cmd {
	case cmdVersion:
		return unix.DM_VERSION
	case cmdDevCreate:
		return unix.DM_DEV_CREATE
	case cmdDevRemove:
		return unix.DM_DEV_REMOVE
	case cmdDevSuspend:
		return unix.DM_DEV_SUSPEND
	case cmdDevStatus:
		return unix.DM_DEV_STATUS
	case cmdTableLoad:
		return unix.DM_TABLE_LOAD
	}
	panic("dm: unknown command")
}

// Control is an open /dev/mapper/control. It is safe for concurrent use as far as the kernel is;
// callers serialise activations of the same name.
type Control struct {
	f      *os.File
	ioctl  func(req uintptr, buf []byte) error // the kernel, or a recorder in tests
	devDir string                              // where device nodes are made: /dev/mapper
}

// Open opens /dev/mapper/control, creating the node from /sys/class/misc/device-mapper/dev when it is
// missing (an initramfs without udev may not have it). It returns ErrNoDeviceMapper when the kernel
// has no device-mapper.
func Open() (*Control, error) {
	const ctl = "/dev/mapper/control"
	f, err := os.OpenFile(ctl, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := makeControlNode(ctl); err != nil {
			return nil, err
		}
		f, err = os.OpenFile(ctl, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("%w: %v", ErrNoDeviceMapper, err)
		}
		return nil, fmt.Errorf("dm: open %s: %w", ctl, err)
	}
	c := &Control{f: f, devDir: "/dev/mapper"}
	c.ioctl = func(req uintptr, buf []byte) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(&buf[0])))
		if e != 0 {
			return e
		}
		return nil
	}
	return c, nil
}

func makeControlNode(path string) error {
	b, err := os.ReadFile("/sys/class/misc/device-mapper/dev")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoDeviceMapper, err)
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
		return fmt.Errorf("dm: parse device-mapper dev %q: %w", b, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor))); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("dm: mknod %s: %w", path, err)
	}
	return nil
}

// Close closes the control device.
func (c *Control) Close() error { return c.f.Close() }

// call runs one command. buf must start with room for the header; data (if any) follows at 312.
func (c *Control) call(cmd uintptr, h header, buf []byte) (header, error) {
	h.Version = interfaceVersion
	h.DataSize = uint32(len(buf))
	h.DataStart = sizeofIoctl
	if err := encodeHeader(buf, h); err != nil {
		return header{}, err
	}
	if err := c.ioctl(request(cmd), buf); err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			return header{}, fmt.Errorf("%w: %s", ErrBusy, h.Name)
		case errors.Is(err, unix.EEXIST):
			return header{}, fmt.Errorf("%w: %s", ErrExists, h.Name)
		case errors.Is(err, unix.ENXIO):
			return header{}, fmt.Errorf("%w: %s", ErrNotFound, h.Name)
		}
		return header{}, fmt.Errorf("dm: ioctl %d on %q: %w", cmd, h.Name, err)
	}
	return decodeHeader(buf)
}

// Version returns the kernel's device-mapper ioctl interface version.
func (c *Control) Version() ([3]uint32, error) {
	buf := make([]byte, sizeofIoctl)
	// DM_VERSION ignores the name, but encodeHeader insists on one.
	h, err := c.call(cmdVersion, header{Name: "version"}, buf)
	return h.Version, err
}

// Info describes an existing mapping.
type Info struct {
	Name, UUID   string
	Major, Minor uint32
	OpenCount    int32
	Suspended    bool
	ReadOnly     bool
	TargetCount  uint32
}

// Status returns the state of mapping name (ErrNotFound if there is none).
func (c *Control) Status(name string) (Info, error) {
	buf := make([]byte, 16<<10)
	h, err := c.call(cmdDevStatus, header{Name: name}, buf)
	if err != nil {
		return Info{}, err
	}
	maj, min := splitDev(h.Dev)
	return Info{Name: h.Name, UUID: h.UUID, Major: maj, Minor: min, OpenCount: h.OpenCount,
		Suspended: h.Flags&flagSuspend != 0, ReadOnly: h.Flags&flagReadOnly != 0, TargetCount: h.TargetCount}, nil
}

// CryptTarget is one dm-crypt mapping: `<cipher> <key> <iv_offset> <device> <offset> [<#opts> <opts>]`.
type CryptTarget struct {
	Cipher     string       // e.g. "aes-xts-plain64"
	Key        *memsafe.Key // the volume key; sent as hex, wiped from our buffer after the ioctl
	IVOffset   uint64       // LUKS2 segment iv_tweak
	Device     string       // backing device: a path or "major:minor"
	Offset     uint64       // where the data starts on the backing device, in 512-byte sectors
	Length     uint64       // mapping length in 512-byte sectors
	SectorSize int          // encryption sector size; 0 or 512 means 512
	Options    []string     // extra dm-crypt options ("allow_discards", "no_read_workqueue", ...)
	ReadOnly   bool
}

func (t CryptTarget) params(dst []byte) ([]byte, error) {
	if t.Cipher == "" || strings.ContainsAny(t.Cipher, " \x00") || t.Device == "" || strings.ContainsAny(t.Device, " \x00") {
		return nil, errors.New("dm: crypt target needs a cipher and a device without spaces")
	}
	dst = append(dst, t.Cipher...)
	dst = append(dst, ' ')
	err := t.Key.Use(func(k []byte) error {
		dst = hex.AppendEncode(dst, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	dst = append(dst, ' ')
	dst = append(dst, itoa(t.IVOffset)...)
	dst = append(dst, ' ')
	dst = append(dst, t.Device...)
	dst = append(dst, ' ')
	dst = append(dst, itoa(t.Offset)...)
	opts := t.Options
	if t.SectorSize != 0 && t.SectorSize != 512 {
		opts = append([]string{"sector_size:" + itoa(uint64(t.SectorSize))}, opts...)
	}
	if len(opts) > 0 {
		dst = append(dst, ' ')
		dst = append(dst, itoa(uint64(len(opts)))...)
		for _, o := range opts {
			if o == "" || strings.ContainsAny(o, " \x00") {
				return nil, fmt.Errorf("dm: bad crypt option %q", o)
			}
			dst = append(dst, ' ')
			dst = append(dst, o...)
		}
	}
	return dst, nil
}

// tableBuffer builds the DM_TABLE_LOAD buffer for one crypt target. Its capacity is fixed up front:
// an append that reallocated would leave a copy of the hex key in the abandoned array.
func tableBuffer(t CryptTarget) ([]byte, error) {
	const capacity = 16 << 10
	buf := make([]byte, sizeofIoctl, capacity)
	first := &buf[:1][0]
	buf, err := appendTarget(buf, target{Start: 0, Length: t.Length, Type: "crypt", Params: t.params})
	if err != nil {
		clear(buf[:cap(buf)])
		return nil, err
	}
	if &buf[0] != first {
		clear(buf)
		panic("dm: table buffer reallocated") // capacity is far above any valid table line
	}
	return buf, nil
}

// ActivateCrypt creates mapping name with uuid (see CryptUUID), loads the crypt table, resumes it
// and creates /dev/mapper/NAME. It returns the node's path. On failure nothing is left behind.
func (c *Control) ActivateCrypt(name, uuid string, t CryptTarget) (string, error) {
	if t.Length == 0 {
		return "", errors.New("dm: zero-length mapping")
	}
	if _, err := c.call(cmdDevCreate, header{Name: name, UUID: uuid}, make([]byte, sizeofIoctl)); err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		_ = c.remove(name)
		return "", err
	}
	buf, err := tableBuffer(t)
	if err != nil {
		return fail(err)
	}
	flags := uint32(flagSecureData)
	if t.ReadOnly {
		flags |= flagReadOnly
	}
	_, err = c.call(cmdTableLoad, header{Name: name, TargetCount: 1, Flags: flags}, buf)
	clear(buf)
	if err != nil {
		return fail(err)
	}
	h, err := c.call(cmdDevSuspend, header{Name: name}, make([]byte, sizeofIoctl)) // no DM_SUSPEND_FLAG: resume
	if err != nil {
		return fail(err)
	}
	major, minor := splitDev(h.Dev)
	path, err := c.makeNode(name, major, minor)
	if err != nil {
		return fail(err)
	}
	return path, nil
}

// makeNode creates devDir/name as a block device node, replacing a stale one.
func (c *Control) makeNode(name string, major, minor uint32) (string, error) {
	if err := os.MkdirAll(c.devDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(c.devDir, name)
	dev := unix.Mkdev(major, minor)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && uint64(st.Rdev) == dev {
			return path, nil // udev (or devtmpfs) was faster
		}
		if err := os.Remove(path); err != nil {
			return "", err
		}
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return "", fmt.Errorf("dm: mknod %s: %w", path, err)
	}
	return path, nil
}

// Remove removes mapping name and its /dev/mapper node. ErrBusy means it is still open (mounted).
func (c *Control) Remove(name string) error {
	if err := c.remove(name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(c.devDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (c *Control) remove(name string) error {
	_, err := c.call(cmdDevRemove, header{Name: name}, make([]byte, sizeofIoctl))
	return err
}
