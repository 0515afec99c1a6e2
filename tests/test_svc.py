"""svc: the bytes written to supervise/control (de-duplicated, first-seen
order), warnings and exit codes exactly as daemontools' svc; qtools svc
driving Debian's C supervise (I3)."""
import os

import pytest

from helpers import qbin, wait_until
from svtools import alive, proc_state, read_status, run, service, start_supervise, wait_pid

OPTIONS = (b"svc options: u up, d down, o once, x exit, p pause, c continue, h hup,"
           b" a alarm, i interrupt, t term, k kill\n")


class FakeSupervise:
    """Holds supervise/control open for reading (as supervise does) and
    returns what svc wrote."""

    def __init__(self, d):
        os.makedirs(os.path.join(d, "supervise"), exist_ok=True)
        p = os.path.join(d, "supervise", "control")
        os.mkfifo(p, 0o600)
        self.fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)

    def read(self):
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""

    def close(self):
        os.close(self.fd)


@pytest.mark.parametrize("args,sent", [
    (["-uuddk", "f"], b"udk"),
    (["-dx", "f"], b"dx"),
    (["-xd", "f"], b"xd"),
    (["-t", "-t", "-t", "f"], b"t"),
    (["-u", "f", "f"], b"uu"),
    (["-dx", "f", "f"], b"dxdx"),
    (["-udopchaitkx", "f"], b"udopchaitkx"),
    (["-k", "-i", "-kik", "f"], b"ki"),
    (["f"], b""),
    (["--", "f"], b""),
])
def test_bytes_written(env, cbin, tmp_path, args, sent):
    f = FakeSupervise(str(tmp_path / "f"))
    try:
        for prog in (qbin("svc"), cbin("svc")):
            assert run([prog] + args, env=env, cwd=tmp_path) == (0, b"", b"")
            assert f.read() == sent, prog
    finally:
        f.close()


@pytest.mark.parametrize("args", [["-z", "f"], ["-uz"], ["-"], ["-?"]])
def test_bad_option(env, cbin, tmp_path, args):
    q = run([qbin("svc")] + args, env=env, cwd=tmp_path)
    c = run([cbin("svc")] + args, cwd=tmp_path)
    assert q == c
    if args != ["-"]:
        assert q[0] == 100 and q[2].endswith(OPTIONS) and b"illegal option -- " in q[2]


def test_warnings(env, cbin, tmp_path):
    """No supervise (ENXIO), no fifo (ENOENT), no dir: warnings, exit 0, and
    the other directories still get their commands."""
    os.makedirs(tmp_path / "new")
    os.makedirs(tmp_path / "dead" / "supervise")
    os.mkfifo(tmp_path / "dead" / "supervise" / "control")
    f = FakeSupervise(str(tmp_path / "live"))
    try:
        args = ["-du", "new", "dead", "nonexistent", "live"]
        q = run([qbin("svc")] + args, env=env, cwd=tmp_path)
        assert f.read() == b"du"
        c = run([cbin("svc")] + args, cwd=tmp_path)
        assert f.read() == b"du"
    finally:
        f.close()
    assert q == c == (0, b"", b"svc: warning: unable to control new: file does not exist\n"
                      b"svc: warning: unable to control dead: supervise not running\n"
                      b"svc: warning: unable to chdir to nonexistent: file does not exist\n")


def test_qtools_svc_drives_c_supervise(env, cbin, tmp_path):
    """I3: every letter against Debian's supervise, state read back with C svstat."""
    d = service(tmp_path / "s", run=(
        "trap 'echo HUP >> sigs' HUP\ntrap 'echo ALRM >> sigs' ALRM\n"
        "trap 'echo INT >> sigs' INT\n"
        "while :; do sleep 0.05; done\n"))
    sv = start_supervise(d, env, binary=cbin("supervise"))
    svc = qbin("svc")

    def svstat():
        return run([cbin("svstat"), d])[1].decode()
    try:
        pid = wait_pid(d, proc=sv.p)[2]
        assert run([svc, "-uuddk", d], env=env)[0] == 0     # u, d (TERM), then k: down
        wait_pid(d, lambda p: p == 0, proc=sv.p)
        assert read_status(d)[4] == ord("d") and not alive(pid)
        assert ", normally up" in svstat()
        run([svc, "-o", d], env=env)
        pid = wait_pid(d, proc=sv.p)[2]
        assert read_status(d)[4] == 0
        run([svc, "-p", d], env=env)
        wait_until(lambda: proc_state(pid) == "T", 5, sv.p, "stopped")
        assert svstat().endswith(", paused\n")
        run([svc, "-c", d], env=env)
        wait_until(lambda: proc_state(pid) != "T", 5, sv.p, "continued")
        run([svc, "-u", d], env=env)
        wait_until(lambda: read_status(d)[4] == ord("u"), 5, sv.p, "want up")
        for letter, name in (("h", "HUP"), ("a", "ALRM"), ("i", "INT")):
            run([svc, "-" + letter, d], env=env)
            wait_until(lambda: name in open(os.path.join(d, "sigs")).read().split()
                       if os.path.exists(os.path.join(d, "sigs")) else False,
                       5, sv.p, name)
        run([svc, "-t", d], env=env)
        pid2 = wait_pid(d, lambda p: p not in (0, pid), 5, sv.p, "restarted after TERM")
        assert not alive(pid)
        run([svc, "-dx", d], env=env)
        assert sv.p.wait(10) == 0
        assert not alive(pid2[2])
        assert svstat() == "%s: supervise not running\n" % d
    finally:
        sv.__exit__()
