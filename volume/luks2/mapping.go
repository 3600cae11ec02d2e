package luks2

import (
	"errors"
	"fmt"
)

// Mapping is what a dm-crypt table for the data segment needs, in the units dm-crypt takes.
type Mapping struct {
	Cipher     string   // segment encryption, e.g. "aes-xts-plain64" (allowlisted by Open)
	IVOffset   uint64   // segment iv_tweak
	Offset     uint64   // data start on the device, 512-byte sectors
	Length     uint64   // mapping length, 512-byte sectors
	SectorSize int      // encryption sector size in bytes
	Options    []string // dm-crypt options from the LUKS2 persistent flags (allow_discards, ...)
}

// dmFlags maps LUKS2 config.flags to dm-crypt table options; unknown flags are activation
// preferences we may ignore safely.
var dmFlags = map[string]string{
	"allow-discards":         "allow_discards",
	"same-cpu-crypt":         "same_cpu_crypt",
	"submit-from-crypt-cpus": "submit_from_crypt_cpus",
	"no-read-workqueue":      "no_read_workqueue",
	"no-write-workqueue":     "no_write_workqueue",
}

// Mapping computes the data segment's dm-crypt mapping on a device of deviceSize bytes.
func (v *Volume) Mapping(deviceSize int64) (Mapping, error) {
	_, seg := v.DataSegment()
	if deviceSize < 0 || uint64(deviceSize) <= seg.Offset {
		return Mapping{}, fmt.Errorf("luks2: device of %d bytes ends before the data offset %d", deviceSize, seg.Offset)
	}
	size := seg.Size
	if seg.Dynamic {
		size = uint64(deviceSize) - seg.Offset
		size -= size % uint64(seg.SectorSize) // dm-crypt wants whole encryption sectors
	} else if seg.Offset+size > uint64(deviceSize) {
		return Mapping{}, errors.New("luks2: data segment runs past the end of the device")
	}
	if size == 0 {
		return Mapping{}, errors.New("luks2: empty data segment")
	}
	m := Mapping{Cipher: seg.Encryption, IVOffset: seg.IVTweak, Offset: seg.Offset / 512, Length: size / 512, SectorSize: seg.SectorSize}
	for _, f := range v.meta.Config.Flags {
		if o, ok := dmFlags[f]; ok {
			m.Options = append(m.Options, o)
		}
	}
	return m, nil
}
