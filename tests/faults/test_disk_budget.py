"""The disk budget (issue 24 items 1 and 2) on a small tmpfs (needs root to mount):
- the pre-flight refuses a start without room for [storage] min_free_time, naming the numbers
  (reply fields, the message, `pirec start` exit 1), and makes no session directory;
- with if_low_space = warn the start records and says so (exit 3, a low_space_warning row);
- the low-space watchdog stops a session before the disk is full: no write error anywhere, every
  CSV parses, the video has one packet per row, events.csv, session.json and the status say why,
  and the LED blinks;
- once room is made, the next start records every module."""
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from faultlib import (Recorder, check, check_camera_trial, check_session_files, events, manifest,  # noqa: E402
                      rows_so_far, small_tmpfs, unmount, wait_for)

mnt = small_tmpfs("24m", "diskbudget")

MIB = 1024 * 1024
CAMERA = ("[camera.cam0]\nsource = lavfi\nlavfi = cellauto\nsize = 320x240\nfps = 15\ncrf = 10\n"
          "preset = ultrafast\n")
led_fifo = os.path.join(tempfile.mkdtemp(prefix="pirec-diskbudget-led-"), "led")
os.mkfifo(led_fifo)
led_fd = os.open(led_fifo, os.O_RDWR | os.O_NONBLOCK)


def config(policy, min_free_time):
    return ("[storage]\nreserve = 4MiB\nmin_free_time = %s\nif_low_space = %s\nspace_check_interval = 200ms\n"
            "[gpio.lamp]\nchip = pipe:%s\nline = GPIO27\ndirection = output\nrole = led\n%s"
            % (min_free_time, policy, led_fifo, CAMERA))


led_seen = []


