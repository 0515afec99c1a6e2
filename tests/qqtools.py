"""Helpers for the queue tests: make a queue with queue-fix, run qmail-queue
(directly, or forked from a preloaded parent through pathexec as qmail-smtpd
does), and check the queue's invariants."""
import os
import re
import subprocess
import sys
import textwrap

from helpers import qbin, qenv

from qtools.lib import queue as qlib

# A parent that preloads qmail-queue, forks, and runs it through pathexec:
# elided (the child runs main() itself) or exec'd (QTOOLS_NOELIDE=1).  fd 0
# and fd 1 (message, envelope) are inherited from the test.
DRIVER = textwrap.dedent("""
    import gc, os, sys
    from qtools.lib import pathexec
    pathexec.preload(["qmail-queue"])
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        try:
            pathexec.pathexec_run(["qmail-queue"])
        except OSError as e:
            os.write(2, b"driver: unable to run qmail-queue: %d\\n" % e.errno)
            os._exit(120)
    os.write(2, b"child %d\\n" % pid)
    _, st = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(st) & 255)
""")

RECEIVED = re.compile(rb"Received: \(qmail (\d+) invoked by uid (\d+)\); "
                      rb"(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) "
                      rb"(\d\d):(\d\d):(\d\d) -0000\n")


def mkqueue(home):
    os.makedirs(home, exist_ok=True)
    p = subprocess.run([qbin("queue-fix"), os.path.join(home, "queue")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr
    return os.path.join(home, "queue")


def envelope(sender, rcpts):
    return b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in rcpts) + b"\0"


def run_qq(home, message, env_bytes, tmp, mode=None, extra_env=None, timeout=60):
    """Run qmail-queue with message on fd 0 and env_bytes on fd 1 (both
    regular files).  mode None: exec the launcher directly; 'elide' or
    'noelide': through the DRIVER.  Returns (exit code, qmail-queue's pid)."""
    mf = os.path.join(tmp, "qq.msg")
    ef = os.path.join(tmp, "qq.env")
    with open(mf, "wb") as f:
        f.write(message)
    with open(ef, "wb") as f:
        f.write(env_bytes)
    env = qenv(mode or "noelide", QMAILHOME=home, **(extra_env or {}))
    argv = [qbin("qmail-queue")] if mode is None else [sys.executable, "-c", DRIVER]
    with open(mf, "rb") as m, open(ef, "rb") as e:
        p = subprocess.Popen(argv, stdin=m, stdout=e, stderr=subprocess.PIPE, env=env)
        try:
            _, err = p.communicate(timeout=timeout)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    pid = p.pid
    if mode is not None:
        mm = re.search(rb"child (\d+)", err)
        pid = int(mm.group(1)) if mm else None
    return p.returncode, pid


def listing(qdir):
    """Every file below qdir except lock/: {relative path: bytes}."""
    out = {}
    for d in ("pid", "intd", "todo", "bounce", "mess", "info", "local", "remote"):
        for root, _, files in os.walk(os.path.join(qdir, d)):
            for f in files:
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, qdir)] = fh.read()
    return out


def assert_empty(qdir):
    left = listing(qdir)
    assert left == {}, sorted(left)


def check_queue(qdir, body, rcpts_env):
    """The invariants: every todo/N is a complete envelope whose message
    mess/N%23/N is complete; every mess/N has inode N.  rcpts_env is the
    expected F...T... part (without the final \\0).  Returns {pid: N}."""
    found = {}
    for sub in os.listdir(os.path.join(qdir, "mess")):
        for f in os.listdir(os.path.join(qdir, "mess", sub)):
            st = os.stat(os.path.join(qdir, "mess", sub, f))
            assert st.st_ino == int(f) and int(f) % qlib.SPLIT == int(sub)
    for f in os.listdir(os.path.join(qdir, "todo")):
        n = int(f)
        todo = os.path.join(qdir, "todo", f)
        intd = os.path.join(qdir, "intd", f)
        assert os.stat(todo).st_ino == os.stat(intd).st_ino
        with open(todo, "rb") as fh:
            data = fh.read()
        m = re.match(rb"u(\d+)\0p(\d+)\0", data)
        assert m, data[:40]
        assert data[m.end():] == rcpts_env
        pid = int(m.group(2))
        with open(os.path.join(qdir, qlib.fmtqfn("mess/", n, 1)), "rb") as fh:
            mess = fh.read()
        r = RECEIVED.match(mess)
        assert r and int(r.group(1)) == pid, mess[:100]
        assert len(mess) - r.end() == len(body) and mess[r.end():] == body
        found[pid] = n
    return found
