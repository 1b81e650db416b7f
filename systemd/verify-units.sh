#!/bin/sh
# Runs `systemd-analyze verify` on the units configured for this build tree (systemd/verify/, whose
# ExecStart= points at the built binaries) and checks the directives the service depends on.
# Exits 77 (skipped) where systemd-analyze is not installed.
# usage: verify-units.sh BUILD_DIR
set -eu
build=${1:?usage: verify-units.sh BUILD_DIR}
dir=$build/systemd/verify
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze not found: skipped"
  exit 77
fi
for unit in "$dir/pirec.service" "$dir/pirec-remux@.service"; do
  [ -f "$unit" ] || { echo "missing $unit"; exit 1; }
done
# --man=no: the Documentation= links are not installed in a build tree.
out=$(systemd-analyze verify --man=no "$dir/pirec.service" "$dir/pirec-remux@.service" 2>&1) || {
  echo "$out"
  exit 1
}
if [ -n "$out" ]; then
  echo "$out"
  echo "systemd-analyze verify printed warnings"
  exit 1
fi
for want in Type=notify NotifyAccess=main WatchdogSec= Restart=on-failure User=pirec \
            "SupplementaryGroups=gpio video" ProtectSystem=strict ReadWritePaths=/var/lib/pirec \
            RuntimeDirectory=pirec "DeviceAllow=char-gpiochip rw" "DeviceAllow=char-video4linux rw" \
            KillMode=mixed; do
  grep -q "^$want" "$dir/pirec.service" || { echo "pirec.service lacks '$want'"; exit 1; }
done
# pirec-web.service, when pirec-web is built: sandboxed, and in group pirec for the control socket
if [ -x "$build/apps/pirec-web" ]; then
  out=$(systemd-analyze verify --man=no "$dir/pirec-web.service" 2>&1) || { echo "$out"; exit 1; }
  if [ -n "$out" ]; then
    echo "$out"
    echo "systemd-analyze verify printed warnings for pirec-web.service"
    exit 1
  fi
  for want in User=pirec-web SupplementaryGroups=pirec ProtectSystem=strict PrivateDevices=yes \
              NoNewPrivileges=yes "CapabilityBoundingSet=" StateDirectory=pirec-web; do
    grep -q "^$want" "$dir/pirec-web.service" || { echo "pirec-web.service lacks '$want'"; exit 1; }
  done
fi
echo "units verified: $dir"
