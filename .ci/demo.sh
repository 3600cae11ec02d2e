#!/usr/bin/env bash
# make demo: the whole Keyward stack on loopback, a real psql session through it, left running.
# make demo-stop (this script with "stop") stops it. Everything lives in .demo/ (git-ignored).
#
#   scratch PostgreSQL  <-  colcrypt (column encryption proxy)  <-  psql as alice / bob
#                               |
#                           keyagent (policy, locked key cache)  <-  volumectl (LUKS2 image)
#                               |  mutual TLS 1.3
#                           keyservice (keys derived inside a SoftHSM2 token; DEMO_BACKEND=soft: sealed file)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO=$ROOT/.demo
BIN=$ROOT/bin
PGPORT=${DEMO_PG_PORT:-55432}
PROXYPORT=${DEMO_PROXY_PORT:-56432}
KSPORT=${DEMO_KS_PORT:-57443}
BACKEND=${DEMO_BACKEND:-softhsm}

say()  { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run()  { printf '  $ %s\n' "$*"; "$@"; }
fail() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }
trap 'fail "the step above failed (line $LINENO); logs are in $DEMO/*.log"' ERR

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] || fail "no PostgreSQL server in /usr/lib/postgresql/*/bin (run make deps)"

# Postgres refuses to run as root: as root, the server runs as the unprivileged user keyward-demo.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  id keyward-demo >/dev/null 2>&1 || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin keyward-demo
  as_pg=(runuser -u keyward-demo --)
fi

