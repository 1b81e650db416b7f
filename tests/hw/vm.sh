#!/usr/bin/env bash
# tests/hw/vm.sh — boot Debian 12's own kernel under QEMU (TCG) with real kernel drivers for GPIO
# (gpio-sim, built here out of tree) and V4L2 (vivid), and run tests/hw/guest.sh inside it.
#
# Usage: tests/hw/vm.sh ARCH          ARCH = amd64 | arm64
# env:   PIREC_HW_WORK   work dir (default /var/tmp/pirec-hw). $PIREC_HW_WORK/share is shared with
#                        the guest read-write over virtio-9p AT THE SAME PATH, so binaries built in
#                        it (and their rpaths, e.g. to a libgpiod 2 prefix) work unchanged inside.
#                        Callers put build trees there and list them in $SHARE/tests-$ARCH.list.
#        QEMU_TIMEOUT    seconds for one boot (default 720: under TCG on a loaded 2-core machine the
#                        amd64 boot with every scenario ran past 420 s; the limit only catches a hang)
#        PIREC_HW_DISK   a raw disk image attached as /dev/vda (virtio-blk, host page cache: what the
#                        guest wrote survives qemu's death, what it had not written does not)
#        PIREC_HW_CUT_AFTER  seconds: once the guest creates $SHARE/powercut-recording, wait this
#                        long and SIGKILL qemu (the power cut of tests/hw/powercut.sh); exit 0
#                        when the cut happened
# Exit: the guest's status (0 = all passed), 90+ for harness failures.
#
# Why this shape (measured on Debian 12 x86_64, 2 cores):
#   * /dev/kvm here is PVM, which cannot boot a stock kernel: TCG with -cpu max it is (a boot with
#     the tests takes 20-45 s on amd64).
#   * Debian's kernels are built without CONFIG_GPIO_SIM and CONFIG_IRQ_SIM, so gpio-sim.ko is
#     built from three files of linux-source-6.1 against the matching linux-headers, all unpacked
#     with dpkg -x (nothing is installed, the host's /boot is untouched). irq_sim.c calls
#     irq_to_desc(), which 6.1 does not export to modules; generic_handle_irq() does the same
#     lookup and runs the flow handler, so that one line is patched.
#   * The guest userland is busybox (initramfs) plus the host's /usr and /etc over 9p read-only:
#     the amd64 guest runs the host's binaries; the arm64 guest runs cross-built binaries against
#     the host's multiarch arm64 libraries (/usr/lib/aarch64-linux-gnu).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARCH=${1:?usage: vm.sh amd64|arm64}
WORK=${PIREC_HW_WORK:-/var/tmp/pirec-hw}
SHARE=$WORK/share
A=$WORK/$ARCH
QEMU_TIMEOUT=${QEMU_TIMEOUT:-720}
T_START=$(date +%s.%N)
step() { echo "hw[$ARCH] $(awk "BEGIN{printf \"%6.1f\", $(date +%s.%N)-$T_START}")s: $*"; }
die() { echo "hw[$ARCH]: $2" >&2; exit "$1"; }

case $ARCH in
amd64) KARCH=amd64; CROSS=(); STRIP=strip
       QEMU=(qemu-system-x86_64 -accel tcg -cpu max); CONSOLE=ttyS0 ;;
arm64) KARCH=arm64; STRIP=aarch64-linux-gnu-strip
       # Debian's headers Makefile cross-compiles when the build and host architectures differ
       CROSS=(DEB_BUILD_ARCH=amd64 DEB_HOST_ARCH=arm64 DEB_HOST_GNU_TYPE=aarch64-linux-gnu)
       # pauth-impdef: the architected pointer-auth algorithm is very slow under TCG
       QEMU=(qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on); CONSOLE=ttyAMA0 ;;
*) die 90 "ARCH must be amd64 or arm64, not '$ARCH'" ;;
esac
command -v "${QEMU[0]}" >/dev/null || die 94 "${QEMU[0]} not installed"
mkdir -p "$A/debs" "$SHARE"

