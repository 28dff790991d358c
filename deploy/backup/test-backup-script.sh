#!/usr/bin/env bash
# Tests ferry-backup.sh (naming, checking, rotation, failures) against a stub
# `ferry` and a stub `date` on PATH, in a temporary directory. Exits non-zero on
# the first failure. Run from anywhere: bash deploy/backup/test-backup-script.sh
set -euo pipefail

script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ferry-backup.sh"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/ferry-backup-test.XXXXXX")"
trap 'rm -rf -- "$tmp"' EXIT
unset FERRY_DATABASE_URL

mkdir "$tmp/bin"
# The stub ferry: logs its arguments; `backup --to P` writes P, `verify` checks the
# file its sqlite:// URL names, `config check` prints a [database] url.
# STUB_BACKUP_FAIL / STUB_VERIFY_FAIL make those fail.
cat >"$tmp/bin/ferry" <<'EOF'
#!/bin/sh
set -eu
echo "$*" >>"$STUB_LOG"
case "$1 ${2:-}" in
"backup --to")
    [ "${STUB_BACKUP_FAIL:-0}" = 1 ] && { echo "stub: backup failed" >&2; exit 1; }
    [ -d "$(dirname "$3")" ] && [ ! -e "$3" ] || { echo "stub: bad --to $3" >&2; exit 1; }
    echo "backup taken" >"$3" ;;
"verify --database-url")
    path=${3#sqlite://}
    [ "$path" != "$3" ] && [ -f "$path" ] || { echo "stub: bad url $3" >&2; exit 1; }
    : >"$path-shm"   # as SQLite may leave beside a copy it opened
    [ "${STUB_VERIFY_FAIL:-0}" = 1 ] && { echo "stub: damaged" >&2; exit 1; }
    exit 0 ;;
"config check")
    # [redis] first: the script must take the url of [database].
    printf '[redis]\nurl = "postgres://not-the-database"\n\n[database]\nurl = "%s"\nmax_connections = 16\n' \
        "$STUB_CONFIG_URL" ;;