stop() {
  if [ -f "$DEMO/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$DEMO/pids"
    rm -f "$DEMO/pids"
  fi
  if [ -d "$DEMO/pg/data" ]; then "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$DEMO/pg/data" -m fast -w stop >/dev/null 2>&1 || true; fi
}

if [ "${1:-}" = stop ]; then
  stop
  echo "demo stopped (files kept in $DEMO; make demo starts afresh)"
  exit 0
fi

for tool in openssl psql softhsm2-util cryptsetup; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || fail "$tool not found (run make deps)"
done
export PATH=$PATH:/usr/sbin

say "Fresh demo directory $DEMO"
stop
rm -rf "$DEMO"
mkdir -p "$DEMO"
chmod 755 "$DEMO"
cd "$DEMO"
: >pids
bg() { local log=$1; shift; "$@" >"$log" 2>&1 & echo $! >>pids; }

say "Scratch PostgreSQL on 127.0.0.1:$PGPORT"
mkdir -p pg/data && chmod 700 pg/data
[ ${#as_pg[@]} -eq 0 ] || chown -R keyward-demo: pg
echo demo-superuser-pw >pg/pwfile && chmod 644 pg/pwfile
run "${as_pg[@]}" "$PGBIN/initdb" -D pg/data -U postgres --pwfile=pg/pwfile --auth=scram-sha-256 -E UTF8 --locale=C --no-sync >initdb.log
rm pg/pwfile
cat >>pg/data/postgresql.conf <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = ''
CONF
run "${as_pg[@]}" "$PGBIN/pg_ctl" -D pg/data -l "$DEMO/pg/postgres.log" -w start >/dev/null
export PGPASSWORD=demo-superuser-pw
SUPER="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
psql -X -q -d "$SUPER" -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE alice LOGIN PASSWORD 'alice-pw';
CREATE ROLE bob LOGIN PASSWORD 'bob-pw';
CREATE ROLE colcrypt LOGIN PASSWORD 'colcrypt-pw';
CREATE DATABASE hr;
SQL
psql -X -q -d "host=127.0.0.1 port=$PGPORT user=postgres dbname=hr" -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE employees (id serial PRIMARY KEY, name text NOT NULL, ssn bytea, salary bytea);
GRANT SELECT, INSERT, UPDATE, DELETE ON employees TO alice, bob;
GRANT USAGE ON SEQUENCE employees_id_seq TO alice, bob;
GRANT SELECT ON employees TO colcrypt;
SQL
unset PGPASSWORD
echo "  employees(id, name text, ssn bytea, salary bytea): ssn and salary will hold envelopes"

say "Key store: $BACKEND"
if [ "$BACKEND" = soft ]; then
  head -c 24 /dev/urandom | base64 >store.pass && chmod 600 store.pass
  BACKEND_YAML="  soft: {path: $DEMO/keyrings.sealed, passphrase_file: $DEMO/store.pass}"
else
  mkdir softhsm softhsm/tokens
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$DEMO/softhsm/tokens" >softhsm/softhsm2.conf
  export SOFTHSM2_CONF=$DEMO/softhsm/softhsm2.conf
  PIN=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$PIN" >hsm.pin && chmod 600 hsm.pin
  # Not through run(): it would print both PINs on the terminal. The user PIN stays in hsm.pin only.
  printf '  $ softhsm2-util --init-token --free --label keyward-demo --so-pin <random> --pin <hsm.pin>\n'
  softhsm2-util --init-token --free --label keyward-demo --so-pin "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')" --pin "$PIN" >/dev/null
  MODULE=$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -1)
  BACKEND_YAML="  pkcs11: {module: $MODULE, token_label: keyward-demo, pin_file: $DEMO/hsm.pin}"
fi

say "A CA, the key service's certificate and the node's client certificate (openssl, ECDSA P-256)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=keyward demo CA" 2>/dev/null
issue() { # name, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
  chmod 600 "$1.key"
}
issue keyservice "IP:127.0.0.1"
issue node "URI:spiffe://keyward/node/demo"
echo "  ca.pem, keyservice.pem (IP:127.0.0.1), node.pem (URI spiffe://keyward/node/demo)"

say "keyservice on 127.0.0.1:$KSPORT"
cat >grants.yaml <<YAML
version: 1
nodes:
  "spiffe://keyward/node/demo": {scopes: ["payroll:*", "boot:volume/demo/*"], ops: [derive, encrypt, decrypt, status]}
YAML
cat >keyservice.yaml <<YAML
version: 1
backend:
$BACKEND_YAML
listen: 127.0.0.1:$KSPORT
tls: {cert: $DEMO/keyservice.pem, key: $DEMO/keyservice.key, client_ca: $DEMO/ca.pem}
grants: $DEMO/grants.yaml
audit: $DEMO/keyservice-audit.jsonl
YAML
run "$BIN/keyservice" keyring create payroll --config keyservice.yaml
run "$BIN/keyservice" keyring create boot --config keyservice.yaml
bg keyservice.log "$BIN/keyservice" serve --config keyservice.yaml
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$KSPORT) 2>/dev/null && break; sleep 0.2; done

say "keyagent with the demo policy (alice: payroll; bob: analyst, salary only)"
ME=$(id -u)
cat >policy.yaml <<YAML
version: 1
principals:
  colcrypt-proxy: {uid: $ME, exe: $BIN/colcrypt, act_for: ["db:*"]}
  volumectl:      {uid: $ME, exe: $BIN/volumectl}
  operator:       {uid: $ME, exe: $BIN/keyagent, act_for: ["db:*"], admin: [status, purge]}
roles:
  payroll: {grants: [{scopes: ["payroll:*"], ops: [encrypt, decrypt]}]}
  analyst: {grants: [{scopes: ["payroll:employees.salary"], ops: [decrypt]}]}
  boot:    {grants: [{scopes: ["boot:volume/demo/*"], ops: [decrypt]}]}
members:
  "db:alice":    [payroll]
  "db:bob":      [analyst]
  "db:colcrypt": [payroll]
  volumectl:     [boot]
cache: {ttl: 5m, offline_grace: 15m, max_keys: 128}
YAML
cat >agent.yaml <<YAML
version: 1
socket: {path: $DEMO/agent.sock, mode: "0600"}
policy: $DEMO/policy.yaml
upstream:
  keyservice: {endpoints: ["127.0.0.1:$KSPORT"], tls: {cert: $DEMO/node.pem, key: $DEMO/node.key, ca: $DEMO/ca.pem}}
audit: $DEMO/agent-audit.jsonl
YAML
run "$BIN/keyagent" policy check policy.yaml
bg keyagent.log "$BIN/keyagent" serve --config agent.yaml
for _ in $(seq 50); do [ -S agent.sock ] && break; sleep 0.2; done
export KEYWARD_AGENT_SOCKET=$DEMO/agent.sock
run "$BIN/keyagent" status

say "colcrypt on 127.0.0.1:$PROXYPORT in front of PostgreSQL, protecting employees.ssn and employees.salary"
echo colcrypt-pw >colcrypt.pw && chmod 600 colcrypt.pw
cat >colcrypt.yaml <<YAML
version: 1
listen: 127.0.0.1:$PROXYPORT
upstream: {host: 127.0.0.1, port: $PGPORT, tls: disable}
agent: {socket: $DEMO/agent.sock, ttl: 3s}   # rotations reach the proxy within 3s
catalog: {database: hr, user: colcrypt, password_file: $DEMO/colcrypt.pw}
columns:
  - {table: public.employees, column: ssn,    type: text,    mode: deterministic, scope: "payroll:employees.ssn"}
  - {table: public.employees, column: salary, type: numeric, mode: randomized,    scope: "payroll:employees.salary"}
on_denied: error
YAML
bg colcrypt.log "$BIN/colcrypt" serve --config colcrypt.yaml
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PROXYPORT) 2>/dev/null && break; sleep 0.2; done
(exec 3<>/dev/tcp/127.0.0.1/$PROXYPORT) 2>/dev/null || fail "colcrypt did not start: $(tail -5 colcrypt.log)"

