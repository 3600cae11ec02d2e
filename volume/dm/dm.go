// Package dm drives the Linux device-mapper through its ioctl interface, in pure Go, to activate a
// dm-crypt mapping the way `cryptsetup open` does, without libdevmapper and without udev: it creates
// the /dev/mapper/NAME node itself, so it works in an initramfs.
//
// # Protocol (include/uapi/linux/dm-ioctl.h, interface version 4)
//
// Every command is ioctl(/dev/mapper/control, _IOWR(0xfd, cmd, struct dm_ioctl), buf) on a buffer
// that starts with a struct dm_ioctl (312 bytes, native endian) followed by the command's data:
//
//	off  size  field
//	  0    12  version[3]     in: the interface version we speak (4.0.0); out: the kernel's
//	 12     4  data_size      size of the whole buffer, header included
//	 16     4  data_start     offset of the data from the buffer start (312)
//	 20     4  target_count   number of dm_target_spec entries (table load)
//	 24     4  open_count     out
//	 28     4  flags          DM_*_FLAG
//	 32     4  event_nr
//	 36     4  padding
//	 40     8  dev            out: the mapped device's dev_t (huge_encode_dev)
//	 48   128  name           NUL-terminated
//	176   129  uuid           NUL-terminated
//	305     7  data           padding
//
// A table load carries target_count entries of struct dm_target_spec (40 bytes: sector_start u64,
// length u64, status s32, next u32, target_type [16]byte) each followed by its NUL-terminated
// parameter string, padded to 8 bytes; next is the offset from this spec to the following one.
//
// Activation is: DM_DEV_CREATE (name, uuid) -> DM_TABLE_LOAD (the crypt target) -> DM_DEV_SUSPEND
// without DM_SUSPEND_FLAG (= resume: the loaded table goes live) -> mknod /dev/mapper/NAME. A
// failure after the create removes the half-made device.
//
// # Guarantees and non-guarantees
//
//   - The volume key crosses into the kernel as hex in the table-load buffer, flagged
//     DM_SECURE_DATA_FLAG so the kernel wipes its copies; our buffer is wiped right after the ioctl.
//     The hex encoding is done into that buffer directly, not through a Go string.
//   - It cannot be tested on a kernel without device-mapper (this build machine): the encodings are
//     unit-tested against the kernel's struct layout (golang.org/x/sys/unix mirrors dm-ioctl.h), and
//     the command sequence against a recording ioctl.
//   - No udev cookies or events: whoever needs udev rules to run must trigger them.
package dm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Layout constants from dm-ioctl.h.
const (
	sizeofIoctl      = 312
	sizeofTargetSpec = 40
	nameLen          = 128
	uuidLen          = 129
	maxTypeName      = 16

	offVersion     = 0
	offDataSize    = 12
	offDataStart   = 16
	offTargetCount = 20
	offOpenCount   = 24
	offFlags       = 28
	offEventNr     = 32
	offDev         = 40
	offName        = 48
	offUUID        = 176
)

// Command numbers (enum in dm-ioctl.h).
const (
	cmdVersion    = 0
	cmdDevCreate  = 3
	cmdDevRemove  = 4
	cmdDevSuspend = 6
	cmdDevStatus  = 7
	cmdTableLoad  = 9
)

// Flags.
const (
	flagReadOnly   = 1 << 0
	flagSuspend    = 1 << 1
	flagSecureData = 1 << 15
)

// interfaceVersion is what we announce: major 4 is the only ioctl ABI; minor 0 asks for nothing
// newer than the original.
var interfaceVersion = [3]uint32{4, 0, 0}

// Errors callers branch on.
var (
	ErrNoDeviceMapper = errors.New("dm: device-mapper is not available (no /dev/mapper/control; is dm_mod loaded?)")
	ErrExists         = errors.New("dm: a device with this name already exists")
	ErrNotFound       = errors.New("dm: no such device")
	ErrBusy           = errors.New("dm: device is busy")
)

// header is the decoded struct dm_ioctl (the parts callers see).
type header struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

