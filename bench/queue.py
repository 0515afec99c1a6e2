#!/usr/bin/env python3
"""qmail-queue throughput for 4 KiB messages, in one run, as ratios.

  disk    : the disk's durable file-per-message rate: create tmp/N, write
            4 KiB, fsync, rename into new/, fsync(new/) (anchor-baselines
            section 4's "durable Maildir/queue step")
  inproc  : qmail-queue's main() called in this process, no fork: its own
            steps (2 file creations, 2 links, 5 fsyncs) and nothing else
  inline  : the same steps through queue.Inline, as qmail-smtpd queues
            when the qtools qmail-queue would have been elided
  elide   : a parent that preloaded qmail-queue forks per message; the child
            runs it through pathexec, elided (what qmail-smtpd does)
  exec    : the same parent with QTOOLS_NOELIDE=1: the child execs
            bin/qmail-queue (a Python start-up per message)
Message and envelope go through pipes on fds 0 and 1, as from qmail-smtpd.
Every loop is bounded by the message count.

usage: bench/queue.py [N [DIR]]   (N messages per case, default 2000, exec
       N/5 but at least 200; DIR: where the queues go, default a temp dir in
       /var/tmp, which should be on the disk you care about)
"""
import gc
import os
import shutil
import subprocess
import sys
import time

QBIN = os.path.dirname(os.path.abspath(sys.executable))
MSG = (b"From: a@example.com\nTo: b@example.com\nSubject: bench\n\n"
       + b"x" * 75 + b"\n") * 54
MSG = MSG[:4096]
ENV = b"Fa@example.com\0Tb@example.com\0\0"


def mkqueue(home):
    os.makedirs(home)
    subprocess.run([os.path.join(QBIN, "queue-fix"), os.path.join(home, "queue")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pipes():
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    os.write(w0, MSG)
    os.close(w0)
    os.write(w1, ENV)
    os.close(w1)
    return r0, r1


def disk(d, n):
    os.makedirs(os.path.join(d, "tmp"))
    os.makedirs(os.path.join(d, "new"))
    dfd = os.open(os.path.join(d, "new"), os.O_RDONLY | os.O_DIRECTORY)
    t = time.perf_counter()
    for i in range(n):
        tmp = os.path.join(d, "tmp", str(i))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, MSG)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, os.path.join(d, "new", str(i)))
        os.fsync(dfd)
    dt = time.perf_counter() - t
    os.close(dfd)
    return n / dt, None


def inproc(home, n):
    from qtools.qmail import queue
    os.environ["QMAILHOME"] = home
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    save0, save1 = os.dup(0), os.dup(1)
    c0 = os.times()
    t = time.perf_counter()
    try:
        for _ in range(n):
            r0, r1 = pipes()
            os.dup2(r0, 0)
            os.dup2(r1, 1)
            os.close(r0)
            os.close(r1)
            if queue.main(["qmail-queue"]) != 0:
                raise SystemExit("bench: qmail-queue failed")
    finally:
        os.dup2(save0, 0)
        os.dup2(save1, 1)
        os.fchdir(cwd)
    dt = time.perf_counter() - t
    c1 = os.times()
    return n / dt, (c1.user + c1.system - c0.user - c0.system) / n * 1000


def inline(home, n):
    """qmail-smtpd's way with the qtools qmail-queue: queue.Inline, no fork."""
    from qtools.qmail import queue
    c0 = os.times()
    t = time.perf_counter()
    for _ in range(n):
        q = queue.Inline(home)
        q.put(MSG)
        if q.close(b"a@example.com", [b"b@example.com"]) != 0:
            raise SystemExit("bench: Inline failed")
    dt = time.perf_counter() - t
    c1 = os.times()
    return n / dt, (c1.user + c1.system - c0.user - c0.system) / n * 1000


