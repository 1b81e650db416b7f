#!/usr/bin/env python3
"""Every program's --help and its man page name the same options.

For each command, the options (--long and -x words) printed by its --help (and, for pirec, by
the --help of its subcommands) must be exactly the options its scdoc page mentions. An option
added to a program without its page, or a page that keeps a removed option, fails here.

usage: man-help.py SOURCE_DIR BIN_DIR
"""
import os
import re
import subprocess
import sys

OPTION = re.compile(r"(?<![\w\-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w\-])")
PROGRAMS = {
    "pirec": [[], ["config"], ["record"], ["status"], ["fleet"], ["keys"], ["decrypt"], ["archive"]],
    "pirec-remux": [[]],
    "pirec-camera": [[]],
    "pirec-eyetracker": [[]],
    "pirec-notes": [[]],
    "pirec-audio": [[]],
    "pirec-eyesim": [[]],
    "pirec-web": [[]],
}


def help_options(bindir, program, prefixes):
    found = set()
    for prefix in prefixes:
        cmd = [f"{bindir}/{program}", *prefix, "--help"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or not r.stdout:
            sys.exit(f"man-help: '{' '.join(cmd)}' exited {r.returncode} with {len(r.stdout)} bytes on stdout")
        found |= set(OPTION.findall(r.stdout))
    return found


def page_options(path):
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("\\_", "_")
    # examples are shell lines; options of other programs (systemd-escape --path) are not ours
    text = re.sub(r"^```$.*?^```$", "", text, flags=re.S | re.M)
    # scdoc markup around an option (*--x*, _-c_) is not part of it
    return set(OPTION.findall(re.sub(r"[*_]", " ", text)))


def main():
    srcdir, bindir = sys.argv[1:3]
    failed = 0
    for program, prefixes in PROGRAMS.items():
        if program == "pirec-web" and not os.access(f"{bindir}/{program}", os.X_OK):
            print("man-help: pirec-web: not built (no libwebsockets), skipped")
            continue
        page = f"{srcdir}/man/{program}.1.scd"
        helped, documented = help_options(bindir, program, prefixes), page_options(page)
        bad = failed
        for opt in sorted(helped - documented):
            print(f"man-help: {program}: --help prints {opt}, {page} does not document it")
            failed = 1
        for opt in sorted(documented - helped):
            print(f"man-help: {page}: documents {opt}, '{program} --help' does not print it")
            failed = 1
        if failed == bad:
            print(f"man-help: {program}: {len(helped)} options agree")
    return failed


sys.exit(main())
