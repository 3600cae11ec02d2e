// Package envelope seals and opens the values of encrypted columns.
//
// Every protected column value stored in PostgreSQL (as bytea) is one envelope:
//
//	offset size  field
//	0      2     magic "KW" (0x4b 0x57)
//	2      1     format version, 0x01
//	3      1     alg: 1 = AES-256-GCM randomized, 2 = AES-SIV deterministic, 3 = AES-256-GCM in the HSM
//	4      4     key version, uint32 big-endian, >= 1
//	8      4     scope fingerprint: SHA-256("keyward-scope-v1" || 0x00 || scope)[:4]
//	12     ...   body:
//	               alg 1: nonce (12, random) || ciphertext || tag (16)
//	               alg 2: synthetic IV (16) || ciphertext          (RFC 5297; the SIV is the tag)
//	               alg 3: nonce (12) || ciphertext || tag (16), as returned by the HSM
//
// The associated data of every alg is the 12-byte header followed by the column's qualified name
// "schema.table.column" in UTF-8. The overhead is 40 bytes for algs 1 and 3 and 28 for alg 2.
//
// Why each field:
//   - The magic and format version let a reader tell an envelope from a plaintext value (a column
//     half-way through `colcrypt encrypt-column`) and let the format change later without guessing.
//   - The alg is in the header so one column can hold values of two modes during a migration, and so a
//     reader never tries the wrong primitive.
//   - The key version selects which key of the scope's keyring opens the value; rotation adds versions
//     and readers keep every live one. Version 0 is never issued by a keyring, so it is rejected.
//   - The scope fingerprint is a cheap check that the key used is the scope's key, caught before any
//     decryption: a value copied between columns with different scopes, or a proxy misconfiguration,
//     is reported as such. It is not a secret and not a security boundary (4 bytes, computed from the
//     public scope name); the AEAD tag is the boundary. The label and the 0x00 separator keep the hash
//     domain-separated from any other SHA-256 of a scope name.
//   - Binding the header in the associated data means no header field can be changed without the tag
//     failing; binding the column name means a value copied from one column to another (even under the
//     same key) does not open. Row identity is NOT bound: values can be swapped between rows of the
//     same column without detection. Binding the primary key would break COPY, UPDATE of keys and
//     simple migrations; it is a known non-guarantee of column encryption in the style of Always
//     Encrypted and Acra.
//
// Guarantees:
//   - Randomized values (alg 1) reveal nothing but their length: AES-256-GCM with a fresh 96-bit random
//     nonce per value. With random nonces a key version must not seal more than 2^32 values (NIST SP
//     800-38D section 8.3); rotate well before that.
//   - Deterministic values (alg 2) reveal equality of plaintexts within one column and key version (that
//     is what makes `WHERE col = $1` possible) and their length; nothing else.
//   - Open authenticates before returning anything. Every failure to open (tampered, truncated, wrong
//     column, wrong key, wrong scope) is [ErrOpen]; no error ever contains plaintext or key bytes.
//
// Non-guarantees: lengths are not padded; row identity is not bound (above); the key schedules built
// from a [memsafe.Key] live in the Go heap for the lifetime of a [Cipher] (one per key version, never
// one per value; see [memsafe.AEAD]); this package does not choose key versions, fetch keys or decide
// who may use them.
//
// Deterministic encryption uses AES-SIV (RFC 5297) with a 64-byte key (two AES-256 keys). The
// implementation is in internal/siv rather than tink-go's daead/subtle, whose AESSIV keeps a slice of
// the key bytes it is given (memory a memsafe.Key unmaps on Destroy) and re-expands the CTR key on
// every call; see that package's documentation. Its output is tested byte for byte against tink-go,
// pyca/cryptography and RFC 5297.
package envelope