def forked(home, n, elide):
    # what a qtools parent (qmail-smtpd, started by its launcher) has loaded
    from qtools.lib import pathexec, proctitle, run, sig  # noqa: F401
    os.environ["QMAILHOME"] = home
    os.environ.pop("QTOOLS_NOELIDE", None)
    pathexec.preload(["qmail-queue"])
    if not elide:
        os.environ["QTOOLS_NOELIDE"] = "1"
    gc.freeze()
    c0 = os.times()
    t = time.perf_counter()
    try:
        for _ in range(n):
            r0, r1 = pipes()
            pid = os.fork()
            if pid == 0:
                try:
                    os.dup2(r0, 0)
                    os.dup2(r1, 1)
                    pathexec.pathexec_run(["qmail-queue"])
                finally:
                    os._exit(120)
            os.close(r0)
            os.close(r1)
            _, st = os.waitpid(pid, 0)
            if st != 0:
                raise SystemExit("bench: qmail-queue exited %d" % os.waitstatus_to_exitcode(st))
    finally:
        os.environ.pop("QTOOLS_NOELIDE", None)
        gc.unfreeze()
    dt = time.perf_counter() - t
    c1 = os.times()
    cpu = (c1.children_user + c1.children_system + c1.user + c1.system
           - c0.children_user - c0.children_system - c0.user - c0.system)
    return n / dt, cpu / n * 1000


def case(name, home, n):
    """Run one case in a fresh interpreter: the parent's heap history changes
    what a fork costs (a parent that ran the in-process case first pays ~2x
    per fork), so no case inherits another's."""
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", name, home, str(n)],
                       stdout=subprocess.PIPE, check=True, text=True)
    rate, cpu = p.stdout.split()
    return float(rate), (None if cpu == "-" else float(cpu))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        name, where, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        fn = {"disk": disk, "inproc": inproc, "inline": inline,
              "elide": lambda h, k: forked(h, k, True),
              "exec": lambda h, k: forked(h, k, False)}[name]
        rate, cpu = fn(where, n)
        print(rate, "-" if cpu is None else cpu)
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    base = sys.argv[2] if len(sys.argv) > 2 else "/var/tmp"
    os.environ["PATH"] = QBIN + ":" + os.environ.get("PATH", "/usr/bin:/bin")
    # as an install does: without .pyc files every exec recompiles the modules
    import qtools
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(qtools.__file__)],
                   check=True)
    work = os.path.join(base, "qqbench.%d" % os.getpid())
    os.mkdir(work, 0o700)
    fstype = subprocess.run(["stat", "-f", "-c", "%T", work], capture_output=True,
                            text=True).stdout.strip()
    nx = max(200, n // 5)
    print("# queue bench: %d messages of %d bytes (exec: %d), nproc=%d, load=%s, fs=%s (%s)"
          % (n, len(MSG), nx, os.cpu_count(), open("/proc/loadavg").read().split()[0],
             fstype, work))
    res = {}
    try:
        res["disk"] = case("disk", os.path.join(work, "disk"), n)
        for name, k in (("inproc", n), ("inline", n), ("elide", n), ("exec", nx)):
            home = os.path.join(work, name)
            mkqueue(home)
            res[name] = case(name, home, k)
            todo = len(os.listdir(os.path.join(home, "queue", "todo")))
            if todo != k:
                raise SystemExit("bench: %s: %d in todo/, expected %d" % (name, todo, k))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = {
        "disk": "disk: create+write+fsync+rename+fsync(dir)",
        "inproc": "qmail-queue main() in-process, no fork",
        "inline": "queue.Inline (qmail-smtpd's in-process use)",
        "elide": "qmail-queue forked, elided (pathexec)",
        "exec": "qmail-queue forked + exec (NOELIDE)",
    }
    for k in ("disk", "inproc", "inline", "elide", "exec"):
        rate, cpu = res[k]
        print("%-46s %7.1f /s  %6.2f ms%s" % (labels[k], rate, 1000 / rate,
                                             "" if cpu is None else "  cpu %.2f ms/msg" % cpu))
    d, i, e, x = (res[k][0] for k in ("disk", "inproc", "elide", "exec"))
    print("ratio elide/exec   : %.2fx" % (e / x))
    print("ratio elide/disk   : %.2fx   (disk: 1 file, 2 fsyncs per op; qmail-queue: 2 files, 5 fsyncs)"
          % (e / d))
    print("ratio inproc/disk  : %.2fx" % (i / d))
    print("ratio elide/inproc : %.2fx   (the fork's share)" % (e / i))
    print("ratio inline/elide : %.2fx   (qmail-smtpd without the fork)" % (res["inline"][0] / e))


if __name__ == "__main__":
    main()
