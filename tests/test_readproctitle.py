"""readproctitle: the argv window seen in /proc/PID/cmdline (and ps) moves
exactly as daemontools' does; usage and error exit codes; run elided from a
parent with a short command line."""
import os
import subprocess
import sys

import pytest

from helpers import qbin, qenv, wait_until
from svtools import children, cmdline


def model(dots, data):
    """What the C program shows: the first 3 dots stay, the rest shifts."""
    w = bytearray(b"." * dots)
    for b in data.replace(b"\0", b""):
        w[3:-1] = w[4:]
        w[-1] = b
    return bytes(w)


def shown(pid):
    """cmdline without argv[0] (C shows the path it was run by); a read that
    lands while the title is being rewritten may have no space yet."""
    return cmdline(pid).partition(b" ")[2]


class Reader:
    def __init__(self, argv, env=None):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, start_new_session=True)

    def feed(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def close(self):
        self.p.stdin.close()
        code = self.p.wait(10)
        out, err = self.p.stdout.read(), self.p.stderr.read()
        self.p.stdout.close()
        self.p.stderr.close()
        return code, out, err


@pytest.mark.parametrize("steps", [
    [b"abc", b"hello world\n"],
    [b"x\0y\0\0z", b"\0"],
    [bytes(range(256)), b"tail\xff\xfe\n"],
    [b"svscan: warning: unable to stat x: file does not exist\n" * 3],
])
def test_window_matches_c(mode, cbin, steps):
    env = qenv(mode)
    for dots in (10, 5, 400):
        label = ["service", "errors:"]
        readers = {"q": Reader([qbin("readproctitle")] + label + ["." * dots], env),
                   "c": Reader([cbin("readproctitle")] + label + ["." * dots])}
        try:
            data = b""
            for step in [b""] + steps:
                data += step
                want = b"service errors: " + model(dots, data)
                for r in readers.values():
                    if step:
                        r.feed(step)
                    wait_until(lambda: shown(r.p.pid) == want, 5, r.p, repr(want))
            for who, r in readers.items():
                assert r.close() == (0, b"", b""), who
            assert cmdline(os.getpid())          # still ours
        finally:
            for r in readers.values():
                if r.p.poll() is None:
                    r.p.kill()
                    r.p.wait()


def test_title_is_program_name(mode):
    r = Reader([qbin("readproctitle"), "a", "b", "......"], qenv(mode))
    try:
        r.feed(b"hi")
        wait_until(lambda: cmdline(r.p.pid) == b"readproctitle a b ....hi", 5, r.p, "title")
    finally:
        assert r.close()[0] == 0


@pytest.mark.parametrize("args", [[], ["...."], ["..........", "four"], ["a", ""]])
def test_usage(mode, cbin, args):
    q = subprocess.run([qbin("readproctitle")] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, env=qenv(mode))
    c = subprocess.run([cbin("readproctitle")] + args, stdin=subprocess.DEVNULL,
                       capture_output=True)
    assert (q.returncode, q.stdout, q.stderr) == (c.returncode, c.stdout, c.stderr) == (
        100, b"", b"")


def test_read_error(mode, cbin, tmp_path):
    """stdin open for writing only: read(2) fails with EBADF: 111.  (A
    directory on stdin, EISDIR, stops the Python interpreter before
    readproctitle runs: exit 1.)"""
    for prog, env in ((qbin("readproctitle"), qenv(mode)), (cbin("readproctitle"), None)):
        fd = os.open(str(tmp_path / "w"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            p = subprocess.run([prog, "x", "....."], stdin=fd, capture_output=True, env=env)
        finally:
            os.close(fd)
        assert (p.returncode, p.stdout, p.stderr) == (111, b"", b"")


DRIVER = """
import os, sys
from qtools.lib import pathexec
pathexec.preload(["readproctitle"])
pid = os.fork()
if pid == 0:
    pathexec.pathexec_run(["readproctitle", "service", "errors:", "." * 400])
_, st = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(st))
"""


def test_elided_from_short_command_line(mode):
    """A fork of `python -c ...` has no room for 400 dots in its argv area:
    readproctitle gets a real process of its own and shows the full window."""
    p = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE,
                         env=qenv(mode), start_new_session=True)
    try:
        kid = wait_until(lambda: [c for c in children(p.pid)], 10, p, "child")[0]
        p.stdin.write(b"oops\n")
        p.stdin.flush()
        want = b"readproctitle service errors: " + model(400, b"oops\n")
        wait_until(lambda: cmdline(kid) == want, 10, p, "title")
        p.stdin.close()
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