# ------------------------------------------------------------ kernel, headers, source (unpacked)
# The ABI comes from the linux-image metapackage, so the harness follows bookworm's kernel updates.
PA=$([ "$ARCH" = arm64 ] && echo ":arm64" || true)
KPKG=$(apt-cache depends "linux-image-$KARCH$PA" 2>/dev/null | awk '/Depends: linux-image-/{sub(/:.*/,"",$2); print $2; exit}')
[ -n "$KPKG" ] || die 91 "cannot find the linux-image-$KARCH$PA metapackage's kernel (apt-get update?)"
KV=${KPKG#linux-image-}                       # 6.1.0-56-amd64
ABI=${KV%-"$KARCH"}                           # 6.1.0-56
KSER=$(echo "$KV" | cut -d. -f1,2)            # 6.1
KVER=$(apt-cache policy "$KPKG$PA" | awk '/Candidate:/{print $2}')
step "kernel $KV ($KVER)"
if [ ! -f "$A/kroot/boot/vmlinuz-$KV" ] || [ ! -f "$A/ksrc/kernel/irq/irq_sim.c" ]; then
	cd "$A/debs"
	want=("$KPKG$PA=$KVER" "linux-headers-$KV$PA=$KVER" "linux-headers-$ABI-common=$KVER"
	      "linux-kbuild-$KSER:amd64=$KVER" "linux-source-$KSER=$KVER")
	[ "$ARCH" = arm64 ] && want+=(busybox-static:arm64)
	# only what is not downloaded yet (the files are named after the package's version)
	need=()
	for w in "${want[@]}"; do
		p=${w%%=*}; p=${p%%:*}
		ls "${p}"_*.deb >/dev/null 2>&1 || need+=("$w")
	done
	[ ${#need[@]} -eq 0 ] || apt-get download -q -o APT::Sandbox::User=root "${need[@]}" >/dev/null
	rm -rf "$A/kroot" "$A/khdr" "$A/ksrc"
	dpkg -x "linux-image-${KV}_${KVER}_$KARCH.deb" "$A/kroot"
	for d in "linux-headers-${KV}_${KVER}_$KARCH.deb" "linux-headers-${ABI}-common_${KVER}_all.deb" \
	         "linux-kbuild-${KSER}_${KVER}_amd64.deb"; do
		dpkg -x "$d" "$A/khdr"
	done
	# the arch headers' Makefile includes the -common tree by absolute path
	sed -i "s|^include /usr/src/|include $A/khdr/usr/src/|" "$A/khdr/usr/src/linux-headers-$KV/Makefile"
	mkdir -p "$A/ksrc"
	# three files out of the 140 MB source tarball
	dpkg-deb --fsys-tarfile "linux-source-${KSER}_${KVER}_all.deb" \
		| tar -xO "./usr/src/linux-source-$KSER.tar.xz" | xz -dc -T2 \
		| tar -x -C "$A/ksrc" --strip-components=1 \
			"linux-source-$KSER/drivers/gpio/gpio-sim.c" "linux-source-$KSER/drivers/gpio/gpiolib.h" \
			"linux-source-$KSER/kernel/irq/irq_sim.c"
fi

# ------------------------------------------------------------ gpio-sim.ko, out of tree
MOD=$A/gpio-sim
if [ ! -f "$MOD/gpio-sim.ko" ]; then
	step "build gpio-sim.ko"
	rm -rf "$MOD"; mkdir -p "$MOD"
	cp "$A/ksrc/drivers/gpio/gpio-sim.c" "$MOD/gpio-sim-main.c"
	cp "$A/ksrc/drivers/gpio/gpiolib.h" "$A/ksrc/kernel/irq/irq_sim.c" "$MOD/"
	grep -q 'handle_simple_irq(irq_to_desc(irqnum));' "$MOD/irq_sim.c" \
		|| die 92 "irq_sim.c no longer has the line this harness patches; review $MOD/irq_sim.c"
	sed -i 's|handle_simple_irq(irq_to_desc(irqnum));|generic_handle_irq(irqnum);|' "$MOD/irq_sim.c"
	printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' > "$MOD/Kbuild"
	make -s -C "$A/khdr/usr/src/linux-headers-$KV" M="$MOD" "${CROSS[@]}" modules 2>&1 \
		| grep -v 'Skipping BTF' || true
	[ -f "$MOD/gpio-sim.ko" ] || die 92 "gpio-sim.ko did not build (see output above)"
	$STRIP --strip-debug "$MOD/gpio-sim.ko"
fi
mkdir -p "$A/kroot/lib/modules/$KV/extra"
cp "$MOD/gpio-sim.ko" "$A/kroot/lib/modules/$KV/extra/"
depmod -b "$A/kroot" "$KV"

# ------------------------------------------------------------ initramfs: busybox, modules, /init
step "initramfs"
IR=$A/initramfs
rm -rf "$IR"; mkdir -p "$IR"/{bin,dev,proc,sys,tmp,run,usr,etc,kmod}
if [ "$ARCH" = arm64 ]; then
	rm -rf "$A/bb"; dpkg -x "$(ls "$A"/debs/busybox-static_*_arm64.deb | head -1)" "$A/bb"
	cp "$A/bb/bin/busybox" "$IR/bin/busybox"
else
	[ -x /bin/busybox ] || die 94 "busybox-static not installed"
	cp /bin/busybox "$IR/bin/busybox"
fi
# Debian 12 is merged-/usr: these make the host's loader and libraries resolve under /usr
ln -s usr/lib "$IR/lib"; ln -s usr/lib64 "$IR/lib64"; ln -s usr/sbin "$IR/sbin"
for m in virtio_pci 9pnet_virtio 9p gpio-sim vivid virtio_blk ext4 snd-aloop; do
	modprobe -d "$A/kroot" -S "$KV" --show-depends "$m"
done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' | while read -r f; do
	cp "$f" "$IR/kmod/"; basename "$f" >> "$IR/kmod/order"
done
cat > "$IR/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
while read m; do
	case \$m in
	vivid.ko) insmod /kmod/\$m n_devs=1 node_types=0x1 || echo "insmod \$m failed" ;;
	*) insmod /kmod/\$m || echo "insmod \$m failed" ;;
	esac
done < /kmod/order
mount -t configfs configfs /sys/kernel/config
O=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o \$O,ro,cache=loose hostusr /usr || echo "9p /usr mount failed"
mount -t 9p -o \$O,ro,cache=loose hostetc /etc || echo "9p /etc mount failed"
mkdir -p "$SHARE" && mount -t 9p -o \$O,rw share "$SHARE" || echo "9p $SHARE mount failed"
# the host's programs first where they can run (same architecture), busybox otherwise
if /usr/bin/true 2>/dev/null; then PATH=/usr/sbin:/usr/bin:/bin; else PATH=/bin:/usr/sbin:/usr/bin; fi
export PATH HOME=/tmp
echo "guest: up at \$(cut -d' ' -f1 /proc/uptime) s"
if [ -f "$SHARE/guest.sh" ]; then sh "$SHARE/guest.sh" "$SHARE" "$ARCH"; echo \$? > "$SHARE/result-$ARCH"
else echo "guest: no $SHARE/guest.sh"; echo 99 > "$SHARE/result-$ARCH"; fi
sync
poweroff -f
EOF
chmod +x "$IR/init"
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1 > "$A/initrd.gz")

