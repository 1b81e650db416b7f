#!/usr/bin/env python3
"""Pi-like mode for the benches (issue 21): one CPU and a disk as slow as an SD card.

The disk: qemu's block throttling (the throttle-group object's x-bps-write / x-iops-write, what
`-drive throttling.bps-write=` sets in a VM) in qemu-storage-daemon, exported as a FUSE file that a
loop device turns into an ext4 file system here on the host. Writeback of the page cache goes
through it, which this machine's cgroup v1 block throttle does not catch. Not inside the hardware
VM (tests/hw/vm.sh): that VM runs under TCG (no usable KVM here), where x264 alone is ten times
slower than on the host, so no camera would keep 30 fps in it.

The CPU: every pirec process, the encoder children and the reference ffmpeg run on CPU 0
(sched_setaffinity, inherited); pirec-eyesim (the phone, not the Pi) runs on CPU 1.

Runs, in this order:
  1. bench-camera --compare --cpus 1 with its recordings on the slow disk (pirec against ffmpeg
     alone, both feeds), JSON as bench-camera prints it.
  2. sessions of `pirec record` with a 1280x720 30 fps lavfi camera (libx264 ultrafast child) and
     the eye tracker at 200 Hz with scene video, against pirec-eyesim: a first session to have
     something to remux, then rounds of three cases each, alternated: no remux, the previous
     session's remux (pirec-remux) at normal priority, and at nice 10 + idle I/O (what the
     controller does since issue 21). Drops come from each session's session.json counters.

Prints one JSON object. Needs root (FUSE mount, loop device, mount) and qemu-storage-daemon;
otherwise prints "pilike: SKIP: reason" and exits 77.

usage: tests/hw/pilike.py [--build DIR] [--seconds N] [--rounds N] [--runs N] [--bps N] [--iops N]
                          [--no-compare] [--keep]
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def sh(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def skip(why):
    print(f"pilike: SKIP: {why}")
    sys.exit(77)


class SlowDisk:
    """ext4 on a loop device over a FUSE export of qemu-storage-daemon with write throttling."""

    def __init__(self, work, bps, iops, size_mb=3072):
        self.work, self.qsd, self.loop = work, None, None
        self.img, self.fuse, self.mnt = f"{work}/disk.img", f"{work}/fuse.img", f"{work}/mnt"
        with open(self.img, "wb") as f:
            f.truncate(size_mb << 20)
        open(self.fuse, "w").close()
        os.mkdir(self.mnt)
        self.qsd = subprocess.Popen(
            ["qemu-storage-daemon",
             "--blockdev", f"driver=file,node-name=f,filename={self.img}",
             "--object", f"throttle-group,id=tg,x-bps-write={bps},x-iops-write={iops}",
             "--blockdev", "driver=throttle,node-name=t,throttle-group=tg,file=f",
             "--export", f"type=fuse,id=e,node-name=t,mountpoint={self.fuse},writable=on"],
            stdout=subprocess.DEVNULL, stderr=open(f"{work}/qsd.log", "w"))
        for _ in range(100):
            if os.path.ismount(self.fuse) or f" {self.fuse} " in open("/proc/mounts").read():
                break
            time.sleep(0.05)
        else:
            self.close()
            skip("qemu-storage-daemon did not export the FUSE file (see qsd.log)")
        r = sh("losetup", "-f", "--show", self.fuse)
        if r.returncode != 0:
            self.close()
            skip(f"losetup: {r.stderr.strip()}")
        self.loop = r.stdout.strip()
        if sh("mkfs.ext4", "-q", "-F", self.loop).returncode != 0 or sh("mount", self.loop, self.mnt).returncode:
            self.close()
            skip("cannot make or mount ext4 on the loop device")

    def close(self):
        sh("umount", self.mnt)
        if self.loop:
            sh("losetup", "-d", self.loop)
        if self.qsd:
            self.qsd.terminate()
            try:
                self.qsd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.qsd.kill()
                self.qsd.wait()


def pin(cpu):
    return lambda: os.sched_setaffinity(0, {cpu})


def bench_compare(build, tmp, seconds, runs):
    env = dict(os.environ, TMPDIR=tmp)
    r = sh(f"{build}/bench/bench-camera", "--compare", "--json", "--cpus", "1", "--runs", str(runs),
           "--seconds", str(seconds), env=env)
    if r.returncode != 0:
        sys.exit(f"pilike: bench-camera failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


class Recorder:
    """`pirec record --wait` pinned to CPU 0, with a camera and the eye tracker against eyesim."""

    def __init__(self, apps, work, out, sim_ports):
        self.apps, self.sock = apps, f"{work}/c.sock"
        cfg = f"{work}/pirec.conf"
        with open(cfg, "w") as f:
            f.write(f"""[session]
