"""The fault suite's driver (ctest -L faults): a real `pirec record --wait` with its real recorders in
a scratch directory, the real `pirec` client, and checks of what ends up on disk read back the way an
analysis script would (python's csv module, ffprobe). Each test_*.py in this folder imports it, runs
one fault, and exits 0 (pass), 1 (fail, with the reason on stderr) or 77 (skipped, with why).

Tests wait for conditions (a reply, a row, a counter), never for fixed times alone, so they hold
on a loaded 2-core machine."""

import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("PIREC_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
SKIP = 77


def program(name):
    return os.path.join(BUILD, "apps", name)


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(SKIP)


def check(cond, msg):
    if not cond:
        fail(msg)


def wait_for(what, pred, timeout=30.0, step=0.05):
    """Polls pred() until it returns something true; fails the test naming `what` after timeout."""
    until = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > until:
            fail("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(step)


CAMERA = "[camera.cam0]\nsource = lavfi\nsize = 160x120\nfps = 15\npreset = ultrafast\n"


class Recorder:
    """`pirec record -c CFG --wait` in its own scratch directory. config is the text after the
    [session]/[control]/[notes] sections this writes; out_dir overrides where sessions go."""

    def __init__(self, config="", out_dir=None, preexec=None, tag="faults"):
        self.tmp = tempfile.mkdtemp(prefix="pirec-%s-" % tag)
        self.sock = os.path.join(self.tmp, "c.sock")
        self.out = out_dir or os.path.join(self.tmp, "out")
        self.cfg = os.path.join(self.tmp, "pirec.conf")
        self.log_path = os.path.join(self.tmp, "record.log")
        self.config = config
        self.preexec = preexec
        self.proc = None
        self.noted = []  # (session_dir, text) of every note answered "noted"

    def write_config(self, extra_session=""):
        with open(self.cfg, "w") as f:
            f.write("[session]\noutput_dir = %s\nclocks_interval = 200ms\nremux_after = false\n%s"
                    "[control]\nsocket = %s\n[notes]\nenabled = true\n%s"
                    % (self.out, extra_session, self.sock, self.config))

    def start(self, extra_session=""):
        self.write_config(extra_session)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([program("pirec"), "record", "-c", self.cfg, "--wait"],
                                     stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=self.preexec)
        wait_for("the control socket of pirec record", self._answers, 20)
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            fail("pirec record exited with status %s; log:\n%s" % (self.proc.returncode, self.log_text()))
        try:
            return self.call({"cmd": "status"}, timeout=2)
        except OSError:
            return None

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def call(self, cmd, timeout=30):
        """One command over the control socket; the reply object."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.sock)
            cmd = dict(cmd, id=1)
            s.sendall((json.dumps(cmd) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return json.loads(buf)
        finally:
            s.close()

    def cli(self, *args, timeout=60):
        """The real `pirec` client: (exit status, stdout, stderr)."""
        args = list(args)
        # options first: a note's text is everything after them
        argv = [program("pirec"), args[0], "--socket", self.sock] + args[1:]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def status(self):
        return self.call({"cmd": "status"})

    def modules_running(self, names):
        st = self.status()
        mods = st.get("modules", {})
        return all(mods.get(n, {}).get("state") == "running" for n in names) and st

    def note(self, text, session_dir):
        r = self.call({"cmd": "note", "text": text}, timeout=10)
        if r.get("reply") == "noted":
            self.noted.append((session_dir, text))
        return r

    def session(self, label=None):
        """Starts a session; its directory (the start must succeed)."""
        cmd = {"cmd": "start"}
        if label:
            cmd["label"] = label
        r = self.call(cmd, timeout=60)
        check(r.get("reply") == "started", "start refused: %s" % r)
        return r["session_dir"]

    def stop_session(self):
        r = self.call({"cmd": "stop"}, timeout=60)
        check(r.get("reply") == "stopped", "stop refused: %s" % r)
        return r

    def module_pid(self, name):
        return self.status()["modules"][name]["pid"]

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def cleanup(self):
        self.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def children_of(pid):
    """Direct children of pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def read_csv(path, may_be_cut=False):
    """A session CSV read with python's csv module: a header and rows of exactly as many fields.
    may_be_cut: the file's writer was SIGKILLed, so its last line may be cut short (docs/FORMATS.md);
    that row is dropped. Returns (header, rows)."""
    with open(path, newline="", encoding="utf-8") as f:
        data = f.read()
    rows = list(csv.reader(data.splitlines(keepends=True)))
    check(rows, "'%s' has no header row" % path)
    header, body = rows[0], rows[1:]
    if may_be_cut and body and (not data.endswith("\n") or len(body[-1]) != len(header)):
        body = body[:-1]
    for i, r in enumerate(body):
        check(len(r) == len(header), "'%s' row %d has %d fields, the header %d: %r" % (path, i + 2, len(r), len(header), r))
    check(data.endswith("\n") or may_be_cut, "'%s' ends in a partial line" % path)
    return header, body


def rows_so_far(d, rel="cam0/t001_frames.csv"):
    """Whole data rows a file of session d holds now (0 while it is missing or empty): for waiting."""
    try:
        with open(os.path.join(d, rel), newline="", encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
    except OSError:
        return 0
    return max(0, sum(1 for ln in lines if ln.endswith("\n")) - 1)


def ffprobe_packets(path):
    """Video packets in a file as ffprobe counts them (None when it cannot read the file)."""
    p = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                        "stream=nb_read_packets", "-of", "csv=p=0", path], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    try:
        return int(p.stdout.strip().splitlines()[0].rstrip(","))
    except (ValueError, IndexError):
        return None


def check_session_files(d, cut_ok=()):
    """Every CSV of session d parses whole (cut_ok: module names whose writer was killed, whose last
    row may be cut) and session.json is JSON. Returns {relative path: rows}."""
    counts = {}
    with open(os.path.join(d, "session.json")) as f:
        json.load(f)
    for root, _, files in os.walk(d):
        for name in files:
            if not name.endswith(".csv"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, d)
            module = rel.split(os.sep)[0] if os.sep in rel else rel[:-4]
            _, rows = read_csv(path, may_be_cut=module in cut_ok)
            counts[rel] = len(rows)
    return counts


def check_camera_trial(d, base, killed=False):
    """cam0/<base>.mkv (or .mjpeg, .h264: as captured) against cam0/<base>_frames.csv: ffprobe reads the video and, unless the camera
    was killed (then frames may be missing behind written rows until remux recovers them), it has
    one packet per row. Returns the row count."""
    videos = [n for n in os.listdir(os.path.join(d, "cam0"))
              if n.startswith(base + ".") and not n.endswith((".csv", ".mp4", ".part"))]
    check(len(videos) == 1, "expected one video for %s in %s/cam0, found %s" % (base, d, videos))
    mkv = os.path.join(d, "cam0", videos[0])
    csv_path = os.path.join(d, "cam0", base + "_frames.csv")
    _, rows = read_csv(csv_path, may_be_cut=killed)
    packets = ffprobe_packets(mkv)
    if packets is None and killed:
        # SIGKILL before the first cluster reached the file: frames whose rows are on disk are not
        # (issue 23 item 4, media/mkv.c); pirec-remux reports the file. Tighten once that lands.
        print("note: '%s' (killed writer) is not readable video yet" % mkv)
        return None
    if not rows and packets is None:
        return 0  # a trial with no frame (issue 22 decides whether such a file exists)
    check(packets is not None, "ffprobe cannot read '%s'" % mkv)
    if not killed:
        check(packets == len(rows), "'%s' has %d packets but %d rows" % (mkv, packets, len(rows)))
    return len(rows)


def check_notes(rec, d):
    """Every note answered "noted" for session d is in its notes.csv, once."""
    want = [t for (s, t) in rec.noted if s == d]
    if not want:
        return
    _, rows = read_csv(os.path.join(d, "notes.csv"), may_be_cut=True)
    texts = [r[3].lstrip("'") if r[3][:1] == "'" and r[3][1:2] in "=+-@" else r[3] for r in rows]
    for t in want:
        check(texts.count(t) == 1, "note %r answered 'noted' appears %d times in %s/notes.csv" % (t, texts.count(t), d))


def events(d):
    _, rows = read_csv(os.path.join(d, "events.csv"), may_be_cut=True)
    return rows


def manifest(d):
    with open(os.path.join(d, "session.json")) as f:
        return json.load(f)


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on now (for pirec-eyesim)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rng(name):
    """The suite's fixed seed, per test: a failure replays the same faults."""
    return random.Random("pirec-faults-" + name + os.environ.get("PIREC_FAULT_SEED", ""))


def small_tmpfs(size, tag):
    """A tmpfs of size ("6m") mounted on a fresh directory, for filling the disk; skips the test
    without root or when the mount fails. Undo with unmount(mnt)."""
    if os.geteuid() != 0:
        skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tempfile.mkdtemp(prefix="pirec-%s-" % tag)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", mnt]).returncode != 0:
        os.rmdir(mnt)
        skip("cannot mount a tmpfs on '%s'" % mnt)
    return mnt


def unmount(mnt):
    subprocess.run(["umount", mnt])
    os.rmdir(mnt)
