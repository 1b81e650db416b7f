#!/usr/bin/env python3
"""System-call census: no loop thread ever waits (issue 14).

Runs `pirec record` under `strace -f` with every recorder this build has -- notes, a lavfi camera
(raw frames through an ffmpeg encoder child), an "rpicam" camera (tests/test-camera-fakerpicam
standing in for rpicam-vid: raw yuv420 on a pipe, through an encoder child) and the eye tracker
against pirec-eyesim -- through a whole scenario: start, three trials, notes, status requests, an
encoder SIGKILLed (the recorder restarts it), a stream reconnect (the rpicam child killed; the
eye-tracker simulator drops its clients), stop, a config reload (the recorders are restarted with
the new snapshot), one more session, and SIGTERM.

Then it reads the trace and fails when a loop thread made a system call that can wait on the disk
or on another process (DENIED below). Which thread is a loop thread is read from the trace itself:
each program names its loop thread "pirec-loop" (pthread_setname_np -> prctl(PR_SET_NAME) on
itself) just before uv_run and "pirec-exit" after the loop has stopped; a thread's calls between
those two markers are its loop phase. Start-up before the first marker and shutdown after the
second are not judged. Every pirec program the scenario ran must show a loop phase with epoll
waits in it, so a program that lost its marker fails instead of passing unseen.

Usage: census.py BUILD_DIR [--rpicam PATH] [--keep DIR] [--first-run]
  --rpicam     the rpicam-vid stand-in (default BUILD_DIR/tests/test-camera-fakerpicam)
  --first-run  report the findings and exit 0 (used once to record what the old code did)
Exit 0 pass, 1 findings or a broken scenario, 77 skipped (no strace, no ptrace, or under emulation).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

LOOP_NAME = "pirec-loop"
EXIT_NAME = "pirec-exit"
PROGRAMS = ("pirec", "pirec-camera", "pirec-eyetracker", "pirec-notes")

# What strace stops on. Everything the rules judge, plus what they need to know: thread markers
# (prctl), process and thread creation (clone*, execve: which tid belongs to which process and
# program), socket flags (socket, fcntl, ioctl FIONBIO: whether a connect can block).
TRACED = ("open,openat,openat2,creat,mkdir,mkdirat,unlink,unlinkat,rmdir,rename,renameat,renameat2,"
          "fsync,fdatasync,sync_file_range,ftruncate,truncate,fallocate,read,write,pread64,pwrite64,"
          "readv,writev,preadv,pwritev,preadv2,pwritev2,wait4,waitid,nanosleep,clock_nanosleep,"
          "futex,connect,prctl,epoll_wait,epoll_pwait,epoll_pwait2,execve,clone,clone3,fork,vfork,"
          "socket,fcntl,ioctl,sendmsg")

# Calls a loop thread may make, and why (the rules below refine the ones that depend on arguments):
ALLOWED_REASONS = {
    "epoll_wait/epoll_pwait": "the loop's one intended wait",
    "read/write/readv/writev on pipes, sockets, eventfd, signalfd, timerfd, /dev/null, ttys":
        "non-blocking descriptors libuv polls (libuv sets O_NONBLOCK on every stream it owns)",
    "read/write on /proc, /sys": "kernel-generated files: no disk behind them",
    "clone/clone3 with CLONE_THREAD": "a thread, not a process (libuv's pool on its first request, a "
                                      "capture thread): no page tables are copied",
    "sendmsg on a non-blocking socket": "a request to the spawn helper (pirec/spawner.h): every child "
                                        "is forked by that small helper process, the loop only hands "
                                        "it argv and the stdio fds (SCM_RIGHTS) with MSG_DONTWAIT and "
                                        "reads the pid and exit status when they arrive",
    "wait4/waitid with WNOHANG": "libuv's SIGCHLD reaping: never waits",
    "futex waits up to 1 ms": "a mutex shared with a capture or pool thread, held only for memory work",
    "futex waits over 1 ms for a lock holder that did not wait": (
        "the thread that ended the wait made no call that can wait while the loop waited (checked "
        "in the trace): the loop waited for CPU work plus the trace stops of that thread's calls "
        "(libuv's pool posts a finished request under loop->wq_mutex around an eventfd write, "
        "which strace stops); the longest is printed below"),
    "glibc condvar group switch in uv_queue_work/uv_fs_*": (
        "queueing threadpool work signals libuv's pool condvar; glibc's pthread_cond_signal may "
        "wait (futex on a __g_refs word, odd value: refs plus the wake-request bit) until a pool "
        "thread it already woke has left the old group, which that thread announces with a "
        "FUTEX_WAKE of INT_MAX on the same word. A wait for a runnable thread's next step, not for "
        "the disk or a process; ptrace stops make it look longer here than it is"),
    "connect on a non-blocking socket": "returns at once (EINPROGRESS or a Unix socket)",
    "prctl, socket, fcntl, ioctl": "traced only to know thread names and socket flags",
}

FUTEX_LIMIT_S = 0.001

LINE = re.compile(r"^(\d+) +(\d\d:\d\d:\d\d\.\d+) (.*)$")
CALL = re.compile(r"^(\w+)\((.*)$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
DUR = re.compile(r"<(\d+\.\d+)>\s*$")
FDPATH = re.compile(r"^(-?\d+)<(.*?)>")


def fd_kind(desc):
    """What an fd points at, from strace -yy's <...>: 'file' for anything on a filesystem that
    may be a disk, else a tag."""
    if desc.startswith(("pipe:", "socket:", "UNIX", "TCP", "UDP", "NETLINK", "anon_inode:", "UNIX-")):
        return "ipc"
    if desc.startswith(("/dev/", "/proc/", "/sys/")):
        return "kernel"
    if desc.startswith("/"):
        return "file"
    return "ipc"


class Call:
    __slots__ = ("tid", "ts", "name", "args", "ret", "dur", "raw")

    def __init__(self, tid, ts, name, args, ret, dur, raw):
        self.tid, self.ts, self.name, self.args, self.ret, self.dur, self.raw = tid, ts, name, args, ret, dur, raw


def split_result(rest):
    """'args) = ret <dur>' -> (args, ret, dur)."""
    dur = None
    m = DUR.search(rest)
    if m:
        dur = float(m.group(1))
        rest = rest[:m.start()].rstrip()
    idx = rest.rfind(") = ")
    if idx < 0:
        idx2 = rest.rfind(") ")
        return rest, "?", dur
    return rest[:idx], rest[idx + 4:], dur


def parse(path):
    """Yields the trace's calls in order, unfinished and resumed halves joined."""
    pending = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.rstrip("\n"))
            if not m:
                continue
            tid, ts, body = int(m.group(1)), m.group(2), m.group(3)
            if body.startswith("+++") or body.startswith("---"):
                continue
            r = RESUMED.match(body)
            if r:
                head = pending.pop(tid, None)
                if head is None:
                    continue
                body = head[1] + r.group(2)
                ts = head[0]
            elif body.endswith("<unfinished ...>"):
                pending[tid] = (ts, body[: -len("<unfinished ...>")].rstrip())
                continue
            c = CALL.match(body)
            if not c:
                continue
            args, ret, dur = split_result(c.group(2))
            yield Call(tid, ts, c.group(1), args, ret, dur, body)