// encodeHeader writes a struct dm_ioctl into b[:312] (b must be at least that long).
func encodeHeader(b []byte, h header) error {
	if len(h.Name) == 0 || len(h.Name) >= nameLen || strings.ContainsAny(h.Name, "/\x00") || h.Name == "." || h.Name == ".." {
		return fmt.Errorf("dm: bad device name %q", h.Name)
	}
	if len(h.UUID) >= uuidLen || strings.ContainsRune(h.UUID, 0) {
		return fmt.Errorf("dm: bad device uuid %q", h.UUID)
	}
	clear(b[:sizeofIoctl])
	le := binary.NativeEndian
	for i, v := range h.Version {
		le.PutUint32(b[offVersion+4*i:], v)
	}
	le.PutUint32(b[offDataSize:], h.DataSize)
	le.PutUint32(b[offDataStart:], h.DataStart)
	le.PutUint32(b[offTargetCount:], h.TargetCount)
	le.PutUint32(b[offOpenCount:], uint32(h.OpenCount))
	le.PutUint32(b[offFlags:], h.Flags)
	le.PutUint32(b[offEventNr:], h.EventNr)
	le.PutUint64(b[offDev:], h.Dev)
	copy(b[offName:offName+nameLen-1], h.Name)
	copy(b[offUUID:offUUID+uuidLen-1], h.UUID)
	return nil
}

func decodeHeader(b []byte) (header, error) {
	if len(b) < sizeofIoctl {
		return header{}, fmt.Errorf("dm: reply of %d bytes", len(b))
	}
	le := binary.NativeEndian
	var h header
	for i := range h.Version {
		h.Version[i] = le.Uint32(b[offVersion+4*i:])
	}
	h.DataSize = le.Uint32(b[offDataSize:])
	h.DataStart = le.Uint32(b[offDataStart:])
	h.TargetCount = le.Uint32(b[offTargetCount:])
	h.OpenCount = int32(le.Uint32(b[offOpenCount:]))
	h.Flags = le.Uint32(b[offFlags:])
	h.EventNr = le.Uint32(b[offEventNr:])
	h.Dev = le.Uint64(b[offDev:])
	h.Name = cstr(b[offName : offName+nameLen])
	h.UUID = cstr(b[offUUID : offUUID+uuidLen])
	return h, nil
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// target is one table line before encoding. params writes the parameter string into dst (so a key
// can be hex-encoded straight into the ioctl buffer).
type target struct {
	Start, Length uint64 // 512-byte sectors
	Type          string
	Params        func(dst []byte) ([]byte, error)
}

// appendTarget appends a struct dm_target_spec and its NUL-terminated, 8-byte padded parameters.
func appendTarget(dst []byte, t target) ([]byte, error) {
	if len(t.Type) == 0 || len(t.Type) >= maxTypeName {
		return nil, fmt.Errorf("dm: bad target type %q", t.Type)
	}
	start := len(dst)
	dst = append(dst, make([]byte, sizeofTargetSpec)...)
	spec := dst[start:]
	le := binary.NativeEndian
	le.PutUint64(spec[0:], t.Start)
	le.PutUint64(spec[8:], t.Length)
	copy(spec[24:24+maxTypeName-1], t.Type)
	var err error
	if dst, err = t.Params(dst); err != nil {
		return nil, err
	}
	dst = append(dst, 0)
	for len(dst)%8 != 0 {
		dst = append(dst, 0)
	}
	le.PutUint32(dst[start+20:], uint32(len(dst)-start)) // next
	return dst, nil
}

// CryptUUID is the dm uuid cryptsetup gives a LUKS2 mapping, so that cryptsetup, systemd and lsblk
// recognise ours: "CRYPT-LUKS2-<uuid without dashes>-<name>".
func CryptUUID(luksUUID, name string) string {
	return "CRYPT-LUKS2-" + strings.ReplaceAll(luksUUID, "-", "") + "-" + name
}

// splitDev decodes the kernel's huge_encode_dev dev_t (the glibc layout).
func splitDev(dev uint64) (major, minor uint32) {
	major = uint32((dev>>8)&0xfff) | uint32(dev>>32)&^0xfff
	minor = uint32(dev&0xff) | uint32(dev>>12)&^0xff
	return
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
