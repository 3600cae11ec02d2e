// Package envelopetest holds the contract every envelope.HSM implementation must meet, as a test
// suite to run against the real thing (the key agent client over SoftHSM2 in integration tests).
package envelopetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/keyward/keyward/colcrypt/envelope"
)

// HSMContract checks h for scope and an existing key version of its hsm-aead keyring:
//   - Encrypt returns nonce (12) || ciphertext || tag (16) and echoes the version asked for;
//   - two encryptions of one value use different nonces;
//   - Decrypt reverses Encrypt for empty, short and long values;
//   - a changed byte, a truncated body or other associated data fails with an error wrapping
//     envelope.ErrOpen (not some other error: the proxy tells "does not open" from "denied");
//   - an HSMCipher over h seals and opens envelopes, and refuses one moved to another column.
func HSMContract(t *testing.T, h envelope.HSM, scope string, version uint32) {
	t.Helper()
	ctx := context.Background()
	aad := []byte("KW\x01\x03aad-for-contract-test")
	t.Run("round trip", func(t *testing.T) {
		for _, n := range []int{0, 1, 100, 4096} {
			pt := bytes.Repeat([]byte{0x5a}, n)
			body, v, err := h.Encrypt(ctx, scope, version, pt, aad)
			if err != nil {
				t.Fatalf("Encrypt %d bytes: %v", n, err)
			}
			if v != version {
				t.Fatalf("Encrypt used key version %d, asked for %d", v, version)
			}
			if len(body) != n+12+16 {
				t.Fatalf("Encrypt of %d bytes returned %d, want %d", n, len(body), n+28)
			}
			got, err := h.Decrypt(ctx, scope, version, body, aad)
			if err != nil {
				t.Fatalf("Decrypt %d bytes: %v", n, err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("Decrypt of a %d-byte value returned different bytes", n)
			}
		}
	})
	t.Run("fresh nonces", func(t *testing.T) {
		a, _, err1 := h.Encrypt(ctx, scope, version, []byte("same"), aad)
		b, _, err2 := h.Encrypt(ctx, scope, version, []byte("same"), aad)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if bytes.Equal(a[:12], b[:12]) {
			t.Fatal("two encryptions used the same nonce")
		}
	})
	t.Run("failures are ErrOpen", func(t *testing.T) {
		body, _, err := h.Encrypt(ctx, scope, version, []byte("value"), aad)
		if err != nil {
			t.Fatal(err)
		}
		flip := func(i int) []byte { c := bytes.Clone(body); c[i] ^= 1; return c }
		cases := map[string]struct{ body, aad []byte }{
			"flipped nonce": {flip(0), aad},
			"flipped body":  {flip(12), aad},
			"flipped tag":   {flip(len(body) - 1), aad},
			"truncated":     {body[:len(body)-1], aad},
			"too short":     {body[:20], aad},
			"other aad":     {body, append(bytes.Clone(aad), 'x')},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				pt, err := h.Decrypt(ctx, scope, version, c.body, c.aad)
				if !errors.Is(err, envelope.ErrOpen) {
					t.Fatalf("Decrypt = %d bytes, %v; want an error wrapping envelope.ErrOpen", len(pt), err)
				}
			})
		}
	})
	t.Run("envelopes", func(t *testing.T) {
		c, err := envelope.NewHSM(h, version, scope)
		if err != nil {
			t.Fatal(err)
		}
		env, err := c.Seal(ctx, nil, []byte("note"), "public.employees.note")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Open(ctx, nil, env, "public.employees.note"); err != nil || string(got) != "note" {
			t.Fatalf("Open = %q, %v", got, err)
		}
		if _, err := c.Open(ctx, nil, env, "public.employees.other"); !errors.Is(err, envelope.ErrOpen) {
			t.Fatalf("Open for another column: %v, want ErrOpen", err)
		}
	})
}
