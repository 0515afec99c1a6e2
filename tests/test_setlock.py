"""setlock: rts.tests cases, options, and I16 lock conflicts with Debian's C
setlock and multilog both ways (flock interoperates)."""
import os
import stat
import subprocess

import pytest

from dtools import both, run
from helpers import flock_held, qbin, wait_until

USAGE = b"setlock: usage: setlock [ -nNxX ] file program [ arg ... ]\n"


@pytest.mark.parametrize("args,out,err,code", [
    (["whatever"], b"", USAGE, 100),
    ([], b"", USAGE, 100),
    (["-z", "f", "true"], b"", b"setlock: illegal option -- z\n" + USAGE, 100),
    (["nonexistent/lock", "echo", "wrong"], b"",
     b"setlock: fatal: unable to open nonexistent/lock: file does not exist\n", 111),
    (["-x", "nonexistent/lock", "echo", "wrong"], b"", b"", 0),
    (["-xX", "nonexistent/lock", "echo", "wrong"], b"",
     b"setlock: fatal: unable to open nonexistent/lock: file does not exist\n", 111),
    (["lock", "echo", "ok"], b"ok\n", b"", 0),
    (["--", "lock", "echo", "ok"], b"ok\n", b"", 0),
    (["lock", "./nonexistent"], b"",
     b"setlock: fatal: unable to run ./nonexistent: file does not exist\n", 111),
    (["lock", "sh", "-c", "exit 7"], b"", b"", 7),
])
def test_rts_and_usage(env, cbin, tmp_path, args, out, err, code):
    q, c = both("setlock", args, cbin, env, cwd=tmp_path)
    assert q == c == (code, out, err)


def test_creates_0600_and_does_not_truncate(env, cbin, tmp_path):
    for prog in (qbin("setlock"), cbin("setlock")):
        lock = tmp_path / "lock"
        if lock.exists():
            lock.unlink()
        assert run([prog, "lock", "true"], env=env, cwd=tmp_path) == (0, b"", b"")
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600 and lock.read_bytes() == b""
        lock.write_bytes(b"ok\n")
        assert run([prog, "lock", "cat", "lock"], env=env, cwd=tmp_path) == (0, b"ok\n", b"")


@pytest.mark.parametrize("outer", ["q", "c"])
@pytest.mark.parametrize("inner", ["q", "c"])
def test_rts_nested(env, cbin, tmp_path, outer, inner):
    """setlock lock sh -c 'setlock -n lock ...' with every combination of binaries."""
    progs = {"q": qbin("setlock"), "c": cbin("setlock")}
    r = run([progs[outer], "lock", "sh", "-c", "%s -n lock echo one && echo two" % progs[inner]],
            env=env, cwd=tmp_path)
    assert r == (111, b"", b"setlock: fatal: unable to lock lock: temporary failure\n")
    r = run([progs[outer], "lock", "sh", "-c", "%s -nx lock echo one && echo two" % progs[inner]],
            env=env, cwd=tmp_path)
    assert r == (0, b"two\n", b"")


class Holder:
    """A process holding L through setlock until the test writes a byte."""

    def __init__(self, prog, path, env, cwd):
        self.p = subprocess.Popen([prog, path, "sh", "-c", "read x"], stdin=subprocess.PIPE,
                                  env=env, cwd=cwd, start_new_session=True)

    def release(self):
        self.p.stdin.write(b"\n")
        self.p.stdin.close()
        return self.p.wait(10)

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, 9)
            self.p.wait()


held = flock_held


@pytest.mark.parametrize("holder", ["q", "c"])
def test_i16_conflict_and_wait(env, cbin, tmp_path, holder):
    progs = {"q": qbin("setlock"), "c": cbin("setlock")}
    other = progs["c" if holder == "q" else "q"]
    h = Holder(progs[holder], "L", env, tmp_path)
    try:
        wait_until(lambda: held(tmp_path / "L"), 10, h.p, "lock held")
        assert run([other, "-n", "L", "true"], env=env, cwd=tmp_path) == (
            111, b"", b"setlock: fatal: unable to lock L: temporary failure\n")
        assert run([other, "-nx", "L", "echo", "no"], env=env, cwd=tmp_path) == (0, b"", b"")
        # without -n the other one waits for the lock
        w = subprocess.Popen([other, "L", "echo", "got it"], stdout=subprocess.PIPE, env=env,
                             cwd=tmp_path, start_new_session=True)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                w.wait(0.3)
            assert h.release() == 0
            out, _ = w.communicate(timeout=10)
            assert (w.returncode, out) == (0, b"got it\n")
        finally:
            if w.poll() is None:
                os.killpg(w.pid, 9)
                w.wait()
    finally:
        h.kill()


def test_multilog_lock(env, cbin, tmp_path):
    """setlock on a logdir's lock keeps both multilogs out, and the other way round."""
    (tmp_path / "L").mkdir()
    h = Holder(qbin("setlock"), "L/lock", env, tmp_path)
    try:
        wait_until(lambda: held(tmp_path / "L" / "lock"), 10, h.p, "lock held")
        for prog in (qbin("multilog"), cbin("multilog")):
            assert run([prog, "./L"], b"x\n", env, tmp_path) == (
                111, b"", b"multilog: fatal: unable to lock directory ./L: temporary failure\n")
        assert h.release() == 0
    finally:
        h.kill()
    r, w = os.pipe()
    ml = subprocess.Popen([cbin("multilog"), "./L"], stdin=r, env=env, cwd=tmp_path,
                          start_new_session=True)
    os.close(r)
    try:
        wait_until(lambda: held(tmp_path / "L" / "lock"), 10, ml, "multilog lock")
        assert run([qbin("setlock"), "-n", "L/lock", "true"], env=env, cwd=tmp_path) == (
            111, b"", b"setlock: fatal: unable to lock L/lock: temporary failure\n")
    finally:
        os.close(w)
        ml.wait(10)


def test_lock_fd_inherited(env, tmp_path):
    """The child (and its children) hold the lock: the descriptor survives exec."""
    r = run([qbin("setlock"), "L", "sh", "-c",
             "%s -n L true; echo $?" % qbin("setlock")], env=env, cwd=tmp_path)
    assert r == (0, b"111\n", b"setlock: fatal: unable to lock L: temporary failure\n")
