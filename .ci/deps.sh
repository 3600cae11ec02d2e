#!/usr/bin/env bash
# Installs the Debian packages Keyward builds and tests with. Idempotent: installed packages are skipped,
# and `apt-get update` runs only when something is missing.
set -euo pipefail

packages=(
  postgresql postgresql-client   # the real database for integration tests and the demo
  pgbouncer                      # the proxy baseline in make bench
  softhsm2 opensc                # the real PKCS#11 HSM (and pkcs11-tool)
  cryptsetup-bin                 # LUKS2 images and the oracle for volume/luks2
  openssl                        # BYOK bundles made as the cloud import docs say
  gcc libc6-dev                  # cgo: PKCS#11 and the Postgres parser
  qemu-system-x86 linux-image-amd64 busybox-static cpio e2fsprogs   # the boot test of volumectl
  passwd                         # useradd for the unprivileged test user
  python3-psycopg2 libpostgresql-jdbc-java default-jdk-headless   # real drivers through colcrypt (colcrypt/columns/drivers_test.go)
)

missing=()
for p in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
install_node_pg() {
  # node-postgres, the driver the column tests run as node's client: from the npm registry into
  # .ci/node (git-ignored), since Debian's node-pg conflicts with NodeSource's nodejs. Skipped when there.
  local dir
  dir="$(cd "$(dirname "$0")" && pwd)/node"
  [[ -f "$dir/node_modules/pg/package.json" ]] && return 0
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "deps: installing nodejs npm"
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  echo "deps: npm install pg@8 into $dir"
  mkdir -p "$dir"
  (cd "$dir" && npm install --no-audit --no-fund --silent --prefix "$dir" pg@8)
}

sudo=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then sudo=(sudo); fi

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#packages[@]} packages installed"
  install_node_pg
  exit 0
fi

if [[ $(id -u) -ne 0 && ${#sudo[@]} -eq 0 ]]; then
  echo "deps: missing ${missing[*]}; run as root or install them" >&2; exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_node_pg
