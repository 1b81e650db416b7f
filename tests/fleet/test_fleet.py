"""Fleet control over MQTT (issue 18, docs/FLEET.md): a real mosquitto broker on loopback and three
real `pirec record` controllers (notes only) in one group, driven by the real `pirec fleet` client.

- a fleet start gives every device one fleet session id, the peers, and a start within a bound of
  the agreed instant; a device that connects after the start joins the running session (retained);
- trial and note reach every device; stop ends every session;
- the broker killed mid-session: recording goes on (notes still taken, no error), the devices
  reconnect when it is back and a stop sent then reaches all;
- a start retained on the broker is not joined once no device records its session any more;
- [fleet] if_clock_error = refuse refuses a start on a device whose clock is off by more than
  max_clock_error (the expectation read with adjtimex, as the controller does);
- a replayed command id starts nothing; malformed commands (not JSON, invalid UTF-8, wrong
  types, 1 MB) are refused, counted and logged, and change nothing."""

import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "faults"))
import faultlib  # noqa: E402
from faultlib import check, wait_for  # noqa: E402
import mqttlib  # noqa: E402

# The bound a start must meet on a loaded 2-core CI machine: the timer fires on the agreed wall
# clock instant; what it measures (late_ns) is printed for docs/FLEET.md.
START_BOUND_NS = 500 * 1000 * 1000


def fleet(broker, group, *args, timeout=60):
    import subprocess
    argv = [faultlib.program("pirec"), "fleet", args[0], "--broker", broker.url(), "--group", group,
            "--json", "--timeout", "20"] + list(args[1:])
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else {}
    except ValueError:
        out = {}
    return p.returncode, out, p.stdout + p.stderr


def fleet_text(broker, group, *args):
    """The client's human output: (exit status, stdout, stderr)."""
    import subprocess
    argv = [faultlib.program("pirec"), "fleet", args[0], "--broker", broker.url(), "--group", group] + list(args[1:])
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr, p.stdout


def fleet_ok(broker, group, *args, want):
    rc, out, text = fleet(broker, group, *args)
    check(rc == 0, "pirec fleet %s: exit %d:\n%s" % (" ".join(args), rc, text))
    for dev, ack in out["devices"].items():
        check(ack and ack.get("reply") == want, "%s answered %s to %s" % (dev, ack, args[0]))
    return out


