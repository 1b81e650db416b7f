#!/bin/sh
# tests/hw/scenario-audio.sh APPS_DIR — runs INSIDE the VM (tests/hw/guest.sh), amd64: pirec-audio
# on snd-aloop, the kernel's loopback sound card (a real ALSA driver, paced by the kernel's timer).
# aplay plays 8 s of clicks, one every second, into hw:Loopback,0,0; pirec-audio records
# hw:Loopback,1,0, and is stopped (SIGSTOP) for 0.5 s in the middle so the device overruns. Clicks
# with no loss between them must lie a whole number of seconds of frames apart exactly, and on the
# blocks' device_ts_ns within 5 ms; the overrun must be counted, and the frames the row after the
# stall says were lost must match the host clock's gap within 50 ms. Not checked: clicks across
# the overrun (snd-aloop realigns its capture with the playback when the capture restarts, so the
# signal itself jumps there) and 1 ms timing (aloop's pointer moves on jiffies).
APPS=$1
SHARE=${2:-}
W=/tmp/audio-aloop
result() { echo "RESULT $1 $2 $3"; }
if ! ls /dev/snd/pcmC*D1c >/dev/null 2>&1; then
	result pirec-audio-aloop FAIL "snd-aloop did not load: no /dev/snd/pcmC*D1c ($(ls /dev/snd 2>&1 | tr '\n' ' '))"
	exit 1
fi
rm -rf "$W"; mkdir -p "$W"
t0=$(cut -d' ' -f1 /proc/uptime)
python3 - "$W/clicks.wav" <<'EOF' || { result pirec-audio-aloop FAIL "cannot write the clicks"; exit 1; }
import struct, sys, wave
rate, secs = 48000, 8
pcm = bytearray(rate * secs * 2)
for k in range(secs):
    start = rate // 2 + k * rate
    for i in range(48):  # 1 ms at full scale / 2
        struct.pack_into("<h", pcm, (start + i) * 2, 16000)
w = wave.open(sys.argv[1], "wb")
w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate); w.writeframes(bytes(pcm)); w.close()
EOF
"$APPS/pirec-audio" -D hw:Loopback,1,0 --rate 48000 --channels 1 --period-ms 10 --duration 7.5 \
	--out "$W" 2>"$W/stderr" &
rec=$!
sleep 0.5
aplay -q -D hw:Loopback,0,0 "$W/clicks.wav" 2>"$W/aplay.err" &
play=$!
sleep 3
kill -STOP $rec; sleep 0.5; kill -CONT $rec
wait $rec; rrc=$?
wait $play
cat "$W/stderr"
# kept in the share for a look after a failure
[ -n "${SHARE:-}" ] && rm -rf "$SHARE/audio-aloop" && cp -r "$W" "$SHARE/audio-aloop"
if [ $rrc != 0 ]; then result pirec-audio-aloop FAIL "pirec-audio exit $rrc"; exit 1; fi
python3 - "$W/t001_audio.wav" "$W/t001_audio_blocks.csv" "$W/stderr" "$t0" <<'EOF'
import array, csv, re, sys, wave
wav, rows_path, err = sys.argv[1:4]
t0 = float(sys.argv[4])
rate = 48000
w = wave.open(wav)
s = array.array("h", w.readframes(w.getnframes()))
rows = list(csv.DictReader(open(rows_path)))
num = lambda r, k: int(r[k])
clicks = [i for i in range(1, len(s)) if s[i] > 8000 and s[i - 1] <= 8000]
placed, lost, r = [], 0, 0
for c in clicks:
    while r < len(rows) and num(rows[r], "first_frame") + num(rows[r], "frames") <= c:
        r += 1
        if r < len(rows):
            lost += num(rows[r], "dropped_before")
    row = rows[r]
    t = num(row, "device_ts_ns") + (c - num(row, "first_frame")) * 10**9 // rate
    placed.append((t, c + lost, r, num(row, "mono_ns")))
bad, pairs = [], 0
# clicks with no loss between them: exactly a whole number of seconds of frames apart, and on
# the device clock within 5 ms (aloop moves its pointer on jiffies: 4 ms steps at HZ=250)
for (t1, p1, r1, _), (t2, p2, r2, m2) in zip(placed, placed[1:]):
    if m2 < t2:
        bad.append("a block received before its click was captured")
    if any(num(x, "dropped_before") for x in rows[r1 + 1:r2 + 1]):
        continue
    pairs += 1
    k = round((p2 - p1) / rate)
    if k < 1 or abs(p2 - p1 - k * rate) > 2 or abs(t2 - t1 - k * 10**9) > 5 * 10**6:
        bad.append("%d s apart: %d frames, %.3f ms" % (k, p2 - p1, (t2 - t1) / 1e6))
# the stall: the frames the row after it says were lost against the host's clock across it
# (block arrival times jitter by tens of ms under TCG, so within 50 ms of a 500 ms stall)
g = max(range(1, len(rows)), key=lambda i: num(rows[i], "dropped_before"))
lost_ms = num(rows[g], "dropped_before") * 1000 / rate
host_ms = (num(rows[g], "mono_ns") - num(rows[g - 1], "mono_ns")) / 1e6 - num(rows[g], "frames") * 1000 / rate
if abs(lost_ms - host_ms) > 50:
    bad.append("the stall lost %.1f ms by dropped_before, %.1f ms by the host's clock" % (lost_ms, host_ms))
xruns = int(re.search(r"(\d+) xruns", open(err).read()).group(1))
ok = pairs >= 3 and not bad and xruns >= 1 and lost_ms >= 400
print("RESULT pirec-audio-aloop %s %d click pairs whole seconds apart (frames exact, device time within "
      "5 ms); stall %.1f ms lost by dropped_before, %.1f ms by the host clock; %d xruns; %.1f s%s"
      % ("PASS" if ok else "FAIL", pairs, lost_ms, host_ms, xruns,
         float(open("/proc/uptime").read().split()[0]) - t0, ("; " + "; ".join(bad[:3])) if bad else ""))
sys.exit(0 if ok else 1)
EOF
