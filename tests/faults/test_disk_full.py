"""The disk fills mid-session (a small tmpfs; needs root to mount): the recorders report it and
live on, and once space is freed the next session records every module (issue 23 item 1)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from faultlib import rows_so_far, Recorder, check, check_camera_trial, check_notes, check_session_files, events, read_csv, small_tmpfs, unmount, wait_for  # noqa: E402

mnt = small_tmpfs("6m", "diskfull")



# reserve = 0, min_free_time = 0: this test is about a disk that does fill (the low-space
# watchdog that prevents it is test_disk_budget.py's)
rec = Recorder("[storage]\nreserve = 0\nmin_free_time = 0\n[camera.cam0]\nsource = lavfi\nlavfi = cellauto\nsize = 320x240\nfps = 15\ncrf = 10\n"
               "preset = ultrafast\n", out_dir=os.path.join(mnt, "sessions"), tag="diskfull")
filler = os.path.join(mnt, "filler")
try:
    # leave about 384 KiB free: the camera fills it within seconds
    subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k", "count=90", "status=none"], check=True)
    rec.start()
    wait_for("notes and cam0 running", lambda: rec.modules_running(["notes", "cam0"]), 30)
    d1 = rec.session("full")
    wait_for("the disk-full error of cam0",
             lambda: any(r[4] == "cam0" and "No space left" in r[5] for r in events(d1)), 60)
    rec.note("while full", d1)
    rec.stop_session()
    check(rec.status()["modules"]["cam0"]["crashes"] == 0, "pirec-camera crashed on a full disk")

    os.unlink(filler)  # space freed: the next session must record everything
    d2 = rec.session("after")
    rec.note("after freeing space", d2)
    wait_for("frames in the session after freeing space", lambda: rows_so_far(d2) >= 5, 30)
    r = rec.stop_session()
    check(r["errors"] == 0, "the session after freeing space has errors: %s" % r)
    check_session_files(d2)
    check(check_camera_trial(d2, "t001") >= 5, "the camera recorded nothing after space was freed")
    check_notes(rec, d2)
    # the full session: every file parses whole (io/sink.c cuts back to whole rows) and every
    # frames-CSV row has its frame in the MKV (rows wait for their frames' writes)
    check(os.path.exists(os.path.join(d1, "session.json")), "the full session has no session.json")
    check_session_files(d1)
    check_camera_trial(d1, "t001")
finally:
    rec.cleanup()
    unmount(mnt)
print("ok")
