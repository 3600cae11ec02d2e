// Package boot holds what unlocks a Keyward-bound LUKS2 volume at boot, and the end-to-end test
// that proves it on a real kernel.
//
//   - volumectl@.service: a systemd template unit, one instance per volume (the instance name is the
//     mapping name), ordered after keyagent.service and before the mount that needs the volume.
//   - initramfs-tools/hooks/keyward and initramfs-tools/scripts/local-top/keyward: the Debian
//     initramfs-tools integration for the root volume; the hook copies volumectl and the
//     device-mapper modules in, the script unlocks before the root file system is mounted.
//
// The test (boot_test.go) boots the host's Debian kernel under qemu with a busybox initramfs that
// holds volumectl and no key, and a LUKS2 virtio disk whose only non-recovery keyslot was enrolled by
// volumectl. The guest reaches the host's agent over virtio-serial (a `-chardev socket` to the agent's
// unix socket and a `virtserialport` named org.keyward.agent, /dev/vport*p* in the guest), so the agent
// sees qemu as its caller and its policy decides whether this virtual machine may have the key.
package boot
