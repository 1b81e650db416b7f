#!/bin/sh
# tests/hw/guest.sh — runs INSIDE the VM booted by tests/hw/vm.sh, as root, under busybox sh.
# /init has loaded configfs, gpio-sim and vivid, mounted the host's /usr and /etc read-only and
# the share read-write at the same path as on the host.
# Usage (by /init): sh guest.sh SHARE ARCH
# Runs, for every build tree $SHARE/build-$ARCH-*/ (one per libgpiod API):
#   tests/test-gpio-hw  (libgpiod backend on a gpio-sim chip it creates through configfs)
#   tests/test-gpio     (everything above libgpiod, pipe backend)
# then a V4L2 capture from vivid, and $SHARE/extra-$ARCH.sh if present (later scenarios).
# Prints "RESULT <name> PASS|FAIL|SKIP <detail>" per check; exit status 0 only if none failed.
SHARE=$1
ARCH=$2
cd /tmp || exit 98
# A power-cut boot (tests/hw/powercut.sh) runs only its scenario's phase.
if [ -f "$SHARE/powercut-phase" ]; then
	exec sh "$SHARE/scenario-powercut.sh" "$SHARE" "$(cat "$SHARE/powercut-phase")"
fi
# scripts/ci-deb's package install boots the VM for its scenario alone.
if [ -f "$SHARE/only-$ARCH" ]; then
	exec sh "$SHARE/$(cat "$SHARE/only-$ARCH")" "$SHARE" "$ARCH"
fi
rc=0
now() { cut -d' ' -f1 /proc/uptime; }
t0=$(now)
echo "guest: kernel $(uname -r) $(uname -m)"
result() { echo "RESULT $1 $2 $3"; [ "$2" = FAIL ] && rc=1; return 0; }

found=0
for b in "$SHARE"/build-"$ARCH"-*; do
	[ -d "$b/tests" ] || continue
	found=1
	api=${b##*-}   # v1 or v2
	for t in test-gpio-hw test-gpio; do
		if [ ! -x "$b/tests/$t" ]; then result "$t-$api" FAIL "not built in $b"; continue; fi
		ta=$(now)
		# streamed as it runs, so a hang shows where; the status comes back through a file
		{ timeout 120 "$b/tests/$t" 2>&1; echo $? > "/tmp/$t-$api.rc"; } | sed "s/^/  [$t $api] /"
		r=$(cat "/tmp/$t-$api.rc")
		tb=$(now)
		case $r in
		0) result "$t-$api" PASS "$(awk "BEGIN{print $tb-$ta}") s" ;;
		77) result "$t-$api" FAIL "skipped inside the VM: gpio-sim missing?" ;;
		124|143) result "$t-$api" FAIL "timed out after 120 s" ;;
		*) result "$t-$api" FAIL "exit $r" ;;
		esac
	done
done
[ $found = 1 ] || result gpio FAIL "no build trees $SHARE/build-$ARCH-*"

# ---- V4L2 from vivid: the real driver and ffmpeg's v4l2 input (the host's ffmpeg: amd64 only)
if [ -c /dev/video0 ]; then
	if ffmpeg -version > /dev/null 2>&1; then
		rm -f /tmp/vivid.mkv
		ta=$(now)
		# vivid's default frame interval is 1/5 s; ask for 30 fps. 2 s keeps the boot short.
		ffmpeg -hide_banner -loglevel error -nostdin -f v4l2 -framerate 30 -video_size 320x240 \
			-i /dev/video0 -t 2 -c:v rawvideo -y /tmp/vivid.mkv; r=$?
		tb=$(now)
		pk=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets \
			-of csv=p=0 /tmp/vivid.mkv 2>/dev/null)
		if [ $r -eq 0 ] && [ "${pk:-0}" -gt 10 ]; then
			result v4l2-vivid-ffmpeg PASS "$pk packets in 2 s from /dev/video0 ($(awk "BEGIN{print $tb-$ta}") s)"
		else
			result v4l2-vivid-ffmpeg FAIL "ffmpeg exit $r, packets '${pk}'"
		fi
	else
		result v4l2-vivid-ffmpeg SKIP "no runnable ffmpeg for $ARCH in the guest"
	fi
