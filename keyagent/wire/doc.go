// Package wire is the framed binary protocol spoken on the key agent's unix
// socket (callers -> keyagent) and, inside TLS 1.3 with client certificates,
// between the agent and the key service (keyagent -> keyservice).
//
// # Guarantees
//
//   - A frame is read only after its length has been checked against the
//     reader's cap (MaxFrameSize at most): a peer cannot make a Reader
//     allocate more than the cap, and a Reader grows its buffer only as bytes
//     actually arrive, so a header that promises a large frame costs nothing
//     until the bytes are sent.
//   - Every message has exactly one encoding. Decoding rejects unknown frame
//     types, unknown versions, unknown enumeration values, invalid UTF-8,
//     truncated fields and trailing bytes, with a *ParseError.
//   - Key bytes reach a *memsafe.Key without an intermediate heap copy made by
//     this package: Reader.Decode of a KeyResponse copies the key bytes that
//     its receive buffer already holds into locked memory and wipes them there,
//     then reads the rest of the key straight from the connection into locked
//     memory. Encoding writes the key from inside Key.Use; Writer and WriteMsg
//     wipe their send buffer after every frame, and Reader wipes every frame
//     body once decoded (plaintext of in-HSM operations is wiped too).
//   - Nothing in this package formats key bytes: errors carry offsets and
//     reasons, never field contents of a KeyResponse, and memsafe.Key prints
//     as [REDACTED].
//
// # Non-guarantees
//
//   - The protocol has no authentication or encryption of its own. On the unix
//     socket the kernel tells who the caller is (keyagent/peercred); towards
//     the key service the frames travel inside mutually authenticated TLS 1.3.
//   - Copies outside this package are out of its reach: the kernel's socket
//     buffers, a bufio.Writer handed to WriteMsg, a slice passed to
//     KeyResponse.Encode (the caller wipes it) or KeyResponse.Decode (which
//     wipes the key bytes of the slice it is given).
//   - Messages are not checked against policy or key service semantics: a
//     well-formed scope string is the agent's business (keyagent/scope).
//
// # Frames
//
// Every message travels in one frame:
//
//	uint32 length   big-endian; counts the type byte and the body (so >= 2)
//	uint8  type     see below; the high bit marks a response
//	body            length-1 bytes, starting with a version byte (1)
//
// The length may not exceed MaxFrameSize (1 MiB) or the smaller cap a Reader
// is configured with. A frame whose length, type or version is not known is a
// protocol error: the side that reads it answers with an ErrorResponse of
// code BadRequest if it is a server, and closes the connection, because the
// stream can no longer be trusted to be in step.
//
// Each request gets exactly one response, in order. Clients may pipeline.
//
// # Field encodings
//
//	u8, u16, u32  unsigned integers, big-endian
//	str           u16 length, then that many bytes of valid UTF-8 (at most MaxStringLen)
//	bytes         u32 length, then that many bytes
//
// # Messages (every body starts with u8 version = 1)
//
//	0x01 KeyRequest          version | op u8 | bits u16 | key_version u32 | scope str | acting_for str
//	0x02 HSMEncryptRequest   version | key_version u32 | scope str | acting_for str | aad bytes | plaintext bytes
//	0x03 HSMDecryptRequest   version | key_version u32 | scope str | acting_for str | aad bytes | ciphertext bytes
//	0x04 StatusRequest       version
//	0x05 PurgeRequest        version
//	0x80 OK                  version
//	0x81 KeyResponse         version | key_version u32 | scope str | key_len u16 | key
//	0x82 HSMEncryptResponse  version | key_version u32 | ciphertext bytes
//	0x83 HSMDecryptResponse  version | plaintext bytes
//	0x84 StatusResponse      version | count u16 | count x (name str | value str)
//	0xFF ErrorResponse       version | code u8 | message str
//
// Field rules:
//
//   - op: 1 = encrypt, 2 = decrypt (what the caller will do with the key; the
//     key service refuses a disabled version for encryption).
//   - bits: 256 or 512 (AES-SIV keys are 512 bits).
//   - key_version: 0 in a request means the newest version; a response always
//     carries the version actually used (>= 1).
//   - scope: non-empty. acting_for: may be empty (the caller acts for itself).
//   - key_len: 32 or 64, and it must be exactly the rest of the frame. The key
//     comes last so that it can be streamed into locked memory.
//   - StatusResponse: at most MaxStatusFields fields, names non-empty.
//   - code: 1 Denied, 2 NotFound, 3 Unavailable, 4 BadRequest, 5 Internal.
//     The message is for people and never contains key material.
//
// The known-answer vectors in testdata/vectors.txt give the exact bytes of
// one frame of each type.
//
// # Versioning
//
// A later revision that changes a body bumps that message's version byte; a
// peer that does not know it answers BadRequest, and the sender may retry
// with version 1. There is no separate handshake: every frame says which
// version it is.
package wire
