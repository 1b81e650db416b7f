#!/bin/sh
# tests/hw/scenario-record.sh — the controller-level acceptance, inside the VM (busybox sh):
# `pirec record --wait` with a [gpio.start] toggle trigger and a [gpio.led] recording LED on a
# gpio-sim chip, and a camera on vivid's /dev/video0 (notes where no ffmpeg runs). A gpio-sim edge starts a session, the next
# one stops it; events.csv carries the edges' kernel timestamps; the LED (read back from
# gpio-sim's sysfs value) follows the recording state.
# Usage: sh scenario-record.sh PIREC_BINARY_DIR API    Prints a RESULT line; exit 0 = pass.
BIN=$1
NAME=pirec-record-gpio-${2:-v1}
T=/tmp/scenario
CFG=/sys/kernel/config/gpio-sim/pirec-record
rm -rf $T; mkdir -p $T/sessions
say() { echo "  [record] $*"; }
fail() { echo "RESULT $NAME FAIL $*"; cleanup; exit 1; }
cleanup() {
	[ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && sleep 1
	echo 0 > $CFG/live 2>/dev/null
	rmdir $CFG/bank0/line0 $CFG/bank0/line1 $CFG/bank0 $CFG 2>/dev/null
}

# a chip with two named lines: the trigger and the LED
mkdir $CFG $CFG/bank0 $CFG/bank0/line0 $CFG/bank0/line1 || fail "cannot create a gpio-sim chip"
echo 4 > $CFG/bank0/num_lines
echo pirec-record-sim > $CFG/bank0/label
echo rec-button > $CFG/bank0/line0/name
echo rec-led > $CFG/bank0/line1/name
echo 1 > $CFG/live || fail "gpio-sim chip did not go live"
SYS=/sys/devices/platform/$(cat $CFG/dev_name)/$(cat $CFG/bank0/chip_name)
PULL=$SYS/sim_gpio0/pull
LED=$SYS/sim_gpio1/value
echo pull-down > $PULL

# the recorders: a camera on vivid where ffmpeg (its encoder) runs, operator notes otherwise
# (the arm64 guest has no arm64 ffmpeg)
if ffmpeg -version > /dev/null 2>&1; then
	MODULES="[camera.cam]
source = v4l2
device = /dev/video0
size = 320x240
fps = 30
[notes]
enabled = false"
else
	MODULES="[notes]
enabled = true"
fi
cat > $T/pirec.conf <<EOF
[session]
output_dir = $T/sessions
remux_after = false
[control]
socket = $T/control.sock
$MODULES
[gpio.start]
chip = pirec-record-sim
line = rec-button
direction = input
edge = rising
action = toggle
debounce = 0
[gpio.led]
chip = auto
line = rec-led
direction = output
role = led
EOF

"$BIN/pirec" record -c $T/pirec.conf --wait > $T/pirec.log 2>&1 &
PID=$!
i=0; while [ ! -S $T/control.sock ]; do
	i=$((i+1)); [ $i -gt 300 ] && { cat $T/pirec.log; fail "no control socket after 30 s"; }
	kill -0 $PID 2>/dev/null || { cat $T/pirec.log; PID=; fail "pirec record exited"; }
	sleep 0.1
done
# like an operator: press the button once the recorder answers on its socket
wait_status() { "$BIN/pirec" status --socket $T/control.sock > $T/status.txt 2>&1; }
i=0; while ! wait_status; do i=$((i+1)); [ $i -gt 100 ] && fail "pirec status does not answer"; sleep 0.1; done
say "controller up (waiting), LED=$(cat $LED)"
[ "$(cat $LED)" = 0 ] || fail "LED on before any session"

# wait_for CMD...: up to 10 s
wait_for() { i=0; while ! "$@"; do i=$((i+1)); [ $i -gt 100 ] && return 1; sleep 0.1; done; }
led_is() { [ "$(cat $LED)" = "$1" ]; }
session_dir() { ls -d $T/sessions/*/ 2>/dev/null | head -1; }
has_session() { [ -n "$(session_dir)" ]; }

echo pull-up > $PULL                          # edge 1: start
diag() {
	say "input line value $(cat $SYS/sim_gpio0/value), gpio-sim interrupts: $(grep -i gpio-sim /proc/interrupts | tr -s ' ' | tr '\n' ';')"
	"$BIN/pirec" status --socket $T/control.sock 2>&1 | sed 's/^/  [record] status: /'
	sed 's/^/  [record] log: /' $T/pirec.log
}
wait_for has_session || { diag; fail "edge 1 did not start a session"; }
wait_for led_is 1 || fail "LED did not turn on with the session"
say "session $(session_dir) started, LED=$(cat $LED)"
sleep 3                                       # record a little
echo pull-down > $PULL; sleep 0.2             # (falling edge: not requested)
echo pull-up > $PULL                          # edge 2: stop
wait_for led_is 0 || fail "LED still on after the second edge"
say "second edge: LED=$(cat $LED)"
sleep 1
"$BIN/pirec" status --socket $T/control.sock 2>&1 | sed 's/^/  [record] status: /'
kill -TERM $PID; wait $PID; rc=$?; PID=
say "pirec record exit $rc"
cat $T/pirec.log | tail -5 | sed 's/^/  [record] log: /'
D=$(session_dir)
[ -f "$D/events.csv" ] || fail "no events.csv in $D"
sed 's/^/  [record] events.csv: /' "$D/events.csv"
n=$(grep -c ',gpio_edge,gpio.start,' "$D/events.csv")
[ "$n" -eq 2 ] || fail "events.csv has $n gpio_edge rows for gpio.start, expected the two edges"
# the rows carry the kernel's timestamps: the first edge happened before the session it started
# (its mono_ns is older than session_start's), the second before session_stop
awk -F, '$4=="gpio_edge"{e[++n]=$2} $4=="session_start"{s=$2} $4=="session_stop"{t=$2}
	END{exit !(n==2 && e[1]>0 && e[1]<=s && e[2]>e[1] && e[2]<=t)}' "$D/events.csv" \
	|| fail "gpio_edge timestamps are not the edges' (before session_start / session_stop)"
ls -R "$D" | sed 's/^/  [record] /' | head -20
cleanup
echo "RESULT $NAME PASS two gpio-sim edges started and stopped a session; LED followed; events.csv has both edges with kernel timestamps"
