"""svstat and svok: byte-identical output and exit codes against Debian's C
binaries, on status files written by Python (fuzz, I4), by the C supervise
(I2), by runit's 20-byte layout (I18), and on every error path."""
import os
import random
import time

import pytest

from helpers import qbin, wait_until
from svtools import (TAIBASE, noaccess_prefix, pack_status, run, service, start_supervise,
                     wait_pid)


def make_dir(d, status=None, down=False, ok="reader"):
    """A service dir with a given status file; ok: 'reader' (a held fifo),
    'fifo' (no reader), None (no fifo).  Returns the held fd or None."""
    os.makedirs(os.path.join(d, "supervise"))
    if down:
        open(os.path.join(d, "down"), "w").close()
    if status is not None:
        with open(os.path.join(d, "supervise", "status"), "wb") as f:
            f.write(status)
    if ok is None:
        return None
    p = os.path.join(d, "supervise", "ok")
    os.mkfifo(p, 0o600)
    if ok == "reader":
        return os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    return None


def same_second(argv_q, argv_c, env, cwd):
    """Run C, qtools, C; retry if the clock's second changed meanwhile."""
    for _ in range(5):
        c1 = run(argv_c, cwd=cwd)
        q = run(argv_q, env=env, cwd=cwd)
        c2 = run(argv_c, cwd=cwd)
        if c1 == c2:
            return q, c1
    raise AssertionError("clock kept moving")


def test_status_fuzz(env, cbin, tmp_path):
    """I4: hundreds of status files, one svstat call each side."""
    rnd = random.Random(76)
    now = TAIBASE + int(time.time())
    held = []
    names = []
    wants = [0x75, 0x64, 0, 0x78, 0xff]
    secs = [lambda: now - rnd.randrange(0, 100000), lambda: now + rnd.randrange(1, 10**6),
            lambda: 0, lambda: (1 << 64) - 1, lambda: rnd.randrange(1 << 64),
            lambda: TAIBASE, lambda: now - rnd.randrange(1 << 40)]
    try:
        for i in range(300):
            pid = rnd.choice([0, 0, 1, rnd.randrange(1 << 15), rnd.randrange(1 << 32),
                              (1 << 32) - 1])
            st = pack_status(rnd.choice(secs)(), rnd.randrange(1 << 32), pid,
                             rnd.choice([0, 1, 2, 0xff]), rnd.choice(wants))
            size = rnd.choice([18] * 8 + [0, 17, 20, 23])
            st = (st + bytes(range(1, 6)))[:size]
            name = "s%03d" % i
            fd = make_dir(str(tmp_path / name), st, down=rnd.random() < 0.4,
                          ok=rnd.choice(["reader"] * 8 + ["fifo", None]))
            if fd is not None:
                held.append(fd)
            names.append(name)
        q, c = same_second([qbin("svstat")] + names, [cbin("svstat")] + names, env, tmp_path)
    finally:
        for fd in held:
            os.close(fd)
    assert q == c
    assert q[0] == 0 and q[1].count(b"\n") == 300


@pytest.mark.parametrize("case", [
    ("up (pid 123) 45 seconds", dict(pid=123, ago=45)),
    ("up (pid 123) 45 seconds, paused", dict(pid=123, ago=45, paused=1)),
    ("up (pid 123) 45 seconds, want down", dict(pid=123, ago=45, want=0x64)),
    ("up (pid 123) 45 seconds, normally down", dict(pid=123, ago=45, down=True)),
    ("down 3 seconds, normally up", dict(ago=3)),
    ("down 3 seconds, normally up, want up", dict(ago=3, want=0x75)),
    ("down 3 seconds, want up", dict(ago=3, want=0x75, down=True)),
    ("down 3 seconds", dict(ago=3, down=True)),
    ("down 0 seconds, normally up", dict(ago=-100)),
    ("up (pid 4000000000) 1 seconds", dict(pid=4000000000, ago=1)),
    ("up (pid 9) 0 seconds, normally down, paused, want down",
     dict(pid=9, ago=0, down=True, paused=1, want=0x64)),
])
def test_renderings(env, cbin, tmp_path, case):
    """Inventory 2.4/3.1: every suffix combination, C and qtools alike."""
    text, k = case
    st = pack_status(TAIBASE + int(time.time()) - k["ago"], 500, k.get("pid", 0),
                     k.get("paused", 0), k.get("want", 0))
    fd = make_dir(str(tmp_path / "svc1"), st, down=k.get("down", False))
    try:
        q, c = same_second([qbin("svstat"), "svc1"], [cbin("svstat"), "svc1"], env, tmp_path)
    finally:
        os.close(fd)
    assert q == c
    # the status was written in an earlier second than svstat may run in
    ago = max(k["ago"], 0)
    alts = [text.replace("%d seconds" % ago, "%d seconds" % n) for n in (ago, ago + 1)]
    assert q[0] == 0 and q[2] == b"" and q[1].decode() in ["svc1: %s\n" % a for a in alts]


