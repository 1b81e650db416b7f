"""SIGKILL at random moments (fixed seed, a bounded number of rounds): the notes recorder, the camera
recorder, the camera's encoder or the controller itself, mid-session while notes arrive. Then the
session is stopped (or, after the controller died, left as it is), pirec-remux runs on it, and
every file must parse (CSV with python's csv module, video with ffprobe), the camera's rows match
its packets, and every note answered "noted" is in notes.csv exactly once."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from faultlib import (CAMERA, Recorder, check, check_camera_trial, check_notes, check_session_files,  # noqa: E402
                      children_of, ffprobe_packets, program, read_csv, rng, rows_so_far, wait_for)

ROUNDS = int(os.environ.get("PIREC_FAULT_ROUNDS", "6"))
TARGETS = ["notes", "cam0", "encoder", "controller"]
r = rng("kill")


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def encoder_pid(rec):
    cam = rec.module_pid("cam0")
    # The encoder is a child of the recorder's spawn helper (pirec/spawner.h), itself a child of
    # the recorder; without the helper it is the recorder's own child.
    procs = children_of(cam)
    procs += [k for p in procs for k in children_of(p)]
    kids = [p for p in procs if b"ffmpeg" in open("/proc/%d/cmdline" % p, "rb").read()]
    return kids[0] if kids else None


def remux(d, unreadable_ok):
    p = subprocess.run([program("pirec-remux"), "--json", d], capture_output=True, text=True, timeout=120)
    check("live session" not in p.stderr, "pirec-remux takes %s for a live session: %s" % (d, p.stderr))
    check(p.returncode == 0 or unreadable_ok, "pirec-remux on %s: exit %d\n%s%s" % (d, p.returncode, p.stdout, p.stderr))
    return json.loads(p.stdout)


for rnd in range(ROUNDS):
    target = TARGETS[rnd % len(TARGETS)] if rnd < len(TARGETS) else r.choice(TARGETS)
    delay = r.uniform(0.3, 2.5)
    rec = Recorder(CAMERA, tag="kill")
    rec.start()
    try:
        wait_for("notes and cam0 running", lambda: rec.modules_running(["notes", "cam0"]), 30)
        d = rec.session()
        wait_for("the encoder", lambda: encoder_pid(rec), 30)
        pids = {"notes": rec.module_pid("notes"), "cam0": rec.module_pid("cam0"), "encoder": encoder_pid(rec),
                "controller": rec.proc.pid}
        t_kill = time.monotonic() + delay
        n = 0
        recent = set()
        while time.monotonic() < t_kill:
            text = "round %d note %d" % (rnd, n)
            rec.note(text, d)
            if t_kill - time.monotonic() < 0.5:
                recent.add(text)
            n += 1
            time.sleep(0.02)
        print("round %d: SIGKILL %s (pid %d) after %.2f s, %d notes" % (rnd, target, pids[target], delay, n))
        os.kill(pids[target], signal.SIGKILL)
        if target == "controller":
            rec.proc.wait(10)
            # its recorders see their stdin end and finish their files on their own
            wait_for("the recorders to finish after the controller died",
                     lambda: not alive(pids["notes"]) and not alive(pids["cam0"]), 30)
            # the spawn helper stops every recorder (stdin EOF, then SIGTERM): all their files may be cut,
            # and a note still in a pipe is lost; notes answered 0.5 s before the kill must be there
            cut = ("events", "clocks", "notes", "cam0")
            late = [x for x in rec.noted if x[0] == d and x[1] in recent]
            rec.noted = [x for x in rec.noted if x not in late]
        else:
            for k in range(20):
                rec.note("round %d after %d" % (rnd, k), d)
                time.sleep(0.02)
            if target in ("notes", "cam0"):
                wait_for("%s restarted" % target, lambda: rec.status()["modules"][target]["crashes"] >= 1 and
                         rec.modules_running(["notes", "cam0"]), 30)
            wait_for("frames after the kill", lambda: rows_so_far(d, "cam0/t001%s_frames.csv" %
                                                                   ("_p1" if target == "cam0" else "")) >= 3, 30)
            rec.stop_session()
            cut = (target,) if target in ("notes", "cam0") else ()
        check_session_files(d, cut_ok=cut)
        check_notes(rec, d)
        camera_killed = target in ("cam0", "controller")
        rows = check_camera_trial(d, "t001", killed=camera_killed)
        if target == "cam0" and os.path.exists(os.path.join(d, "cam0", "t001_p1_frames.csv")):
            check_camera_trial(d, "t001_p1")
        # A recorder killed before its first row reached the disk leaves a video without timing:
        # its encoder (the spawn helper's child) finishes the file on stdin EOF, and pirec-remux
        # reports the file it cannot time.
        summary = remux(d, unreadable_ok=rows is None or (camera_killed and rows == 0))
        # the controller killed: session.json never finalised, its controller gone: crashed;
        # any other kill: the session stopped cleanly, so it is finished (never called crashed)
        verdict = [s["state"] for s in summary.get("sessions", []) if s["dir"].rstrip("/") == d.rstrip("/")]
        want = "crashed" if target == "controller" else "finished"
        check(verdict == [want], "pirec-remux calls %s %s, want %s: %s" % (d, verdict, want, summary.get("sessions")))
        for f in summary.get("files", []):
            out = f.get("output")
            if not (out and out.endswith("t001.mp4")):
                continue
            if not rows:
                # killed before its first row reached the disk (seen under ASan at 0.33 s): no
                # timing, so no MP4; pirec-remux must say why rather than claim a file
                check(not f.get("ok") and f.get("error"), "pirec-remux claims '%s' from a trial without rows: %s"
                      % (out, f))
                continue
            packets = ffprobe_packets(out)
            check(packets is not None and packets > 0, "'%s' is not readable video" % out)
            if not camera_killed:
                check(packets == rows, "'%s' has %s packets for %d rows" % (out, packets, rows))
            else:
                check(packets <= rows, "'%s' has %s packets for %d rows" % (out, packets, rows))
        check(not rows or os.path.exists(os.path.join(d, "cam0", "t001.mp4")),
              "pirec-remux wrote no t001.mp4 in %s: %s" % (d, summary))
    finally:
        if os.environ.get("PIREC_FAULT_KEEP"):
            rec.close()
            print("kept", rec.tmp)
        else:
            rec.cleanup()
print("ok")
