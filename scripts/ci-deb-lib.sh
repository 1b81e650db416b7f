# scripts/ci-deb-lib.sh — the steps of scripts/ci-deb (sourced; uses its SRC, WORK, MIRROR, SUITE,
# say and bad). Each step returns non-zero on failure after saying why.

# next_version 0.1.0 -> 0.1.1 (the last number plus one)
next_version() { echo "$1" | awk -F. -v OFS=. '{ $NF = $NF + 1; print }'; }

# build_tree DIR: DIR/src is a fresh copy of the source tree's files (tracked and untracked, not
# ignored; no build directories), so builds never touch the checkout.
build_tree() {
	rm -rf "$1" && mkdir -p "$1/src" || return 1
	(cd "$SRC" && git ls-files -z --cached --others --exclude-standard) \
		| (cd "$SRC" && grep -zvE '^(build|obj-)[^/]*/' | xargs -0 cp -a --parents -t "$1/src" 2>/dev/null)
	[ -f "$1/src/debian/rules" ] || { echo "ci-deb: copying $SRC to $1/src failed"; return 1; }
}

# bump_version SRC_DIR VERSION: the newer build's one version, in both places it is stamped.
bump_version() {
	sed -i "s/^project(pirec VERSION [0-9.]*/project(pirec VERSION $2/" "$1/CMakeLists.txt"
	local entry
	entry=$(printf 'pirec (%s) unstable; urgency=medium\n\n  * ci-deb: a newer build, to test the upgrade.\n\n -- ci-deb <pirec@example.org>  %s\n\n' \
		"$2" "$(date -R)")
	printf '%s\n' "$entry" | cat - "$1/debian/changelog" > "$1/debian/changelog.new" \
		&& mv "$1/debian/changelog.new" "$1/debian/changelog"
}

# deb_build DIR ARGS...: dpkg-buildpackage ARGS in DIR/src, unsigned; the packages land in DIR.
deb_build() {
	local dir=$1; shift
	(cd "$dir/src" && dpkg-buildpackage -us -uc "$@") > "$dir/build.log" 2>&1 \
		|| { echo "ci-deb: dpkg-buildpackage $* failed:"; tail -30 "$dir/build.log" | sed 's/^/  /'; return 1; }
}

# enter_root ROOT ARCH: the chroot's /proc, /dev, name resolution and a persistent apt archive cache
# (reruns download nothing new).
enter_root() {
	mkdir -p "$WORK/apt-cache-$2"
	mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" && mount --bind /dev/pts "$1/dev/pts" \
		&& mount --bind "$WORK/apt-cache-$2" "$1/var/cache/apt/archives" || return 1
	cp /etc/resolv.conf "$1/etc/resolv.conf"
}

leave_root() {
	local m
	for m in var/cache/apt/archives dev/pts dev proc; do
		mountpoint -q "$1/$m" && umount "$1/$m"
	done
	return 0
}

