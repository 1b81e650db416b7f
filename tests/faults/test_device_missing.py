"""A missing camera is a state to wait in, not a crash (issue 23 item 6): pirec-camera stays up and
retries, status says what it waits for, a session started meanwhile says in the start's reply (exit
3), events.csv and session.json which module is not recording and why, the device that appears later
is picked up and joins the running trial; with [session] required the start fails instead."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from faultlib import free_port, program, rows_so_far, Recorder, check, check_camera_trial, check_session_files, events, manifest, read_csv, wait_for  # noqa: E402


def cam_counters(rec):
    return rec.status()["modules"]["cam0"].get("counters", {})



# The "device" is a video file that is not there yet: opening it fails with ENOENT as an unplugged
# camera's node does; once it exists it plays at its own rate (a file source is paced).
tmp_video_dir = None
rec = Recorder(tag="device")
video = os.path.join(rec.tmp, "camera.mkv")
rec.config = "[camera.cam0]\nsource = url\nurl = file://%s\nsize = 160x120\nfps = 15\n" % video
rec.start()
try:
    wait_for("cam0 waiting for its device",
             lambda: rec.modules_running(["notes", "cam0"]) and cam_counters(rec).get("device") == "waiting", 30)
    c = cam_counters(rec)
    check("No such file" in c.get("wait_reason", ""), "status gives no reason for the wait: %s" % c)
    wait_for("a second retry", lambda: cam_counters(rec).get("device_retries", 0) >= 2, 30)
    check(rec.status()["modules"]["cam0"]["crashes"] == 0, "pirec-camera crashed instead of waiting")

    rc, out, err = rec.cli("start")
    check(rc == 3 and "'cam0' is not recording" in err, "pirec start: exit %d, %s%s" % (rc, out, err))
    d = out.split()[1].rstrip(",")
    st = rec.status()
    check("waiting for the device" in st["modules"]["cam0"].get("not_recording", ""), "status: %s" % st["modules"]["cam0"])
    wait_for("events.csv saying why cam0 is not recording",
             lambda: any(r[3] == "module_not_recording" and r[4] == "cam0" and "No such file" in r[5] for r in events(d)), 10)
    # session.json is rewritten at trial changes, errors and every few seconds: read the final one

    # plugged in: the camera finds it on its next retry and joins trial 1 (as t001, its first file)
    part = video + ".part"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=15", "-t", "30",
                    "-c:v", "mjpeg", "-f", "matroska", part], check=True, timeout=120)
    os.rename(part, video)
    wait_for("cam0 joining the trial", lambda: any(r[3] == "module_recording" and r[4] == "cam0" for r in events(d)), 40)
    wait_for("frames from the late device", lambda: rows_so_far(d) >= 5, 30)
    r = rec.stop_session()
    nr = manifest(d)["modules"]["cam0"].get("not_recording", {})
    check(nr.get("trial") == 1 and "No such file" in nr.get("reason", ""), "session.json: %s" % nr)
    check_session_files(d)
    check(check_camera_trial(d, "t001") >= 5, "the late device's frames are not in t001")
finally:
    rec.cleanup()

# The eye tracker (a network device) that is not there at the start: it takes the trial and waits in
# it; the start says it is not recording; when the device comes up (pirec-eyesim on the configured
# ports) it records into the same t001 files and events.csv says it joined.
if os.access(program("pirec-eyetracker"), os.X_OK) and os.access(program("pirec-eyesim"), os.X_OK):
    http, rtsp = free_port(), free_port()
    rec = Recorder("[eyetracker]\nenabled = true\naddress = 127.0.0.1:%d\nrtsp_port = %d\n"
                   "reconnect_min = 100ms\nreconnect_max = 500ms\n" % (http, rtsp), tag="eyedevice")
    rec.start()
    sim = None
    try:
        wait_for("notes and eyetracker running", lambda: rec.modules_running(["notes", "eyetracker"]), 30)
        rc, out, err = rec.cli("start")
        check(rc == 3 and "'eyetracker' is not recording: waiting for the eye tracker" in err,
              "pirec start without the eye tracker: exit %d, %s%s" % (rc, out, err))
        d = out.split()[1].rstrip(",")
        sim = subprocess.Popen([program("pirec-eyesim"), "--http-port", str(http), "--rtsp-port", str(rtsp),
                                "--gaze-hz", "200", "--fps", "15"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("the eye tracker joining", lambda: any(r[3] == "module_recording" and r[4] == "eyetracker"
                                                        for r in events(d)), 40)
        wait_for("gaze rows", lambda: rows_so_far(d, "eyetracker/t001_gaze.csv") >= 50, 30)
        rec.stop_session()
        check_session_files(d)
        nr = manifest(d)["modules"]["eyetracker"].get("not_recording", {})
        check("waiting for the eye tracker" in nr.get("reason", ""), "session.json: %s" % nr)
    finally:
        if sim:
            sim.terminate()
            sim.wait(10)
        rec.cleanup()

# A GPIO chip that is not there: the line waits (status), the session says so, and required fails.
rec = Recorder("[gpio.pedal]\nchip = gpiochip-pirec-test-none\nline = 3\naction = toggle\n", tag="gpiochip")
rec.start()
try:
    g = rec.status()["gpio"].get("pedal")
    if g is None:
        print("note: no GPIO line waits (a build without libgpiod refuses [gpio.*] outright): part skipped")
        raise StopIteration
    check(g.get("state") == "waiting" and "No such file" in g.get("reason", ""), "gpio status: %s" % g)
    rc, out, err = rec.cli("start")
    check(rc == 3 and "'gpio.pedal' is not recording: waiting for the chip" in err, "pirec start: exit %d, %s%s" % (rc, out, err))
    d = out.split()[1].rstrip(",")
    wait_for("events.csv naming the waiting line",
             lambda: any(r[3] == "module_not_recording" and r[4] == "gpio.pedal" for r in events(d)), 10)
    rec.stop_session()
    rec.close()
    rec.start("required = gpio.pedal\n")
    rc, out, err = rec.cli("start")
    check(rc == 1 and "required module cannot record: gpio.pedal" in err, "pirec start, gpio.pedal required: exit %d, %s%s" % (rc, out, err))
    rec.close()
    rec.start("required = gpio.pedal\nif_required_missing = warn\n")
    rc, out, err = rec.cli("start")
    check(rc == 3 and "'gpio.pedal' is not recording" in err, "pirec start, required with warn: exit %d, %s%s" % (rc, out, err))
    d = out.split()[1].rstrip(",")
    wait_for("the required_missing row", lambda: any(r[3] == "required_missing" for r in events(d)), 10)
    rec.stop_session()
except StopIteration:
    pass
finally:
    rec.cleanup()

# [session] required: the same missing device (a V4L2 node this time) makes the start fail.
rec = Recorder("[camera.cam0]\nsource = v4l2\ndevice = /dev/pirec-test-no-such-video\n", tag="required")
rec.start("required = cam0, notes\n")
try:
    wait_for("cam0 waiting for its device",
             lambda: rec.modules_running(["notes", "cam0"]) and cam_counters(rec).get("device") == "waiting", 30)
    rc, out, err = rec.cli("start")
    check(rc == 1 and "required module cannot record: cam0" in err, "pirec start with cam0 required: exit %d, %s%s" % (rc, out, err))
    check(rec.status()["state"] == "idle", "a failed start left a session running")
    sessions = os.listdir(rec.out)
    check(len(sessions) == 1, "expected the failed start's session directory, found %s" % sessions)
    m = manifest(os.path.join(rec.out, sessions[0]))
    check(m["final"] and any("required module" in e.get("message", "") for e in m["errors"]), "session.json: %s" % m["errors"])
    check(rec.status()["modules"]["cam0"]["crashes"] == 0, "pirec-camera crashed")
finally:
    rec.cleanup()
print("ok")
