package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/memsafe"
)

// The ioctl numbers and struct sizes must be the kernel's; x/sys/unix generates its constants and
// types from the kernel's dm-ioctl.h, which makes it an independent check of ours.
func TestABIConstants(t *testing.T) {
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"DM_VERSION", generic(cmdVersion), unix.DM_VERSION},
		{"DM_DEV_CREATE", generic(cmdDevCreate), unix.DM_DEV_CREATE},
		{"DM_DEV_REMOVE", generic(cmdDevRemove), unix.DM_DEV_REMOVE},
		{"DM_DEV_SUSPEND", generic(cmdDevSuspend), unix.DM_DEV_SUSPEND},
		{"DM_DEV_STATUS", generic(cmdDevStatus), unix.DM_DEV_STATUS},
		{"DM_TABLE_LOAD", generic(cmdTableLoad), unix.DM_TABLE_LOAD},
		{"sizeof dm_ioctl", sizeofIoctl, unix.SizeofDmIoctl},
		{"sizeof dm_target_spec", sizeofTargetSpec, unix.SizeofDmTargetSpec},
		{"DM_SECURE_DATA_FLAG", flagSecureData, unix.DM_SECURE_DATA_FLAG},
		{"DM_SUSPEND_FLAG", flagSuspend, unix.DM_SUSPEND_FLAG},
		{"DM_READONLY_FLAG", flagReadOnly, unix.DM_READONLY_FLAG},
		{"DM_NAME_LEN", nameLen, unix.DM_NAME_LEN},
		{"DM_UUID_LEN", uuidLen, unix.DM_UUID_LEN},
		{"DM_MAX_TYPE_NAME", maxTypeName, unix.DM_MAX_TYPE_NAME},
		{"offsetof name", offName, unsafe.Offsetof(unix.DmIoctl{}.Name)},
		{"offsetof uuid", offUUID, unsafe.Offsetof(unix.DmIoctl{}.Uuid)},
		{"offsetof dev", offDev, unsafe.Offsetof(unix.DmIoctl{}.Dev)},
		{"offsetof flags", offFlags, unsafe.Offsetof(unix.DmIoctl{}.Flags)},
		{"major version", uintptr(interfaceVersion[0]), unix.DM_VERSION_MAJOR},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, kernel has %#x", tc.name, tc.got, tc.want)
		}
	}
}

// generic is the request number in the generic ioctl encoding; on architectures with another one
// (mips, powerpc, sparc) only the x/sys/unix numbers apply.
func generic(cmd uintptr) uintptr {
	switch runtime.GOARCH {
	case "amd64", "386", "arm", "arm64", "riscv64", "s390x", "loong64":
		return iowr(dmIoctlType, cmd, sizeofIoctl)
	}
	return request(cmd)
}

// iowr is _IOWR(type, nr, size) in the generic Linux ioctl encoding (x86, arm, riscv, s390). The
// requests actually sent come from golang.org/x/sys/unix, which has each architecture's encoding;
// this independent encoding checks the two agree where the generic one applies.
func iowr(typ, nr, size uintptr) uintptr {
	const dirRead, dirWrite = 2, 1
	return (dirRead|dirWrite)<<30 | size<<16 | typ<<8 | nr
}

const dmIoctlType = 0xfd

func asKernel(b []byte) *unix.DmIoctl { return (*unix.DmIoctl)(unsafe.Pointer(&b[0])) }

