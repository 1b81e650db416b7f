"""Sessions back to back under `pirec record --wait` start from clean recorder state: each names its
files t001.*, never t001_p1.* as if restarted mid-trial, and its counters count that session only
(issue 23 item 5). Also: `pirec note` takes
a text that begins with '-' (item 7), and pirec-remux leaves a live session alone (item 7)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from faultlib import rows_so_far, CAMERA, Recorder, check, check_camera_trial, check_notes, check_session_files, read_csv, wait_for, program  # noqa: E402



rec = Recorder(CAMERA, tag="sessions").start()
try:
    wait_for("notes and cam0 running", lambda: rec.modules_running(["notes", "cam0"]), 30)
    for i in range(3):
        d = rec.session()
        wait_for("frames in %s" % d, lambda: rows_so_far(d) >= 3, 30)
        if i == 0:
            rc, out, err = rec.cli("note", "-3 dB, left")
            check(rc == 0 and "saved" in out, "pirec note '-3 dB, left': exit %d, %s%s" % (rc, out, err))
            rec.noted.append((d, "-3 dB, left"))
            p = subprocess.run([program("pirec-remux"), d], capture_output=True, text=True, timeout=60)
            check(p.returncode == 1 and "live session" in p.stderr,
                  "pirec-remux on a live session: exit %d, %s" % (p.returncode, p.stderr))
            check(not os.path.exists(os.path.join(d, "cam0", "t001.mp4")), "pirec-remux wrote into a live session")
        rec.note("session %d" % i, d)
        stopped = rec.stop_session()
        # counters are the session's own, not the recorder process's since it started
        notes = stopped["modules"]["notes"]["counters"]["notes"]
        check(notes == (2 if i == 0 else 1), "session %d: notes counter %d" % (i + 1, notes))
        cam = stopped["modules"]["cam0"]["counters"]
        check(cam["frames_captured"] <= cam["frames_written"] + cam["drops"] + 45,
              "session %d: the camera counts %d frames captured for %d written" % (i + 1, cam["frames_captured"], cam["frames_written"]))
        names = sorted(os.listdir(os.path.join(d, "cam0")))
        check("t001.mkv" in names and not any("_p" in n for n in names),
              "session %d's camera files are %s, not t001.*" % (i + 1, names))
        check_session_files(d)
        check(check_camera_trial(d, "t001") > 0, "no frames in session %d" % (i + 1))
        check_notes(rec, d)
finally:
    rec.cleanup()
print("ok")