def first_arg_fd(args):
    m = FDPATH.match(args)
    if not m:
        return None, None
    return int(m.group(1)), m.group(2)


def result_path(ret):
    m = FDPATH.match(ret)
    return m.group(2) if m else None


def seconds(ts):
    h, m, rest = ts.split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


class Census:
    def __init__(self):
        self.tgid = {}  # tid -> process id
        self.prog = {}  # process id -> program (basename of the last execve)
        self.phase = {}  # tid -> "loop" or "done", for threads that named themselves a loop
        self.nonblock = set()  # (pid, fd) known non-blocking
        self.epolls = {}  # tid -> epoll waits in the loop phase
        self.findings = []
        self.allowed = {}  # reason -> count
        self.long_futex = []  # loop waits over the limit, judged at the end (finish)
        self.wakes = {}  # (pid, address) -> [(time, tid, wakes all)]
        self.waits = {}  # tid -> [(start, end, reason)]: calls of non-loop threads that can wait
        self.worst_holder_wait = (0.0, "")

    def pid_of(self, tid):
        return self.tgid.setdefault(tid, tid)

    def allow(self, why):
        self.allowed[why] = self.allowed.get(why, 0) + 1

    def deny(self, c, why):
        pid = self.pid_of(c.tid)
        self.findings.append((self.prog.get(pid, "?"), pid, c.tid, c.ts, why, c.raw[:300]))

    def track(self, c):
        """Bookkeeping for every thread: creation, exec, names, socket flags, futex wakes."""
        pid = self.pid_of(c.tid)
        first = c.ret.split(" ")[0].split("<")[0]
        if c.name in ("clone", "clone3", "fork", "vfork") and first.isdigit():
            child = int(first)
            self.tgid[child] = pid if "CLONE_THREAD" in c.args else child
            if "CLONE_THREAD" not in c.args:
                self.prog[child] = self.prog.get(pid, "?")
        elif c.name == "execve" and c.ret.startswith("0"):
            m = re.match(r'"([^"]*)"', c.args)
            if m:
                self.prog[pid] = os.path.basename(m.group(1))
        elif c.name == "prctl" and c.args.startswith("PR_SET_NAME"):
            if '"%s"' % LOOP_NAME in c.args:
                self.phase[c.tid] = "loop"
            elif '"%s"' % EXIT_NAME in c.args:
                self.phase[c.tid] = "done"
        elif c.name == "socket" and first.isdigit() and "SOCK_NONBLOCK" in c.args:
            self.nonblock.add((pid, int(first)))
        elif c.name == "ioctl" and "FIONBIO" in c.args and "[1]" in c.args:
            fd, _ = first_arg_fd(c.args)
            if fd is not None:
                self.nonblock.add((pid, fd))
        elif c.name == "fcntl" and "F_SETFL" in c.args and "O_NONBLOCK" in c.args:
            fd, _ = first_arg_fd(c.args)
            if fd is not None:
                self.nonblock.add((pid, fd))
        elif c.name == "futex" and "FUTEX_WAKE" in c.args:
            key = (pid, c.args.split(",")[0])
            self.wakes.setdefault(key, []).append((seconds(c.ts), c.tid, ", 2147483647" in c.args))

    def verdict(self, c):
        """('deny', why), ('allow', reason key), ('futex', None) for a wait to time, or
        ('epoll', None): what the rules say of a call, wherever it was made."""
        n = c.name
        if n in ("epoll_wait", "epoll_pwait", "epoll_pwait2"):
            return "epoll", None
        if n in ("open", "openat", "openat2", "creat"):
            m = re.search(r'"([^"]*)"', c.args)
            target = result_path(c.ret) or (m.group(1) if m else "")
            if target.startswith(("/dev/", "/proc/", "/sys/")):
                return "allow", "read/write on /proc, /sys"
            return "deny", "opens a file (%s)" % target
        if n in ("mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
                 "fsync", "fdatasync", "sync_file_range", "ftruncate", "truncate", "fallocate"):
            return "deny", n
        if n in ("read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev",
                 "preadv2", "pwritev2"):
            fd, desc = first_arg_fd(c.args)
            kind = fd_kind(desc or "")
            if kind == "file":
                return "deny", "%s on a regular file (%s)" % (n, desc)
            if kind == "kernel":
                return "allow", "read/write on /proc, /sys"
            return "allow", "read/write/readv/writev on pipes, sockets, eventfd, signalfd, timerfd, /dev/null, ttys"
        if n in ("wait4", "waitid"):
            if "WNOHANG" in c.args:
                return "allow", "wait4/waitid with WNOHANG"
            return "deny", "%s without WNOHANG waits for a child" % n
        if n in ("nanosleep", "clock_nanosleep"):
            return "deny", "sleeps (%s)" % n
        if n == "futex":
            if "EAGAIN" in c.ret:
                # The word had already changed: the call returned at once; any length is trace stops.
                return "allow", "futex waits up to 1 ms"
            if "FUTEX_WAKE" in c.args or "FUTEX_UNLOCK" in c.args or c.dur is None or c.dur <= FUTEX_LIMIT_S:
                return "allow", "futex waits up to 1 ms"
            return "futex", None
        if n == "connect":
            fd, _ = first_arg_fd(c.args)
            if "htons(53)" in c.args:
                return "deny", "name resolution (a DNS query)"
            if (self.pid_of(c.tid), fd) in self.nonblock or "EINPROGRESS" in c.ret:
                return "allow", "connect on a non-blocking socket"
            return "deny", "connect on a blocking socket"
        if n in ("clone", "clone3") and "CLONE_THREAD" in c.args:
            return "allow", "clone/clone3 with CLONE_THREAD"
        if n in ("clone", "clone3", "fork", "vfork"):
            # fork() from a loop thread copies the page tables of the whole grown recorder (its
            # ring arenas) and uv_spawn then waits for the child's exec: children come from the
            # spawn helper, forked before the loop existed.
            return "deny", "process creation (%s): a child not made by the spawn helper" % n
        if n == "execve":
            return "deny", "execve"
        if n == "sendmsg":
            fd, desc = first_arg_fd(c.args)
            if "MSG_DONTWAIT" in c.args or (self.pid_of(c.tid), fd) in self.nonblock:
                return "allow", "sendmsg on a non-blocking socket"
            return "deny", "sendmsg on a blocking socket (%s)" % desc
        return "allow", "prctl, socket, fcntl, ioctl"

    def feed(self, c):
        self.track(c)
        kind, why = self.verdict(c)
        if self.phase.get(c.tid) == "loop":
            if kind == "epoll":
                self.epolls[c.tid] = self.epolls.get(c.tid, 0) + 1
            elif kind == "deny":
                self.deny(c, why + " on the loop thread")
            elif kind == "futex":
                self.long_futex.append(c)
            else:
                self.allow(why)
        elif c.tid not in self.phase and c.dur is not None and (kind == "deny" or kind == "futex"):
            # What other threads wait on: a loop thread waiting for their lock waits for this too.
            start = seconds(c.ts)
            self.waits.setdefault(c.tid, []).append((start, start + c.dur, kind, c))

    def wakers(self, c, t0, t1):
        """The wake that ended c's futex wait: the last one another thread of c's process made on
        the word while c waited (as a list: empty when there was none)."""
        key = (self.pid_of(c.tid), c.args.split(",")[0].strip())
        seen = [w for w in self.wakes.get(key, []) if w[1] != c.tid and t0 - 0.0005 <= w[0] <= t1 + 0.0005]
        return seen[-1:]

    def blocked_by(self, tid, t0, t1, depth=0):
        """Why thread tid, which ended a wait at t1, could not do so sooner: a call that can wait
        (disk, process, sleep) that ended between t0 and t1, or a futex wait that began and ended
        in that window (one begun before t0 is a thread asleep in a condvar, not one holding what
        the loop wants) whose own waker was so blocked. None if nothing."""
        for start, end, kind, c in self.waits.get(tid, []):
            if kind == "deny" and t0 < end <= t1:
                return "%s (%s)" % (self.verdict(c)[1], c.raw[:120])
            if not (t0 <= start and end <= t1):
                continue
            if depth < 3:
                for w in self.wakers(c, start, end):
                    inner = self.blocked_by(w[1], start, w[0], depth + 1)
                    if inner:
                        return inner
        return None

    def finish(self):
        """Judges the loop threads' long futex waits once every wake is known. A wait ends when
        another thread of the process wakes the word: the lock's holder (or, for a condvar group
        switch, a woken pool thread). If that thread itself waited meanwhile -- on the disk, a
        process, a sleep, a lock -- the loop waited for it: a finding. If it made only calls that
        do not wait, the loop waited for its CPU work and the trace stops of those calls: allowed,
        and the longest such wait is printed."""
        for c in self.long_futex:
            parts = [p.strip() for p in c.args.split(",")]
            addr, op, val = parts[0], parts[1], parts[2] if len(parts) > 2 else "0"
            pid = self.pid_of(c.tid)
            t0 = seconds(c.ts)
            t1 = t0 + c.dur
            wakers = self.wakers(c, t0, t1)
            if not wakers:
                self.deny(c, "futex wait of %.1f ms that no thread of the process ended" % (c.dur * 1000))
                continue
            blocked = [(w[1], b) for w in wakers for b in [self.blocked_by(w[1], t0, w[0])] if b]
            if blocked:
                self.deny(c, "futex wait of %.1f ms for thread %d, which meanwhile waited: %s" %
                          (c.dur * 1000, blocked[0][0], blocked[0][1]))
                continue
            if op == "FUTEX_WAIT_PRIVATE" and val.isdigit() and int(val) & 1 and any(w[2] for w in wakers):
                self.allow("glibc condvar group switch in uv_queue_work/uv_fs_*")
            else:
                self.allow("futex waits over 1 ms for a lock holder that did not wait")
            if c.dur > self.worst_holder_wait[0]:
                self.worst_holder_wait = (c.dur, "%s: %s" % (self.prog.get(pid, "?"), c.raw[:160]))

    def loop_threads(self):
        """(program, pid, tid, epoll waits) of every thread that had a loop phase."""
        return [(self.prog.get(self.pid_of(t), "?"), self.pid_of(t), t, self.epolls.get(t, 0)) for t in self.phase]


