#!/bin/sh
# tests/hw/scenario-late-camera.sh — a camera whose device appears after `pirec record` started,
# inside the VM (busybox sh, vivid's /dev/video0, the host's ffmpeg): issue 14's "no loop waits for
# ffmpeg". The camera's device path is missing at first, so pirec-camera serves the controller and
# retries the device from its loop; the probe of ffmpeg (two short ffmpeg runs, a few hundred ms)
# must not run there. It runs once, at the first start, before the loop. An `ffmpeg` first in PATH
# logs each probe run (-version, -encoders) with the time since boot before it execs the real one:
# every probe must come before the device appeared, which a retry from the loop then opens. The
# code before the probe ran once probed at that retry, on the loop, and fails here. (strace -f was
# the first way to see the order: under TCG it slowed ffmpeg past the probe's 10 s timeout.) Then
# a session records from the device: every frame written has its row.
# Usage: sh scenario-late-camera.sh PIREC_BINARY_DIR    Prints a RESULT line; exit 0 = pass.
BIN=$1
NAME=pirec-camera-late-device
T=/tmp/late
DEV=/dev/video-late
rm -rf $T; mkdir -p $T/sessions $T/bin; rm -f $DEV
say() { echo "  [late] $*"; }
ctl() { timeout 20 "$BIN/pirec" "$@" --socket $T/control.sock; }
diag() {
	ctl status 2>&1 | sed 's/^/  [late] status: /'
	tail -15 $T/pirec.log | sed 's/^/  [late] log: /'
}
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && sleep 1; rm -f $DEV; }
fail() { diag; echo "RESULT $NAME FAIL $*"; cleanup; exit 1; }

# the logging ffmpeg: the probe's runs are `ffmpeg -hide_banner -version` and `... -encoders`
printf '%s\n' '#!/bin/sh' \
	'case " $* " in *" -version "*|*" -encoders "*) echo "$(cut -d" " -f1 /proc/uptime) $*" >> /tmp/late/probes.log ;; esac' \
	'exec /usr/bin/ffmpeg "$@"' > $T/bin/ffmpeg
chmod +x $T/bin/ffmpeg
cat > $T/pirec.conf <<EOF
[session]
output_dir = $T/sessions
remux_after = false
[control]
socket = $T/control.sock
[camera.late]
source = v4l2
device = $DEV
size = 320x240
fps = 30
[notes]
enabled = false
EOF

PATH=$T/bin:$PATH "$BIN/pirec" record -c $T/pirec.conf --wait > $T/pirec.log 2>&1 &
PID=$!
i=0; while ! ctl status > /dev/null 2>&1; do
	i=$((i+1)); [ $i -gt 300 ] && fail "pirec status does not answer after 30 s"
	kill -0 $PID 2>/dev/null || { PID=; fail "pirec record exited"; }
	sleep 0.1
done
# the camera has found the device missing, probed ffmpeg, and now retries the device from its
# loop: its device_missing event comes from there (the start error names the device earlier)
i=0; while ! grep -q "device_missing" $T/pirec.log; do
	i=$((i+1)); [ $i -gt 600 ] && fail "the camera never reported $DEV missing"; sleep 0.1
done
sleep 2 # a retry or two from the loop
say "controller up, camera waiting for $DEV; the device appears now"
appeared=$(cut -d' ' -f1 /proc/uptime)
ln -s /dev/video0 $DEV
# the camera takes it at its next retry (1 s, doubling to 10 s)
i=0; while ! grep -q "is there now" $T/pirec.log; do
	i=$((i+1)); [ $i -gt 600 ] && fail "the camera did not take $DEV within 60 s of its appearing"; sleep 0.1
done
say "the camera has $DEV; a session"
ctl start > $T/start.txt 2>&1; r=$?
[ $r = 0 ] || { cat $T/start.txt; fail "pirec start exit $r"; }
sleep 3
ctl stop > $T/stop.txt 2>&1 || { cat $T/stop.txt; fail "pirec stop failed"; }
kill -TERM $PID
i=0; while kill -0 $PID 2>/dev/null; do
	i=$((i+1)); [ $i -gt 300 ] && fail "pirec record did not end within 30 s of SIGTERM"; sleep 0.1
done
PID=

# the probe's runs against the moment the device appeared
probes=$(cat $T/probes.log 2>/dev/null | wc -l)
late=$(awk -v t="$appeared" '$1 + 0 > t + 0' $T/probes.log 2>/dev/null | wc -l)
say "ffmpeg probe runs: $probes, after the device appeared (at $appeared s): $late"
sed 's/^/  [late] probe at /' $T/probes.log 2>/dev/null
[ "$probes" -gt 0 ] || fail "no ffmpeg probe logged: the check cannot tell anything"
[ "$late" -eq 0 ] || fail "$late ffmpeg probe runs after the device appeared: the retry probed from the loop"

D=$(ls -d $T/sessions/*/ | head -1)
csv=$(ls "$D"late/*_frames.csv 2>/dev/null | head -1)
vid=$(ls "$D"late/t001.mkv "$D"late/t001.h264 "$D"late/t001.mjpeg 2>/dev/null | head -1)
rows=$(( $(wc -l < "${csv:-/dev/null}") - 1 ))
pk=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets \
	-of csv=p=0 "${vid:-/dev/null}" 2>/dev/null)
[ "$rows" -gt 0 ] && [ "$rows" = "$pk" ] || fail "CSV rows $rows, packets '$pk' ($csv, $vid)"
cleanup
echo "RESULT $NAME PASS $probes probe runs, all before the device appeared; then $rows rows = $pk packets"
