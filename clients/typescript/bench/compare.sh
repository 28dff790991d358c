#!/usr/bin/env bash
# Handshake time and publish→ack throughput of one TypeScript SDK client (Node)
# against one Rust SDK client, in the same run, against the same relay.
#
#     # once: the relay and the Rust side, release builds (from the repository root)
#     cargo build --release -p ferry
#     cargo build --release --manifest-path clients/typescript/bench/rust-publish/Cargo.toml
#     # then, from clients/typescript:
#     npm ci && npm run build:test
#     bash bench/compare.sh
#
# It starts `ferry serve` (SQLite in a throwaway directory, publish limits lifted)
# pinned to CPU 0, then runs ROUNDS rounds of the Rust client and the Node client,
# one after the other, each pinned to CPU 1, each a new device of a new user:
# HANDSHAKES handshakes one at a time, then EVENTS publishes of PAYLOAD bytes with
# WINDOW in flight. One JSON line per client and round.
#
# Env: FERRY_BIN (default ../../target/release/ferry), RUST_BENCH (default
# bench/rust-publish/target/release/ferry-sdk-publish-bench, or under
# $CARGO_TARGET_DIR), EVENTS (20000), WINDOW (64), PAYLOAD (256), HANDSHAKES (50),
# ROUNDS (3), AEAD for the Node client (auto). The relay gets a clean environment
# (ferry refuses FERRY_* variables it does not know, such as FERRY_BIN).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

: "${FERRY_BIN:=$here/../../target/release/ferry}"
if [[ -z "${RUST_BENCH:-}" ]]; then
    RUST_BENCH="$here/bench/rust-publish/target/release/ferry-sdk-publish-bench"
    [[ -n "${CARGO_TARGET_DIR:-}" ]] && RUST_BENCH="$CARGO_TARGET_DIR/release/ferry-sdk-publish-bench"
fi
: "${EVENTS:=20000}" "${WINDOW:=64}" "${PAYLOAD:=256}" "${HANDSHAKES:=50}" "${ROUNDS:=3}" "${AEAD:=auto}"
for f in "$FERRY_BIN" "$RUST_BENCH" build/bench/node-bench.js; do
    [[ -e "$f" ]] || { echo "compare.sh: missing $f (see the build commands at the top)" >&2; exit 2; }
done

pin() { if command -v taskset >/dev/null 2>&1; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work="$(mktemp -d)"
port="$(free_port)"
admin="$(free_port)"
seed="BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc" # 32 × 0x07, a throwaway key
server_key="$(node --input-type=module -e "
import { ed25519PublicKey, b64uDecode, b64uEncode } from '$here/build/src/core/index.js';
console.log(b64uEncode(ed25519PublicKey(b64uDecode('$seed', 32))));")"

pin 0 env -i PATH="$PATH" HOME="${HOME:-/tmp}" FERRY_DATA_DIR="$work" FERRY_SERVER_KEY="$seed" \
    FERRY_SERVER_LISTEN="127.0.0.1:$port" FERRY_SERVER_ADMIN_LISTEN="127.0.0.1:$admin" \
    FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC=10000 FERRY_LIMITS_EVENTS_PER_SEC=100000 \
    FERRY_LIMITS_BURST=100000 FERRY_LOG=warn \
    "$FERRY_BIN" serve >"$work/server.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$admin/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin/health/ready" >/dev/null || { cat "$work/server.log" >&2; exit 1; }

url="ws://127.0.0.1:$port/v1/ws"
echo "# relay $FERRY_BIN on CPU 0, clients on CPU 1; $EVENTS × $PAYLOAD B, window $WINDOW" >&2
for round in $(seq 1 "$ROUNDS"); do
    pin 1 "$RUST_BENCH" --url "$url" --server-key "$server_key" --events "$EVENTS" --window "$WINDOW" \
        --payload "$PAYLOAD" --handshakes "$HANDSHAKES"
    pin 1 node build/bench/node-bench.js --url "$url" --server-key "$server_key" --events "$EVENTS" \
        --window "$WINDOW" --payload "$PAYLOAD" --handshakes "$HANDSHAKES" --aead "$AEAD"
done
