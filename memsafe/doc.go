// Package memsafe is the one home of secret bytes in Keyward.
//
// Every key the agent, the proxy or the unlock helper holds lives in a [Key]: a memguard buffer in
// its own mmap'd pages, locked into RAM (mlock) so it is never written to swap, fenced by guard pages,
// made read-only once filled, and wiped (then unmapped) by [Key.Destroy]. The bytes are reachable only
// inside [Key.Use], whose callback must not retain the slice. Every way of printing a Key — fmt verbs,
// %#v, slog — prints "[REDACTED]".
//
// What this package guarantees:
//   - key bytes are read straight into locked memory ([FromReader]) or moved there and the source wiped
//     ([FromBytes]); no copy is left by memsafe itself in the Go heap;
//   - a destroyed Key cannot be used ([ErrDestroyed]) and its pages are zeroed before they are unmapped;
//   - [DestroyAll] wipes every live Key, for shutdown and for "purge now" requests;
//   - [Harden] turns off core dumps and ptrace-by-same-uid (PR_SET_DUMPABLE=0), and [CheckLockLimit] fails
//     fast with a clear error where memguard itself would panic at RLIMIT_MEMLOCK.
//
// What it does not guarantee:
//   - Code that calls Use can copy the bytes anywhere; keep those callbacks tiny.
//   - Ciphers keep expanded key schedules in the Go heap, outside memsafe: an [AEAD] keeps exactly one
//     such schedule per key for the key's lifetime instead of one per use, which bounds the copies but
//     does not remove them. Go's garbage collector may move or leave such heap memory unzeroed.
//   - Locked memory protects against swap, not against root on the same machine, a kernel exploit, or a
//     cold-boot attack.
package memsafe