def clock_off_by_more_than_1ns():
    """adjtimex(2) read-only through libc, as the controller reads it: TIME_ERROR (5), STA_UNSYNC
    (0x40) or an estimated error above 0 us (the kernel keeps microseconds)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(512)  # struct timex, modes 0: change nothing
    state = libc.adjtimex(buf)
    check(state >= 0, "adjtimex failed")
    esterror = int.from_bytes(buf.raw[32:40], "little", signed=True)  # x86_64 and arm64 layout
    status = int.from_bytes(buf.raw[40:44], "little", signed=True)
    return state == 5 or bool(status & 0x40) or esterror * 1000 > 1


def connected(rec, min_connects=1):
    st = rec.status().get("fleet") or {}
    return st.get("connected") and st.get("connects", 0) >= min_connects and st


def session_json(d):
    with open(os.path.join(d, "session.json")) as f:
        return json.load(f)


def main():
    tmp = tempfile.mkdtemp(prefix="pirec-fleet-")
    broker = mqttlib.Broker(tmp).start()
    group = "t%06d" % random.randrange(10 ** 6)
    recs = []
    try:
        for i in range(3):
            conf = ("[fleet]\nbroker = %s\ngroup = %s\ndevice = pi%d\nreconnect_max = 1s\nkeepalive = 5s\n"
                    % (broker.url(), group, i + 1))
            recs.append(faultlib.Recorder(conf, tag="fleet"))
        for r in recs[:2]:
            r.start()
            wait_for("pi connected to the broker", lambda: connected(r), 20)
        # What an operator sees first: both devices online (their retained status).
        wait_for("pirec fleet status lists pi1 and pi2 online",
                 lambda: (lambda r: r[0] == 0 and r[2].count(" online ") == 2 and r)(
                     fleet_text(broker, group, "status")), 20)
        start = fleet_ok(broker, group, "start", "--lead", "1.5", want="started")
        fid = start["command"]["session"]
        check(sorted(start["devices"]) == ["pi1", "pi2"], "start reached %s" % sorted(start["devices"]))
        # The late joiner: connects after the start and is told by the retained command.
        recs[2].start()
        wait_for("pi3 joins the running fleet session",
                 lambda: recs[2].status().get("fleet", {}).get("session") == fid, 30)
        dirs = [r.status()["session_dir"] for r in recs]
        agreed = start["command"]["start_wall_ns"]
        for d in dirs:
            # session.json is rewritten in the threadpool after the start is answered.
            sj = wait_for("%s/session.json with its fleet object" % d,
                          lambda: (lambda j: "fleet" in j and "clock_sync" in j and j)(session_json(d)), 20)
            fl = sj["fleet"]
            check(fl["session"] == fid, "%s: fleet session %s, not %s" % (d, fl["session"], fid))
            check(fl["start_wall_ns"] == agreed, "%s: agreed start differs" % d)
            check(sorted(fl["peers"]) == ["pi1", "pi2"], "%s: peers %s" % (d, fl["peers"]))
            check("clock_sync" in sj, "%s: session.json has no clock_sync" % d)
            check(os.path.basename(d).endswith("_" + fid), "%s: the directory is not named after %s" % (d, fid))
        skews = [session_json(d)["start"]["wall_ns"] - agreed for d in dirs[:2]]
        print("start skew vs the agreed instant (ns): %s" % skews)
        for s in skews:
            check(-5 * 1000 * 1000 <= s <= START_BOUND_NS, "a start %d ns off the agreed instant" % s)
        check(session_json(dirs[2])["fleet"]["late_ns"] > 0, "pi3 did not record that it joined late")

        fleet_ok(broker, group, "note", "to", "everyone", want="noted")
        fleet_ok(broker, group, "trial", "--label", "second", want="trial")

        # A replayed start (same id, QoS 1 redelivery) and malformed commands change nothing.
        topic = "pirec/%s/command" % group
        refused0 = [r.status()["fleet"]["refused"] for r in recs]
        mqttlib.publish(broker.port, topic, json.dumps(start["command"]).encode())
        for bad in [b"not json", b'{"id":"x1","cmd":"note","text":"\xff\xfe"}',
                    b'{"id":"x2","cmd":"start","session":7,"start_wall_ns":"soon"}', b'{"id":"x3"}',
                    b'{"id":"x4","cmd":"note","text":"' + b"a" * (1024 * 1024) + b'"}', b"[1,2]"]:
            mqttlib.publish(broker.port, topic, bad)
        for i, r in enumerate(recs):
            wait_for("pi%d refuses the 6 malformed commands" % (i + 1),
                     lambda: r.status()["fleet"]["refused"] >= refused0[i] + 6, 20)
            st = r.status()
            check(st["state"] == "recording" and st["session_dir"] == dirs[i] and st["trial"] == 2,
                  "pi%d changed after bad commands: %s %s" % (i + 1, st["state"], st["session_dir"]))
            check("refused a command" in r.log_text(), "pi%d logged no refusal" % (i + 1))

        # The broker goes: recording does not notice.
        broker.kill()
        for r in recs:
            wait_for("a device sees the broker gone", lambda: not r.status()["fleet"]["connected"], 30)
            check(r.note("while the broker is away", r.status()["session_dir"]).get("reply") == "noted",
                  "a note was refused while the broker was away")
            check(r.status()["state"] == "recording", "recording stopped when the broker went")
        broker.start()
        for r in recs:
            wait_for("a device reconnects", lambda: connected(r, 2), 30)
        fleet_ok(broker, group, "stop", want="stopped")
        for i, d in enumerate(dirs):
            header, rows = faultlib.read_csv(os.path.join(d, "notes.csv"))
            texts = [row[header.index("text")] for row in rows]
            for want in ["to everyone", "while the broker is away"]:
                check(want in texts, "pi%d: notes.csv lacks '%s': %s" % (i + 1, want, texts))
            sj = session_json(d)
            check(sj.get("final") in (1, True) and not sj.get("errors"), "pi%d: session %s" % (i + 1, sj.get("errors")))
            check(recs[i].status()["state"] == "idle", "pi%d still records after the stop" % (i + 1))
        rc, err, out = fleet_text(broker, group, "status")
        check(rc == 0 and out.count(" online ") == 3 and out.count(" idle ") == 3,
              "pirec fleet status after the stop: %d %s%s" % (rc, out, err))

        # A retained start whose session was then stopped device by device (pirec stop on each) is
        # not joined by a device that comes later: no peer records it any more.
        cmd = fleet_ok(broker, group, "start", "--lead", "1", want="started")["command"]
        again = cmd["session"]
        for r in recs:
            r.stop_session()
        # Well past the instant (a start that is merely delayed by the network is still joined).
        wait_for("2 s past the agreed instant", lambda: time.time_ns() > cmd["start_wall_ns"] + 2 * 10 ** 9, 30)
        recs[2].close()
        recs[2].start()
        wait_for("the restarted pi3 refuses the stale start",
                 lambda: "no device records fleet session '%s' any more" % again in recs[2].log_text(), 30)
        st = recs[2].status()
        check(st["state"] == "idle" and st["fleet"]["session"] is None, "pi3 joined a stopped session: %s" % st)

        # [fleet] if_clock_error = refuse: a device whose clock is unsynchronised or off by more than
        # max_clock_error (1 ns here) refuses a fleet start and says why; the others start.
        recs[2].close()
        recs[2].config += "max_clock_error = 1ns\nif_clock_error = refuse\n"
        recs[2].start()
        wait_for("pi3 back", lambda: connected(recs[2]), 20)
        wait_for("3 online", lambda: fleet_text(broker, group, "status")[2].count(" online ") == 3, 20)
        expect_refusal = clock_off_by_more_than_1ns()
        rc, out, text = fleet(broker, group, "start", "--lead", "1")
        acks = out.get("devices", {})
        check(acks.get("pi1", {}).get("reply") == "started", "pi1 did not start: %s" % text)
        if expect_refusal:
            check(rc == 1 and acks["pi3"]["reply"] == "error" and "clock" in acks["pi3"]["message"],
                  "pi3 with a clock off by more than 1 ns was not refused: %s" % text)
        else:
            check(rc == 0, "pi3's clock is within 1 ns, yet: %s" % text)
        print("clock policy: pi3 %s" % ("refused (clock not within 1 ns)" if expect_refusal else "started"))
        fleet(broker, group, "stop")
        print("fleet test passed: one session %s on 3 devices" % fid)
    finally:
        mqttlib.cleanup(recs, broker, tmp)


main()
