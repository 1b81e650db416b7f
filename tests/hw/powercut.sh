#!/usr/bin/env bash
# tests/hw/powercut.sh — the power-cut test (issue 23): records onto the VM's virtio disk, cuts the
# VM's power (SIGKILL of qemu) at a moment drawn from each seed, boots again, runs pirec-remux on the
# session inside, and checks on the host:
#   - every CSV parses (Python's csv; a last line without its newline is a row the cut interrupted)
#     and every MKV opens in ffprobe;
#   - nothing older than one fsync_interval (1 s) before the cut is missing: each CSV's last whole
#     row is at most 1 s (+ one GOP, 2 s, for the encoded camera; + 0.3 s for the heartbeat's and
#     the notes' own period) before the guest's last heartbeat;
#   - pirec-remux --json reports the session as crashed (session.json not final, its controller gone
#     with an earlier boot) with the loss its files show, and recovers every file.
# Prints one line per stream with its loss window (cut - last row on disk) and a RESULT line.
# Usage: tests/hw/powercut.sh [SEEDS...]   (default 1 2 3); env as tests/hw/vm.sh, needs the
# amd64 v1 build tree in $PIREC_HW_WORK/share (scripts/ci-hw makes it).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${PIREC_HW_WORK:-/var/tmp/pirec-hw}
SHARE=$WORK/share
IMG=$WORK/powercut.img
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
[ -x "$SHARE/build-amd64-v1/apps/pirec-remux" ] || { echo "RESULT powercut SKIP no $SHARE/build-amd64-v1/apps/pirec-remux"; exit 0; }
command -v mkfs.ext4 >/dev/null || { echo "RESULT powercut SKIP no mkfs.ext4"; exit 0; }
fail=0
for seed in "${seeds[@]}"; do
	T0=$(date +%s)
	# 1.0 to 4.9 s of recording after the camera's first rows, from the seed
	cut_after=$(awk -v s="$seed" 'BEGIN{srand(s); printf "%.1f", 1 + rand() * 3.9}')
	rm -f "$IMG"; truncate -s 256M "$IMG"; mkfs.ext4 -q -F "$IMG"
	rm -f "$SHARE/powercut-heartbeat" "$SHARE/powercut-notes"
	echo record > "$SHARE/powercut-phase"
	PIREC_HW_DISK=$IMG PIREC_HW_CUT_AFTER=$cut_after "$HERE/vm.sh" amd64 > "$WORK/powercut-$seed-record.log" 2>&1
	cut=$(cat "$SHARE/powercut-heartbeat" 2>/dev/null)
	if [ -z "$cut" ] || ! grep -q "power cut" "$WORK/powercut-$seed-record.log"; then
		echo "RESULT powercut-$seed FAIL the recording boot did not reach the cut"; tail -30 "$WORK/powercut-$seed-record.log"
		fail=1; continue
	fi
	echo check > "$SHARE/powercut-phase"
	PIREC_HW_DISK=$IMG "$HERE/vm.sh" amd64 > "$WORK/powercut-$seed-check.log" 2>&1
	rm -f "$SHARE/powercut-phase"
	python3 - "$SHARE/powercut-out" "$cut" "$seed" "$cut_after" "$SHARE/powercut-notes" <<'PY' || fail=1
import csv, glob, json, os, subprocess, sys
out, cut_s, seed, after, noted = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
cut = int(cut_s * 1e9)
bad = []
sess = f"{out}/session"
if not os.path.isdir(sess):
    print(f"RESULT powercut-{seed} FAIL no session copied back"); sys.exit(1)
