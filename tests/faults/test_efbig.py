"""A file that grows past RLIMIT_FSIZE (EFBIG, no root needed) fails its writes the way a full disk
does: the recorder reports it and lives on (no SIGXFSZ death), the session's stop completes, and
the next session records every module again (issue 23 item 1: a failed stop used to leave the
camera 'already recording trial 1')."""
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(__file__))
from faultlib import rows_so_far, Recorder, check, check_camera_trial, check_notes, check_session_files, events, read_csv, wait_for  # noqa: E402

LIMIT = 384 * 1024  # bytes any one file of the process tree may reach


def limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))



# noisy frames at a low crf: the video reaches the limit within seconds
rec = Recorder("[camera.cam0]\nsource = lavfi\nlavfi = cellauto\nsize = 320x240\nfps = 15\n"
               "crf = 10\npreset = ultrafast\n", preexec=limit, tag="efbig")
rec.start()
try:
    wait_for("notes and cam0 running", lambda: rec.modules_running(["notes", "cam0"]), 30)
    d1 = rec.session("full")
    wait_for("the write error of cam0", lambda: any(r[3] == "error" and r[4] == "cam0" and "File too large" in r[5]
                                                    for r in events(d1)), 60)
    rec.note("after the error", d1)
    r = rec.stop_session()
    mods = rec.status()["modules"]
    check(mods["cam0"]["crashes"] == 0, "pirec-camera died at the file size limit: %s" % mods["cam0"])
    check(r["errors"] >= 1, "the stop reports no error: %s" % r)
    check_notes(rec, d1)

    d2 = rec.session("after")
    rec.note("next session", d2)
    wait_for("frames in the next session", lambda: rows_so_far(d2) >= 5, 30)
    rc, out, err = rec.cli("stop")
    check(rc == 0, "pirec stop: exit %d, %s%s" % (rc, out, err))
    check_session_files(d2)
    check(check_camera_trial(d2, "t001") >= 5, "the next session's camera recorded nothing")
    check_notes(rec, d2)
    check(not any(r[3] in ("error", "module_not_recording") for r in events(d2)),
          "the next session has errors: %s" % [r for r in events(d2) if r[3] == "error"])
finally:
    rec.cleanup()
print("ok")
