#!/bin/sh
# ferry-backup.sh BACKUP_DIR KEEP
#
# Makes one backup of Ferry's database in BACKUP_DIR, checks it, then keeps the
# newest KEEP backups of that kind and deletes the older ones. Called by the
# ferry-backup systemd service and by the Kubernetes backup CronJob.
#
#   SQLite:     BACKUP_DIR/ferry-YYYYmmddTHHMMSSZ.db    (checked with `ferry verify`)
#   PostgreSQL: BACKUP_DIR/ferry-YYYYmmddTHHMMSSZ.dump  (pg_dump custom format)
#
# It reads the same configuration as `ferry serve` (FERRY_CONFIG and the FERRY_*
# variables): the database is the configured one. Restoring: docs/backup.md.
#
# A backup is written and checked under BACKUP_DIR/.partial and only then moved
# into BACKUP_DIR, so BACKUP_DIR holds only complete, checked backups and a failed
# run never pushes a good backup out of the rotation.
#
# Don't add FERRY_* variables for this script: Ferry refuses unknown ones.
set -eu

usage() {
    echo "usage: ferry-backup.sh BACKUP_DIR KEEP   (KEEP: how many backups to keep, at least 1)" >&2
    exit 2
}
[ "$#" -eq 2 ] || usage
dir=$1
keep=$2
case $keep in '' | 0* | *[!0-9]*) usage ;; esac

# Byte order for the globs below, so names sort by their timestamp.
LC_ALL=C
export LC_ALL
umask 077

# The kind of database: FERRY_DATABASE_URL if set, else the effective configuration
# (`ferry config check` prints it with the password redacted; an empty
# database.url means SQLite under data_dir).
url=${FERRY_DATABASE_URL:-}
if [ -z "$url" ]; then
    url=$(ferry config check | awk '
        /^\[/ { section = $0 }
        section == "[database]" && /^url = "/ { sub(/^url = "/, ""); sub(/"$/, ""); print; exit }')
fi
case $(printf '%s' "${url%%:*}" | tr '[:upper:]' '[:lower:]') in
    postgres | postgresql) ext=dump ;;
    *) ext=db ;;
esac

mkdir -p -- "$dir/.partial"
name=ferry-$(date -u +%Y%m%dT%H%M%SZ).$ext
final=$dir/$name
part=$dir/.partial/$name
if [ -e "$final" ]; then
    echo "ferry-backup: $final exists already" >&2
    exit 1
fi
# On any failure, leave nothing behind (a SQLite check may leave -wal/-shm files).
trap 'rm -f -- "$part" "$part-wal" "$part-shm" "$part-journal"' EXIT
rm -f -- "$part"

ferry backup --to "$part"
if [ "$ext" = db ]; then
    # Exits 1 when the copy is damaged; set -e then stops here.
    ferry verify --database-url "sqlite://$part"
fi
mv -- "$part" "$final"
echo "ferry-backup: wrote $final"

# Rotation: only names this script makes, of the kind just made (switching from
# SQLite to PostgreSQL keeps the last SQLite backups), never the new one.
set --
for f in "$dir"/ferry-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z."$ext"; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then
        set -- "$@" "$f"
    fi
done
excess=$(($# - keep))
for f in "$@"; do # oldest first
    [ "$excess" -gt 0 ] || break
    if [ "$f" != "$final" ]; then
        rm -f -- "$f"
        echo "ferry-backup: removed $f"
        excess=$((excess - 1))
    fi
done