func TestHeaderEncoding(t *testing.T) {
	buf := make([]byte, sizeofIoctl)
	h := header{Version: [3]uint32{4, 0, 0}, DataSize: 312, DataStart: 312, TargetCount: 1, Flags: flagSecureData | flagReadOnly,
		EventNr: 9, Dev: 0xfd00003, Name: "cryptroot", UUID: "CRYPT-LUKS2-abc-cryptroot", OpenCount: -1}
	if err := encodeHeader(buf, h); err != nil {
		t.Fatal(err)
	}
	k := asKernel(buf)
	if k.Version != [3]uint32{4, 0, 0} || k.Data_size != 312 || k.Data_start != 312 || k.Target_count != 1 ||
		k.Flags != unix.DM_SECURE_DATA_FLAG|unix.DM_READONLY_FLAG || k.Event_nr != 9 || k.Dev != 0xfd00003 || k.Open_count != -1 {
		t.Fatalf("kernel view: %+v", *k)
	}
	if cstr(k.Name[:]) != "cryptroot" || cstr(k.Uuid[:]) != "CRYPT-LUKS2-abc-cryptroot" {
		t.Fatalf("name %q uuid %q", cstr(k.Name[:]), cstr(k.Uuid[:]))
	}
	back, err := decodeHeader(buf)
	if err != nil || back != h {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

func TestHeaderRejects(t *testing.T) {
	buf := make([]byte, sizeofIoctl)
	for _, tc := range []struct{ name, uuid string }{
		{"", ""}, {strings.Repeat("n", 128), ""}, {"a/b", ""}, {"..", ""}, {"a\x00b", ""},
		{"ok", strings.Repeat("u", 129)},
	} {
		if encodeHeader(buf, header{Name: tc.name, UUID: tc.uuid}) == nil {
			t.Errorf("name %q uuid len %d accepted", tc.name, len(tc.uuid))
		}
	}
	if encodeHeader(buf, header{Name: strings.Repeat("n", 127), UUID: strings.Repeat("u", 128)}) != nil {
		t.Error("maximum lengths refused")
	}
}

func testKey(t *testing.T) *memsafe.Key {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i)
	}
	k, err := memsafe.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

func TestCryptTableEncoding(t *testing.T) {
	key := testKey(t)
	tests := []struct {
		name   string
		target CryptTarget
		params string
	}{
		{"luks2 4k sectors", CryptTarget{Cipher: "aes-xts-plain64", Key: key, IVOffset: 0, Device: "/dev/vda2", Offset: 32768,
			Length: 2048000, SectorSize: 4096}, "aes-xts-plain64 KEY 0 /dev/vda2 32768 1 sector_size:4096"},
		{"512 sectors with options", CryptTarget{Cipher: "aes-xts-plain64", Key: key, IVOffset: 7, Device: "8:3", Offset: 4096,
			Length: 100, SectorSize: 512, Options: []string{"allow_discards", "no_read_workqueue"}},
			"aes-xts-plain64 KEY 7 8:3 4096 2 allow_discards no_read_workqueue"},
	}
	hexKey := "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf, err := tableBuffer(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			spec := (*unix.DmTargetSpec)(unsafe.Pointer(&buf[sizeofIoctl]))
			if spec.Sector_start != 0 || spec.Length != tc.target.Length || cstr(spec.Target_type[:]) != "crypt" {
				t.Fatalf("spec %+v", *spec)
			}
			params := buf[sizeofIoctl+sizeofTargetSpec:]
			n := bytes.IndexByte(params, 0)
			want := strings.Replace(tc.params, "KEY", hexKey, 1)
			if got := string(params[:n]); got != want {
				t.Fatalf("params\n got %q\nwant %q", strings.Replace(got, hexKey, "KEY", 1), tc.params)
			}
			if len(buf)%8 != 0 || int(spec.Next) != len(buf)-sizeofIoctl || !allZero(buf[sizeofIoctl+sizeofTargetSpec+n:]) {
				t.Fatalf("padding: len %d next %d", len(buf), spec.Next)
			}
		})
	}
	if _, err := tableBuffer(CryptTarget{Cipher: "aes xts", Key: key, Device: "/dev/x", Length: 1}); err == nil {
		t.Fatal("cipher with a space accepted")
	}
	if _, err := tableBuffer(CryptTarget{Cipher: "aes-xts-plain64", Key: key, Device: "/dev/x", Length: 1, Options: []string{"a b"}}); err == nil {
		t.Fatal("option with a space accepted")
	}
}

func allZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

// recorder stands in for the kernel: it records each command and can fail one.
type recorder struct {
	calls  []string
	flags  []uint32
	bufs   [][]byte // the caller's buffers, not copies: to check wiping
	sawKey []bool
	failOn uintptr
	errno  unix.Errno
	dev    uint64
}

func (r *recorder) ioctl(req uintptr, buf []byte) error {
	names := map[uintptr]string{request(cmdDevCreate): "create", request(cmdTableLoad): "load",
		request(cmdDevSuspend): "resume", request(cmdDevRemove): "remove", request(cmdDevStatus): "status"}
	h, _ := decodeHeader(buf)
	r.calls = append(r.calls, names[req]+" "+h.Name)
	r.flags = append(r.flags, h.Flags)
	r.bufs = append(r.bufs, buf)
	r.sawKey = append(r.sawKey, bytes.Contains(buf, []byte("000102030405")))
	if binary.NativeEndian.Uint32(buf[offDataSize:]) != uint32(len(buf)) {
		return unix.EINVAL
	}
	if req == r.failOn {
		return r.errno
	}
	if req == request(cmdDevSuspend) {
		binary.NativeEndian.PutUint64(buf[offDev:], r.dev)
	}
	return nil
}