def led_levels():
    """Every LED level written so far (struct pirec_gpio_pipe_record: q Q i i)."""
    data = b""
    while True:
        try:
            chunk = os.read(led_fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    led_seen.extend(struct.unpack_from("<qQii", data, i)[2] for i in range(0, len(data) - len(data) % 24, 24))
    return led_seen


def led_since(mark):
    """The levels written since mark = len(led_levels()) was taken."""
    return led_levels()[mark:]


def reconfigure(rec, policy, min_free_time):
    rec.config = config(policy, min_free_time)
    rec.write_config()
    rc, out, err = rec.cli("reload")
    check(rc == 0, "reload failed (%d): %s %s" % (rc, out, err))
    wait_for("the recorders after the reload", lambda: rec.modules_running(["notes", "cam0"]), 30)


def free_bytes():
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


rec = Recorder(config("refuse", "10min"), out_dir=os.path.join(mnt, "sessions"), tag="diskbudget")
filler = os.path.join(mnt, "filler")
try:
    rec.start()
    wait_for("notes and cam0 running", lambda: rec.modules_running(["notes", "cam0"]), 30)
    wait_for("a free-space figure in the status", lambda: rec.status()["storage"].get("free_bytes"), 10)

    # 1. pre-flight: 10 min at the camera's estimated rate does not fit in 24 MiB
    r = rec.call({"cmd": "start"})
    check(r.get("reply") == "error", "a start without room was not refused: %s" % r)
    for k in ("free_bytes", "needed_bytes", "rate_bytes_per_s"):
        check(isinstance(r.get(k), int) and r[k] > 0, "the refusal lacks %s: %s" % (k, r))
    check(r["needed_bytes"] > r["free_bytes"], "refused although needed <= free: %s" % r)
    check(abs(r["free_bytes"] - free_bytes()) < 2 * MIB, "the refusal's free_bytes is not the tmpfs's: %s" % r)
    check(r["needed_bytes"] >= 4 * MIB + 600 * r["rate_bytes_per_s"] * 0.99, "needed is not reserve + 10 min: %s" % r)
    for word in ("MiB free", "MiB needed", "MiB/s", "reserve"):
        check(word in r["message"], "the refusal does not name %r: %s" % (word, r["message"]))
    rc, out, err = rec.cli("start")
    check(rc == 1 and "not enough free space" in err, "pirec start: exit %d, stderr %r" % (rc, err))
    check(not os.path.exists(rec.out) or not os.listdir(rec.out), "a refused start left a session directory")
    st = rec.status()["storage"]
    check(st["low_space"] and "start refused" in st["last_low_space"], "status does not show the refusal: %s" % st)
    mark = len(led_levels())
    wait_for("the LED blinking after the refusal", lambda: len(led_since(mark)) >= 3, 10)

    # 2. if_low_space = warn: the start records and says why
    reconfigure(rec, "warn", "10min")
    rc, out, err = rec.cli("start")
    check(rc == 3 and "warning: not enough free space" in err, "warned start: exit %d, stderr %r" % (rc, err))
    d0 = rec.status()["session_dir"]
    wait_for("the low_space_warning row", lambda: any(e[3] == "low_space_warning" for e in events(d0)), 10)
    rec.stop_session()

    # 3. the watchdog: room for the start, 0.75 MiB above the reserve; the camera fills it
    reconfigure(rec, "refuse", "2s")
    with open(filler, "wb") as f:
        f.truncate(0)
    size = free_bytes() - 4 * MIB - 3 * MIB // 4
    with open(filler, "wb") as f:
        f.write(b"\0" * size)
    d1 = rec.session("lowspace")
    wait_for("the watchdog's stop", lambda: rec.status()["state"] == "idle", 120)
    ev = events(d1)
    check(not [e for e in ev if e[3] == "error"], "a write failed before the watchdog stopped: %s" % ev)
    stops = [e for e in ev if e[3] == "low_space_stop"]
    check(len(stops) == 1 and "MiB free" in stops[0][5], "no low_space_stop row with the numbers: %s" % ev)
    check(any(e[3] == "control" and e[5].startswith("stop source storage") for e in ev),
          "no 'stop source storage' control row: %s" % ev)
    m = manifest(d1)
    check(m.get("final") and m.get("stop_reason", {}).get("kind") == "low_space",
          "session.json does not say why it stopped: %s" % m.get("stop_reason"))
    check(not m["errors"], "session.json has errors: %s" % m["errors"])
    check(free_bytes() > 3 * MIB, "the disk filled anyway: %d bytes free" % free_bytes())
    check_session_files(d1)
    check(check_camera_trial(d1, "t001") >= 5, "the camera recorded too little before the stop")
    st = rec.status()
    check(st["modules"]["cam0"]["counters"]["drops_sink"] == 0, "the camera's sink dropped: %s" % st["modules"]["cam0"])
    # the camera recorded for seconds: its rate is measured now, and counts for the next start
    check(st["modules"]["cam0"]["rate_source"] == "measured", "cam0's rate is not measured: %s" % st["modules"]["cam0"])
    check(st["storage"]["rate_source"] == "measured", "the session's rate is not measured: %s" % st["storage"])
    check(st["storage"]["low_space"] and "low space" in st["storage"]["last_low_space"],
          "status does not say why: %s" % st["storage"])
    rc, out, err = rec.cli("status")
    check("storage:" in out and "MiB free" in out and "left" in out, "pirec status shows no storage line:\n%s" % out)
    mark = len(led_levels())
    wait_for("the LED blinking after the low-space stop", lambda: len(led_since(mark)) >= 3, 10)

    # 4. room made: the next session records every module
    os.unlink(filler)
    d2 = rec.session("after")
    wait_for("frames after freeing space", lambda: rows_so_far(d2) >= 5, 30)
    check(led_levels()[-1:] == [1], "the LED is not lit while recording again")
    r = rec.stop_session()
    check(r["errors"] == 0, "the session after freeing space has errors: %s" % r)
    check_session_files(d2)
    check(check_camera_trial(d2, "t001") >= 5, "the camera recorded nothing after space was freed")
    check("stop_reason" not in manifest(d2), "a normal stop has a stop_reason")
finally:
    rec.cleanup()
    os.close(led_fd)
    unmount(mnt)
    os.unlink(led_fifo)
    os.rmdir(os.path.dirname(led_fifo))
print("ok")
