"""Fleet security (issue 18, docs/FLEET.md "Security"): a real mosquitto with TLS (a test CA made
with openssl), a password file and the ACL of docs/FLEET.md; two `pirec record` controllers that
connect over mqtts with per-device credentials.

- the devices connect over TLS and report; the operator's `pirec fleet` starts and stops them;
- a device's own account cannot command the fleet (the ACL drops the publish: no device answers,
  nothing starts); an anonymous client is refused by the broker;
- a controller that trusts another CA does not connect, and records anyway."""

import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "faults"))
import faultlib  # noqa: E402
from faultlib import check, wait_for  # noqa: E402
import mqttlib  # noqa: E402

ACL = """pattern readwrite pirec/+/device/%u/#
pattern read pirec/+/command
user operator
topic readwrite pirec/+/command
topic read pirec/+/device/#
"""


def run(*argv):
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, "%s: %s" % (" ".join(argv), p.stderr))


def make_ca(tmp, name):
    key, pem = os.path.join(tmp, name + ".key"), os.path.join(tmp, name + ".pem")
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", pem, "-days", "2", "-subj", "/CN=pirec test " + name)
    return key, pem


def make_pki(tmp):
    ca_key, ca = make_ca(tmp, "ca")
    make_ca(tmp, "other-ca")
    key, csr, pem = (os.path.join(tmp, n) for n in ("broker.key", "broker.csr", "broker.pem"))
    ext = os.path.join(tmp, "ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
        "-out", csr, "-subj", "/CN=localhost")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", pem,
        "-days", "2", "-extfile", ext)
    return ca, key, pem


def main():
    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        faultlib.skip("openssl or mosquitto_passwd is not installed (apt-get install openssl mosquitto)")
    tmp = tempfile.mkdtemp(prefix="pirec-fleet-tls-")
    os.chmod(tmp, 0o755)  # mosquitto drops root for its own user and must still read these
    broker = mqttlib.Broker(tmp)
    ca, key, pem = make_pki(tmp)
    passwd, acl = os.path.join(tmp, "passwd"), os.path.join(tmp, "acl")
    creds = {"pi1": "secret-1", "pi2": "secret-2", "operator": "op-secret"}
    for i, (user, pw) in enumerate(creds.items()):
        run("mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", passwd, user, pw)
        with open(os.path.join(tmp, user + ".cred"), "w") as f:
            f.write("%s:%s\n" % (user, pw))
    with open(acl, "w") as f:
        f.write(ACL)
    with open(broker.conf, "w") as f:
        f.write("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nallow_anonymous false\n"
                "password_file %s\nacl_file %s\npersistence false\n" % (broker.port, ca, pem, key, passwd, acl))
    for n in os.listdir(tmp):
        os.chmod(os.path.join(tmp, n), 0o644)
    broker.start()
    url = "mqtts://127.0.0.1:%d" % broker.port
    group = "s%06d" % random.randrange(10 ** 6)

    def fleet_conf(user, ca_file=ca):
        return ("[fleet]\nbroker = %s\ngroup = %s\ndevice = %s\ncredentials_file = %s\nca_file = %s\n"
                "reconnect_max = 1s\n" % (url, group, user, os.path.join(tmp, user + ".cred"), ca_file))

    def fleet(conf_user, *args):
        conf = os.path.join(tmp, conf_user + ".conf")
        with open(conf, "w") as f:
            f.write(fleet_conf(conf_user))
        p = subprocess.run([faultlib.program("pirec"), "fleet", args[0], "-c", conf, "--timeout", "3"] + list(args[1:]),
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    recs = [faultlib.Recorder(fleet_conf("pi1"), tag="fleet-tls"), faultlib.Recorder(fleet_conf("pi2"), tag="fleet-tls"),
            faultlib.Recorder(fleet_conf("pi2", os.path.join(tmp, "other-ca.pem")).replace("device = pi2", "device = pi3"),
                              tag="fleet-tls")]
    try:
        for r in recs:
            r.start()
        for r in recs[:2]:
            wait_for("a device connects over TLS", lambda: r.status().get("fleet", {}).get("connected"), 30)
        wait_for("the operator sees pi1 and pi2 online", lambda: fleet("operator", "status")[1].count(" online ") == 2, 20)

        # A device's account may not command: the broker drops it, nobody answers, nothing starts.
        rc, text = fleet("pi1", "start")
        check(rc == 1 and "no answer" in text, "pi1's account commanded the fleet: %d %s" % (rc, text))
        for r in recs:
            check(r.status()["state"] == "idle", "a device started on a command the ACL forbids")
        # Anonymous: refused by the broker.
        p = subprocess.run([faultlib.program("pirec"), "fleet", "status", "--broker", url, "--group", group],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode != 0, "an anonymous client was let in: %s" % p.stdout)

        rc, text = fleet("operator", "start", "--lead", "1")
        check(rc == 0 and text.count(": started") == 2, "the operator's start: %d %s" % (rc, text))
        st3 = recs[2].status()
        check(not st3["fleet"]["connected"] and st3["fleet"]["connects"] == 0,
              "pi3 (trusting another CA) connected: %s" % st3["fleet"])
        check(recs[2].session() and recs[2].status()["state"] == "recording", "pi3 cannot record without the broker")
        recs[2].stop_session()
        rc, text = fleet("operator", "stop")
        check(rc == 0 and text.count(": stopped") == 2, "the operator's stop: %d %s" % (rc, text))
        print("fleet TLS/ACL test passed")
    finally:
        mqttlib.cleanup(recs, broker, tmp)


main()
