#!/usr/bin/env python3
"""bench-web: what watching the console costs a recording (issue 15, Benchmark).

`pirec record` with a 1280x720 30 fps lavfi camera (x264 ultrafast) and the eye tracker against
pirec-eyesim at 200 Hz gaze (its scene video 1088x1080 at 30 fps, about a Neon's), plus pirec-web;
phases of SECONDS each alternate between no browser clients and three WebSocket clients that each
watch two previews (the camera's and the eye tracker's scene with the gaze, each twice a second,
480 px wide) and take the status pushes. Per phase: CPU seconds per second of pirec-web, of the
recorders (/proc/PID/stat utime+stime) and of pirec-eyetracker alone (it decodes the scene video
while watched), the camera's and the eye tracker's loop lag (p99 and max of their status over the
phase), and drops. Prints one JSON object: the medians per condition and the
ratios watched/unwatched.

usage: bench-web.py BUILD_DIR [--seconds 15] [--rounds 2]
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "web"))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "build")
sys.argv[1:2] = [BUILD]
import test_api as t  # noqa: E402 (the test's WebSocket client and process helpers)

SECONDS = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 15.0
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 2
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except OSError:
        return 0.0


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
            except OSError:
                pass
    return out


def tree(pid):
    unvisited, seen = [pid], []
    while unvisited:
        p = unvisited.pop()
        seen.append(p)
        unvisited.extend(children(p))
    return seen


def named(pids, name):
    for p in pids:
        try:
            argv0 = open("/proc/%d/cmdline" % p, "rb").read().split(b"\0")[0]
            if os.path.basename(argv0).decode() == name:  # not comm: the programs name their threads
                return p
        except OSError:
            pass
    return None


def drops(counters):
    """Every integer counter named like a drop, in nested objects too (the eye tracker's streams)."""
    n = 0
    for k, v in counters.items():
        if isinstance(v, dict):
            n += drops(v)
        elif isinstance(v, int) and "drop" in k:
            n += v
    return n


def phase(web_pid, rec_pid, web, watched):
    clients = []
    if watched:
        for _ in range(3):
            c = t.WsClient(web.port)
            c.send_text(b'{"watch":true}')
            c.s.settimeout(0.05)
            clients.append(c)
    procs = tree(rec_pid)
    et = named(procs, "pirec-eyetracker")
    w0, r0, e0, t0 = cpu_s(web_pid), sum(cpu_s(p) for p in procs), cpu_s(et), time.monotonic()
    previews = {"cam0": 0, "eyetracker": 0}
    while time.monotonic() - t0 < SECONDS:
        for c in clients:
            try:
                while True:
                    op, data = c.recv()
                    if b'"preview"' in data[:40]:
                        m = json.loads(data)
                        previews[m["module"]] += m.get("reply") == "preview"
            except (OSError, EOFError):
                pass
        time.sleep(0.05)
    dt = time.monotonic() - t0
    w1, r1, e1 = cpu_s(web_pid), sum(cpu_s(p) for p in tree(rec_pid)), cpu_s(et)
    st = web.get("/api/status")[1]
    lag = st["modules"]["cam0"].get("looplag", {})
    etlag = st["modules"]["eyetracker"].get("looplag", {})
    for c in clients:
        c.close()
    return {"watched": watched, "web_cpu": (w1 - w0) / dt, "recorders_cpu": (r1 - r0) / dt,
            "eyetracker_cpu": (e1 - e0) / dt,
            "cam_lag_p99_ms": lag.get("p99_ns", 0) / 1e6, "cam_lag_max_ms": lag.get("max_ns", 0) / 1e6,
            "et_lag_p99_ms": etlag.get("p99_ns", 0) / 1e6, "et_lag_max_ms": etlag.get("max_ns", 0) / 1e6,
            "cam_drops": drops(st["modules"]["cam0"].get("counters", {})),
            "et_drops": drops(st["modules"]["eyetracker"].get("counters", {})),
            "cam_previews_received": previews["cam0"], "scene_previews_received": previews["eyetracker"]}


def main():
    work = tempfile.mkdtemp(prefix="pirec-bench-web.")
    sim = subprocess.Popen([os.path.join(t.APPS, "pirec-eyesim"), "--host", "127.0.0.1", "--gaze-hz", "200",
                            "--fps", "30", "--size", "1088x1080"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    http, rtsp = [x.split("=")[1] for x in sim.stdout.readline().split()[1:3]]
    conf = os.path.join(work, "pirec.conf")
    with open(conf, "w") as f:
        f.write("[session]\noutput_dir = %s/data\nremux_after = false\n[control]\nsocket = %s/c.sock\n"
                "[camera.cam0]\nsource = lavfi\nsize = 1280x720\nfps = 30\n"
                "[eyetracker]\nenabled = true\naddress = 127.0.0.1:%s\nrtsp_port = %s\n" % (work, work, http, rtsp))
    os.makedirs(os.path.join(work, "data"))
    rec = t.start_record(work, conf)
    web_p, port, _ = t.start_web(work, conf)
    web = t.Web(port)
    t.wait_for(lambda: web.get("/api/status")[0] == 200, "the controller")
    web.post("/api/start", {"label": "bench"})
    t.wait_for(lambda: web.get("/api/status")[1]["modules"]["cam0"].get("counters", {}).get("frames_written", 0) > 60,
               "the camera to record")
    results = []
    try:
        for _ in range(ROUNDS):
            for watched in (False, True):
                results.append(phase(web_p.pid, rec.pid, web, watched))
        web.post("/api/stop")
    finally:
        for p in (web_p, rec, sim):
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    med = {}
    for w in (False, True):
        rows = [r for r in results if r["watched"] == w]
        med["watched" if w else "unwatched"] = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "watched"}
    u, w = med["unwatched"], med["watched"]
    out = {"bench": "web", "seconds_per_phase": SECONDS, "rounds": ROUNDS, "load": os.getloadavg()[0],
           "medians": med, "phases": results,
           "ratio_recorders_cpu": w["recorders_cpu"] / u["recorders_cpu"] if u["recorders_cpu"] else None,
           "ratio_eyetracker_cpu": w["eyetracker_cpu"] / u["eyetracker_cpu"] if u["eyetracker_cpu"] else None,
           "ratio_cam_lag_p99": w["cam_lag_p99_ms"] / u["cam_lag_p99_ms"] if u["cam_lag_p99_ms"] else None}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
