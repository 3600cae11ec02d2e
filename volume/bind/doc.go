// Package bind binds a LUKS2 volume to a Keyward key: it enrolls a keyslot that opens with a
// passphrase derived from the agent's data key for a scope, unlocks the volume with it (activating
// dm-crypt through device-mapper ioctls, or with cryptsetup), and rotates the binding to a newer key
// version. It is the library behind `volumectl`; it never logs.
//
// # The binding (version 1)
//
// A bound volume has one keyward keyslot per binding and, next to it, a LUKS2 token
//
//	{"type":"keyward","keyslots":["N"],"scope":"<keyring>:<name>","version":V}
//
// naming the keyslot, the scope and the key version. The keyslot's passphrase is
//
//	passphrase = lowercase hex( HMAC-SHA256( DK, "keyward-luks2-v1" || 0x00 || uuid ) )
//
// 64 ASCII characters, where DK is the 256-bit data key the agent serves for (scope, V) and uuid is
// the LUKS2 header's UUID exactly as stored (the string `cryptsetup luksUUID` prints). It is hex so
// that an operator holding the data key can rebuild it and hand it to `cryptsetup open --key-file -`
// (see Passphrase; known-answer vectors in testdata/passphrase-vectors.json); the uuid binds it to one volume, so volumes sharing a scope do not share a
// passphrase, and a keyslot copied to another volume's header does not open there. The keyslot's KDF is
// PBKDF2-SHA256 with 1000 iterations (cryptsetup's floor): the passphrase has 256 bits of entropy, so
// key stretching would only slow every boot without making a guess any less hopeless.
//
// # Guarantees
//
//   - Enroll and Rotate back the whole header area up to a new file before their first write, and use
//     volume/luks2's write order: interrupted at any byte, the volume still opens with every
//     passphrase it opened with before (the recovery passphrase is never touched).
//   - Unlock tries the derived passphrase on the one keyslot its token names, never on the others (so it
//     never runs the deliberately slow KDF of a recovery keyslot), and refuses the ciphers volume/luks2
//     refuses. A forged token naming the recovery keyslot can make that KDF run once: a delay, which
//     anyone able to rewrite the header can cause anyway.
//   - Keys and passphrases live in memsafe.Key; they never appear in errors.
//   - Errors wrap sentinels for every failure a boot script must tell apart: ErrNoToken,
//     ErrWrongKey, ErrBusy, client.ErrDenied / ErrUnavailable / ErrNotFound, luks2.ErrNotLUKS2.
//
// # Non-guarantees
//
//   - The LUKS2 header is not authenticated: whoever can write the disk can swap the token's scope.
//     The agent's policy decides which scopes this caller may fetch, so a swapped scope can at worst
//     make the unlock fail or fetch another key the caller was granted anyway.
//   - No locking against a concurrent cryptsetup on the same device beyond O_EXCL on block devices.
//   - cryptsetup's fallback passes the passphrase through a pipe to the child process: it is then in
//     that process's memory too, as with any `cryptsetup open --key-file -`.
package bind
