"""The fleet tests' helpers: a real mosquitto broker on a free loopback port in a scratch directory,
and a minimal MQTT 3.1.1 publisher (CONNECT, PUBLISH QoS 0) written from the OASIS MQTT 3.1.1
specification, sections 3.1 and 3.3, so a test can send what no well-behaved client would: invalid
UTF-8, wrong types, a 1 MB payload, a replayed command id."""

import os
import shutil
import socket
import subprocess
import time

import faultlib

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer")


def cleanup(recs, broker, tmp):
    """Ends every recorder, the broker, and removes the scratch directory. In a sanitizer build a
    controller's report (a leak at exit, a bad access while the broker came and went) fails the
    test: its log says so, quoted."""
    reports = []
    for r in recs:
        r.close()
        if os.path.exists(r.log_path):
            with open(r.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            if any(m in text for m in SANITIZER_MARKS):
                reports.append(text[-3000:])
        r.cleanup()
    broker.kill()
    shutil.rmtree(tmp, ignore_errors=True)
    faultlib.check(not reports, "a controller's sanitizer report:\n" + "\n".join(reports))


class Broker:
    """mosquitto -c CONF listening on 127.0.0.1:port (anonymous, no persistence)."""

    def __init__(self, tmp, port=None):
        if not MOSQUITTO:
            faultlib.skip("mosquitto (the broker) is not installed: apt-get install mosquitto")
        self.tmp = tmp
        self.port = port or faultlib.free_port()
        self.conf = os.path.join(tmp, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % self.port)
        self.proc = None

    def start(self):
        log = open(os.path.join(self.tmp, "mosquitto.log"), "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        faultlib.wait_for("mosquitto listening on port %d" % self.port, self._listening, 20)
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            faultlib.fail("mosquitto exited with status %s" % self.proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def url(self):
        return "mqtt://127.0.0.1:%d" % self.port


def _remaining(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(b):
    return len(b).to_bytes(2, "big") + b


def publish(port, topic, payload, retain=False):
    """Connects, publishes payload (bytes) at QoS 0 and disconnects after the broker took it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        var = _str(b"MQTT") + bytes([4, 0x02]) + (30).to_bytes(2, "big") + _str(b"pirec-test-%d" % os.getpid())
        s.sendall(bytes([0x10]) + _remaining(len(var)) + var)
        ack = s.recv(4)
        faultlib.check(len(ack) == 4 and ack[0] == 0x20 and ack[3] == 0, "CONNACK refused: %r" % ack)
        body = _str(topic.encode()) + payload
        s.sendall(bytes([0x30 | (1 if retain else 0)]) + _remaining(len(body)) + body)
        s.sendall(bytes([0xE0, 0]))  # DISCONNECT: the broker has the message before it reads this
        time.sleep(0.05)
    finally:
        s.close()
