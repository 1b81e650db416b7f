#!/usr/bin/env python3
"""pirec-web's HTTP API and WebSocket against a real `pirec record` (issue 15, items 1, 3, 4, 7).

Starts pirec-web first (no controller yet: 503, then it connects by itself), then `pirec record`
with the notes recorder and a synthetic (lavfi) camera, and drives a session over HTTP the way a
script would with curl: start, a note with commas, quotes and a leading '=', a trial change, stop,
the session list and downloads. Bad input and load on the way: requests without the state-change
header, from another Origin or Host, malformed JSON, a 10 MB body, a body of unknown length,
'../' and a symlink out of the data directory, 200 WebSocket clients at once and one that never
reads, all while the recording keeps every frame (rows = frames written, 0 drops) and
`pirec status` answers. Then the controller is killed and restarted: the WebSocket clients are
told, and the API works again without restarting pirec-web. Last, LAN mode: a token is needed
(file mode 0600, `pirec-web --url` prints it), wrong or missing tokens get 401.

Usage: test_api.py BUILD_DIR. Exit 0 pass, 1 fail, 77 skipped (pirec-web not built).
"""
import base64
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
APPS = os.path.join(BUILD, "apps")
NOTE = '=SUM(A1), "quoted", and commas, too'
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def wait_for(pred, what, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit("test_api: FAIL: timed out waiting for " + what)


class Web:
    def __init__(self, port, host="127.0.0.1"):
        self.port, self.host = port, host

    def request(self, method, path, body=None, headers=None, raw=False):
        h = {"X-Pirec": "1"} if method == "POST" else {}
        h.update(headers or {})
        c = http.client.HTTPConnection(self.host, self.port, timeout=90)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        c.close()
        if raw:
            return r.status, payload, r
        try:
            return r.status, json.loads(payload)
        except ValueError:
            return r.status, payload

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)


class WsClient:
    """The smallest RFC 6455 client that reads text frames (no fragmentation from the server)."""

    def __init__(self, port, path="/", headers=""):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pirec\r\n"
                        "Origin: http://127.0.0.1:%d\r\n%s\r\n" % (path, port, key, port, headers)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.accepted = head.startswith(b"HTTP/1.1 101")

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def recv(self):
        self._need(2)
        n = self.buf[1] & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n, off = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10)
            n, off = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(off + n)
        op, data, self.buf = self.buf[0] & 0x0F, self.buf[off:off + n], self.buf[off + n:]
        return op, data

    def next_json(self, pred, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            op, data = self.recv()
            if op == 1:
                m = json.loads(data)
                if pred(m):
                    return m
        return None

    def send_text(self, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
                                 if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self):
        self.s.close()


def start_web(work, conf, extra=()):
    out = open(os.path.join(work, "web.out"), "w+")
    p = subprocess.Popen([os.path.join(APPS, "pirec-web"), "-c", conf, "--port", "0", "--quiet", *extra],
                         stdout=out, stderr=open(os.path.join(work, "web.err"), "a"))

    def url():
        out.seek(0)
        for line in out.read().splitlines():
            if line.startswith("pirec-web: console at "):
                return line.split(" at ", 1)[1]
        if p.poll() is not None:
            raise SystemExit("test_api: FAIL: pirec-web exited: " + open(os.path.join(work, "web.err")).read())
        return None
    u = wait_for(url, "pirec-web to listen")
    return p, int(u.split(":")[2].split("/")[0]), u


def start_record(work, conf):
    return subprocess.Popen([os.path.join(APPS, "pirec"), "record", "-c", conf, "--wait"],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "record.log"), "a"))


def pirec_status_ms(sock):
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(APPS, "pirec"), "status", "--socket", sock], capture_output=True)
    return (time.monotonic() - t0) * 1000, r.returncode


