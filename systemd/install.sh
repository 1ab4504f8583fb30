#!/bin/sh
# Installs feedmerge as a systemd service, after `cargo install --path .`:
#   the binary      -> PREFIX/bin/feedmerge           (PREFIX: /usr/local)
#   the unit        -> /etc/systemd/system/feedmerge.service
#   the config      -> /etc/feedmerge/feedmerge.toml   (only if absent)
# The unit runs as a dynamic user (DynamicUser=yes), so no account is made;
# systemd creates /var/lib/feedmerge, the store, on the first start.
#
# Usage: systemd/install.sh [--prefix DIR] [--bin FILE]
#   --prefix DIR  where bin/feedmerge goes (default /usr/local); the unit's
#                 ExecStart= is changed to match
#   --bin FILE    the binary to install (default: cargo install's,
#                 ${CARGO_HOME:-~/.cargo}/bin/feedmerge)
#   DESTDIR=DIR   install under DIR (for packaging or a test) and do not
#                 touch the running systemd
# Running it again replaces the binary and the unit and keeps the config.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
prefix=/usr/local
bin="${CARGO_HOME:-$HOME/.cargo}/bin/feedmerge"
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --bin) bin="${2:?--bin needs a file}"; shift 2 ;;
        --bin=*) bin="${1#--bin=}"; shift ;;
        -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
destdir="${DESTDIR:-}"

if [ ! -x "$bin" ]; then
    echo "install.sh: no feedmerge binary at $bin; run \`cargo install --path .\` first, or pass --bin" >&2
    exit 1
fi
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or set DESTDIR to install under a directory)" >&2
    exit 1
fi

unit_dir="$destdir/etc/systemd/system"
config_dir="$destdir/etc/feedmerge"

install -d -m 0755 "$destdir$prefix/bin" "$unit_dir" "$config_dir"
# A copy beside the target, then a rename: a running daemon's binary is
# replaced, never written into.
install -m 0755 "$bin" "$destdir$prefix/bin/.feedmerge.new"
mv -f "$destdir$prefix/bin/.feedmerge.new" "$destdir$prefix/bin/feedmerge"
echo "installed $destdir$prefix/bin/feedmerge"

sed "s#^ExecStart=/usr/local/bin/feedmerge #ExecStart=$prefix/bin/feedmerge #" \
    "$here/feedmerge.service" >"$unit_dir/.feedmerge.service.new"
chmod 0644 "$unit_dir/.feedmerge.service.new"
mv -f "$unit_dir/.feedmerge.service.new" "$unit_dir/feedmerge.service"
echo "installed $unit_dir/feedmerge.service"

if [ -e "$config_dir/feedmerge.toml" ]; then
    echo "kept $config_dir/feedmerge.toml (not overwritten)"
else
    # The reference config; its storage.path is /var/lib/feedmerge, the
    # unit's StateDirectory.
    install -m 0644 "$repo/config/feedmerge.toml" "$config_dir/feedmerge.toml"
    echo "installed $config_dir/feedmerge.toml (an example: list your sources in it)"
fi

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "next: edit /etc/feedmerge/feedmerge.toml, then: systemctl enable --now feedmerge"
fi
