"""A whole session recorded with [storage] encrypt_to (docs/PRIVACY.md): the real `pirec record`
with the notes recorder and a lavfi camera, then `pirec decrypt` with the lab's key.

- every file but session.json and session.key is encrypted (no clear CSV header anywhere);
- the decrypted session passes what a clear one passes: every CSV parses, the camera's video has a
  packet per row, every note answered "noted" is in notes.csv once;
- pirec-remux --key on the encrypted session makes the same MP4s as pirec-remux on the decrypted
  copy;
- SIGKILL of the recorders mid-session: decrypt names each cut file with its chunk and offset and
  recovers every complete chunk; the rows recovered parse;
- tampering and a wrong key are named by pirec decrypt;
- the session key (unsealed here with libsodium through ctypes) is nowhere in the session, the
  runtime directory or the captured log output."""
import base64
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "faults"))
from faultlib import (CAMERA, Recorder, check, check_camera_trial, check_session_files, fail, program,  # noqa: E402
                      skip, wait_for)


def run(*argv, ok=(0,)):
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    check(p.returncode in ok, "%s: exit %d\n%s%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr))
    return p


def session_key(d, key_file):
    """The session key, unsealed from session.key with the lab's secret key (libsodium via ctypes)."""
    name = ctypes.util.find_library("sodium")
    if not name:
        skip("libsodium not found for ctypes")
    na = ctypes.CDLL(name)
    check(na.sodium_init() >= 0, "sodium_init")
    keys = dict(line.split(" ", 1) for line in open(key_file).read().splitlines() if line and line[0] != "#")
    pk, sk = base64.b64decode(keys["public"]), base64.b64decode(keys["secret"])
    blob = open(os.path.join(d, "session.key"), "rb").read()
    check(blob[:8] == b"PIRECKEY" and len(blob) == 108, "session.key format")
    out = ctypes.create_string_buffer(32)
    check(na.crypto_box_seal_open(out, blob[28:], ctypes.c_ulonglong(80), pk, sk) == 0, "unseal session.key")
    return out.raw


def scan_for(key, roots, files=()):
    needles = [key, base64.b64encode(key)]
    paths = list(files)
    for root in roots:
        for dirpath, _, names in os.walk(root):
            paths += [os.path.join(dirpath, n) for n in names]
    for path in paths:
        try:
            data = open(path, "rb").read()
        except OSError:
            continue
        for n in needles:
            check(n not in data, "the session key is in '%s'" % path)
    return len(paths)


def encrypted_files(d):
    found = []
    for dirpath, _, names in os.walk(d):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), d)
            data = open(os.path.join(d, rel), "rb").read()
            if rel in ("session.json", "session.key"):
                continue
            check(data[:8] == b"PIRECENC", "'%s' is not encrypted: %r" % (rel, data[:40]))
            check(b"trial,mono_ns" not in data, "'%s' holds a clear CSV header" % rel)
            found.append(rel)
    return sorted(found)


def record(rec, notes, kill=False):
    d = rec.session()
    for i in range(notes):
        rec.note("note %d, with a comma" % i, d)
    wait_for("video written", lambda: os.path.exists(os.path.join(d, "cam0", "t001.mkv")) and
             os.path.getsize(os.path.join(d, "cam0", "t001.mkv")) > 20000, 60)
    if kill:
        for m in ("cam0", "notes"):
            os.kill(rec.module_pid(m), signal.SIGKILL)
        wait_for("the recorders restarted", lambda: rec.modules_running(["notes", "cam0"]), 60)
    rec.stop_session()
    return d


tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "pirec-enc-%d" % os.getpid())
os.makedirs(tmp)
try:
    key_file = os.path.join(tmp, "lab")
    out = run(program("pirec"), "keys", "new", "--out", key_file).stdout
    key_file += ".key"
    check(oct(os.stat(key_file).st_mode & 0o777) == "0o600", "the secret key file is not 0600")
    pub = [ln.split("= ", 1)[1] for ln in out.splitlines() if ln.startswith("encrypt_to = ")][0]
    rec = Recorder(CAMERA + "[storage]\nencrypt_to = %s\n" % pub, tag="enc")
    rec.start()
    try:
        wait_for("notes and cam0 running", lambda: rec.modules_running(["notes", "cam0"]), 30)
        d = record(rec, 20)
        d2 = record(rec, 5, kill=True)
    finally:
        rec.close()
    names = encrypted_files(d)
    check({"events.csv", "clocks.csv", "notes.csv", "cam0/t001.mkv", "cam0/t001_frames.csv"} <= set(names),
          "encrypted files: %s" % names)

    # decrypt: whole, and like a clear session
    clear = d + ".decrypted"
    run(program("pirec"), "decrypt", d, "--key", key_file)
    counts = check_session_files(clear)
    check(counts["notes.csv"] == 20, "notes in the decrypted notes.csv: %s" % counts)
    check(check_camera_trial(clear, "t001") > 0, "no frames")
    with open(os.path.join(clear, "notes.csv")) as f:
        text = f.read()
    for i in range(20):
        check(text.count("note %d, with a comma" % i) == 1, "note %d not once in notes.csv" % i)

    # pirec-remux --key on the encrypted session = pirec-remux on the decrypted copy
    if os.path.exists(program("pirec-remux")) and "--key" in run(program("pirec-remux"), "--help").stdout:
        run(program("pirec-remux"), clear)
        run(program("pirec-remux"), "--key", key_file, d)
        a = open(os.path.join(clear, "cam0", "t001.mp4"), "rb").read()
        b = open(os.path.join(d, "cam0", "t001.mp4"), "rb").read()
        check(b[:8] == b"PIRECENC", "the remuxed MP4 of an encrypted session is not encrypted")
        # the encrypted MP4 decrypts to exactly the clear remux's bytes
        dd = os.path.join(tmp, "remuxed")
        run(program("pirec"), "decrypt", d, "--key", key_file, "--out", dd)
        check(open(os.path.join(dd, "cam0", "t001.mp4"), "rb").read() == a, "pirec-remux --key made another MP4")

    # SIGKILL mid-session: the killed recorders' files end without their final chunk; decrypt names
    # them, recovers the complete chunks, and what it recovers parses
    p = run(program("pirec"), "decrypt", d2, "--key", key_file, ok=(1,))
    clear2 = d2 + ".decrypted"
    check_session_files(clear2, cut_ok=("cam0", "notes"))
    check("'cam0/t001.mkv': chunk" in p.stderr and "final chunk" in p.stderr and "offset" in p.stderr,
          "decrypt does not name the killed camera's file, chunk and offset:\n" + p.stderr)
    check(os.path.getsize(os.path.join(clear2, "cam0", "t001.mkv")) > 0, "nothing recovered of the killed camera")

    # and pirec-remux --key recovers the frames of the complete chunks
    p = run(program("pirec-remux"), "--json", "--key", key_file, d2, ok=(0, 1))
    files = json.loads(p.stdout).get("files", [])
    killed = [f for f in files if f.get("input", "").endswith("cam0/t001.mkv")]
    check(killed and killed[0].get("frames", 0) > 0, "pirec-remux --key recovered no frames: %s" % p.stdout)

    # the session key is nowhere in the sessions, the runtime directory or the log
    n = scan_for(session_key(d, key_file), [d, rec.tmp], [rec.log_path])
    scan_for(session_key(d2, key_file), [d2, rec.tmp], [rec.log_path])

    # tampering: a flipped byte in the camera's frames file is named with file, chunk and offset
    t = os.path.join(tmp, "tampered")
    shutil.copytree(d, t)
    path = os.path.join(t, "cam0", "t001_frames.csv")
    data = bytearray(open(path, "rb").read())
    first = 52 + 4 + int.from_bytes(data[52:56], "little")  # chunk 1: after the header and chunk 0
    clen = int.from_bytes(data[first:first + 4], "little")
    data[first + 4 + clen // 2] ^= 0x40  # inside chunk 1's ciphertext
    open(path, "wb").write(bytes(data))
    p = run(program("pirec"), "decrypt", t, "--key", key_file, ok=(1,))
    check("'cam0/t001_frames.csv': chunk 1 at offset %d: fails verification" % first in p.stderr,
          "tampering not named:\n" + p.stderr)
    # a wrong key
    run(program("pirec"), "keys", "new", "--out", os.path.join(tmp, "other"))
    p = run(program("pirec"), "decrypt", d, "--key", os.path.join(tmp, "other.key"), "--out",
            os.path.join(tmp, "x"), ok=(65,))
    check("not sealed to the key" in p.stderr, "wrong key not named:\n" + p.stderr)
    rec.cleanup()
    print("encrypted session: ok (%d files scanned for the key)" % n)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