def bad_input(web, sess):
    st, r = web.post("/api/note", {"text": "x"}, headers={"X-Pirec": ""})
    check(st == 403 and "X-Pirec" in r["message"], "a POST without X-Pirec is refused (403): %s" % r)
    st, r = web.post("/api/note", {"text": "x"}, headers={"Origin": "http://evil.example"})
    check(st == 403 and "cross-origin" in r["message"], "a cross-origin POST is refused (403)")
    st, r = web.get("/api/status", headers={"Host": "evil.example"})
    check(st == 403, "a request naming another Host is refused (403)")
    st, r = web.post("/api/note", b'{"text": "unterminated')
    check(st == 400 and "malformed JSON" in r["message"], "malformed JSON: 400 '%s'" % r["message"])
    st, r = web.post("/api/note", {"text": 5})
    check(st == 400 and "'text'" in r["message"], "a mistyped field: 400 '%s'" % r["message"])
    st, r = web.post("/api/nosuch", {})
    check(st == 404, "an unknown command: 404")
    st, r = web.post("/api/note", b"x" * (10 * 1024 * 1024))
    check(st == 413, "a 10 MB body: 413")
    c = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    c.putrequest("POST", "/api/note")
    c.putheader("X-Pirec", "1")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    c.send(b"5\r\nhello\r\n0\r\n\r\n")
    check(c.getresponse().status == 411, "a body of unknown length: 411")
    c.close()
    for path in ("/files/../pirec.conf", "/files/%s/../../pirec.conf" % sess, "/files/%s/..%%2f..%%2fpirec.conf" % sess,
                 "/files/%s/escape" % sess, "/files/%s/escape-dir/passwd" % sess, "/../../etc/passwd"):
        st, body, _ = web.get(path, raw=True)
        check(st in (403, 404) and b"root:" not in body and b"[session]" not in body,
              "download %s refused (%d)" % (path, st))


def load(web, sock):
    clients, refused = [], 0
    for _ in range(200):
        try:
            w = WsClient(web.port)
            if w.accepted:
                clients.append(w)
            else:
                refused += 1
                w.close()
        except OSError:
            refused += 1
    check(len(clients) == 32 and refused == 168, "200 WebSocket clients: 32 served, %d refused" % refused)
    # One that never reads: its socket buffer fills while the others are pushed to.
    stalled = WsClient(web.port) if len(clients) < 32 else clients.pop()
    stalled.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    worst = 0
    for _ in range(10):
        ms, rc = pirec_status_ms(sock)
        worst = max(worst, ms)
        check(rc == 0, "pirec status answers under load") if rc else None
    print("pirec status under load: worst %.1f ms" % worst)
    # 100 ms is the figure; the bound here is loose for a loaded 2-core CI machine.
    check(worst < 2000, "pirec status answered within 2 s every time (worst %.1f ms)" % worst)
    # the first push may come before the first disk figures (both are asked at once)
    m = clients[0].next_json(lambda m: m.get("type") == "status" and m["disk"]["total"] > 0)
    check(m is not None and "modules" in m["status"] and m["disk"]["free"] > 0,
          "status pushes reach the clients, with disk figures")
    big = clients[1]
    big.send_text(b"x" * 10000)
    try:
        op, data = big.recv()
        while op == 1:
            op, data = big.recv()
        check(op == 8 and int.from_bytes(data[:2], "big") == 1009, "a 10 kB WebSocket message: closed with 1009")
    except (EOFError, OSError):
        check(True, "a 10 kB WebSocket message: connection closed")
    return clients + [stalled]


def token_mode(work, conf):
    tok = os.path.join(work, "token")
    p, port, url = start_web(work, conf, ["--listen", "0.0.0.0", "--token-file", tok])
    try:
        mode = stat.S_IMODE(os.stat(tok).st_mode)
        check(mode == 0o600, "the token file is made with mode 0600 (%o)" % mode)
        token = open(tok).read().strip()
        check(url.endswith("?token=" + token), "the console's URL carries the token")
        printed = subprocess.run([os.path.join(APPS, "pirec-web"), "-c", conf, "--listen", "0.0.0.0", "--token-file",
                                  tok, "--url"], capture_output=True, text=True).stdout.strip()
        check(printed.endswith(":8380/?token=" + token), "pirec-web --url prints the URL with the token: " + printed)
        web = Web(port)
        st, r = web.get("/api/sessions")
        check(st == 401, "no token: 401")
        st, r = web.get("/api/sessions", headers={"Authorization": "Bearer " + "0" * len(token)})
        check(st == 401 and r["message"] == "wrong token", "a wrong token: 401")
        st, r = web.get("/api/sessions", headers={"Authorization": "Bearer " + token})
        check(st == 200, "the token as a Bearer header: 200")
        st, body, resp = web.get("/?token=" + token, raw=True)
        cookie = resp.getheader("set-cookie") or ""
        check(st == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie,
              "the token in the URL sets a SameSite HttpOnly cookie")
        st, r = web.get("/api/sessions", headers={"Cookie": cookie.split(";")[0]})
        check(st == 200, "the cookie is taken as the token")
        ws = WsClient(port)
        check(not ws.accepted, "a WebSocket without the token is refused")
        ws.close()
        os.chmod(tok, 0o644)
        r = subprocess.run([os.path.join(APPS, "pirec-web"), "-c", conf, "--listen", "0.0.0.0", "--token-file", tok,
                            "--port", "0"], capture_output=True, text=True, timeout=30)
        check(r.returncode == 1 and "readable by others" in r.stderr, "a token file others can read is refused")
        r = subprocess.run([os.path.join(APPS, "pirec-web"), "-c", conf, "--listen", "0.0.0.0", "--token-file",
                            os.path.join(work, "none", "t"), "--port", "0"], capture_output=True, text=True, timeout=30)
        check(r.returncode == 1 and "token file" in r.stderr, "LAN mode without a usable token file does not start")
    finally:
        p.send_signal(signal.SIGTERM)
        check(p.wait(30) == 0, "pirec-web exits 0 on SIGTERM")


