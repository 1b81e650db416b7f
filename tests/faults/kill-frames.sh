#!/usr/bin/env bash
# Every row on disk has its frame on disk (issue 23, item 4): records with the camera (lavfi,
# libx264 child) and the eye tracker against pirec-eyesim, SIGKILLs the controller, the recorders
# and the encoder all at once at a moment drawn from a fixed seed, then checks each *_frames.csv
# against its MKV: ffprobe must find at least as many packets as the CSV has whole rows (a kill can
# leave a frame without its row, never a row without its frame), and every CSV parses.
# usage: kill-frames.sh BUILD_DIR [ROUNDS]
set -euo pipefail
build=$(cd "$1" && pwd)
rounds=${2:-3}
apps=$build/apps
for b in pirec pirec-camera pirec-eyetracker pirec-eyesim; do
  if [[ ! -x $apps/$b ]]; then echo "kill-frames: skipped: $apps/$b is not built"; exit 77; fi
done
command -v ffprobe >/dev/null || { echo "kill-frames: skipped: no ffprobe"; exit 77; }
command -v python3 >/dev/null || { echo "kill-frames: skipped: no python3 (the CSV reader)"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/pirec-kill-frames.XXXXXX")
simpid= pgid=
cleanup() {
  [[ -n $pgid ]] && kill -KILL -- "-$pgid" 2>/dev/null || true
  [[ -n $simpid ]] && kill -TERM "$simpid" 2>/dev/null && wait "$simpid" 2>/dev/null || true
  [[ ${keep:-0} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT

"$apps/pirec-eyesim" --host 127.0.0.1 --gaze-hz 200 --fps 30 >"$work/eyesim.out" 2>"$work/eyesim.log" &
simpid=$!
for _ in $(seq 1 100); do
  ports=$(sed -n 's/^pirec-eyesim http=\([0-9]*\) rtsp=\([0-9]*\).*/\1 \2/p' "$work/eyesim.out")
  [[ -n $ports ]] && break
  sleep 0.1
done
[[ -n $ports ]] || { echo "kill-frames: pirec-eyesim printed no ports"; exit 1; }
read -r http rtsp <<<"$ports"

# The loss window of a CSV: the kill's time minus its last whole row's mono_ns, in ms.
window_ms() {
  python3 - "$1" "$2" <<'PY'
import csv, sys
data = open(sys.argv[1], newline="", encoding="utf-8").read()
data = data[: data.rfind("\n") + 1]
rows = list(csv.reader(data.splitlines(keepends=True)))
k = rows[0].index("mono_ns")
last = max((int(r[k]) for r in rows[1:] if r[k]), default=None)
print("none" if last is None else f"{(int(sys.argv[2]) - last) / 1e6:.1f}")
PY
}

# Whole rows of a CSV (a last line without its newline is a row cut by the kill) and a parse check.
csv_rows() {
  python3 - "$1" <<'PY'
import csv, sys
data = open(sys.argv[1], newline="", encoding="utf-8").read()
if not data.endswith("\n"):
    data = data[: data.rfind("\n") + 1]
rows = list(csv.reader(data.splitlines(keepends=True)))
width = len(rows[0])
bad = [i + 1 for i, r in enumerate(rows) if len(r) != width]
if bad:
    sys.exit(f"{sys.argv[1]}: line {bad[0]} has the wrong number of fields")
print(len(rows) - 1)
PY
}

RANDOM=23
fail=0
for round in $(seq 1 "$rounds"); do
  out=$work/sessions-$round
  sock=$work/control-$round.sock
  cfg=$work/pirec-$round.conf
  cat >"$cfg" <<EOF2
[session]
output_dir = $out
remux_after = false
[control]
socket = $sock
[camera.cam]
source = lavfi
lavfi = testsrc2
size = 320x240
fps = 30
preset = ultrafast
[eyetracker]
enabled = true
address = 127.0.0.1:$http
rtsp_port = $rtsp
EOF2
  setsid "$apps/pirec" record -c "$cfg" --label kill >"$work/pirec-$round.log" 2>&1 &
  pgid=$!
  # Wait until both videos have rows, then a further 0.5..3.5 s from the seed.
  waited=0
  for _ in $(seq 1 300); do
    a=$(cat "$out"/*/cam/t001_frames.csv 2>/dev/null | wc -l || true)
    b=$(cat "$out"/*/eyetracker/t001_scene_frames.csv 2>/dev/null | wc -l || true)
    [[ $a -gt 20 && $b -gt 20 ]] && break
    sleep 0.1
    waited=$((waited + 100))
  done
  echo "kill-frames: round $round: both videos had rows after ${waited} ms (camera $a lines, scene $b)"
  delay=$(( (RANDOM % 3000) + 500 ))
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  # the kill and its CLOCK_MONOTONIC (the clock of every mono_ns column) in one process
  cut=$(python3 -c 'import os, sys, time; t = time.monotonic_ns(); os.killpg(int(sys.argv[1]), 9); print(t)' "$pgid")
  wait "$pgid" 2>/dev/null || true
  pgid=
  sleep 0.2 # the children are in the same group: give the kernel a moment to reap them all
  for csvf in "$out"/*/*/*_frames.csv; do
    mkv=${csvf%_frames.csv}.mkv
    rows=$(csv_rows "$csvf") || { fail=1; continue; }
    packets=$(ffprobe -v quiet -select_streams v:0 -count_packets -show_entries stream=nb_read_packets \
      -of default=nokey=1:noprint_wrappers=1 "$mkv" 2>/dev/null || echo 0)
    packets=${packets:-0}
    echo "kill-frames: round $round (kill after ${delay} ms): ${csvf#"$out"/} rows $rows, ${mkv##*/} packets $packets, last row $(window_ms "$csvf" "$cut") ms before the kill"
    if (( packets < rows )); then
      echo "kill-frames: FAIL: $(( rows - packets )) rows of ${csvf#"$out"/} have no frame in the MKV"
      fail=1
    fi
  done
  for c in "$out"/*/*.csv "$out"/*/*/*.csv; do [[ -e $c ]] && { csv_rows "$c" >/dev/null || fail=1; }; done
  for c in "$out"/*/*/*_gaze.csv; do
    [[ -e $c ]] && echo "kill-frames: round $round: ${c#"$out"/} last row $(window_ms "$c" "$cut") ms before the kill"
  done
done
if (( fail )); then keep=1; echo "kill-frames: files kept in $work"; exit 1; fi
echo "kill-frames: every row has its frame after $rounds kills"