else
	result v4l2-vivid FAIL "/dev/video0 missing: vivid did not load"
fi

# ---- pirec-camera: 5 s from vivid through the project's own capture path; every frame written
# must have its CSV row (rows == the video's packets)
cam=
for b in "$SHARE"/build-"$ARCH"-*; do [ -x "$b/apps/pirec-camera" ] && { cam=$b/apps/pirec-camera; break; }; done
if [ -z "$cam" ] && [ "$ARCH" = amd64 ]; then
	result pirec-camera-vivid FAIL "pirec-camera not built (scripts/ci-hw builds it on amd64)"
elif [ -z "$cam" ]; then
	result pirec-camera-vivid SKIP "pirec-camera not built for $ARCH (no FFmpeg libraries for the cross build)"
elif ! ffmpeg -version > /dev/null 2>&1; then
	result pirec-camera-vivid SKIP "no runnable ffmpeg (encoder child) for $ARCH in the guest"
elif [ -c /dev/video0 ]; then
	rm -rf /tmp/cam
	ta=$(now)
	{ timeout 90 "$cam" --source v4l2:/dev/video0 --size 320x240 --fps 30 --duration 5 --out /tmp/cam 2>&1
	  echo $? > /tmp/cam.rc; } | sed "s/^/  [pirec-camera] /"
	r=$(cat /tmp/cam.rc)
	tb=$(now)
	csv=$(ls /tmp/cam/*_frames.csv 2>/dev/null | head -1)
	vid=$(ls /tmp/cam/*.mkv /tmp/cam/*.h264 /tmp/cam/*.mjpeg 2>/dev/null | head -1)
	rows=$(( $(wc -l < "${csv:-/dev/null}") - 1 ))
	pk=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets \
		-of csv=p=0 "${vid:-/dev/null}" 2>/dev/null)
	if [ "$r" = 0 ] && [ "$rows" -gt 0 ] && [ "$rows" = "$pk" ]; then
		result pirec-camera-vivid PASS "5 s from /dev/video0: $rows CSV rows = $pk packets in $(basename "$vid") ($(awk "BEGIN{print $tb-$ta}") s)"
	else
		result pirec-camera-vivid FAIL "exit $r, CSV rows $rows, packets '$pk' ($csv, $vid)"
	fi
fi

# ---- a camera whose device appears after the start: no ffmpeg probe on its loop (issue 14)
if [ -n "$cam" ] && ffmpeg -version > /dev/null 2>&1 && [ -c /dev/video0 ]; then
	sh "$SHARE/scenario-late-camera.sh" "$(dirname "$cam")" || rc=1
elif [ "$ARCH" = amd64 ]; then
	result pirec-camera-late-device FAIL "pirec-camera, ffmpeg or vivid missing on amd64"
fi

# ---- the controller: gpio-sim edges start and stop a `pirec record` session, per libgpiod API
found=0
for b in "$SHARE"/build-"$ARCH"-v1 "$SHARE"/build-"$ARCH"-v2; do
	[ -x "$b/apps/pirec" ] || continue
	found=1
	api=${b##*-}
	if grep -q pirec_gpio_new "$b/apps/pirec"; then
		sh "$SHARE/scenario-record.sh" "$b/apps" "$api" || rc=1
	else
		result pirec-record-gpio-$api FAIL "this pirec does not link pirec_gpio"
	fi
done
if [ $found = 0 ] && [ "$ARCH" = amd64 ]; then
	result pirec-record-gpio FAIL "pirec not built (scripts/ci-hw builds it on amd64)"
elif [ $found = 0 ]; then
	result pirec-record-gpio SKIP "pirec not built for $ARCH"
fi

if [ -f "$SHARE/extra-$ARCH.sh" ]; then
	sh "$SHARE/extra-$ARCH.sh" "$SHARE" "$ARCH" || rc=1
fi
echo "guest: tests took $(awk "BEGIN{print $(now)-$t0}") s"
exit $rc
