#!/bin/sh
# tests/hw/scenario-deb.sh — runs INSIDE the VM of tests/hw/vm.sh when scripts/ci-deb asks for it
# ($SHARE/only-ARCH names this file; guest.sh then runs nothing else). scripts/ci-deb has put in
# $SHARE/deb-ARCH/: root/ (a Debian 12 root of that architecture made by mmdebstrap with the
# package's dependencies), the package pirec_VERSION_ARCH.deb and version. Here, on the VM's own
# kernel of that architecture (no qemu-user), dpkg installs the package into the root and the
# installed programs run.
# Usage (by guest.sh): sh scenario-deb.sh SHARE ARCH. Prints RESULT lines; exit 0 only if all pass.
SHARE=$1
ARCH=$2
D=$SHARE/deb-$ARCH
R=$D/root
rc=0
result() { echo "RESULT $1 $2 $3"; [ "$2" = FAIL ] && rc=1; return 0; }
V=$(cat "$D/version" 2>/dev/null)
DEB=pirec_${V}_$ARCH.deb
if [ -z "$V" ] || [ ! -f "$D/$DEB" ] || [ ! -x "$R/usr/bin/dpkg" ]; then
	result deb-install-$ARCH FAIL "no root, package or version in $D"
	exit 1
fi
mount -t proc proc "$R/proc" && mount -o bind /dev "$R/dev" \
	|| { result deb-install-$ARCH FAIL "cannot mount /proc and /dev in $R"; exit 1; }
cp "$D/$DEB" "$R/tmp/"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
	DEBIAN_FRONTEND=noninteractive sh -ec "$1"; }
echo "guest: $(in_root 'uname -m; dpkg --print-architecture' | tr '\n' ' ') root, installing $DEB"
if in_root "dpkg -i /tmp/$DEB" > /tmp/dpkg.log 2>&1 \
	&& [ "$(in_root "dpkg-query -W -f='\${Status}' pirec")" = "install ok installed" ]; then
	result deb-install-$ARCH PASS "dpkg -i $DEB: $(grep -c '^Setting up' /tmp/dpkg.log) package set up"
else
	result deb-install-$ARCH FAIL "dpkg -i $DEB failed"; sed 's/^/  [dpkg] /' /tmp/dpkg.log | tail -20
fi
out=$(in_root "pirec --version" 2>&1)
if [ "$out" = "pirec $V" ]; then
	result deb-version-$ARCH PASS "'$out' on $(uname -m)"
else
	result deb-version-$ARCH FAIL "pirec --version printed '$out', want 'pirec $V'"
fi
n=$(in_root "pirec config defaults" 2>/dev/null | grep -c '^\[')
if [ "${n:-0}" -gt 3 ]; then
	result deb-config-$ARCH PASS "pirec config defaults: $n sections"
else
	result deb-config-$ARCH FAIL "pirec config defaults printed $n sections"
fi
umount "$R/dev" "$R/proc"
exit $rc