func TestActivateSequence(t *testing.T) {
	key := testKey(t)
	tgt := CryptTarget{Cipher: "aes-xts-plain64", Key: key, Device: "/dev/vda2", Offset: 32768, Length: 1024, SectorSize: 4096}
	dir := t.TempDir()
	r := &recorder{dev: unix.Mkdev(253, 7)}
	c := &Control{ioctl: r.ioctl, devDir: filepath.Join(dir, "mapper")}
	path, err := c.ActivateCrypt("data", CryptUUID("1234-56", "data"), tgt)
	if errors.Is(err, unix.EPERM) {
		t.Skip("mknod not permitted here")
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.calls, ","); got != "create data,load data,resume data" {
		t.Fatalf("sequence %s", got)
	}
	if r.flags[1]&flagSecureData == 0 || r.flags[2]&flagSuspend != 0 {
		t.Fatalf("flags %#x", r.flags)
	}
	if !r.sawKey[1] || !allZero(r.bufs[1]) {
		t.Fatal("the table buffer carried no key or was not wiped after the ioctl")
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || uint64(st.Rdev) != unix.Mkdev(253, 7) {
		t.Fatalf("node %s: %v mode %o rdev %x", path, err, st.Mode, st.Rdev)
	}
	// Activation again over the existing node keeps it; Remove drops the node.
	if _, err := c.ActivateCrypt("data", "", tgt); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove("data"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("node left behind: %v", err)
	}
}

func TestActivateCleansUp(t *testing.T) {
	key := testKey(t)
	tgt := CryptTarget{Cipher: "aes-xts-plain64", Key: key, Device: "/dev/vda2", Offset: 32768, Length: 1024}
	tests := []struct {
		name    string
		failOn  uintptr
		errno   unix.Errno
		want    error
		wantSeq string
	}{
		{"create exists", request(cmdDevCreate), unix.EEXIST, ErrExists, "create x"},
		{"load fails", request(cmdTableLoad), unix.EINVAL, unix.EINVAL, "create x,load x,remove x"},
		{"resume busy", request(cmdDevSuspend), unix.EBUSY, ErrBusy, "create x,load x,resume x,remove x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{failOn: tc.failOn, errno: tc.errno}
			c := &Control{ioctl: r.ioctl, devDir: t.TempDir()}
			_, err := c.ActivateCrypt("x", "", tgt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if got := strings.Join(r.calls, ","); got != tc.wantSeq {
				t.Fatalf("sequence %s, want %s", got, tc.wantSeq)
			}
			for _, b := range r.bufs {
				if bytes.Contains(b, []byte("000102030405")) {
					t.Fatal("key material left in a buffer")
				}
			}
		})
	}
}

func TestSplitDev(t *testing.T) {
	for _, d := range []struct{ major, minor uint32 }{{253, 0}, {8, 3}, {259, 70000}, {4095, 1 << 19}} {
		dev := unix.Mkdev(d.major, d.minor)
		if ma, mi := splitDev(dev); ma != d.major || mi != d.minor {
			t.Errorf("%d:%d decoded as %d:%d", d.major, d.minor, ma, mi)
		}
	}
}

func TestStatusDecodes(t *testing.T) {
	c := &Control{devDir: t.TempDir(), ioctl: func(req uintptr, buf []byte) error {
		binary.NativeEndian.PutUint64(buf[offDev:], unix.Mkdev(253, 2))
		binary.NativeEndian.PutUint32(buf[offOpenCount:], 1)
		binary.NativeEndian.PutUint32(buf[offFlags:], flagSuspend)
		copy(buf[offUUID:], "CRYPT-LUKS2-x-root")
		return nil
	}}
	info, err := c.Status("root")
	if err != nil || info.Major != 253 || info.Minor != 2 || info.OpenCount != 1 || !info.Suspended || info.UUID != "CRYPT-LUKS2-x-root" {
		t.Fatalf("%+v %v", info, err)
	}
}

// On a kernel without device-mapper (this build machine), Open says so with ErrNoDeviceMapper.
func TestOpenWithoutDeviceMapper(t *testing.T) {
	if _, err := os.Stat("/sys/class/misc/device-mapper"); err == nil {
		t.Skip("this kernel has device-mapper")
	}
	// A stale control node (libdevmapper makes one with the usual 10:236) opens with ENODEV: that
	// must be reported the same way.
	if _, err := Open(); !errors.Is(err, ErrNoDeviceMapper) {
		t.Fatalf("got %v", err)
	}
}

func TestCryptUUID(t *testing.T) {
	if got := CryptUUID("f3a1-22-bb", "root"); got != "CRYPT-LUKS2-f3a122bb-root" {
		t.Fatal(got)
	}
}

func TestSizeOfImageFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, make([]byte, 12345), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := Size(f); n != 12345 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
}
