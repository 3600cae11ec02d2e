#!/usr/bin/env python3
"""Independent reference implementation of the Keyward data-key KDF (see ../kdf.go).

Recompute the vectors with:  python3 gen.py > vectors.json
Only the Python standard library is used, so anyone can check the Go code against it.

K(i) = HMAC-SHA256(secret, uint32be(i) || "keyward-dk-v1" || 0x00 || scope || uint32be(L)), i = 1..
DK   = first L bits of K(1) || K(2) || ...
KCV  = hex(HMAC-SHA256(DK, 32 zero bytes)[:3])
"""
import hashlib
import hmac
import json
import struct


def derive(secret: bytes, scope: str, bits: int) -> bytes:
    out = b""
    i = 1
    while len(out) * 8 < bits:
        msg = struct.pack(">I", i) + b"keyward-dk-v1" + b"\x00" + scope.encode("utf-8") + struct.pack(">I", bits)
        out += hmac.new(secret, msg, hashlib.sha256).digest()
        i += 1
    return out[: bits // 8]


def kcv(key: bytes) -> str:
    return hmac.new(key, b"\x00" * 32, hashlib.sha256).digest()[:3].hex()


# Fixed, public test secrets (never real keys).
SECRETS = [
    bytes(range(32)),
    bytes.fromhex("ff" * 32),
    hashlib.sha256(b"keyward test secret 3").digest(),
    hashlib.sha512(b"keyward test secret 4 (64 bytes)").digest(),
]
SCOPES = [
    "payroll:employees.ssn",
    "boot:volume/web-7/data",
    "a:b",
    "crm:kunden.straße",
]

vectors = []
for si, secret in enumerate(SECRETS):
    for scope in SCOPES[si % 2 :: 1 + si % 2]:
        for bits in (256, 512):
            dk = derive(secret, scope, bits)
            vectors.append({
                "secret": secret.hex(), "scope": scope, "bits": bits,
                "dk": dk.hex(), "kcv": kcv(dk), "secret_kcv": kcv(secret),
            })
print(json.dumps(vectors, indent=1, ensure_ascii=False))
