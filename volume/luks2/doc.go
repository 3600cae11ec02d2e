// Package luks2 reads and writes LUKS2 volume headers in pure Go (no cgo, no cryptsetup at run time),
// enough to unlock a volume with a passphrase, to enroll and remove keyslots and tokens, and to
// decrypt data sectors in userspace for tests.
//
// # Format
//
// The format is the LUKS2 On-Disk Format Specification (cryptsetup project). A device starts with
// two copies of the header, each a 4096-byte binary header followed by a JSON area; together
// they are hdr_size bytes (16 KiB .. 4 MiB). The primary copy is at offset 0 with magic
// "LUKS\xba\xbe", the secondary at offset hdr_size with magic "SKUL\xba\xbe". The binary header
// (integers big endian):
//
//	off  size  field
//	  0     6  magic
//	  6     2  version (2)
//	  8     8  hdr_size (binary header + JSON area)
//	 16     8  seqid (incremented on every update; the valid copy with the higher one wins)
//	 24    48  label (NUL-terminated)
//	 72    32  csum_alg ("sha256")
//	104    64  salt
//	168    40  uuid
//	208    48  subsystem
//	256     8  hdr_offset (where this copy is)
//	264   184  padding
//	448    64  csum: SHA-256 over the whole hdr_size area with this field zeroed
//	512  3584  padding
//
// The JSON area holds the JSON metadata text followed by NUL bytes up to hdr_size: objects
// "keyslots", "tokens", "segments", "digests" and "config". 64-bit integers are decimal strings.
// After both copies comes the keyslots area (config.keyslots_size bytes); each keyslot's
// area.offset/size points into it. The data segment follows.
//
// To open a "luks2" keyslot: derive area.key_size bytes from the passphrase with the keyslot KDF
// (pbkdf2 with sha1/sha256/sha512, argon2i or argon2id); read roundup(key_size*stripes, 512)
// bytes of the keyslot area and decrypt them in 512-byte sectors (IV = sector index from the area
// start) with area.encryption; merge the result with the LUKS1 anti-forensic splitter and the
// keyslot's af.hash into key_size bytes; the result is the volume key if PBKDF2 of it with the
// digest's hash, salt and iterations equals the stored digest (compared over the stored digest's
// length: 20 bytes on volumes converted from LUKS1).
//
// # Guarantees
//
//   - Both header copies are verified (magic, version, sizes, checksum, JSON) and the valid copy with
//     the higher seqid is used. A damaged, stale or diverging copy is reported in Report, never
//     repaired silently; the next write rewrites both copies.
//   - Ciphers are allowlisted (aes-xts-plain64, aes-xts-plain, aes-cbc-essiv:sha256) for data
//     segments and keyslot areas alike. cipher_null, unknown ciphers, integrity segments and any
//     config.requirements are refused with an *UnsupportedError: the header is not authenticated,
//     and a swapped header naming a null cipher is a known attack on unlock helpers.
//   - Every authentication failure is the single error ErrWrongPassphrase.
//   - The volume key is returned in a memsafe.Key; the intermediates (KDF output, decrypted keyslot
//     material, the merged key before it is verified) are heap slices wiped before return.
//   - Writes keep the volume openable with its existing passphrases if interrupted at any byte (see
//     the order in write.go), and Backup copies the whole header area first if the caller asks.
//
// # Non-guarantees
//
//   - The header is not authenticated (LUKS2 has no way to); the allowlist and the digest check
//     limit what a forged header can do, they do not detect forgery. A forged header with its own
//     volume key and a keyslot for a passphrase the attacker knows is indistinguishable from a real
//     one; only the passphrase's secrecy stops it from opening with our passphrase.
//   - Go cannot wipe everything: AES key schedules, HMAC states and argon2's work memory are garbage
//     collected, not zeroed.
//   - A forged header can still make an unlock slow or memory-hungry (PBKDF2 iterations up to 2^31,
//     Argon2 memory up to cryptsetup's 4 GiB cap): denial of service, which anyone able to swap the
//     header can cause anyway.
//   - Writers assume exclusive access: no locking against a concurrent cryptsetup.
//   - LUKS1 volumes are not read (convert them with `cryptsetup convert --type luks2`).
package luks2
