# Regenerates pyca_vectors.txt: AES-SIV vectors from pyca/cryptography (an implementation independent
# of ours and of tink-go). Run: python3 testdata/gen_pyca.py > testdata/pyca_vectors.txt
# Format per line: key_hex ad_hex plaintext_hex output_hex ("-" for an empty field).
import os
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

def h(b):
    return b.hex() or "-"

rng = __import__("random").Random(5297)
def rb(n):
    return bytes(rng.getrandbits(8) for _ in range(n))

for keylen in (32, 48, 64):
    for ptlen in (0, 1, 15, 16, 17, 31, 32, 33, 48, 100):
        for adlen in (0, 16, 23):
            key, ad, pt = rb(keylen), rb(adlen), rb(ptlen)
            out = AESSIV(key).encrypt(pt, [ad])
            print(h(key), h(ad), h(pt), h(out))
