#!/usr/bin/env python3
"""AUTH verifications per second through vchkpw, as qmail-smtpd runs it.

A parent that preloaded vchkpw (what tcpserver does through qmail-smtpd's
preload hook) runs, per verification, exactly qmail-smtpd's authenticate():
a pipe, a fork, the child moves the pipe to fd 3 and runs
`vchkpw /bin/true` through pathexec (elided into the preloaded module, or
with QTOOLS_NOELIDE=1 a real exec of bin/vchkpw, a Python start-up per
AUTH), the parent writes `user\\0password\\0` and waits for exit 0.  The
user has a $6$ (SHA-512 crypt, 5000 rounds) hash made by vadduser; each
successful check also records lastauth, as vchkpw does.

Cases: cdb and MariaDB (a private server started here), elision on and off,
one or two verifications in flight (the machine has 2 cores).  Besides the
wall-clock rate it prints the CPU time per verification (the children's
plus the parent's forks), which does not depend on other load, and the rate
one core would give at that cost (the MariaDB server's own CPU is not
counted).

usage: bench/vchkpw.py [N]   (N verifications per case, default 1000; the
       exec cases N/5, at least 100)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

QBIN = os.path.dirname(os.path.abspath(sys.executable))
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests"))
DATA = b"bench@bench.test\0bench pass\0"


def tool(env, *argv):
    subprocess.run([os.path.join(QBIN, argv[0])] + list(argv[1:]), env=env, check=True,
                   stdout=subprocess.DEVNULL)


def setup(base, backend, db=None):
    vpop, qmail = os.path.join(base, backend, "vpop"), os.path.join(base, backend, "qmail")
    os.makedirs(os.path.join(vpop, "etc"))
    os.makedirs(qmail)
    env = dict(os.environ, VPOPMAILHOME=vpop, QMAILHOME=qmail, VPOPMAIL_AUTH=backend,
               PATH=QBIN + ":/usr/bin:/bin")
    if db is not None:
        db.sql("CREATE DATABASE bench")
        with open(os.path.join(vpop, "etc", "vpopmail.mysql"), "w") as f:
            f.write("127.0.0.1|%d|vpopmail|s3cret|bench\n" % db.port)
    tool(env, "vadddomain", "bench.test", "pm pass")
    tool(env, "vadduser", "bench@bench.test", "bench pass")
    return env


def one(argv):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            from qtools.lib import fd as fdio, pathexec
            os.close(w)
            fdio.move(r, 3)
            pathexec.pathexec_run(argv)
        except BaseException:                       # noqa: BLE001
            pass
        os._exit(111)
    os.close(r)
    os.write(w, DATA)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def case(n, inflight):
    """In this (fresh) interpreter: preload as tcpserver would, then n
    verifications by `inflight` threads, each forking its own children."""
    import gc
    from qtools.lib import pathexec
    argv = ["vchkpw", "/bin/true"]
    pathexec.preload(argv)
    gc.freeze()
    bad = []

    def worker(k):
        for _ in range(k):
            c = one(argv)
            if c != 0:
                bad.append(c)
    t0 = os.times()
    t = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(n // inflight,)) for _ in range(inflight)]
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    dt = time.perf_counter() - t
    t1 = os.times()
    done = n // inflight * inflight
    # CPU per AUTH: the children's (vchkpw, crypt, /bin/true) plus the parent's
    # forks and waits, so the figure does not depend on other load
    cpu = (t1.children_user - t0.children_user + t1.children_system - t0.children_system
           + t1.user - t0.user + t1.system - t0.system) / done
    print(done / dt, len(bad), cpu * 1000)


def run_case(env, elide, n, inflight):
    e = dict(env)
    e.pop("QTOOLS_NOELIDE", None)
    if not elide:
        e["QTOOLS_NOELIDE"] = "1"
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", str(n),
                          str(inflight)], env=e, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit("case failed: %s" % out.stderr)
    rate, bad, cpu = out.stdout.split()
    return float(rate), int(bad), float(cpu)


def main():
    if sys.argv[1:2] == ["--case"]:
        return case(int(sys.argv[2]), int(sys.argv[3]))
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    base = tempfile.mkdtemp(prefix="bench-vchkpw.", dir="/tmp")
    db = tdir = None
    try:
        from vpoptools import MariaDB
        tdir = tempfile.mkdtemp(prefix="bench-tmpl.", dir="/tmp")
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root",
                        "--datadir=%s/data" % tdir, "--auth-root-authentication-method=socket",
                        "--skip-test-db", "--skip-name-resolve", "--innodb-log-file-size=4M"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        db = MariaDB(os.path.join(tdir, "data")).start()
        envs = {"cdb": setup(base, "cdb"), "mariadb": setup(base, "mysql", db)}
        print("%-8s %-8s %-9s %9s %12s %14s" % ("store", "elision", "in flight", "AUTH/s",
                                              "CPU ms/AUTH", "AUTH/s per core"))
        for store, env in envs.items():
            for elide in (True, False):
                for inflight in (1, 2):
                    k = n if elide else max(100, n // 5)
                    rate, bad, cpu = run_case(env, elide, k, inflight)
                    print("%-8s %-8s %-9d %9.0f %12.2f %14.0f%s" % (
                        store, "on" if elide else "off", inflight, rate, cpu, 1000 / cpu,
                        "  (%d failed!)" % bad if bad else ""))
                    sys.stdout.flush()
    finally:
        if db is not None:
            db.cleanup()
        if tdir:
            shutil.rmtree(tdir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
