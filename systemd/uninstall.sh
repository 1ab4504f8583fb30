#!/bin/sh
# Removes what systemd/install.sh installed: stops and disables the
# service, removes the binary and the unit. The config (/etc/feedmerge) and
# the store (/var/lib/feedmerge) stay unless --purge is given.
#
# Usage: systemd/uninstall.sh [--prefix DIR] [--purge]
#   --prefix DIR  the prefix given to install.sh (default: the one in the
#                 installed unit's ExecStart=, else /usr/local)
#   --purge       also remove /etc/feedmerge and the store
#   DESTDIR=DIR   remove from under DIR and do not touch the running systemd
# Removing what is not there is not an error.
set -eu

prefix=""
purge=no
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --purge) purge=yes; shift ;;
        -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
destdir="${DESTDIR:-}"

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root (or set DESTDIR)" >&2
    exit 1
fi

live=no
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    live=yes
    # Stops it first: the store is flushed on the way down.
    systemctl disable --now feedmerge.service 2>/dev/null || true
fi

remove() {
    if [ -e "$1" ] || [ -L "$1" ]; then
        rm -rf -- "$1"
        echo "removed $1"
    fi
}

unit="$destdir/etc/systemd/system/feedmerge.service"
if [ -n "$prefix" ]; then
    binary="$prefix/bin/feedmerge"
else
    # Where install.sh put the binary, as the unit says.
    binary="$(sed -n 's#^ExecStart=\(/[^ ]*/bin/feedmerge\) .*#\1#p' "$unit" 2>/dev/null | head -n 1)"
    binary="${binary:-/usr/local/bin/feedmerge}"
fi
remove "$destdir$binary"
remove "$unit"
if [ "$purge" = yes ]; then
    remove "$destdir/etc/feedmerge"
    # With DynamicUser=yes the store lives in /var/lib/private/feedmerge,
    # and /var/lib/feedmerge links to it.
    remove "$destdir/var/lib/feedmerge"
    remove "$destdir/var/lib/private/feedmerge"
else
    for kept in "$destdir/etc/feedmerge" "$destdir/var/lib/feedmerge"; do
        if [ -e "$kept" ]; then
            echo "kept $kept (--purge removes it)"
        fi
    done
fi

if [ "$live" = yes ]; then
    systemctl daemon-reload
    systemctl reset-failed feedmerge.service 2>/dev/null || true
fi
