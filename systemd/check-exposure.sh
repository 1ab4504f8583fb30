#!/bin/sh
# Checks systemd/feedmerge.service: `systemd-analyze verify` finds no error,
# and `systemd-analyze security` rates its exposure at MAX (1.5) or less.
# Both run offline, on the file, without installing anything. Used by .ci/run.
set -eu
cd "$(dirname "$0")/.."
unit=systemd/feedmerge.service
max="${MAX_EXPOSURE:-1.5}"

# verify checks that every command exists; the daemon's binary is not
# installed on a build machine, so a copy of the unit names an executable
# that is (everything else in the file is checked as written).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s#^ExecStart=/usr/local/bin/feedmerge #ExecStart=$(command -v true) #" "$unit" >"$tmp/feedmerge.service"
systemd-analyze verify --man=no "$tmp/feedmerge.service"

out="$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1)" || {
    printf '%s\n' "$out" >&2
    echo "systemd-analyze security failed on $unit" >&2
    exit 1
}
# The last line: "→ Overall exposure level for feedmerge.service: 1.1 OK 🙂".
score="$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p')"
if [ -z "$score" ]; then
    printf '%s\n' "$out" >&2
    echo "cannot read the exposure level of $unit" >&2
    exit 1
fi
if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
    printf '%s\n' "$out" | grep '✗' >&2 || true
    echo "$unit: exposure $score is over $max" >&2
    exit 1
fi
echo "$unit: exposure $score (at most $max)"