# ---- the scenario ----

class Scenario:
    def __init__(self, build, work, rpicam):
        self.build = build
        self.rpicam = rpicam
        self.apps = os.path.join(build, "apps")
        self.work = work
        self.sock = os.path.join(work, "control.sock")
        self.pirec = os.path.join(self.apps, "pirec")
        self.log = []
        self.sim = None

    def say(self, msg):
        print("census: %s" % msg, flush=True)

    def ctl(self, *args, check=True):
        r = subprocess.run([self.pirec, args[0], "--socket", self.sock] + list(args[1:]),
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError("pirec %s failed (%d): %s%s" % (args[0], r.returncode, r.stdout, r.stderr))
        return r.stdout

    def trial(self, label):
        """Starts the next trial. The simulator's disconnect (9 s after it started) may fall on a
        trial start when the recorders took long to get ready on a loaded machine: `pirec trial`
        then says 3, "recording, but without every module", and the eye tracker joins once it is
        back, which the scenario waits for afterwards. Anything else is a failure."""
        r = subprocess.run([self.pirec, "trial", "--socket", self.sock, "--label", label],
                           capture_output=True, text=True, timeout=60)
        if r.returncode not in (0, 3):
            raise RuntimeError("pirec trial failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))

    def status_json(self):
        import json
        return json.loads(self.ctl("status", "--json"))

    def wait_for(self, what, pred, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if pred():
                    return
            except (RuntimeError, ValueError, subprocess.TimeoutExpired):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("pirec record exited while waiting for %s" % what)
            time.sleep(0.2)
        raise RuntimeError("timed out waiting for %s" % what)

    def modules_in(self, st, states):
        return all(m.get("state") in states for m in st["modules"].values())

    def start_sim(self):
        sim = os.path.join(self.apps, "pirec-eyesim")
        # Drops every client 9 s in, for 1 s: the eye tracker's stream reconnect.
        self.sim = subprocess.Popen([sim, "--host", "127.0.0.1", "--gaze-hz", "200", "--fps", "10",
                                     "--disconnect-at", "9", "--disconnect-for", "1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.sim.stdout.readline()
        m = re.match(r"pirec-eyesim http=(\d+) rtsp=(\d+)", line)
        if not m:
            raise RuntimeError("pirec-eyesim did not start: %r" % line)
        return int(m.group(1)), int(m.group(2))

    def config(self, http, rtsp, fps):
        return """[session]
output_dir = {w}/sessions
clocks_interval = 1s
remux_after = false
[control]
socket = {s}
[notes]
enabled = true
[camera.lavfi]
source = lavfi
lavfi = testsrc2
size = 160x120
fps = {fps}
preset = ultrafast
[camera.rpicam]
source = rpicam
size = 160x120
fps = {fps}
pixel_format = yuv420
preset = ultrafast
[eyetracker]
enabled = true
address = 127.0.0.1:{h}
rtsp_port = {r}
reconnect_min = 200ms
reconnect_max = 1s
""".format(w=self.work, s=self.sock, h=http, r=rtsp, fps=fps)

    @staticmethod
    def proc_info(pid):
        """(argv list, parent pid, state) of a process, or None once it is gone."""
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return argv, int(fields[1]), fields[0]

    def find_child(self, name, module):
        """The pid of the live `name` child of the recorder serving `module` (pirec-camera
        --name MODULE), or None. A process in a trace stop (state t) is live: strace stops it."""
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            info = self.proc_info(int(p))
            if not info or os.path.basename(info[0][0]) != name or info[2] in ("Z", "X"):
                continue
            parent = self.proc_info(info[1])
            if parent and "--name" in parent[0] and module in parent[0]:
                return int(p)
        return None

    def kill_child(self, name, module):
        """SIGKILLs the encoder or rpicam-vid of one camera and no other process, waiting for it
        to exist (it may be between a restart's backoff and its spawn)."""
        found = []
        self.wait_for("a %s child of recorder '%s'" % (name, module),
                      lambda: found.append(self.find_child(name, module)) or found[-1] is not None, 20)
        os.kill(found[-1], signal.SIGKILL)
        return found[-1]

    def run(self, strace, trace):
        http, rtsp = self.start_sim()
        cfg = os.path.join(self.work, "pirec.conf")
        with open(cfg, "w") as f:
            f.write(self.config(http, rtsp, 10))
        bindir = os.path.join(self.work, "bin")
        os.makedirs(bindir)
        os.symlink(self.rpicam, os.path.join(bindir, "rpicam-vid"))
        env = dict(os.environ, PATH=bindir + ":" + os.environ.get("PATH", ""))
        cmd = [strace, "-f", "-qq", "-tt", "-T", "-yy", "-s", "64", "--seccomp-bpf", "-e", "trace=" + TRACED,
               "-o", trace, self.pirec, "record", "-c", cfg, "--wait"]
        self.errlog = open(os.path.join(self.work, "pirec.log"), "w")
        # stderr is a pipe drained by a thread, as journald's socket would be: a file there would
        # make the controller's own log lines writes to a regular file.
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        drain = threading.Thread(target=lambda: shutil.copyfileobj(self.proc.stderr, self.errlog), daemon=True)
        drain.start()
        try:
            self.scenario(cfg, http, rtsp)
        finally:
            # SIGTERM goes to pirec itself: strace, signalled, would detach and leave it running.
            for pid in self.traced_children():
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            drain.join(timeout=10)
            self.errlog.close()
            if self.sim and self.sim.poll() is None:
                self.sim.terminate()
                self.sim.wait(timeout=10)

    def traced_children(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def recording_everywhere(self, st):
        return st.get("state") == "recording" and self.modules_in(st, ("running",)) and all(
            m.get("recorder_state") == "recording" for m in st["modules"].values())

    def scenario(self, cfg, http, rtsp):
        self.wait_for("the control socket", lambda: self.ctl("status") is not None)
        self.wait_for("every recorder ready", lambda: self.modules_in(self.status_json(), ("running",)))
        self.say("recorders ready; session 1, trial 1")
        t0 = time.monotonic()
        self.ctl("start", "--label", "census")
        self.wait_for("trial 1 recording", lambda: self.recording_everywhere(self.status_json()))
        self.ctl("note", "census: trial 1")
        self.ctl("status")
        time.sleep(1.5)
        self.say("encoder of camera 'lavfi' killed")
        self.kill_child("ffmpeg", "lavfi")
        time.sleep(2)
        self.trial("two")
        self.ctl("note", "census: trial 2")
        self.wait_for("trial 2 recording", lambda: self.recording_everywhere(self.status_json()))
        self.say("rpicam stand-in killed: the camera reconnects")
        self.kill_child("rpicam-vid", "rpicam")
        time.sleep(2)
        self.ctl("status")
        self.trial("three")
        self.ctl("note", "census: trial 3")
        # The simulator drops its clients 9 s after it started: inside trial 3.
        left = 11 - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
        self.wait_for("trial 3 recording", lambda: self.recording_everywhere(self.status_json()))
        self.ctl("status")
        self.ctl("stop")
        self.say("session 1 stopped; config reload (the recorders restart)")
        with open(cfg, "w") as f:
            f.write(self.config(http, rtsp, 12))
        self.ctl("reload")
        self.wait_for("the recorders back after the reload",
                      lambda: self.status_json().get("reload_pending") is False and
                      self.modules_in(self.status_json(), ("running",)))
        self.ctl("start", "--label", "after-reload")
        self.wait_for("session 2 recording", lambda: self.recording_everywhere(self.status_json()))
        self.ctl("note", "census: after the reload")
        self.ctl("stop")
        self.say("session 2 stopped; SIGTERM")


def check_scenario(work):
    """The faults the scenario caused must show in the first session's events.csv, so a scenario
    that quietly skipped a step cannot pass; the recorders' worst stalls must be in session.json."""
    import csv
    import json
    sessions = sorted(os.listdir(os.path.join(work, "sessions")))
    if len(sessions) != 2:
        return ["expected 2 sessions (before and after the reload), found %d" % len(sessions)]
    first = os.path.join(work, "sessions", sessions[0])
    with open(os.path.join(first, "events.csv")) as f:
        events = [row["event"] for row in csv.DictReader(f)]
    problems = []
    for ev, n in (("trial_start", 3), ("encoder_restarted", 1), ("source_reconnected", 1),
                  ("eyetracker_connected", 1)):
        if events.count(ev) < n:
            problems.append("events.csv has %d '%s' rows, expected at least %d" % (events.count(ev), ev, n))
    with open(os.path.join(first, "session.json")) as f:
        modules = json.load(f).get("modules", {})
    for name in ("notes", "lavfi", "rpicam", "eyetracker"):
        lag = modules.get(name, {}).get("looplag")
        if not isinstance(lag, dict) or "worst_stall" not in lag:
            problems.append("session.json: module '%s' has no looplag.worst_stall" % name)
    return problems


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    build = os.path.abspath(args[0])
    keep = args[args.index("--keep") + 1] if "--keep" in args else None
    first_run = "--first-run" in args
    rpicam = os.path.abspath(args[args.index("--rpicam") + 1] if "--rpicam" in args else
                             os.path.join(build, "tests", "test-camera-fakerpicam"))
    if os.environ.get("PIREC_EMULATED"):
        # Under qemu-user (scripts/ci-arm64) strace sees the emulator's system calls and process
        # names, not the recorders': the census judges native processes only.
        print("census: SKIP: running under %s emulation" % os.environ["PIREC_EMULATED"])
        return 77
    strace = shutil.which("strace")
    if not strace:
        print("census: SKIP: strace is not installed (apt-get install strace)")
        return 77
    probe = subprocess.run([strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=prctl", "-o", "/dev/null", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        print("census: SKIP: strace cannot trace here: %s" % probe.stderr.strip())
        return 77
    if not shutil.which("ffmpeg"):
        print("census: SKIP: ffmpeg is not installed")
        return 77
    for p in [os.path.join(build, "apps", p) for p in PROGRAMS + ("pirec-eyesim",)] + [rpicam]:
        if not os.path.exists(p):
            print("census: SKIP: %s is not built" % p)
            return 77
    work = keep or tempfile.mkdtemp(prefix="pirec-census.")
    os.makedirs(work, exist_ok=True)
    trace = os.path.join(work, "trace.txt")
    sc = Scenario(build, work, rpicam)
    ok = True
    try:
        sc.run(strace, trace)
    except Exception as e:  # the scenario broke: still read what was traced
        print("census: FAIL: scenario: %s" % e)
        with open(os.path.join(work, "pirec.log"), errors="replace") as f:
            print("".join(f.readlines()[-40:]))
        ok = False
    if ok:
        for problem in check_scenario(work):
            print("census: FAIL: scenario: %s" % problem)
            ok = False
    census = Census()
    for c in parse(trace):
        census.feed(c)
    census.finish()
    threads = census.loop_threads()
    seen = {}
    for prog, pid, tid, ep in threads:
        seen.setdefault(prog, []).append((pid, tid, ep))
    for prog in PROGRAMS:
        if prog not in seen:
            print("census: FAIL: no loop thread of %s seen (did it lose its '%s' marker?)" % (prog, LOOP_NAME))
            ok = False
            continue
        for pid, tid, ep in seen[prog]:
            if tid != pid:
                print("census: FAIL: %s pid %d: the loop thread %d is not the process's main thread" % (prog, pid, tid))
                ok = False
            if ep == 0:
                print("census: FAIL: %s pid %d: its loop thread made no epoll wait: a wrong marker" % (prog, pid))
                ok = False
    print("census: loop threads judged: %s" % ", ".join(
        "%s x%d" % (p, len(v)) for p, v in sorted(seen.items())))
    if census.worst_holder_wait[0]:
        print("census: longest allowed futex wait on a loop thread: %.1f ms (%s)" % (
            census.worst_holder_wait[0] * 1000, census.worst_holder_wait[1]))
    print("census: allowed calls on loop threads:")
    for why, n in sorted(census.allowed.items()):
        print("  %7d  %s -- %s" % (n, why, ALLOWED_REASONS.get(why, "")))
    if census.findings:
        print("census: %d calls on loop threads that can wait:" % len(census.findings))
        summary = {}
        for prog, pid, tid, ts, why, raw in census.findings:
            key = (prog, why.split(" (")[0] if "regular file" not in why else why)
            summary.setdefault(key, []).append(raw)
        for (prog, why), raws in sorted(summary.items()):
            print("  %-16s %4dx %s\n      e.g. %s" % (prog, len(raws), why, raws[0][:240]))
        if not first_run:
            ok = False
    if not keep and ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("census: trace and logs kept in %s" % work)
    print("census: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok or first_run else 1


if __name__ == "__main__":
    sys.exit(main())
