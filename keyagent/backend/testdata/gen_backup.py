#!/usr/bin/env python3
"""Independent encoder of Keyward backup blobs (format in ../backup.go). Needs python3-cryptography.

python3 gen_backup.py > backup_vectors.json
"""
import hashlib
import hmac
import json
import struct

from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

WRAP_KEY = bytes(range(32))
CASES = [
    ("payroll:employees.ssn", 1, hashlib.sha256(b"dk one").digest()),
    ("boot:volume/web-7/data", 7, hashlib.sha512(b"dk two").digest()),
    ("crm:kunden.straße", 2, hashlib.sha256(b"dk three").digest()),
]
out = []
for scope, version, dk in CASES:
    s = scope.encode()
    kcv = hmac.new(dk, b"\0" * 32, hashlib.sha256).digest()[:3]
    hdr = b"KWBK" + bytes([1, 1]) + struct.pack(">H", len(s)) + s + struct.pack(">IH", version, len(dk) * 8) + kcv
    blob = hdr + aes_key_wrap_with_padding(WRAP_KEY, hdr + dk)
    out.append({"wrap_key": WRAP_KEY.hex(), "scope": scope, "version": version, "bits": len(dk) * 8,
                "dk": dk.hex(), "kcv": kcv.hex(), "blob": blob.hex()})
print(json.dumps(out, indent=1, ensure_ascii=False))
