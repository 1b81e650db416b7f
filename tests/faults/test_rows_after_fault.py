"""After a write error every frames-CSV row has its frame (issue 23: a frame still in the video
sink's ring when the file could grow no more used to lose its bytes while its row landed). EFBIG
through RLIMIT_FSIZE (no root needed) stops the camera's MKV and the eye tracker's scene MKV
mid-trial; then ffprobe's packet count equals the rows of each frames CSV, and the frames whose
writes failed are counted: the camera's in session.json's dropped_after (with a frames_lost_after
row in events.csv), the eye tracker's in its scene stream's dropped_after. Runs three sessions, so a
frame caught in a failing write is met more than once."""
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from faultlib import free_port, Recorder, check, events, ffprobe_packets, manifest, program, read_csv, skip, wait_for  # noqa: E402

LIMIT = 256 * 1024


def limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))




def pair(d, video, csv_name):
    """(packets, rows) of a video and its frames CSV in session d."""
    _, rows = read_csv(os.path.join(d, csv_name))
    packets = ffprobe_packets(os.path.join(d, video))
    check(packets is not None, "ffprobe cannot read '%s'" % os.path.join(d, video))
    return packets, len(rows)


if not (os.access(program("pirec-eyetracker"), os.X_OK) and os.access(program("pirec-eyesim"), os.X_OK)):
    skip("pirec-eyetracker or pirec-eyesim is not built")
http, rtsp = free_port(), free_port()
# the simulator's scene at 640x480 (noise-free testsrc, a few KB a frame) reaches the limit in
# seconds, before the gaze file does
sim = subprocess.Popen([program("pirec-eyesim"), "--http-port", str(http), "--rtsp-port", str(rtsp),
                        "--gaze-hz", "100", "--fps", "30", "--size", "640x480"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
rec = Recorder("[camera.cam0]\nsource = lavfi\nlavfi = cellauto\nsize = 320x240\nfps = 30\ncrf = 10\n"
               "preset = ultrafast\n[eyetracker]\nenabled = true\naddress = 127.0.0.1:%d\nrtsp_port = %d\n"
               % (http, rtsp), preexec=limit, tag="rowsfault")
try:
    rec.start()
    wait_for("notes, cam0 and eyetracker running",
             lambda: rec.modules_running(["notes", "cam0", "eyetracker"]), 30)
    after_cam = after_scene = 0
    for i in range(3):
        d = rec.session("efbig%d" % i)
        wait_for("the write errors of cam0 and the scene video",
                 lambda: any(r[4] == "cam0" and "File too large" in r[5] for r in events(d)) and
                 any(r[4] == "eyetracker" and "_scene.mkv" in r[5] and "File too large" in r[5]
                     for r in events(d)), 60)
        rec.stop_session()
        p, n = pair(d, "cam0/t001.mkv", "cam0/t001_frames.csv")
        check(n > 0 and p == n, "session %d: cam0/t001.mkv has %d packets but its frames CSV %d rows" % (i, p, n))
        p, n = pair(d, "eyetracker/t001_scene.mkv", "eyetracker/t001_scene_frames.csv")
        check(n > 0 and p == n, "session %d: the scene MKV has %d packets but its frames CSV %d rows" % (i, p, n))
        counters = manifest(d)["modules"]["cam0"]["counters"]
        lost = [r for r in events(d) if r[3] == "frames_lost_after" and r[4] == "cam0"]
        check("dropped_after" in counters, "session.json has no dropped_after for cam0: %s" % counters)
        check((counters["dropped_after"] > 0) == bool(lost),
              "dropped_after %d but %d frames_lost_after rows" % (counters["dropped_after"], len(lost)))
        after_cam += counters["dropped_after"]
        world = manifest(d)["modules"]["eyetracker"]["counters"].get("world", {})
        after_scene += world.get("dropped_after", 0)
    print("frames lost after the last row: camera %d, scene %d (3 sessions)" % (after_cam, after_scene))
    # the camera stops with frames in flight at the failure: they were lost, and counted
    check(after_cam > 0, "no camera frame was counted lost after the last row in 3 write failures")
finally:
    rec.cleanup()
    sim.terminate()
    sim.wait(10)
print("ok")
