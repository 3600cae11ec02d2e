#!/bin/sh
# Known-answer BYOK bundles made with openssl alone, exactly as a customer following the AWS KMS /
# Google Cloud KMS import instructions would (RSA_AES_KEY_WRAP_SHA_1 and _SHA_256).
# Regenerate with: sh gen.sh   (the RSA key and the secrets are public TEST material, never real keys)
set -eu
cd "$(dirname "$0")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out import_key.pem 2>/dev/null
secret=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
printf '%s' "$secret" | xxd -r -p > secret.tmp
printf '' > vectors.json.tmp
for md in sha1 sha256; do
	openssl rand -out eph.tmp 32
	openssl pkeyutl -encrypt -inkey import_key.pem -pkeyopt rsa_padding_mode:oaep \
		-pkeyopt rsa_oaep_md:$md -pkeyopt rsa_mgf1_md:$md -in eph.tmp -out wrapped_eph.tmp
	openssl enc -id-aes256-wrap-pad -K "$(xxd -p -c 64 eph.tmp)" -iv A65959A6 -in secret.tmp -out wrapped_secret.tmp
	cat wrapped_eph.tmp wrapped_secret.tmp > bundle_$md.bin
done
head -c 32 /dev/zero > zeros.tmp
kcv=$(openssl dgst -sha256 -mac HMAC -macopt hexkey:$secret -r zeros.tmp | cut -c1-6)
cat > vectors.json <<JSON
[
 {"bundle": "bundle_sha1.bin", "wrapping": "RSA_AES_KEY_WRAP_SHA_1", "secret": "$secret", "kcv": "$kcv"},
 {"bundle": "bundle_sha256.bin", "wrapping": "RSA_AES_KEY_WRAP_SHA_256", "secret": "$secret", "kcv": "$kcv"}
]
JSON
rm -f ./*.tmp
