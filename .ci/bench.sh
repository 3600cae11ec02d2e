#!/usr/bin/env bash
# make bench: runs every TestBench* scenario (KEYWARD_BENCH=1) and prints one table of
# scenario | keyward | baseline | ratio | goal | met, plus the machine's cores and load.
set -uo pipefail
export PATH=/usr/local/go/bin:$PATH
export KEYWARD_BENCH=1
if [[ "${1:-}" == quick ]]; then export KEYWARD_BENCH_QUICK=1; fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "make bench: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)${KEYWARD_BENCH_QUICK:+, QUICK}"
# -p 1: one package at a time, so scenarios never compete with each other for the two cores.
go test -p 1 -count=1 -timeout 30m -run '^TestBench' -v ./... >"$out" 2>&1
rc=$?
grep -q 'BENCH scenario=' "$out" || { echo "no BENCH lines (go test exit $rc)"; tail -50 "$out"; exit 1; }
printf '| %-58s | %12s | %12s | %-6s | %7s | %-8s | %-4s |\n' scenario keyward baseline unit ratio goal met
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "--------" "---------" "----------" "------"
grep -o 'BENCH scenario=.*' "$out" | awk '!seen[$0]++' | while read -r line; do
  get() { sed -n "s/.*$1=\"\([^\"]*\)\".*/\1/p; t; s/.*$1=\([^ ]*\).*/\1/p" <<<"$line" | head -1; }
  printf '| %-58s | %12s | %12s | %-6s | %7s | %-8s | %-4s |\n' "$(get scenario)" "$(get keyward)" "$(get baseline)" "$(get unit)" "$(get ratio)" "$(get goal)" "$(get met)"
done
if [[ $rc -ne 0 ]]; then echo "go test exit $rc:"; grep -E '^(--- FAIL|FAIL|panic)' "$out" | head -20; fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