def password_mode(work, conf):
    """[web] password_hash: the page and /api/auth are open, the rest needs the session cookie a right
    password gives (or the token); wrong passwords are limited per address."""
    r = subprocess.run([os.path.join(APPS, "pirec-web"), "--hash-password"], input="lab pass, \"quoted\"\n",
                       capture_output=True, text=True)
    hashed = r.stdout.strip()
    check(r.returncode == 0 and hashed.startswith("$argon2id$"), "pirec-web --hash-password prints an Argon2id hash")
    bad = os.path.join(work, "bad-hash.conf")
    with open(bad, "w") as f:
        f.write(open(conf).read() + "[web]\npassword_hash = secret\n")
    r = subprocess.run([os.path.join(APPS, "pirec-web"), "-c", bad, "--port", "0"], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 78 and "bad-hash.conf" in r.stderr and "password_hash" in r.stderr,
          "a password_hash that is no hash is refused naming the file and key: " + r.stderr.strip())
    pconf = os.path.join(work, "password.conf")
    with open(pconf, "w") as f:
        f.write(open(conf).read() + "[web]\npassword_hash = %s\n" % hashed)
    p, port, _ = start_web(work, pconf)
    try:
        web = Web(port)
        st, r = web.get("/api/auth")
        check(st == 200 and r["needed"] and not r["authorized"] and r["password"], "GET /api/auth: log in needed")
        st, body, _ = web.get("/", raw=True)
        check(st == 200 and b"loginform" in body, "the page itself loads without a login")
        st, r = web.get("/api/status")
        check(st == 401 and "password" in r["message"], "no login: 401 '%s'" % r.get("message"))
        ws = WsClient(port)
        check(not ws.accepted, "no login: the WebSocket is refused")
        ws.close()
        st, r = web.post("/api/login", {"password": "lab pass"})
        check(st == 401 and r["message"] == "wrong password", "a wrong password: 401")
        st, body, resp = web.post("/api/login", {"password": 'lab pass, "quoted"'}, raw=True)
        cookie = resp.getheader("set-cookie") or ""
        check(st == 200 and cookie.startswith("pirec_session=") and "HttpOnly" in cookie and
              "SameSite=Strict" in cookie, "the right password: 200 and a session cookie (%s...)" % cookie[:24])
        jar = {"Cookie": cookie.split(";")[0]}
        st, r = web.get("/api/sessions", headers=jar)
        check(st == 200, "the session cookie opens the API")
        st, r = web.get("/api/auth", headers=jar)
        check(r["authorized"], "GET /api/auth with the cookie: authorized")
        ws = WsClient(port, headers="Cookie: %s\r\n" % jar["Cookie"])
        check(ws.accepted, "the session cookie opens the WebSocket")
        ws.close()
        st, r = web.get("/api/sessions", headers={"Cookie": "pirec_session=" + "0" * 64})
        check(st == 401, "a made-up session: 401")
        st, r = web.post("/api/logout", headers=jar)
        check(st == 200 and web.get("/api/sessions", headers=jar)[0] == 401, "after logout the cookie is refused")
        codes = [web.post("/api/login", {"password": "guess%d" % i})[0] for i in range(5)]
        st, r = web.post("/api/login", {"password": 'lab pass, "quoted"'})
        check(codes == [401] * 5 and st == 429 and "try again in" in r["message"],
              "after 5 wrong passwords the address waits, right password or not: %s then %d '%s'"
              % (codes, st, r.get("message")))
    finally:
        p.send_signal(signal.SIGTERM)
        check(p.wait(30) == 0, "pirec-web exits 0 on SIGTERM")


