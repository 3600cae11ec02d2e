#!/bin/sh
# Regenerates the known-answer vectors in this directory with the real cryptsetup (2.6.1 made the
# committed ones). Each *.luks2 file is the first HeaderAreaSize bytes of a freshly formatted image
# (both header copies and the keyslots area, no data), each *.hdr file only the two header copies.
# vectors.json records the passphrase and the volume key cryptsetup reports for the unlockable ones.
# These are test keys for throwaway images, public by design.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cs() { cryptsetup --disable-locks --batch-mode "$@"; }
fmt() { # name size-to-keep opts...
	name=$1 keep=$2
	shift 2
	truncate -s 4M "$tmp/$name"
	printf %s "kat passphrase" | cs luksFormat --type luks2 --key-file - --luks2-metadata-size 16k "$@" "$tmp/$name"
}
vk() { printf %s "kat passphrase" | cs luksDump --dump-volume-key --key-file - "$1" |
	sed -n '/MK dump:/,$p' | sed 's/MK dump://' | tr -d ' \t\n'; }

fmt pbkdf2-sha256 0 --luks2-keyslots-size 128k --key-size 256 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha256
fmt argon2id 0 --luks2-keyslots-size 128k --key-size 256 --pbkdf argon2id --pbkdf-memory 8192 --pbkdf-force-iterations 4 --pbkdf-parallel 1
fmt sector4096-token 0 --luks2-keyslots-size 256k --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size 4096 --label kat --subsystem keyward
printf '{"type":"keyward","keyslots":["0"],"scope":"boot:volume/kat","version":1}' | cs token import "$tmp/sector4096-token"
truncate -s 4M "$tmp/luks1"
printf %s "kat passphrase" | cs luksFormat --type luks1 --key-file - --hash sha1 --pbkdf-force-iterations 1000 "$tmp/luks1"
cs convert --type luks2 "$tmp/luks1"

head -c $((2*16384 + 131072)) "$tmp/pbkdf2-sha256" >pbkdf2-sha256.luks2
head -c $((2*16384 + 131072)) "$tmp/argon2id" >argon2id.luks2
head -c $((2*16384)) "$tmp/sector4096-token" >sector4096-token.hdr
head -c $((2*16384)) "$tmp/luks1" >converted-luks1.hdr
cat >vectors.json <<JSON
[
  {"file": "pbkdf2-sha256.luks2", "passphrase": "kat passphrase", "slot": 0, "volume_key": "$(vk "$tmp/pbkdf2-sha256")"},
  {"file": "argon2id.luks2", "passphrase": "kat passphrase", "slot": 0, "volume_key": "$(vk "$tmp/argon2id")"}
]
JSON
