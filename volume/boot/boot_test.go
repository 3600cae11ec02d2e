package boot

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/testenv"
)

const (
	scope    = "boot:volume/vm-1/data"
	recovery = "boot test recovery passphrase"
	portName = "org.keyward.agent"
)

// policy grants the volume scope to qemu (the guest's requests arrive through it) and to volumectl on
// the host (for enroll). The denied variant drops qemu's membership.
const policyTmpl = `version: 1
principals:
  vm:        {uid: 0, exe: %[1]s}
  volumectl: {uid: 0, exe: %[2]s}
roles:
  boot: {grants: [{scopes: ["boot:volume/*"], ops: [decrypt]}]}
members:
  volumectl: [boot]
%[3]s
`

// modules are loaded in the guest, each after its dependencies (from modules.dep). crc32c and the
// cipher templates are requested by name at run time (request_module), which needs modprobe; loading
// them up front avoids it.
var modules = []string{
	"virtio_pci", "virtio_blk", "virtio_console",
	"dm-mod", "dm-crypt", "ecb", "xts",
	"crc32c_generic", "ext4",
}

// TestBootUnlock boots the host's Debian kernel under qemu (TCG) with a busybox initramfs; the guest
// unlocks its LUKS2 root disk with `volumectl unlock` over virtio-serial to the host agent, mounts it
// and prints the marker file the test wrote into the encrypted file system. A second boot, with an agent
// whose policy does not grant the VM, must fail to unlock.
func TestBootUnlock(t *testing.T) {
	qemu := testenv.Require(t, "qemu-system-x86_64")
	cs := testenv.Require(t, "cryptsetup")
	busybox := testenv.Require(t, "busybox")
	mkfs := testenv.Require(t, "mkfs.ext4")
	cpio := testenv.Require(t, "cpio")
	if os.Geteuid() != 0 {
		t.Skip("the agent policy names uid 0 (run as root, as CI does)")
	}
	kernel, modDir := findKernel(t)
	qemuExe, err := filepath.EvalSymlinks(qemu)
	if err != nil {
		t.Fatal(err)
	}
	volumectl := testenv.Binary(t, "volumectl")
	ks := testenv.StartKeyService(t, testenv.KeyServiceOptions{Soft: true, Keyrings: []string{"boot"}})
	granted := testenv.StartAgent(t, testenv.AgentOptions{KeyServices: []*testenv.KeyService{ks},
		Policy: fmt.Sprintf(policyTmpl, qemuExe, volumectl, "  vm: [boot]")})
	denied := testenv.StartAgent(t, testenv.AgentOptions{KeyServices: []*testenv.KeyService{ks},
		Policy: fmt.Sprintf(policyTmpl, qemuExe, volumectl, "")})

	dir := t.TempDir()
	marker := randHex(t, 16)
	disk := makeDisk(t, dir, cs, mkfs, marker)
	keyFile := filepath.Join(dir, "recovery.key")
	if err := os.WriteFile(keyFile, []byte(recovery), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(volumectl, "enroll", disk, "--scope", scope, "--unlock-key-file", keyFile,
		"--backup-dir", filepath.Join(dir, "backup"), "--socket", granted.Socket).CombinedOutput()
	if err != nil {
		t.Fatalf("enroll: %v\n%s\nagent:\n%s", err, out, granted.Log())
	}
	disk2 := filepath.Join(dir, "disk2.img")
	copyFile(t, disk, disk2)

	initrd := makeInitramfs(t, dir, busybox, cpio, volumectl, modDir)

	t.Run("granted", func(t *testing.T) {
		t.Parallel()
		log, res := boot(t, qemu, kernel, initrd, disk, granted.Socket)
		// lock-mounted=6: volumectl lock refuses a mounted mapping (busy); lock=0: then removes it.
		if res != "ok marker="+marker+" lock-mounted=6 lock=0" {
			t.Fatalf("guest result %q, want the marker from the encrypted disk\nserial log:\n%s\nagent log:\n%s", res, log, granted.Log())
		}
		if !strings.Contains(log, "unlocked /dev/vda as /dev/mapper/data") {
			t.Fatalf("volumectl did not report the unlock:\n%s", log)
		}
	})
	t.Run("denied", func(t *testing.T) {
		t.Parallel()
		log, res := boot(t, qemu, kernel, initrd, disk2, denied.Socket)
		if res != "unlock-failed" || !strings.Contains(log, "failed (exit 4)") || strings.Contains(log, marker) {
			t.Fatalf("guest result %q, want a denied unlock\nserial log:\n%s\nagent log:\n%s", res, log, denied.Log())
		}
		if !strings.Contains(log, "denied") {
			t.Fatalf("volumectl did not say why:\n%s", log)
		}
	})
}

func findKernel(t *testing.T) (kernel, modDir string) {
	vms, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(vms)))
	for _, k := range vms {
		d := filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(k), "vmlinuz-"))
		if _, err := os.Stat(filepath.Join(d, "modules.dep")); err == nil {
			return k, d
		}
	}
	if testenv.InCI() {
		t.Fatal("no /boot/vmlinuz-* with modules in /lib/modules (make deps installs linux-image-amd64)")
	}
	t.Skip("no /boot/vmlinuz-* with modules in /lib/modules; run `make deps` (linux-image-amd64)")
	return "", ""
}

