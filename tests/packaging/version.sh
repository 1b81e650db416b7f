#!/bin/sh
# The version is stamped in one place per build system and they must agree: CMake's project()
# version (compiled into every program as PIREC_VERSION) and the upstream part of the newest
# debian/changelog entry. Every program's --version prints "NAME VERSION".
# usage: version.sh SOURCE_DIR BIN_DIR CMAKE_PROJECT_VERSION   (BIN_DIR empty: the files only; debian/rules)
set -u
src=${1:?usage: version.sh SOURCE_DIR BIN_DIR VERSION}
bin=${2?usage: version.sh SOURCE_DIR BIN_DIR VERSION}
version=${3:?usage: version.sh SOURCE_DIR BIN_DIR VERSION}
fail=0
# "pirec (1:0.1.0-1) unstable; ..." -> 0.1.0: no epoch, no Debian revision
deb=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$src/debian/changelog" | sed 's/^[0-9]*://; s/-[^-]*$//')
if [ "$deb" != "$version" ]; then
	echo "FAIL: debian/changelog's newest entry is version '$deb', CMakeLists.txt's project() is '$version'"
	echo "      bump both (debian/changelog: dch -v VERSION)"
	fail=1
fi
[ -n "$bin" ] && for p in pirec pirec-remux pirec-camera pirec-eyetracker pirec-notes pirec-audio pirec-eyesim pirec-web; do
	[ "$p" = pirec-web ] && [ ! -x "$bin/$p" ] && continue # not built without libwebsockets
	out=$("$bin/$p" --version 2>&1)
	rc=$?
	if [ $rc -ne 0 ] || [ "$out" != "$p $version" ]; then
		echo "FAIL: '$p --version' exited $rc printing '$out', expected '$p $version'"
		fail=1
	fi
done
[ $fail = 0 ] && echo "version $version: CMakeLists.txt, debian/changelog${bin:+ and every program's --version} agree"
exit $fail