ALICE="host=127.0.0.1 port=$PROXYPORT user=alice password=alice-pw dbname=hr sslmode=disable"
BOB="host=127.0.0.1 port=$PROXYPORT user=bob password=bob-pw dbname=hr sslmode=disable"
DIRECT="host=127.0.0.1 port=$PGPORT user=postgres password=demo-superuser-pw dbname=hr"
q() { local dsn=$1; shift; printf '  %s> %s\n' "${dsn#*user=}" "$*" | sed 's/ password=[^ ]*//; s/ dbname=.*>/>/'; psql -X -q -d "$dsn" -v ON_ERROR_STOP=1 -c "$*" | sed 's/^/    /'; }

say "alice inserts rows through the proxy (plain SQL; the proxy encrypts ssn and salary)"
q "$ALICE" "INSERT INTO employees (name, ssn, salary) VALUES ('Ada', '123-45-6789', 152000.50), ('Grace', '987-65-4321', 148250)"

say "alice reads them through the proxy: plaintext"
q "$ALICE" "SELECT id, name, ssn, salary FROM employees ORDER BY id"

say "The same rows directly in PostgreSQL: envelopes (\"KW\" 0x01 alg version fingerprint nonce ciphertext)"
q "$DIRECT" "SELECT id, name, substr(ssn::text, 1, 34) || '…' AS ssn, length(salary) AS salary_bytes FROM employees ORDER BY id"

say "bob may read salaries but not SSNs: a clear denial (SQLSTATE 42501)"
q "$BOB" "SELECT name, salary FROM employees ORDER BY id"
printf '  bob> SELECT name, ssn FROM employees\n'
if psql -X -q -d "$BOB" -v ON_ERROR_STOP=1 -c "SELECT name, ssn FROM employees" 2>&1 | sed 's/^/    /'; then
  fail "bob was able to read ssn"
fi

say "A deterministic lookup: WHERE ssn = '…' works on the encrypted column"
q "$ALICE" "SELECT name FROM employees WHERE ssn = '987-65-4321'"

say "Rotation: a new version of the payroll keyring; new rows use it, old rows still read"
run "$BIN/keyservice" keyring rotate payroll --config keyservice.yaml
run "$BIN/keyagent" purge
echo "  (waiting 6s: the key service re-reads version metadata every 5s, the proxy asks the agent every 3s)"
sleep 6
q "$ALICE" "INSERT INTO employees (name, ssn, salary) VALUES ('Linus', '555-12-3456', 99000)"
q "$ALICE" "SELECT id, name, ssn, salary FROM employees ORDER BY id"
q "$DIRECT" "SELECT id, name, get_byte(ssn,7) AS ssn_key_version, get_byte(salary,7) AS salary_key_version FROM employees ORDER BY id"
q "$ALICE" "SELECT name FROM employees WHERE ssn IN ('123-45-6789', '555-12-3456') ORDER BY name"

say "LUKS2: an image enrolled with a Keyward key, then test-unlocked by volumectl"
truncate -s 64M volume.img
echo "recovery passphrase" >recovery.pass && chmod 600 recovery.pass
run cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file recovery.pass volume.img
run "$BIN/volumectl" enroll volume.img --scope boot:volume/demo/data --unlock-key-file recovery.pass --backup-dir "$DEMO/header-backups"
run "$BIN/volumectl" status volume.img
run "$BIN/volumectl" unlock volume.img --test

trap - ERR
say "The stack is running"
cat <<TXT
  through the proxy:  psql "host=127.0.0.1 port=$PROXYPORT user=alice password=alice-pw dbname=hr"
                      psql "host=127.0.0.1 port=$PROXYPORT user=bob password=bob-pw dbname=hr"
  directly:           psql "host=127.0.0.1 port=$PGPORT user=postgres password=demo-superuser-pw dbname=hr"
  agent:              KEYWARD_AGENT_SOCKET=$DEMO/agent.sock bin/keyagent status
  logs and configs:   $DEMO
  stop it:            make demo-stop
TXT
