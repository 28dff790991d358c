#!/usr/bin/env bash
# CI for the TypeScript SDK (clients/typescript). Run from anywhere:
#
#     bash clients/typescript/ci.sh
#
# Steps: npm ci; the type check (library without Node types, then tests); lint; the
# browser bundle and its size budget (60 KB minified + gzip); the unit tests (protocol
# vectors byte for byte); the integration tests against a real `ferry serve`; and the
# headless Chromium test (two pages as two devices, the notes example), whose
# screenshots land in clients/typescript/test-artifacts/.
#
# The ferry binary is $FERRY_BIN, else target/debug/ferry of this checkout, built
# here with `cargo build -p ferry` when FERRY_BIN is unset. Chromium is $CHROMIUM_BIN,
# else /usr/bin/chromium, installed with apt-get when it is missing and we are root.
# With CI set, a missing binary or browser fails the run; without CI the tests that
# need them are skipped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
exec </dev/null

step() { printf '\n--> %s\n' "$*"; }

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if (( node_major < 20 )); then
    echo "clients/typescript needs Node >= 20 (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi

step "protocol vectors are the project's"
# test/data holds a copy of ferry-proto's vectors; a stale copy would make the
# vector tests meaningless.
cmp -s "$repo/ferry-proto/tests/data/protocol-vectors.json" test/data/protocol-vectors.json || {
    echo "clients/typescript/test/data/protocol-vectors.json differs from ferry-proto/tests/data/protocol-vectors.json; copy it over" >&2
    exit 1
}

step "npm ci"
npm ci --no-audit --no-fund

step "type check"
npm run --silent typecheck

step "lint"
npm run --silent lint

step "bundle and size budget"
node scripts/bundle.mjs --check

step "unit tests"
npm run --silent build:test
node --test --test-reporter=spec build/test/unit/

if [[ -z "${FERRY_BIN:-}" ]]; then
    step "cargo build -p ferry"
    (cd "$repo" && cargo build --quiet -p ferry --bin ferry)
    export FERRY_BIN="$repo/target/debug/ferry"
fi

: "${CHROMIUM_BIN:=/usr/bin/chromium}"
export CHROMIUM_BIN
if [[ ! -x "$CHROMIUM_BIN" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    step "apt-get install chromium"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } ||
        echo "installing chromium failed; the browser test will say so" >&2
fi

step "integration tests against ferry serve ($FERRY_BIN)"
node --test --test-concurrency=1 --test-reporter=spec build/test/integration/

step "headless Chromium ($CHROMIUM_BIN)"
node --test --test-concurrency=1 --test-reporter=spec build/test/browser/