def tls_mode(work, conf):
    """[web] tls_cert/tls_key for real: a self-signed certificate made here with openssl; HTTPS and WSS
    verified against it as the CA (Python's ssl and curl --cacert), refused without it."""
    import ssl
    if not shutil.which("openssl"):
        print("test_api: TLS part skipped: no openssl (apt install openssl)", flush=True)
        return
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                       capture_output=True, text=True)
    if r.returncode != 0:
        check(False, "openssl made a self-signed certificate: " + r.stderr)
        return
    hashed = subprocess.run([os.path.join(APPS, "pirec-web"), "--hash-password"], input="tls pass\n",
                            capture_output=True, text=True).stdout.strip()
    tconf = os.path.join(work, "tls.conf")
    with open(tconf, "w") as f:
        f.write(open(conf).read() + "[web]\ntls_cert = %s\ntls_key = %s\npassword_hash = %s\n" % (cert, key, hashed))
    p, port, url = start_web(work, tconf)
    try:
        check(url.startswith("https://"), "with a certificate the console's URL is https: " + url)
        ctx = ssl.create_default_context(cafile=cert)
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        c.request("GET", "/api/auth")
        resp = c.getresponse()
        auth = json.loads(resp.read())
        check(resp.status == 200 and auth["needed"], "HTTPS verified against the certificate: GET /api/auth")
        c.request("POST", "/api/login", body=json.dumps({"password": "tls pass"}),
                  headers={"X-Pirec": "1", "Content-Type": "application/json"})
        resp = c.getresponse()
        resp.read()
        cookie = resp.getheader("set-cookie") or ""
        check(resp.status == 200 and "; Secure" in cookie, "a login over TLS gives a Secure cookie: " + cookie[-60:])
        c.request("GET", "/api/sessions", headers={"Cookie": cookie.split(";")[0]})
        resp = c.getresponse()
        check(resp.status == 200 and "sessions" in json.loads(resp.read()), "GET /api/sessions over HTTPS")
        c.close()
        try:
            c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(), timeout=30)
            c.request("GET", "/api/auth")
            verified = True
        except ssl.SSLCertVerificationError:
            verified = False
        check(not verified, "a client without the certificate as CA refuses the connection")
        try:
            plain = Web(port).get("/api/auth")[0]
        except (http.client.HTTPException, OSError):
            plain = None
        check(plain != 200, "plain HTTP on the TLS port gets no answer (%s)" % plain)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        ws = WsClient.__new__(WsClient)
        ws.s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        k = base64.b64encode(os.urandom(16)).decode()
        ws.s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pirec\r\n"
                      "Origin: https://127.0.0.1:%d\r\nCookie: %s\r\n\r\n" % (port, k, port, cookie.split(";")[0])).encode())
        ws.buf = b""
        while b"\r\n\r\n" not in ws.buf:
            ws.buf += ws.s.recv(4096)
        head, _, ws.buf = ws.buf.partition(b"\r\n\r\n")
        m = ws.next_json(lambda m: m.get("type") in ("status", "controller")) if head.startswith(b"HTTP/1.1 101") else None
        check(m is not None, "WSS with an https Origin: a push arrives (%s)" % (m or {}).get("type"))
        ws.close()
        if shutil.which("curl"):
            r = subprocess.run(["curl", "-sS", "--cacert", cert, "https://localhost:%d/api/auth" % port],
                               capture_output=True, text=True, timeout=30)
            check(r.returncode == 0 and json.loads(r.stdout or "{}").get("reply") == "auth",
                  "curl --cacert over HTTPS (Host localhost): %s" % (r.stdout or r.stderr).strip())
            r = subprocess.run(["curl", "-sS", "--cacert", cert, "-X", "POST", "-H", "X-Pirec: 1", "-d",
                                '{"password":"tls pass"}', "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                                "https://localhost:%d/api/login" % port], capture_output=True, text=True, timeout=30)
            check(r.stdout.strip().endswith(" 200"), "curl POST /api/login over HTTPS (HTTP version and status: %s)"
                  % (r.stdout or r.stderr).strip())
    finally:
        p.send_signal(signal.SIGTERM)
        check(p.wait(30) == 0, "pirec-web exits 0 on SIGTERM")


def packets(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
                        "stream=nb_read_packets", "-of", "csv=p=0", path], capture_output=True, text=True)
    return int(r.stdout.strip() or 0)


def frames_ok(sess_dir, stopped):
    """The issue's measure: frames-CSV rows = packets in the videos, and no drops."""
    cam = stopped["modules"]["cam0"]["counters"]
    rows = pkts = 0
    for name in os.listdir(os.path.join(sess_dir, "cam0")):
        path = os.path.join(sess_dir, "cam0", name)
        if name.endswith("_frames.csv"):
            with open(path) as f:
                rows += sum(1 for _ in f) - 1
        elif name.endswith(".mkv"):
            pkts += packets(path)
    drops = sum(v for k, v in cam.items() if isinstance(v, int) and "drop" in k)
    check(rows == pkts and rows > 0 and drops == 0,
          "the recording kept every frame: %d rows = %d packets, %d dropped (frames_written %d)"
          % (rows, pkts, drops, cam["frames_written"]))


def session(web, work, sock):
    st, r = web.post("/api/start", {"label": "web-test"})
    check(st == 200 and r["reply"] == "started", "POST /api/start: %s" % r)
    sess_dir = r["session_dir"]
    sess = os.path.basename(sess_dir)
    st, r = web.post("/api/note", {"text": NOTE})
    check(st == 200 and r["reply"] == "noted", "POST /api/note")
    st, r = web.post("/api/trial", {"label": "second"})
    check(st == 200 and r["trial"] == 2, "POST /api/trial: trial 2")
    st, r = web.get("/api/status")
    check(st == 200 and r["state"] == "recording" and "id" not in r, "GET /api/status: recording")
    wait_for(lambda: web.get("/api/status")[1]["modules"]["cam0"]["state"] == "running", "the camera to run")
    st, r = web.get("/api/preview?module=cam0&max_width=80")
    jpeg = base64.b64decode(r.get("jpeg", "")) if st == 200 else b""
    check(st == 200 and jpeg[:2] == b"\xff\xd8" and r["width"] == 80 and r["height"] == 60 and r["mono_ns"] > 0,
          "GET /api/preview: a JPEG of the camera, scaled to 80x60 (%d bytes)" % len(jpeg))
    st, r = web.get("/api/preview?module=notes")
    check(st == 409 and "no preview" in r["message"], "a module without previews: 409 '%s'" % r.get("message"))
    st, r = web.get("/api/preview")
    check(st == 400, "a preview without a module: 400")
    os.makedirs(os.path.join(sess_dir, "escape-dir"), exist_ok=True)
    os.symlink(os.path.join(work, "pirec.conf"), os.path.join(sess_dir, "escape"))
    os.symlink("/etc", os.path.join(sess_dir, "escape-dir", "etc"))
    os.symlink("/etc/passwd", os.path.join(sess_dir, "escape-dir", "passwd"))
    bad_input(web, sess)
    st, r = web.post("/api/remux", {"session": sess})
    check(st == 409 and "still recording" in r.get("message", ""), "remux of the recording session: 409 '%s'" % r)
    clients = load(web, sock)
    wait_for(lambda: web.get("/api/status")[1]["modules"]["cam0"].get("counters", {}).get("frames_written", 0) > 30,
             "frames to be written")
    st, stopped = web.post("/api/stop")
    check(st == 200 and stopped["reply"] == "stopped", "POST /api/stop")
    st, r = web.post("/api/note", {"text": "late"})
    check(st == 409 and r["reply"] == "error", "a note with no session: 409 '%s'" % r.get("message"))
    frames_ok(sess_dir, stopped)
    with open(os.path.join(sess_dir, "notes.csv"), newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    check(any(t.lstrip("'") == NOTE for t in texts), "the note is in notes.csv exactly: %r" % texts)
    with open(os.path.join(sess_dir, "events.csv")) as f:
        check("source web" in f.read(), "events.csv says the commands came from the web")
    st, r = web.get("/api/sessions")
    listed = [s for s in r["sessions"] if s["name"] == sess]
    check(st == 200 and listed and any(f["path"] == "notes.csv" for f in listed[0]["files"]),
          "GET /api/sessions lists the session and its files")
    st, body, resp = web.get("/files/%s/notes.csv" % sess, raw=True)
    check(st == 200 and body == open(os.path.join(sess_dir, "notes.csv"), "rb").read() and
          "attachment" in (resp.getheader("content-disposition") or ""), "a file downloads byte for byte")
    remux(web, sess, sess_dir)
    return clients


def remux(web, sess, sess_dir):
    """The remux button's API: the controller runs pirec-remux (pirec-web never writes a session)."""
    for bad in ("../" + sess, ".hidden", ""):
        st, r = web.post("/api/remux", {"session": bad})
        check(st == 409 and "session" in r.get("message", ""), "remux of %r refused: %s" % (bad, r.get("message")))
    st, r = web.post("/api/remux", {})
    check(st == 400, "remux without 'session': 400")
    st, r = web.post("/api/remux", {"session": sess})
    check(st == 200 and r["reply"] == "remux_queued" and r["session_dir"] == sess_dir, "POST /api/remux: %s" % r)

    def verdict():
        ended = [x for x in web.get("/api/status")[1].get("remux", []) if x["session"] == sess and
                 x["state"] in ("done", "failed")]
        return ended[0] if ended else None
    v = wait_for(verdict, "the remux to end", 90)
    mp4 = [n for n in os.listdir(os.path.join(sess_dir, "cam0")) if n.endswith(".mp4")]
    check(v["state"] == "done" and v["asked"] and v["total_bytes"] > 0 and v["done_bytes"] == v["total_bytes"] and mp4,
          "the status shows the remux done (%s) and the MP4s exist: %s" % (v, mp4))
    st, r = web.get("/api/sessions")
    listed = [s for s in r["sessions"] if s["name"] == sess]
    check(listed and listed[0]["remux"] == "done", "the session list says remux done")
    st, r = web.post("/api/remux", {"session": "no-such-session"})
    check(st == 200 and r["reply"] == "remux_queued", "remux of a name that is no session is queued: %s" % r)
    ended = lambda: [x for x in web.get("/api/status")[1].get("remux", [])
                     if x["session"] == "no-such-session" and x["state"] in ("done", "failed")]
    v = wait_for(ended, "the failed remux's verdict", 60)[0]
    check(v["state"] == "failed" and "no-such-session" in v["message"],
          # (lower-cased: ctest fails a test whose output says F-A-I-L in capitals)
          "and fails, saying why in the status: %s" % v["message"].replace("FAILED", "failed"))


def restart(web, work, conf, rec, clients):
    watcher = clients[0]
    rec.send_signal(signal.SIGKILL)
    rec.wait()
    m = watcher.next_json(lambda m: m.get("type") == "controller" and not m["connected"])
    check(m is not None, "the WebSocket clients are told the controller went away")
    st, r = web.get("/api/status")
    check(st in (503, 504), "no controller: %d '%s'" % (st, r.get("message")))
    rec = start_record(work, conf)
    m = watcher.next_json(lambda m: m.get("connected") is True)
    check(m is not None, "and that it is back")
    wait_for(lambda: web.get("/api/status")[0] == 200, "the API to work again")
    return rec


def main():
    if not os.access(os.path.join(APPS, "pirec-web"), os.X_OK):
        print("test_api: skipped: pirec-web is not built (libwebsockets-dev missing)")
        return 77
    work = tempfile.mkdtemp(prefix="pirec-web-test.")
    sock = os.path.join(work, "control.sock")
    conf = os.path.join(work, "pirec.conf")
    with open(conf, "w") as f:
        f.write("[session]\noutput_dir = %s/data\nremux_after = false\n[control]\nsocket = %s\n"
                "[camera.cam0]\nsource = lavfi\nsize = 160x120\nfps = 15\n" % (work, sock))
    os.makedirs(os.path.join(work, "data"))
    web_p, port, _ = start_web(work, conf)
    rec = None
    clients = []
    try:
        web = Web(port)
        st, r = web.get("/api/status")
        check(st == 503 and "not running" in r["message"], "no controller yet: 503")
        rec = start_record(work, conf)
        wait_for(lambda: web.get("/api/status")[0] == 200, "pirec-web to reach the controller")
        clients = session(web, work, sock)
        rec = restart(web, work, conf, rec, clients)
        check(web_p.poll() is None, "pirec-web is still running")
        for c in clients:
            c.close()
        token_mode(work, conf)
        password_mode(work, conf)
        tls_mode(work, conf)
    finally:
        for p in (web_p, rec):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
    check(web_p.returncode == 0, "pirec-web exits 0 on SIGTERM")
    print("test_api: %s" % ("FAIL: " + "; ".join(FAILS) if FAILS else "pass"))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
