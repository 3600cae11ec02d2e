# Regenerates vectors.json with pyca/cryptography and hashlib, independently of the Go code:
#   python3 testdata/gen_vectors.py > testdata/vectors.json
# Each vector: the key, key version, scope, column, nonce (GCM only), plaintext and the envelope that
# package envelope must produce byte for byte (and open back).
import hashlib, json, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

def fingerprint(scope):
    return hashlib.sha256(b"keyward-scope-v1\x00" + scope.encode()).digest()[:4]

def header(alg, version, scope):
    return b"KW" + bytes([1, alg]) + struct.pack(">I", version) + fingerprint(scope)

def envelope(alg, key, version, scope, column, nonce, pt):
    h = header(alg, version, scope)
    aad = h + column.encode()
    if alg in (1, 3):
        return h + nonce + AESGCM(key).encrypt(nonce, pt, aad)
    return h + AESSIV(key).encrypt(pt, [aad])

key32 = bytes(range(32))
key64 = bytes(range(64, 128))
cases = [
    ("gcm empty", 1, key32, 1, "payroll:employees.salary", "public.employees.salary", bytes(range(12)), b""),
    ("gcm text", 1, key32, 1, "payroll:employees.salary", "public.employees.salary", bytes(range(12)), b"123456.78"),
    ("gcm v7 unicode column", 1, key32, 7, "payroll:employees.note", "public.employ\u00e9s.note", bytes(12 * [0xa5]), "caf\u00e9".encode()),
    ("gcm 100 bytes", 1, key32, 0xfffffffe, "s:x", "a.b.c", bytes(range(100, 112)), bytes(range(100))),
    ("siv empty", 2, key64, 1, "payroll:employees.ssn", "public.employees.ssn", b"", b""),
    ("siv ssn", 2, key64, 1, "payroll:employees.ssn", "public.employees.ssn", b"", b"123-45-6789"),
    ("siv 16 bytes", 2, key64, 2, "payroll:employees.ssn", "public.employees.ssn", b"", b"0123456789abcdef"),
    ("siv 100 bytes", 2, key64, 3, "payroll:employees.ssn", "public.employees.ssn", b"", bytes(range(100))),
    ("hsm text", 3, key32, 4, "vault:employees.note", "public.employees.note", bytes(range(12)), b"secret note"),
]
out = []
for name, alg, key, version, scope, column, nonce, pt in cases:
    out.append({
        "name": name, "alg": alg, "key": key.hex(), "version": version, "scope": scope,
        "column": column, "nonce": nonce.hex(), "plaintext": pt.hex(),
        "envelope": envelope(alg, key, version, scope, column, nonce, pt).hex(),
    })
print(json.dumps(out, indent=1))
