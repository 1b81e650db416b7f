"""pirec archive: a session (here an encrypted-looking one: the archive does not care) as .tar.zst
with MANIFEST.sha256; GNU tar and sha256sum read it; --verify passes it, and names a flipped
compressed byte, a truncated archive, and a member whose bytes no longer match the manifest."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "faults"))
from faultlib import check, program, skip  # noqa: E402

if not shutil.which("zstd") or not shutil.which("tar"):
    skip("zstd or tar not installed")
tmp = tempfile.mkdtemp(prefix="pirec-archive-")


def run(*argv, ok=(0,), cwd=None):
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd=cwd)
    check(p.returncode in ok, "%s: exit %d\n%s%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr))
    return p


try:
    s = os.path.join(tmp, "20261207T101010Z_pilot")
    os.makedirs(os.path.join(s, "cam0"))
    with open(os.path.join(s, "cam0", "t001.mkv"), "wb") as f:
        f.write(b"PIRECENC" + os.urandom(3 << 20))
    with open(os.path.join(s, "cam0", "t001_frames.csv"), "w") as f:
        f.write("".join("1,%d,%d\n" % (i, i * 7) for i in range(50000)))
    with open(os.path.join(s, "session.json"), "w") as f:
        f.write("{}\n")
    run(program("pirec"), "archive", s, "--level", "5", "--threads", "2")
    a = s + ".tar.zst"
    p = run(program("pirec"), "archive", "--verify", a)
    check("3 files" in p.stdout, p.stdout)
    run(program("pirec"), "archive", s, ok=(74,))  # never overwritten
    out = os.path.join(tmp, "x")
    os.makedirs(out)
    run("tar", "--zstd", "-xf", a, "-C", out)
    run("sha256sum", "-c", "MANIFEST.sha256", cwd=os.path.join(out, os.path.basename(s)))
    data = open(a, "rb").read()
    bad = os.path.join(tmp, "bad.tar.zst")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    open(bad, "wb").write(bytes(flipped))
    p = run(program("pirec"), "archive", "--verify", bad, ok=(1,))
    check("damaged" in p.stderr or "differs" in p.stderr, p.stderr)
    open(bad, "wb").write(data[: len(data) // 2])
    p = run(program("pirec"), "archive", "--verify", bad, ok=(1,))
    check("truncated" in p.stderr, p.stderr)
    # a member changed and the archive recompressed whole: only the manifest can tell
    t = os.path.join(tmp, "a.tar")
    run("zstd", "-q", "-d", a, "-o", t)
    raw = bytearray(open(t, "rb").read())
    i = raw.find(b"1,100,700\n")
    raw[i] = ord("2")
    open(t, "wb").write(bytes(raw))
    run("zstd", "-q", "-f", t, "-o", bad)
    p = run(program("pirec"), "archive", "--verify", bad, ok=(1,))
    check("cam0/t001_frames.csv" in p.stderr and "SHA-256" in p.stderr, p.stderr)
    print("archive: ok")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