# ------------------------------------------------------------ boot
cp "$HERE/guest.sh" "$HERE/scenario-record.sh" "$HERE/scenario-powercut.sh" "$HERE/scenario-deb.sh" \
	"$HERE/scenario-late-camera.sh" "$HERE/scenario-audio.sh" "$SHARE/"
DISK=()
[ -n "${PIREC_HW_DISK:-}" ] && DISK=(-drive "file=$PIREC_HW_DISK,format=raw,if=virtio,cache=writeback")
rm -f "$SHARE/result-$ARCH"
step "boot ${QEMU[0]} (TCG), guest output follows"
T0=$(date +%s.%N)
set +e
rm -f "$SHARE/powercut-recording" "$A/qemu.pid"
timeout "$QEMU_TIMEOUT" "${QEMU[@]}" -m 1024 -smp 2 -nographic -no-reboot -nic none "${DISK[@]}" -pidfile "$A/qemu.pid" \
	-kernel "$A/kroot/boot/vmlinuz-$KV" -initrd "$A/initrd.gz" \
	-append "console=$CONSOLE panic=-1 quiet" \
	-virtfs local,path=/usr,mount_tag=hostusr,security_model=none,readonly=on,id=hostusr \
	-virtfs local,path=/etc,mount_tag=hostetc,security_model=none,readonly=on,id=hostetc \
	-virtfs local,path="$SHARE",mount_tag=share,security_model=none,id=share \
	< /dev/null > "$A/console.log" 2>&1 &
TPID=$!
if [ -n "${PIREC_HW_CUT_AFTER:-}" ]; then
	while kill -0 $TPID 2>/dev/null && [ ! -e "$SHARE/powercut-recording" ]; do sleep 0.1; done
	if [ -e "$SHARE/powercut-recording" ]; then
		sleep "$PIREC_HW_CUT_AFTER"
		kill -KILL "$(cat "$A/qemu.pid")" && echo 0 > "$SHARE/result-$ARCH"
		step "power cut: qemu killed ${PIREC_HW_CUT_AFTER} s after the recording started"
	fi
fi
wait $TPID
QRC=$?
set -e
T1=$(date +%s.%N)
tr -d '\r' < "$A/console.log" | grep -v -e SeaBIOS -e 'Booting from ROM' -e '^iPXE' || true
RES=$(cat "$SHARE/result-$ARCH" 2>/dev/null || echo 93)
[ $QRC -eq 124 ] && { echo "hw[$ARCH]: QEMU timed out after $QEMU_TIMEOUT s"; RES=95; }
step "VM boot + tests + poweroff: $(awk "BEGIN{printf \"%.1f\", $T1-$T0}") s, guest result $RES"
exit "$RES"
