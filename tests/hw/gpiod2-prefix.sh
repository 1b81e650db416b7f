#!/usr/bin/env bash
# gpiod2-prefix.sh — unpack Debian 13 (trixie)'s libgpiod-dev + libgpiod3 (2.2.x) into a prefix on
# a Debian 12 machine, so pirec's libgpiod v2 backend can be built and tested next to bookworm's
# libgpiod 1.6. Nothing from trixie is installed: apt runs with a private sources list, lists
# directory and cache, and the .debs are only dpkg -x'd. libgpiod.so.3 needs only GLIBC_2.33, so it
# runs on bookworm's glibc 2.36 (trixie's gpiod tools and libgpiodcxx do not; they are not used).
#
# The .pc file is rewritten to point into the prefix, so the prefix works with a plain
# PKG_CONFIG_PATH and with CMake: -DPIREC_GPIOD_PREFIX=<prefix> (see gpio/CMakeLists.txt).
#
# Usage: tests/hw/gpiod2-prefix.sh [ARCH] [PREFIX]   ARCH amd64 (default) or arm64
#        PREFIX default /var/tmp/pirec-gpiod2/<ARCH>; prints the prefix on stdout when done.
set -euo pipefail
ARCH=${1:-amd64}
WORK=${PIREC_GPIOD2_WORK:-/var/tmp/pirec-gpiod2}
PREFIX=${2:-$WORK/$ARCH}
case $ARCH in
amd64) TRIPLET=x86_64-linux-gnu ;;
arm64) TRIPLET=aarch64-linux-gnu ;;
*) echo "gpiod2-prefix: ARCH must be amd64 or arm64, not '$ARCH'" >&2; exit 2 ;;
esac
if [ -f "$PREFIX/usr/lib/$TRIPLET/pkgconfig/libgpiod.pc" ] && [ -z "${FORCE:-}" ]; then
	echo "$PREFIX"; exit 0
fi
A=$WORK/apt-trixie
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$WORK/debs-$ARCH"
echo "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
	> "$A/sources.list"
APT=(-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache" -o Dir::State::status=/dev/null
     -o APT::Sandbox::User=root -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -q)
if [ -z "$(find "$A/lists" -maxdepth 1 -name '*_Packages*' -print -quit)" ]; then
	apt-get "${APT[@]}" update >&2
fi
cd "$WORK/debs-$ARCH"
if ! ls libgpiod3_*.deb libgpiod-dev_*.deb >/dev/null 2>&1; then
	apt-get "${APT[@]}" download "libgpiod-dev:$ARCH" "libgpiod3:$ARCH" >&2
fi
rm -rf "$PREFIX"; mkdir -p "$PREFIX"
for d in ./libgpiod-dev_*.deb ./libgpiod3_*.deb; do dpkg -x "$d" "$PREFIX"; done
PC=$PREFIX/usr/lib/$TRIPLET/pkgconfig/libgpiod.pc
sed -i "s|^prefix=.*|prefix=$PREFIX/usr|" "$PC"
# the remaining variables are relative to ${prefix} in Debian's file; make sure
grep -q "^includedir=\${prefix}" "$PC" || { echo "gpiod2-prefix: unexpected $PC layout:" >&2; cat "$PC" >&2; exit 3; }
echo "$PREFIX"
