#!/bin/sh
# tests/hw/scenario-late-camera.sh — a camera whose device appears after `pirec record` started,
# inside the VM (busybox sh, vivid's /dev/video0, the host's ffmpeg and strace): issue 14's
# "no loop waits for ffmpeg". The camera's device path is missing at first, so pirec-camera serves
# the controller and retries the device from its loop; the probe of ffmpeg (two short ffmpeg runs,
# a few hundred ms) must not run there. It runs once, at the first start, before the loop.
# strace -f records every execve and every open of the device in one log, in the order they
# happened: each probe run (ffmpeg -version / -encoders) must come before the first successful
# open of the device, which a retry from the loop makes once the device is there. The code before
# the probe ran once probed at that retry, on the loop, and fails here. Then a session records
# from the device: every frame written has its row.
# Usage: sh scenario-late-camera.sh PIREC_BINARY_DIR    Prints a RESULT line; exit 0 = pass.
BIN=$1
NAME=pirec-camera-late-device
T=/tmp/late
DEV=/dev/video-late
rm -rf $T; mkdir -p $T/sessions; rm -f $DEV
say() { echo "  [late] $*"; }
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && sleep 1; rm -f $DEV; }
fail() { diag; echo "RESULT $NAME FAIL $*"; cleanup; exit 1; }
ctl() { timeout 20 "$BIN/pirec" "$@" --socket $T/control.sock; }
diag() {
	ctl status 2>&1 | sed 's/^/  [late] status: /'
	tail -15 $T/pirec.log | sed 's/^/  [late] log: /'
}

command -v strace > /dev/null || { echo "RESULT $NAME SKIP no strace in the guest"; exit 0; }
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

strace -f -qq -e trace=execve,openat -e signal=none -o $T/strace.log \
	"$BIN/pirec" record -c $T/pirec.conf --wait > $T/pirec.log 2>&1 &
PID=$!
i=0; while ! ctl status > /dev/null 2>&1; do
	i=$((i+1)); [ $i -gt 300 ] && { tail -20 $T/pirec.log; fail "pirec status does not answer after 30 s"; }
	kill -0 $PID 2>/dev/null || { tail -20 $T/pirec.log; PID=; fail "pirec record exited"; }
	sleep 0.1
done
# the camera has tried the missing device (and is now retrying it from its loop)
i=0; while ! grep -q "openat(.*\"$DEV\".*= -1 ENOENT" $T/strace.log; do
	i=$((i+1)); [ $i -gt 300 ] && fail "the camera never tried $DEV"; sleep 0.1
done
say "controller up, camera waiting for $DEV; the device appears now"
ln -s /dev/video0 $DEV
# the camera opens it at its next retry (1 s, doubling)
i=0; while ! grep -q "openat(.*\"$DEV\".*= [0-9]" $T/strace.log; do
	i=$((i+1)); [ $i -gt 300 ] && fail "the camera did not open $DEV within 30 s of its appearing"; sleep 0.1
done
say "the camera opened $DEV; a session"
ctl start > $T/start.txt 2>&1; r=$?
[ $r = 0 ] || { cat $T/start.txt; fail "pirec start exit $r"; }
sleep 3
ctl stop > $T/stop.txt 2>&1 || { cat $T/stop.txt; fail "pirec stop failed"; }
say "stopped; ending pirec record"
kill -TERM $PID
i=0; while kill -0 $PID 2>/dev/null; do
	i=$((i+1)); [ $i -gt 300 ] && fail "pirec record (under strace) did not end within 30 s of SIGTERM"; sleep 0.1
done
PID=
# strace passed the SIGTERM on to pirec record; the next scenario needs /dev/video0 free
# (the pattern is written so it does not match grep's own command line)
i=0; while grep -qs "late/pirec[.]conf" /proc/[0-9]*/cmdline; do
	i=$((i+1)); [ $i -gt 300 ] && fail "pirec record still running 30 s after SIGTERM"; sleep 0.1
done

# the order in the log: probe runs, then the first successful open of the device
awk -v dev="\"$DEV\"" '
	/execve\(/ && /ffmpeg/ && (/"-version"/ || /"-encoders"/) { probes++; if (opened) late++ }
	/openat\(/ && index($0, dev) && !/= -1 / { if (!opened) opened = NR }
	END { printf "%d %d %d\n", probes, late, opened }' $T/strace.log > $T/order.txt
read probes late opened < $T/order.txt
say "ffmpeg probe runs: $probes, after the device appeared: $late; device opened at log line $opened"
[ "$opened" -gt 0 ] || fail "the camera never opened $DEV (log: $(tail -3 $T/pirec.log))"
[ "$probes" -gt 0 ] || fail "no ffmpeg probe in the trace: the check cannot tell anything"
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