windows = {}
for c in sorted(glob.glob(f"{sess}/**/*.csv", recursive=True)):
    data = open(c, newline="", encoding="utf-8").read()
    if data and not data.endswith("\n"):
        data = data[: data.rfind("\n") + 1]
    rows = list(csv.reader(data.splitlines(keepends=True)))
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        bad.append(f"{c}: does not parse"); continue
    if len(rows) < 2 or "mono_ns" not in rows[0]:
        continue
    k = rows[0].index("mono_ns")
    last = max(int(r[k]) for r in rows[1:] if r[k])
    name = os.path.relpath(c, sess)
    windows[name] = (cut - last) / 1e9
    allowed = 1.0 + 0.3 + (2.0 if name.endswith("_frames.csv") else 0.0)
    if name in ("events.csv", "clocks.csv", "notes.csv"):
        continue  # rows at moments of their own (events, a clock row per interval; notes below)
    if windows[name] > allowed:
        bad.append(f"{name}: last row {windows[name]:.3f} s before the cut (allowed {allowed:.1f} s)")
# Every note answered "saved" more than one fsync_interval (+ the heartbeat's 0.1 s) before the cut
# is in notes.csv.
texts = set()
if os.path.exists(f"{sess}/notes.csv"):
    data = open(f"{sess}/notes.csv", newline="", encoding="utf-8").read()
    texts = {r[-1] for r in csv.reader(data[: data.rfind("\n") + 1].splitlines(keepends=True)) if r}
answered = [l.split() for l in open(noted)] if os.path.exists(noted) else []
old = [i for i, t in answered if float(t) < cut_s - 1.1]
missing = [i for i in old if f"powercut note {i}" not in texts]
if missing:
    bad.append(f"notes.csv lacks {len(missing)} notes answered over 1.1 s before the cut (first: {missing[0]})")
if answered:
    kept = [float(t) for i, t in answered if f"powercut note {i}" in texts]
    windows["notes (answered)"] = cut_s - max(kept) if kept else None
# The video: the last packet on disk, as a capture time (pts is relative to the trial's first row).
for c in glob.glob(f"{sess}/**/*_frames.csv", recursive=True):
    m = c[: -len("_frames.csv")] + ".mkv"
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
                        "-of", "csv=p=0", m], capture_output=True, text=True)
    pts = [float(x) for x in r.stdout.split() if x and x != "N/A"]
    rows = list(csv.reader(open(c, newline="", encoding="utf-8")))
    if pts and len(rows) > 1:
        first = int(rows[1][rows[0].index("mono_ns")])
        windows[os.path.relpath(m, sess)] = cut_s - (first / 1e9 + max(pts))
        if windows[os.path.relpath(m, sess)] > 3.3:
            bad.append(f"{m}: last frame {windows[os.path.relpath(m, sess)]:.3f} s before the cut (allowed 3.3 s)")
for m in glob.glob(f"{sess}/**/*.mkv", recursive=True):
    if subprocess.run(["ffprobe", "-v", "error", m], capture_output=True).returncode != 0 and os.path.getsize(m) > 0:
        bad.append(f"{m}: ffprobe cannot open it")
# pirec-remux's verdict on the session (not the per-file "recovered"): crashed, because its
# session.json was never finalised and its controller died with the power (an earlier boot).
try:
    report = json.load(open(f"{out}/remux.json"))
except (OSError, ValueError) as e:
    report = {}
    bad.append(f"pirec-remux --json gave no report: {e}")
verdicts = report.get("sessions", [])
if [v.get("state") for v in verdicts] != ["crashed"]:
    bad.append("pirec-remux did not report the session as crashed: " + json.dumps(verdicts)[:400])
else:
    v = verdicts[0]
    windows["remux verdict"] = f"crashed ({v['reason']}): cut {v['rows_cut']} rows without data, " \
        f"{v['packets_cut']} frames without a row, {v['partial_rows']} partial lines, {v['failed']} files failed"
    if v["failed"]:
        bad.append(f"pirec-remux failed {v['failed']} of the crashed session's files")
print(f"powercut seed {seed}: cut {after} s into the recording; loss window per stream (s): " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in windows.items()}))
for b in bad:
    print(f"powercut seed {seed}: {b}")
print(f"RESULT powercut-{seed} {'FAIL' if bad else 'PASS'}")
sys.exit(1 if bad else 0)
PY
	echo "powercut seed $seed: two boots in $(( $(date +%s) - T0 )) s"
done
rm -f "$IMG" "$SHARE/powercut-phase"
exit $fail
