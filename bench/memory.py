#!/usr/bin/env python3
"""Memory of a supervision tree: qtools svscan vs Debian's C svscan.

Each tree is svscan on a directory of N services (run: `exec sleep 1000`).
Once every supervise has reported its service up and finished the 1-s pause
that follows a start, Pss and Private (Clean+Dirty) are read from
/proc/PID/smaps_rollup of svscan and of each supervise (the sleeps are the
same in every tree and are left out):
  c       : /usr/bin/svscan -> /usr/bin/supervise
  elide   : qtools svscan -> qtools supervise as a fork of svscan (no exec)
  noelide : qtools svscan -> qtools supervise exec'd (QTOOLS_NOELIDE=1)
For each it prints the average per supervise, svscan itself, the whole tree,
and the marginal Pss of one more service, (tree(N) - tree(1)) / (N - 1);
then the ratios to C.

usage: bench/memory.py [N]     (N services, default 15)
"""
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

QBIN = os.path.dirname(os.path.abspath(sys.executable))
TAIBASE = (1 << 62) + 10


def rollup(pid):
    """(Pss kB, Private kB) of a process."""
    pss = priv = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Pss":
                pss = int(v.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                priv += int(v.split()[0])
    return pss, priv


def children(pid):
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, t)) as f:
            out += [int(x) for x in f.read().split()]
    return out


def status(d):
    try:
        with open(os.path.join(d, "supervise", "status"), "rb") as f:
            b = f.read(18)
    except OSError:
        return None
    if len(b) < 18:
        return None
    sec, nano = struct.unpack(">QL", b[:12])
    return sec - TAIBASE + nano / 1e9, struct.unpack("<L", b[12:16])[0]


def make_services(root, n):
    os.makedirs(root)
    for i in range(n):
        d = os.path.join(root, "svc%02d" % i)
        os.mkdir(d)
        with open(os.path.join(d, "run"), "w") as f:
            f.write("#!/bin/sh\nexec sleep 1000\n")
        os.chmod(os.path.join(d, "run"), 0o755)


def measure_tree(workdir, n, impl, env, timeout=30.0):
    """Start the tree, measure it, stop it.  impl: 'qtools' or 'c'; env
    decides elision (QTOOLS_NOELIDE).  Returns a dict of kB figures."""
    root = os.path.join(workdir, "service")
    make_services(root, n)
    env = dict(env)
    if impl == "c":
        svscan = "/usr/bin/svscan"
        env["PATH"] = "/usr/bin:/bin"
    else:
        svscan = os.path.join(QBIN, "svscan")
        env["PATH"] = QBIN + ":/usr/bin:/bin"
    p = subprocess.Popen([svscan, root], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        dirs = [os.path.join(root, x) for x in sorted(os.listdir(root))]
        deadline = time.monotonic() + timeout
        while True:
            sts = [status(d) for d in dirs]
            if all(s and s[1] for s in sts):
                break
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tree did not come up (%s)" % impl)
            time.sleep(0.05)
        # every supervise sleeps 1 s after a start before it settles in its loop
        quiet = max(s[0] for s in sts) + 1.3
        while time.time() < quiet:
            time.sleep(0.05)
        sups = children(p.pid)
        figures = [rollup(s) for s in sups]
        scan = rollup(p.pid)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait(10)
    k = len(figures)
    return {
        "impl": impl, "services": n, "supervise_count": k,
        "pss_kb_per_supervise": sum(f[0] for f in figures) / k,
        "private_kb_per_supervise": sum(f[1] for f in figures) / k,
        "svscan_pss_kb": scan[0], "svscan_private_kb": scan[1],
        "tree_pss_kb": scan[0] + sum(f[0] for f in figures),
    }


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    base = {k: v for k, v in os.environ.items() if k != "QTOOLS_NOELIDE"}
    cases = [("c", "c", base), ("elide", "qtools", base),
             ("noelide", "qtools", dict(base, QTOOLS_NOELIDE="1"))]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="memory.") as w:
        for label, impl, env in cases:
            big = measure_tree(os.path.join(w, label + "-n"), n, impl, env)
            one = measure_tree(os.path.join(w, label + "-1"), 1, impl, env)
            big["marginal_pss_kb"] = (big["tree_pss_kb"] - one["tree_pss_kb"]) / max(n - 1, 1)
            rows[label] = big
    print("# supervision tree of %d services: kB from /proc/PID/smaps_rollup" % n)
    print("%-8s %12s %12s %10s %10s %10s %12s" % (
        "tree", "Pss/superv", "Priv/superv", "svscan Pss", "svscan Prv", "tree Pss",
        "Pss/+service"))
    for label, r in rows.items():
        print("%-8s %12.0f %12.0f %10d %10d %10d %12.0f" % (
            label, r["pss_kb_per_supervise"], r["private_kb_per_supervise"],
            r["svscan_pss_kb"], r["svscan_private_kb"], r["tree_pss_kb"], r["marginal_pss_kb"]))
    c = rows["c"]
    for label in ("elide", "noelide"):
        r = rows[label]
        print("%s / c: tree Pss %.1fx, Pss per added service %.1fx, Private per supervise %.1fx"
              % (label, r["tree_pss_kb"] / c["tree_pss_kb"],
                 r["marginal_pss_kb"] / max(c["marginal_pss_kb"], 1),
                 r["private_kb_per_supervise"] / max(c["private_kb_per_supervise"], 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
