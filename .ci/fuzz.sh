#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time each (default 10s).
set -euo pipefail
fuzztime=${1:-10s}
export PATH=/usr/local/go/bin:$PATH
status=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $target ($fuzztime)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg" || status=1
  done
done
exit $status
