#!/usr/bin/env python3
"""bench-fleet: how closely a fleet start lines up three pirecs, and what the broker connection
costs the controller's loop (issue 18, Benchmark).

Six `pirec record --wait` controllers (notes only) on this machine and a real mosquitto on
loopback: three in one fleet group, three without [fleet] (the reference: what an operator gets
without a fleet, one `pirec start` after another over each control socket, sent at once by three
threads). Each round alternates: a `pirec fleet start` (lead 1 s) of the fleet three, then the
reference three started by their control sockets; each records 1 s and stops. Per round: the
spread (max - min) of the three sessions' start.wall_ns from session.json, the fleet's offset from
the agreed instant (and how late each device's start timer fired: fleet.late_ns), and each controller's loop lag (p99 and max of its status while recording).
Prints one JSON object: medians and maxima per condition and the ratios fleet/reference.

With --camera every controller also records a synthetic camera (lavfi 160x120 at 15 fps, x264
ultrafast) and the figures are taken from each trial's first frame (cam0/t001_frames.csv's first
row's wall_ns) instead of the session's start anchor: command-to-first-frame.

usage: bench-fleet.py BUILD_DIR [--rounds 20] [--camera]
"""
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "build")
os.environ["PIREC_BUILD_DIR"] = BUILD
sys.path.insert(0, os.path.join(HERE, "..", "tests", "faults"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fleet"))
import faultlib  # noqa: E402
import mqttlib  # noqa: E402

ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 20
CAMERA = "--camera" in sys.argv


def start_wall(d):
    if CAMERA:
        path = os.path.join(d, "cam0", "t001_frames.csv")
        faultlib.wait_for("a first frame in " + path,
                          lambda: os.path.exists(path) and len(faultlib.read_csv(path, may_be_cut=True)[1]) > 0, 30)
        header, rows = faultlib.read_csv(path, may_be_cut=True)
        return int(rows[0][header.index("wall_ns")])
    with open(os.path.join(d, "session.json")) as f:
        return json.load(f)["start"]["wall_ns"]


def late(d):
    with open(os.path.join(d, "session.json")) as f:
        return json.load(f)["fleet"]["late_ns"]


def lag(recs):
    out = []
    for r in recs:
        lg = r.status().get("looplag") or {}
        out.append((lg.get("p99_ns", 0), lg.get("max_ns", 0)))
    return out


def stop_all(recs):
    for r in recs:
        r.stop_session()


def fleet_round(broker, group, recs):
    p = subprocess.run([faultlib.program("pirec"), "fleet", "start", "--broker", broker.url(), "--group", group,
                        "--lead", "1", "--json"], capture_output=True, text=True, timeout=60)
    faultlib.check(p.returncode == 0, "fleet start: %s" % p.stderr)
    out = json.loads(p.stdout)
    dirs = [out["devices"][d]["session_dir"] for d in sorted(out["devices"])]
    time.sleep(1)
    lags = lag(recs)
    p = subprocess.run([faultlib.program("pirec"), "fleet", "stop", "--broker", broker.url(), "--group", group],
                       capture_output=True, text=True, timeout=60)
    faultlib.check(p.returncode == 0, "fleet stop: %s" % p.stdout)
    walls = [start_wall(d) for d in dirs]
    agreed = out["command"]["start_wall_ns"]
    return max(walls) - min(walls), max(w - agreed for w in walls), lags, [late(d) for d in dirs]


def reference_round(recs):
    dirs = [None] * len(recs)
    go = threading.Event()

    def one(i):
        go.wait()
        dirs[i] = recs[i].session()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(recs))]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    time.sleep(1)
    lags = lag(recs)
    stop_all(recs)
    walls = [start_wall(d) for d in dirs]
    return max(walls) - min(walls), lags


def summary(values):
    return {"median": statistics.median(values), "max": max(values)}


def main():
    tmp = tempfile.mkdtemp(prefix="pirec-bench-fleet-")
    broker = mqttlib.Broker(tmp).start()
    group = "b%06d" % random.randrange(10 ** 6)
    cam = faultlib.CAMERA if CAMERA else ""
    fleet = [faultlib.Recorder(cam + "[fleet]\nbroker = %s\ngroup = %s\ndevice = pi%d\n" % (broker.url(), group, i),
                               tag="bench-fleet") for i in range(3)]
    ref = [faultlib.Recorder(cam, tag="bench-fleet") for _ in range(3)]
    try:
        for r in fleet + ref:
            r.start()
        for r in fleet:
            faultlib.wait_for("connected", lambda: r.status().get("fleet", {}).get("connected"), 20)
        time.sleep(1)  # the retained statuses are at the broker
        fs, fo, rs, flag, rlag, timer = [], [], [], [], [], []
        for _ in range(ROUNDS):
            spread, offset, lags, lates = fleet_round(broker, group, fleet)
            timer += lates
            fs.append(spread)
            fo.append(offset)
            flag += lags
            spread, lags = reference_round(ref)
            rs.append(spread)
            rlag += lags
        load = os.getloadavg()
        out = {
            "measured_at": "first frame" if CAMERA else "session start anchor",
            "rounds": ROUNDS, "loadavg_1min": load[0], "cpus": os.cpu_count(),
            "fleet_start_spread_ns": summary(fs), "fleet_start_after_agreed_ns": summary(fo),
            "fleet_timer_late_ns": summary(timer),
            "reference_start_spread_ns": summary(rs),
            "spread_ratio_fleet_over_reference": statistics.median(fs) / max(1, statistics.median(rs)),
            "looplag_p99_ns": {"broker_connected": statistics.median(x[0] for x in flag),
                               "no_fleet": statistics.median(x[0] for x in rlag)},
            "looplag_max_ns": {"broker_connected": max(x[1] for x in flag), "no_fleet": max(x[1] for x in rlag)},
        }
        out["looplag_p99_ratio_connected_over_no_fleet"] = (out["looplag_p99_ns"]["broker_connected"] /
                                                            max(1, out["looplag_p99_ns"]["no_fleet"]))
        print(json.dumps(out, indent=1))
    finally:
        for r in fleet + ref:
            r.cleanup()
        broker.kill()


main()
