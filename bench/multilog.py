#!/usr/bin/env python3
"""bench/multilog.py - lines/s through C multilog, s6-log and qtools multilog.

usage: bench/multilog.py [--runs N] [--lines N] [--dir DIR] [--no-check]

Feeds the same input (default 1,000,000 lines of 100 bytes, the anchor's
06_logging.sh input) through `cat FILE | LOGGER t DIR` for
  - daemontools' C multilog (/usr/bin/multilog),
  - s6-log (/usr/bin/s6-log, if installed),
  - qtools' multilog (the launcher next to this Python, or $QBIN/multilog),
each into its own fresh logdir with the default rotation (s99999 n10: about
1300 rotations, each with an fsync).  Prints the median wall time over
--runs runs, lines/s, and the ratio to C multilog.

Check: n10 deletes old archives, so after the timed runs each logger runs
once more with n100000 (same size, every archive kept) and the bench asserts
that the logdir holds exactly the input's lines, in order, each with a
TAI64N stamp.  Every wait is bounded (300 s per run).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TIMEOUT = 300


def make_input(path, n):
    if os.path.exists(path) and os.path.getsize(path) == 100 * n:
        return
    with open(path + ".tmp", "wb") as f:
        buf = []
        for i in range(n):
            buf.append((b"%07d qmail-smtpd: pid 12345 from 127.0.0.1 msg accepted " % i)
                       .ljust(99, b"x") + b"\n")
            if len(buf) == 10000:
                f.write(b"".join(buf))
                buf = []
        f.write(b"".join(buf))
    os.rename(path + ".tmp", path)


def run_once(argv, infile, logdir):
    shutil.rmtree(logdir, ignore_errors=True)
    t0 = time.monotonic()
    cat = subprocess.Popen(["cat", infile], stdout=subprocess.PIPE)
    try:
        p = subprocess.Popen(argv + [logdir], stdin=cat.stdout, stderr=subprocess.PIPE)
        cat.stdout.close()
        try:
            _, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise SystemExit("bench: %s timed out" % argv[0])
    finally:
        cat.wait(TIMEOUT)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit("bench: %s exited %s: %r" % (argv, p.returncode, err[:300]))
    return dt


def check(logdir, infile, nlines):
    """Every input line once, in order, each `@<24 hex> ` + line."""
    names = sorted(n for n in os.listdir(logdir) if n.startswith("@")) + ["current"]
    with open(infile, "rb") as f:
        want = f.read()
    got = bytearray()
    count = 0
    for n in names:
        with open(os.path.join(logdir, n), "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        if lines[-1] != b"":
            raise SystemExit("bench: %s/%s ends without a newline" % (logdir, n))
        for ln in lines[:-1]:
            if ln[:1] != b"@" or ln[25:26] != b" ":
                raise SystemExit("bench: unstamped line in %s/%s: %r" % (logdir, n, ln[:60]))
            got += ln[26:] + b"\n"
            count += 1
    if count != nlines or bytes(got) != want:
        raise SystemExit("bench: %s holds %d lines, not the %d input lines in order"
                         % (logdir, count, nlines))
    return count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lines", type=int, default=1000000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args()
    qbin = os.environ.get("QBIN") or os.path.dirname(os.path.abspath(sys.executable))
    loggers = [("C multilog t", ["/usr/bin/multilog", "t"])]
    if os.path.exists("/usr/bin/s6-log"):
        loggers.append(("s6-log t", ["/usr/bin/s6-log", "t"]))
    loggers.append(("qtools multilog t", [os.path.join(qbin, "multilog"), "t"]))
    work = a.dir or tempfile.mkdtemp(prefix="bench-multilog.")
    os.makedirs(work, exist_ok=True)
    infile = os.path.join(work, "lines.txt")
    make_input(infile, a.lines)
    print("# multilog bench: %d lines x 100 B, s99999 n10, %d runs (median); nproc=%d load=%s"
          % (a.lines, a.runs, os.cpu_count(), open("/proc/loadavg").read().split()[0]))
    times = {name: [] for name, _ in loggers}
    for _ in range(a.runs):                        # interleaved, so drift hits all alike
        for name, argv in loggers:
            times[name].append(run_once(argv, infile, os.path.join(work, "logdir")))
    base = a.lines / statistics.median(times["C multilog t"])
    for name, _ in loggers:
        med = statistics.median(times[name])
        rate = a.lines / med
        print("%-18s median %6.3f s  %10.0f lines/s  %5.2fx C multilog   (runs: %s)"
              % (name, med, rate, rate / base, " ".join("%.3f" % t for t in times[name])))
    if not a.no_check:
        for name, argv in loggers:
            d = os.path.join(work, "check-" + name.split()[0])
            run_once(argv + ["n100000"], infile, d)
            check(d, infile, a.lines)
            shutil.rmtree(d, ignore_errors=True)
        print("check: every logger wrote exactly %d lines, in order, stamped" % a.lines)
    shutil.rmtree(os.path.join(work, "logdir"), ignore_errors=True)
    if not a.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