*) echo "stub: unexpected: $*" >&2; exit 1 ;;
esac
EOF
# The stub date: a fixed timestamp from STUB_STAMP.
cat >"$tmp/bin/date" <<'EOF'
#!/bin/sh
[ "$*" = "-u +%Y%m%dT%H%M%SZ" ] || { echo "stub date: unexpected: $*" >&2; exit 1; }
echo "$STUB_STAMP"
EOF
chmod +x "$tmp/bin/ferry" "$tmp/bin/date"
export PATH="$tmp/bin:$PATH" STUB_LOG="$tmp/log"
export STUB_CONFIG_URL="sqlite://./ferry-data/ferry.db" STUB_STAMP=20250102T030405Z

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
# Runs the script with sh (POSIX); its exit code goes into $rc.
run() { : >"$STUB_LOG"; rc=0; sh "$script" "$@" >"$tmp/out" 2>&1 || rc=$?; }
# The sorted file names in $1 (one line, space-separated).
names() { find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'; }
expect() { [[ "$2" == "$3" ]] || fail "$1: expected [$3], got [$2]"; }
fresh() { rm -rf "$tmp/b"; mkdir "$tmp/b"; d="$tmp/b"; }

# 1. SQLite (from the configuration): the name, the check, nothing left aside.
fresh
run "$d" 3
expect "sqlite exit" "$rc" 0
expect "sqlite files" "$(names "$d")" ".partial ferry-20250102T030405Z.db"
expect "sqlite calls" "$(cat "$STUB_LOG")" "config check
backup --to $d/.partial/ferry-20250102T030405Z.db
verify --database-url sqlite://$d/.partial/ferry-20250102T030405Z.db"
expect "sqlite .partial empty" "$(names "$d/.partial")" ""

# 2. Rotation keeps the newest KEEP of its own files and touches nothing else.
fresh
for s in 20240101T000000Z 20240201T000000Z 20240301T000000Z 20240401T000000Z 20240501T000000Z; do
    echo old >"$d/ferry-$s.db"
done
touch "$d/notes.txt" "$d/ferry-latest.db" "$d/ferry-20240101.db" \
    "$d/ferry-20240101T000000Z.db.bak" "$d/ferry-20200101T000000Z.dump" \
    "$d/ferry-20200101T000000Z copy.db"
mkdir "$d/ferry-20190101T000000Z.db"
ln -s notes.txt "$d/ferry-20180101T000000Z.db"
run "$d" 3
expect "rotation exit" "$rc" 0
expect "rotation files" "$(names "$d")" ".partial ferry-20180101T000000Z.db ferry-20190101T000000Z.db \
ferry-20200101T000000Z copy.db ferry-20200101T000000Z.dump ferry-20240101.db ferry-20240101T000000Z.db.bak \
ferry-20240401T000000Z.db ferry-20240501T000000Z.db ferry-20250102T030405Z.db ferry-latest.db notes.txt"

# 3. A clock that went back: the new backup is never the one deleted.
fresh
touch "$d/ferry-20300101T000000Z.db" "$d/ferry-20310101T000000Z.db"
run "$d" 2
expect "clock exit" "$rc" 0
expect "clock files" "$(names "$d")" ".partial ferry-20250102T030405Z.db ferry-20310101T000000Z.db"

# 4. A backup of the same second already there: refused, left alone.
fresh
echo keep-me >"$d/ferry-20250102T030405Z.db"
run "$d" 3
expect "same-name exit" "$rc" 1
expect "same-name content" "$(cat "$d/ferry-20250102T030405Z.db")" keep-me

# 5. PostgreSQL from FERRY_DATABASE_URL: a .dump, no SQLite check, .db files untouched.
fresh
touch "$d/ferry-20240101T000000Z.dump" "$d/ferry-20240201T000000Z.dump" "$d/ferry-20240101T000000Z.db"
FERRY_DATABASE_URL="postgres://ferry:secret@db:5432/ferry" run "$d" 1
expect "pg exit" "$rc" 0
expect "pg files" "$(names "$d")" ".partial ferry-20240101T000000Z.db ferry-20250102T030405Z.dump"
expect "pg calls" "$(cat "$STUB_LOG")" "backup --to $d/.partial/ferry-20250102T030405Z.dump"

# 6. PostgreSQL from the configuration, any letter case.
for url in "postgresql://ferry:REDACTED@db/ferry" "POSTGRES://ferry:REDACTED@db/ferry"; do
    fresh
    STUB_CONFIG_URL="$url" run "$d" 5
    expect "pg config exit ($url)" "$rc" 0
    expect "pg config files ($url)" "$(names "$d")" ".partial ferry-20250102T030405Z.dump"
done

# 7. The backup fails: non-zero, nothing new, nothing rotated.
fresh
touch "$d/ferry-20240101T000000Z.db" "$d/ferry-20240201T000000Z.db"
STUB_BACKUP_FAIL=1 run "$d" 1
[[ "$rc" != 0 ]] || fail "backup failure: exit 0"
expect "backup failure files" "$(names "$d")" ".partial ferry-20240101T000000Z.db ferry-20240201T000000Z.db"
expect "backup failure .partial" "$(names "$d/.partial")" ""

# 8. The check fails: non-zero, the damaged copy and its -shm are gone, nothing rotated.
fresh
touch "$d/ferry-20240101T000000Z.db" "$d/ferry-20240201T000000Z.db"
STUB_VERIFY_FAIL=1 run "$d" 1
[[ "$rc" != 0 ]] || fail "verify failure: exit 0"
expect "verify failure files" "$(names "$d")" ".partial ferry-20240101T000000Z.db ferry-20240201T000000Z.db"
expect "verify failure .partial" "$(names "$d/.partial")" ""

# 9. Bad arguments: usage, exit 2, nothing done.
for args in "$tmp/b 0" "$tmp/b x" "$tmp/b 07" "$tmp/b" "$tmp/b 3 extra"; do
    fresh
    # shellcheck disable=SC2086 # word splitting wanted
    run $args
    expect "usage exit ($args)" "$rc" 2
    expect "usage calls ($args)" "$(cat "$STUB_LOG")" ""
done

if [[ "$failures" -ne 0 ]]; then
    echo "ferry-backup.sh: $failures check(s) failed; last output:" >&2
    cat "$tmp/out" >&2
    exit 1
fi
echo "ferry-backup.sh: all checks passed"