// makeDisk makes an ext4 file system holding the marker and encrypts it in place, offline, with
// cryptsetup (the data moves up by 2 MiB to make room for the header); keyslot 0 opens with recovery.
func makeDisk(t *testing.T, dir, cs, mkfs, marker string) string {
	content := filepath.Join(dir, "content")
	if err := os.MkdirAll(content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(content, "marker"), []byte(marker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	run(t, "", mkfs, "-q", "-F", "-t", "ext4", "-d", content, "-L", "kwdata", disk, "24M")
	if err := os.Truncate(disk, 26<<20); err != nil {
		t.Fatal(err)
	}
	run(t, recovery, cs, "reencrypt", "--encrypt", "--type", "luks2", "--batch-mode", "--key-file", "-",
		"--reduce-device-size", "2M", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1M",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--force-offline-reencrypt", disk)
	return disk
}

// initScript runs as PID 1 in the guest: it loads the modules, runs the real initramfs-tools script
// (initramfs-tools/scripts/local-top/keyward, with a stand-in for /scripts/functions) and prints one
// result line. The marker it prints comes only from the decrypted disk (the initramfs holds neither the
// marker nor any key).
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mkdir -p /proc /sys /dev /mnt /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
result() { echo "KEYWARD-BOOT-RESULT $*"; sync; poweroff -f; sleep 5; }
for m in $(cat /modules.order); do insmod /lib/modules/$m || echo "insmod $m failed"; done
sh /scripts/local-top/keyward
[ -b /dev/mapper/data ] || result "unlock-failed"
mount -t ext4 -o ro /dev/mapper/data /mnt || result "mount-failed"
marker=$(cat /mnt/marker)
volumectl lock data; busy=$?
umount /mnt
volumectl lock data; lock=$?
[ -e /dev/mapper/data ] && lock="$lock-node-left"
result "ok marker=$marker lock-mounted=$busy lock=$lock"
`

// functionsStub stands in for initramfs-tools' /scripts/functions.
const functionsStub = `log_failure_msg() { echo "keyward-initramfs: $*"; }
`

// initramfsConf is /etc/keyward/initramfs.conf, as an operator would write it for a VM.
const initramfsConf = `KEYWARD_DEVICE=/dev/vda
KEYWARD_NAME=data
KEYWARD_PORT_NAME=` + portName + `
KEYWARD_WAIT=60
`

// makeInitramfs builds a gzip'd newc cpio: busybox, volumectl, the modules and /init.
func makeInitramfs(t *testing.T, dir, busybox, cpio, volumectl, modDir string) string {
	root := filepath.Join(dir, "initramfs")
	for _, d := range []string{"bin", "sbin", "lib/modules", "dev", "proc", "sys", "mnt", "run", "scripts/local-top", "etc/keyward"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, busybox, filepath.Join(root, "bin/busybox"))
	copyFile(t, volumectl, filepath.Join(root, "sbin/volumectl"))
	copyFile(t, "initramfs-tools/scripts/local-top/keyward", filepath.Join(root, "scripts/local-top/keyward"))
	for name, content := range map[string]string{"scripts/functions": functionsStub, "etc/keyward/initramfs.conf": initramfsConf} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	order := moduleOrder(t, modDir, modules)
	var names []string
	for _, m := range order {
		if !strings.HasSuffix(m, ".ko") {
			t.Fatalf("module %s is compressed; this test loads plain .ko files with busybox insmod", m)
		}
		copyFile(t, filepath.Join(modDir, m), filepath.Join(root, "lib/modules", filepath.Base(m)))
		names = append(names, filepath.Base(m))
	}
	if err := os.WriteFile(filepath.Join(root, "modules.order"), []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("sh", "-c", "find . | LC_ALL=C sort | "+cpio+" -o -H newc --quiet -R 0:0")
	cmd.Dir = root
	var raw bytes.Buffer
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &raw, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, stderr.String())
	}
	out := filepath.Join(dir, "initramfs.cpio.gz")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if _, err := io.Copy(zw, &raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// moduleOrder resolves want (module names, '-' and '_' alike) to paths in modules.dep, each after
// its dependencies.
func moduleOrder(t *testing.T, modDir string, want []string) []string {
	data, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	deps := map[string][]string{} // path -> dependency paths
	byName := map[string]string{} // normalized name -> path
	for _, line := range strings.Split(string(data), "\n") {
		path, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[path] = strings.Fields(rest)
		byName[modName(path)] = path
	}
	var order []string
	seen := map[string]bool{}
	var visit func(p string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		// modules.dep lists a module's dependencies with the ones to load last first.
		d := deps[p]
		for i := len(d) - 1; i >= 0; i-- {
			visit(d[i])
		}
		order = append(order, p)
	}
	for _, w := range want {
		p, ok := byName[strings.ReplaceAll(w, "-", "_")]
		if !ok {
			t.Fatalf("module %s not in %s/modules.dep (built in? then drop it from the list)", w, modDir)
		}
		visit(p)
	}
	return order
}

func modName(path string) string {
	b := filepath.Base(path)
	b, _, _ = strings.Cut(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

var resultLine = regexp.MustCompile(`KEYWARD-BOOT-RESULT ([^\r\n]*)`)

// boot runs qemu until the guest powers off (or the deadline) and returns the serial log and the
// guest's result line.
func boot(t *testing.T, qemu, kernel, initrd, disk, agentSocket string) (string, string) {
	serial := filepath.Join(t.TempDir(), "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "q35,accel=tcg", "-m", "256M", "-smp", "1",
		"-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
		"-serial", "file:"+serial,
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4 printk.time=1",
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-chardev", "socket,id=agent,path="+agentSocket,
		"-device", "virtio-serial-pci",
		"-device", "virtserialport,chardev=agent,name="+portName,
	)
	var qout strings.Builder
	cmd.Stdout, cmd.Stderr = &qout, &qout
	start := time.Now()
	err := cmd.Run()
	log, _ := os.ReadFile(serial)
	t.Logf("boot took %s", time.Since(start).Round(time.Second))
	if ctx.Err() != nil {
		t.Fatalf("the guest did not power off within the deadline\nqemu: %s\nserial log:\n%s", qout.String(), log)
	}
	if err != nil {
		t.Fatalf("qemu: %v\n%s\nserial log:\n%s", err, qout.String(), log)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "volumectl") || strings.Contains(line, "keyward") || strings.Contains(line, "unlocked") {
			t.Logf("guest: %s", strings.TrimSpace(line))
		}
	}
	m := resultLine.FindAllStringSubmatch(string(log), -1)
	if len(m) != 1 {
		t.Fatalf("want exactly one result line from the guest, got %d\nserial log:\n%s", len(m), log)
	}
	return string(log), strings.TrimSpace(m[0][1])
}

func run(t *testing.T, stdin, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
}

func copyFile(t *testing.T, src, dst string) {
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