def test_error_paths(env, cbin, tmp_path):
    held = [make_dir(str(tmp_path / "short"), b"x" * 17)]
    make_dir(str(tmp_path / "nostatus"))
    make_dir(str(tmp_path / "notrunning"), b"\0" * 18, ok="fifo")
    make_dir(str(tmp_path / "never"), ok=None)
    os.makedirs(tmp_path / "loop" / "supervise")
    os.symlink("down", tmp_path / "loop" / "down")           # stat: symbolic link loop
    held.append(make_dir(str(tmp_path / "okdir"), b"\0" * 18, ok=None))
    os.mkdir(tmp_path / "okdir" / "supervise" / "ok")         # open: is a directory
    open(tmp_path / "plain", "w").close()
    names = ["short", "nostatus", "notrunning", "never", "loop", "okdir", "plain",
             "nonexistent", "."]
    try:
        q = run([qbin("svstat")] + names, env=env, cwd=tmp_path)
        c = run([cbin("svstat")] + names, cwd=tmp_path)
    finally:
        for fd in held:
            if fd is not None:
                os.close(fd)
    assert q == c
    assert q[1].decode().splitlines() == [
        "short: unable to read supervise/status: bad format",
        "nostatus: unable to open supervise/status: file does not exist",
        "notrunning: supervise not running",
        "never: unable to open supervise/ok: file does not exist",
        "loop: unable to stat down: symbolic link loop",
        "okdir: unable to open supervise/ok: is a directory",
        "plain: unable to chdir: not a directory",
        "nonexistent: unable to chdir: file does not exist",
        ".: unable to open supervise/ok: file does not exist",
    ]


def test_no_args_and_option_like_args(env, cbin, tmp_path):
    for args in ([], ["-x"], ["--"]):
        q = run([qbin("svstat")] + args, env=env, cwd=tmp_path)
        c = run([cbin("svstat")] + args, cwd=tmp_path)
        assert q == c


def test_unreadable_dir(env, cbin, tmp_path):
    os.makedirs(tmp_path / "s")
    os.chmod(tmp_path / "s", 0)
    try:
        pre = noaccess_prefix()
        q = run(pre + [qbin("svstat"), "s"], env=env, cwd=tmp_path)
        c = run(pre + [cbin("svstat"), "s"], cwd=tmp_path)
    finally:
        os.chmod(tmp_path / "s", 0o755)
    assert q == c == (0, b"s: unable to chdir: access denied\n", b"")


def test_c_supervise_python_clients(env, cbin, tmp_path):
    """I2: Debian's supervise writes the status; both svstat agree after each
    of -u -d -o -p -c, and qtools svok sees it."""
    d = service(tmp_path / "s")
    sv = start_supervise(d, env, binary=cbin("supervise"))

    def both():
        return same_second([qbin("svstat"), d], [cbin("svstat"), d], env, None)
    try:
        wait_pid(d, proc=sv.p)
        assert run([qbin("svok"), d], env=env)[0] == 0
        for letter in "pcdou":
            before = open(os.path.join(d, "supervise/status"), "rb").read()
            run([cbin("svc"), "-" + letter, d])
            wait_until(lambda: open(os.path.join(d, "supervise/status"), "rb").read() != before,
                       5, sv.p, "status after -" + letter)
            q, c = both()
            assert q == c and q[0] == 0
        run([cbin("svc"), "-dx", d])
        sv.p.wait(10)
        assert run([qbin("svok"), d], env=env)[0] == 100
        q, c = both()
        assert q == c == (0, b"%s: supervise not running\n" % d.encode(), b"")
    finally:
        sv.__exit__()


def test_runit_status(env, cbin, tmp_path):
    """I18: runsv's 20-byte status (18 daemontools bytes + 2) reads the same."""
    st = pack_status(TAIBASE + int(time.time()) - 2, 500, 1425, 0, 0x75) + b"\0\1"
    fd = make_dir(str(tmp_path / "y"), st)
    try:
        q, c = same_second([qbin("svstat"), "y"], [cbin("svstat"), "y"], env, tmp_path)
    finally:
        os.close(fd)
    assert q == c and q[1] in (b"y: up (pid 1425) 2 seconds\n", b"y: up (pid 1425) 3 seconds\n")


# -- svok ---------------------------------------------------------------------

def test_svok(env, cbin, tmp_path):
    fd = make_dir(str(tmp_path / "running"), b"\0" * 18)
    make_dir(str(tmp_path / "stopped"), ok="fifo")
    make_dir(str(tmp_path / "never"), ok=None)
    make_dir(str(tmp_path / "okdir"), ok=None)
    os.mkdir(tmp_path / "okdir" / "supervise" / "ok")
    try:
        for args, code, err in (
                ([], 100, b"svok: usage: svok dir\n"),
                (["running"], 0, b""),
                (["running", "extra"], 0, b""),
                (["stopped"], 100, b""),
                (["never"], 100, b""),
                (["okdir"], 111, b"svok: fatal: unable to open okdir/supervise/ok: "
                                 b"is a directory\n"),
                (["nonexistent"], 111, b"svok: fatal: unable to chdir to nonexistent: "
                                       b"file does not exist\n")):
            q = run([qbin("svok")] + args, env=env, cwd=tmp_path)
            c = run([cbin("svok")] + args, cwd=tmp_path)
            assert q == c == (code, b"", err), args
    finally:
        os.close(fd)