output_dir = {out}
remux_after = false
[control]
socket = {self.sock}
[camera.cam]
source = lavfi
lavfi = testsrc2
size = 1280x720
fps = 30
preset = ultrafast
[eyetracker]
enabled = true
address = 127.0.0.1:{sim_ports[0]}
rtsp_port = {sim_ports[1]}
""")
        self.log = open(f"{work}/pirec.log", "w")
        self.proc = subprocess.Popen([f"{apps}/pirec", "record", "--wait", "-c", cfg], stdout=self.log,
                                     stderr=self.log, preexec_fn=pin(0))
        for _ in range(200):
            if self.ctl("status").returncode == 0:
                return
            time.sleep(0.1)
        sys.exit("pilike: pirec record did not answer")

    def ctl(self, *args):
        return sh(f"{self.apps}/pirec", args[0], "--socket", self.sock, *args[1:])

    def session(self, label, seconds, during=None):
        """Records one session; `during` (a command) starts with it. Returns (session dir, during's
        wall time or None)."""
        r = self.ctl("start", "--label", label)
        if r.returncode != 0:
            sys.exit(f"pilike: start failed: {r.stdout}{r.stderr}")
        m = re.search(r"(/\S+_" + re.escape(label) + r")", r.stdout + r.stderr)
        t0, took, proc = time.monotonic(), None, None
        if during:
            proc = subprocess.Popen(during, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=pin(0))
        while time.monotonic() - t0 < seconds:
            if proc and took is None and proc.poll() is not None:
                took = time.monotonic() - t0
            time.sleep(0.1)
        self.ctl("stop")
        if proc:
            proc.wait()
            took = took if took is not None else time.monotonic() - t0
        time.sleep(2)  # session.json is final once the modules reported their last counters
        return m.group(1) if m else None, took

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def drops_of(session_dir):
    """Each module's integer counters from session.json, nested ones (the eye tracker's "gaze":
    samples, lost, gap_samples ...) flattened as "gaze.samples"."""
    with open(f"{session_dir}/session.json") as f:
        sj = json.load(f)
    res = {}
    for name, mod in (sj.get("modules") or {}).items():
        flat = {}
        for k, v in (mod.get("counters") or {}).items():
            if isinstance(v, int):
                flat[k] = v
            elif isinstance(v, dict):
                flat.update({f"{k}.{k2}": v2 for k2, v2 in v.items() if isinstance(v2, int)})
        if name != "notes":
            res[name] = flat
    return res


def sessions(apps, work, out, seconds, rounds):
    sim_out = open(f"{work}/eyesim.out", "w")
    sim = subprocess.Popen([f"{apps}/pirec-eyesim", "--host", "127.0.0.1", "--gaze-hz", "200"],
                           stdout=sim_out, stderr=subprocess.DEVNULL, preexec_fn=pin(1))
    ports = None
    for _ in range(100):
        m = re.search(r"pirec-eyesim http=(\d+) rtsp=(\d+)", open(f"{work}/eyesim.out").read())
        if m:
            ports = (int(m.group(1)), int(m.group(2)))
            break
        time.sleep(0.1)
    if not ports:
        sim.kill()
        sys.exit("pilike: pirec-eyesim printed no ports")
    rec = Recorder(apps, work, out, ports)
    results = {"none": [], "remux_normal": [], "remux_background": []}
    try:
        prev, _ = rec.session("prev", seconds)
        remux = [f"{apps}/pirec-remux", "--format", "mp4", prev]
        cases = {"none": None, "remux_normal": remux,
                 "remux_background": ["nice", "-n", "10", "ionice", "-c", "3", "-t"] + remux}
        for i in range(rounds):
            order = list(cases)[i % 3:] + list(cases)[:i % 3]
            for case in order:
                for f in glob.glob(f"{prev}/*/*.mp4"):
                    os.unlink(f)  # every remux does the whole work
                d, took = rec.session(f"r{i}{case.replace('_', '')}", seconds, cases[case])
                results[case].append({"session": os.path.basename(d or "?"), "remux_s": took,
                                      "modules": drops_of(d) if d else None})
    finally:
        rec.close()
        sim.terminate()
        sim.wait()
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="bench-camera --compare runs")
    ap.add_argument("--bps", type=int, default=20 * 1024 * 1024)
    ap.add_argument("--iops", type=int, default=200)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-compare", action="store_true", help="the sessions only")
    a = ap.parse_args()
    if os.geteuid() != 0:
        skip("needs root (FUSE export, loop device, mount)")
    for tool in ("qemu-storage-daemon", "losetup", "mkfs.ext4", "nice", "ionice"):
        if not shutil.which(tool):
            skip(f"{tool} not installed")
    if not os.path.exists("/dev/fuse"):
        skip("no /dev/fuse")
    build = os.path.abspath(a.build)
    apps = f"{build}/apps"
    for b in ("pirec", "pirec-camera", "pirec-eyetracker", "pirec-eyesim", "pirec-remux"):
        if not os.access(f"{apps}/{b}", os.X_OK):
            sys.exit(f"pilike: {apps}/{b} is not built")
    work = tempfile.mkdtemp(prefix="pirec-pilike.", dir="/var/tmp")
    disk = SlowDisk(work, a.bps, a.iops)
    t0 = time.monotonic()
    try:
        os.sched_setaffinity(0, {0})
        tmp = f"{disk.mnt}/bench"
        os.mkdir(tmp)
        cmp = None if a.no_compare else bench_compare(build, tmp, 10, a.runs)
        out = f"{disk.mnt}/sessions"
        os.mkdir(out)
        ses = sessions(apps, work, out, a.seconds, a.rounds)
        print(json.dumps({"bench": "pilike", "cpus": 1, "disk_write_bps": a.bps, "disk_write_iops": a.iops,
                          "loadavg_1m": os.getloadavg()[0], "seconds": a.seconds, "rounds": a.rounds,
                          "wall_s": round(time.monotonic() - t0, 1), "camera_compare": cmp,
                          "sessions": ses}, indent=1))
    finally:
        disk.close()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
