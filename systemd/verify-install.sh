#!/bin/sh
# Installs the config component of BUILD_DIR twice into a scratch DESTDIR and checks that the
# second install keeps the operator's edited /etc/pirec/pirec.conf.
# usage: verify-install.sh BUILD_DIR
set -eu
build=${1:?usage: verify-install.sh BUILD_DIR}
dest=$(mktemp -d "${TMPDIR:-/tmp}/pirec-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT
DESTDIR=$dest cmake --install "$build" --component pirec-config >/dev/null
conf=$(find "$dest" -path '*/pirec/pirec.conf' -type f)
[ -n "$conf" ] || { echo "first install wrote no pirec/pirec.conf under $dest"; exit 1; }
echo "# edited by the operator" >>"$conf"
DESTDIR=$dest cmake --install "$build" --component pirec-config >/dev/null
tail -n 1 "$conf" | grep -qx "# edited by the operator" || {
  echo "a second install overwrote $conf"
  exit 1
}
echo "ok: $conf kept"