# make_root ARCH ROOT INCLUDE: a fresh Debian 12 minbase root at ROOT. The first run makes it with
# the packages INCLUDE (comma-separated, may be empty) and keeps it as a tarball; later runs unpack
# that (a dependency added since is installed by the test, from the archive).
make_root() {
	local arch=$1 root=$2 include=$3 tar
	tar="$WORK/$SUITE-$arch-minbase.tar"
	leave_root "$root"
	rm -rf "$root" && mkdir -p "$root" || return 1
	if [ -f "$tar" ]; then
		tar -C "$root" -xf "$tar" || return 1
	else
		say "debootstrap $SUITE $arch (first run; cached as $tar)"
		debootstrap --arch="$arch" --variant=minbase ${include:+--include="$include"} "$SUITE" "$root" "$MIRROR" \
			> "$WORK/debootstrap-$arch.log" 2>&1 \
			|| { echo "ci-deb: debootstrap failed:"; tail -20 "$WORK/debootstrap-$arch.log"; return 1; }
		rm -rf "$root"/var/cache/apt/archives/*.deb
		tar -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar" || return 1
	fi
	enter_root "$root" "$arch"
}

# in_root ROOT SCRIPT: runs SCRIPT with sh -e inside ROOT.
in_root() { chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
	LANG=C.UTF-8 sh -ec "$2"; }

# install_test ROOT BUILD_DIR VERSION: apt installs the packages of BUILD_DIR into ROOT; then the
# programs, the config, a 5 s recording and its remux, the units.
install_test() {
	local root=$1 dir=$2 v=$3
	mkdir -p "$root/tmp/debs" && cp "$dir"/pirec_"$v"_amd64.deb "$dir"/pirec-eyesim_"$v"_amd64.deb "$root/tmp/debs/"
	say "apt install pirec $v into the clean root"
	in_root "$root" "apt-get update -qq && apt-get install -y -q --no-install-recommends /tmp/debs/pirec_${v}_amd64.deb /tmp/debs/pirec-eyesim_${v}_amd64.deb" \
		> "$WORK/apt-install.log" 2>&1 || { tail -30 "$WORK/apt-install.log"; return 1; }
	echo "ci-deb: installed with $(grep -c '^Setting up' "$WORK/apt-install.log") packages set up by apt"
	say "checks in the installed root"
	in_root "$root" "
		test \"\$(pirec --version)\" = 'pirec $v' || { echo 'pirec --version:' \$(pirec --version); exit 1; }
		for p in pirec-remux pirec-camera pirec-eyetracker pirec-notes pirec-eyesim; do \$p --version; done
		getent passwd pirec >/dev/null || { echo 'no user pirec'; exit 1; }
		test \"\$(stat -c '%U:%G %a' /var/lib/pirec)\" = 'pirec:pirec 750' || { stat /var/lib/pirec; exit 1; }
		grep -qx /etc/pirec/pirec.conf /var/lib/dpkg/info/pirec.conffiles || { echo 'pirec.conf is no conffile'; exit 1; }
		for m in man1/pirec.1 man1/pirec-remux.1 man1/pirec-camera.1 man1/pirec-eyetracker.1 man1/pirec-notes.1 \
		         man1/pirec-eyesim.1 man5/pirec.conf.5; do test -f /usr/share/man/\$m.gz || { echo \"no \$m\"; exit 1; }; done
		bash -c '. /usr/share/bash-completion/completions/pirec-remux; complete -p pirec-remux'
		pirec config defaults > /tmp/defaults.conf
		grep -q '^\[session\]' /tmp/defaults.conf
		pirec config check /etc/pirec/pirec.conf
		echo 'config defaults: ok'
	" || return 1
	say "pirec record (5 s, lavfi camera) as user pirec (setpriv: SIGINT reaches it), then pirec-remux"
	in_root "$root" "
		cp /etc/pirec/pirec.conf /tmp/record.conf && chmod 644 /tmp/record.conf
		pirec config set /tmp/record.conf session.remux_after false session.label ci
		setpriv --reuid=pirec --regid=pirec --init-groups pirec record -c /tmp/record.conf > /tmp/record.log 2>&1 &
		pid=\$!
		sleep 5
		kill -INT \$pid
		wait \$pid || { echo \"pirec record exited \$?\"; cat /tmp/record.log; exit 1; }
		session=\$(ls -d /var/lib/pirec/sessions/*_ci)
		frames=\$(find \"\$session\" -name '*frames*.csv' | head -1)
		test -n \"\$frames\" || { echo \"no frames CSV in \$session\"; find \"\$session\"; cat /tmp/record.log; exit 1; }
		rows=\$(( \$(wc -l < \"\$frames\") - 1 ))
		echo \"recorded \$session: \$rows frames in \$frames\"
		test \$rows -ge 30 || { echo 'fewer than 30 frames in 5 s'; cat /tmp/record.log; exit 1; }
		runuser -u pirec -- pirec-remux \"\$session\" || { echo \"pirec-remux exited \$?\"; exit 1; }
		mp4=\$(find \"\$session\" -name '*.mp4' | head -1)
		test -n \"\$mp4\" || { echo 'pirec-remux wrote no MP4'; exit 1; }
		echo \"remuxed: \$mp4, \$(ffprobe -v error -show_entries format=duration -of csv=p=0 \"\$mp4\") s\"
	" || return 1
	say "systemd-analyze verify on the installed units"
	if in_root "$root" "systemd-analyze verify --man=no /lib/systemd/system/pirec.service /lib/systemd/system/pirec-remux@.service" \
			> "$WORK/verify.log" 2>&1 && ! [ -s "$WORK/verify.log" ]; then
		echo "ci-deb: systemd-analyze verify (in the root): ok"
	else
		echo "ci-deb: systemd-analyze verify printed:"; sed 's/^/  /' "$WORK/verify.log"; return 1
	fi
}

# upgrade_purge_test ROOT NEWER_BUILD_DIR NEWER_VERSION: the edited config survives the upgrade;
# the purge removes every file of the packages and leaves the data directory.
upgrade_purge_test() {
	local root=$1 dir=$2 v=$3
	cp "$dir"/pirec_"$v"_amd64.deb "$dir"/pirec-eyesim_"$v"_amd64.deb "$root/tmp/debs/"
	in_root "$root" "pirec config set /etc/pirec/pirec.conf session.label edited-by-ci && echo '# edited by ci-deb' >> /etc/pirec/pirec.conf"
	say "upgrade to $v"
	in_root "$root" "apt-get install -y -q --no-install-recommends /tmp/debs/pirec_${v}_amd64.deb /tmp/debs/pirec-eyesim_${v}_amd64.deb </dev/null" \
		> "$WORK/apt-upgrade.log" 2>&1 || { tail -30 "$WORK/apt-upgrade.log"; return 1; }
	in_root "$root" "
		test \"\$(pirec --version)\" = 'pirec $v' || { echo 'after the upgrade: ' \$(pirec --version); exit 1; }
		test \"\$(pirec config get /etc/pirec/pirec.conf session.label)\" = edited-by-ci || { echo 'the upgrade lost session.label'; exit 1; }
		tail -n 1 /etc/pirec/pirec.conf | grep -qx '# edited by ci-deb' || { echo 'the upgrade lost the edit'; exit 1; }
		test ! -e /etc/pirec/pirec.conf.dpkg-new && test ! -e /etc/pirec/pirec.conf.dpkg-old
		echo 'upgrade: pirec $v, the edited /etc/pirec/pirec.conf kept'
	" || return 1
	grep -i 'configuration file' "$WORK/apt-upgrade.log" && { echo "ci-deb: dpkg asked about the config file"; return 1; }
	say "apt purge"
	in_root "$root" "dpkg -L pirec pirec-eyesim > /tmp/package-files && apt-get purge -y -q pirec pirec-eyesim >/dev/null" || return 1
	local left
	left=$(cd "$root" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp -o -path ./var/cache/apt/archives -o -path ./var/lib/pirec \) -prune \
		-o -name '*pirec*' -print)
	# the packages' files (directories such as /usr/bin or the /lib symlink are shared)
	while read -r f; do
		[ -d "$root$f" ] && continue
		if [ -e "$root$f" ] || [ -L "$root$f" ]; then left+=" $f"; fi
	done < "$root/tmp/package-files"
	if [ -n "$left" ]; then
		echo "ci-deb: left after apt purge:"; echo "$left" | sed 's/^/  /'; return 1
	fi
	ls -d "$root"/var/lib/pirec/sessions/*_ci >/dev/null 2>&1 || { echo "ci-deb: the purge removed the recorded session"; return 1; }
	echo "ci-deb: purge: no file of pirec left outside /var/lib/pirec, the recorded session kept"
}

# arm64_quick DEB VERSION: the check when the arm64 VM cannot run (its harness is missing): every
# Depends of the package has an arm64 candidate in the archive, and the packaged pirec runs under
# qemu-user on the host's arm64 libraries (the ones the cross build installed), printing the
# version.
arm64_quick() {
	local deb=$1 v=$2 dir dep missing=0 out
	dir=$(mktemp -d "$WORK/arm64-x.XXXXXX") || return 1
	dpkg-deb -x "$deb" "$dir" || return 1
	for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g; s/\${.*}//' | sort -u); do
		[ -n "$dep" ] || continue
		# grep without -q: under pipefail an early exit of grep would fail apt-cache with SIGPIPE
		apt-cache policy "$dep:arm64" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null \
			|| { echo "ci-deb: arm64: no arm64 candidate for dependency $dep"; missing=1; }
	done
	out=$(qemu-aarch64-static -L / "$dir/usr/bin/pirec" --version 2>&1)
	rm -rf "$dir"
	echo "ci-deb: arm64: packaged pirec under qemu-user: $out"
	[ "$missing" = 0 ] && [ "$out" = "pirec $v" ]
}

# arm64_binfmt: the kernel hands arm64 programs to qemu-user (mmdebstrap runs the root's
# maintainer scripts through it).
arm64_binfmt() {
	if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
		mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null
		cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register 2>/dev/null
	fi
	[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "ci-deb: cannot register binfmt_misc for arm64"; return 1; }
}

# arm64_root_start DEPS: starts making, in the background, the arm64 Debian 12 root the package is
# installed into: mmdebstrap (apt resolves DEPS, comma-separated, from the archive; dpkg configures
# them under qemu-user), about 4-6 minutes on a fresh machine against 12 for debootstrap. Kept as a
# tarball keyed by DEPS. Sets ARM64_ROOT_TAR and ARM64_ROOT_PID (empty when cached).
arm64_root_start() {
	local key tmp
	key=$(echo "$1" | md5sum | cut -c1-12)
	ARM64_ROOT_TAR=$WORK/$SUITE-arm64-apt-$key.tar
	ARM64_ROOT_PID=
	[ -f "$ARM64_ROOT_TAR" ] && return 0
	arm64_binfmt || return 1
	tmp=$WORK/making-arm64-$key.tar # mmdebstrap picks its output format from the .tar suffix
	( mmdebstrap --arch=arm64 --variant=apt --include="$1" "$SUITE" "$tmp" "$MIRROR" \
		> "$WORK/mmdebstrap-arm64.log" 2>&1 && mv "$tmp" "$ARM64_ROOT_TAR" ) &
	ARM64_ROOT_PID=$!
}

# arm64_vm_test DEB VERSION: in the arm64 VM of tests/hw/vm.sh (Debian's arm64 kernel under
# qemu-system-aarch64), dpkg installs DEB into the root of arm64_root_start, and the installed
# pirec runs (tests/hw/scenario-deb.sh). Returns 0, 1 on failure, 2 when the VM harness cannot run.
arm64_vm_test() {
	local deb=$1 v=$2 hw=${PIREC_HW_WORK:-/var/tmp/pirec-hw} d rc
	if [ -n "$ARM64_ROOT_PID" ] && ! wait "$ARM64_ROOT_PID"; then
		echo "ci-deb: mmdebstrap (arm64) failed:"; tail -20 "$WORK/mmdebstrap-arm64.log"; return 1
	fi
	[ -f "$ARM64_ROOT_TAR" ] || { echo "ci-deb: no arm64 root"; return 1; }
	d=$hw/share/deb-arm64
	rm -rf "$d" && mkdir -p "$d/root" && tar -C "$d/root" -xf "$ARM64_ROOT_TAR" \
		&& cp "$deb" "$d/" && echo "$v" > "$d/version" && echo scenario-deb.sh > "$hw/share/only-arm64" || return 1
	PIREC_HW_WORK=$hw QEMU_TIMEOUT=600 "$SRC/tests/hw/vm.sh" arm64 > "$WORK/vm-arm64.log" 2>&1
	rc=$?
	rm -f "$hw/share/only-arm64"; rm -rf "$d"
	tr -d '\r' < "$WORK/vm-arm64.log" | grep -E '^RESULT|^guest: |^hw\[arm64\].*(boot|guest result)' | sed 's/^/ci-deb: arm64 VM: /'
	case $rc in
	0) return 0 ;;
	91|94) echo "ci-deb: arm64 VM harness cannot run here (exit $rc; log $WORK/vm-arm64.log)"; return 2 ;;
	*) tr -d '\r' < "$WORK/vm-arm64.log" | tail -40; return 1 ;;
	esac
}
