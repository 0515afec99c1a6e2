"""multilog: the rts.tests golden cases, djb's match semantics, selection,
alerts and status files compared byte for byte with Debian's C multilog,
logdirs shared with the C binary both ways (I10, I11), the processor
protocol (fd 0/1/4/5), lock conflicts (I16), SIGALRM rotation, SIGTERM
without losing a line, and a full disk (security-reliability 5.3 items 3, 7)."""
import os
import random
import re
import signal
import stat
import subprocess
import threading

import pytest

from dtools import both, mask, run
from helpers import flock_held, qbin, wait_until
from qtools.daemontools import multilog

ARCHIVE = re.compile(r"^@[0-9a-f]{24}\.[su]$")
LONG199 = b"".join(b"%d" % (i % 10) for i in range(199))


# ---- rts.tests (§3.2), exact expected output
RTS = [
    ([], b"one\ntwo\n", b"", b""),
    (["e"], b"one\ntwo\n", b"", b"one\ntwo\n"),
    (["e"], b"one\ntwo", b"", b"one\ntwo\n"),
    (["e", "e"], b"one\ntwo\n", b"", b"one\none\ntwo\ntwo\n"),
    (["-*", "e"], b"one\ntwo\n", b"", b""),
    (["-*", "+one", "e"], b"one\ntwo\n", b"", b"one\n"),
    (["e"], LONG199 + b"\n", b"", LONG199 + b"\n"),
    (["e"], LONG199 + b"9\n", b"", LONG199 + b"9\n"),
    (["e"], LONG199 + b"90\n", b"", LONG199 + b"9...\n"),
    (["e", "t"], b"ONE\nTWO\n", b"", b"ONE\nTWO\n"),
]


@pytest.mark.parametrize("args,inp,out,err", RTS)
def test_rts(env, cbin, args, inp, out, err):
    q, c = both("multilog", args, cbin, env, input=inp)
    assert q == (0, out, err)
    assert c == q


def test_rts_timestamp(env, cbin):
    q, c = both("multilog", ["t", "e"], cbin, env, input=b"ONE\nTWO\n")
    assert q[0] == 0 and re.fullmatch(rb"@4000[0-9a-f]{20} ONE\n@4000[0-9a-f]{20} TWO\n", q[2])
    assert mask(q[2]) == mask(c[2]) == b"@" + b"x" * 24 + b" ONE\n@" + b"x" * 24 + b" TWO\n"


def test_rts_status_file(env, cbin, tmp_path):
    for prog in (qbin("multilog"), cbin("multilog")):
        st = tmp_path / "test.status"
        if st.exists():
            st.unlink()
        assert run([prog, "=test.status"], b"one\ntwo\n", env, tmp_path) == (0, b"", b"")
        assert st.read_bytes() == b"two" + b"\n" * 998
        assert stat.S_IMODE(st.stat().st_mode) == 0o600


def test_status_file_not_truncated(env, cbin, tmp_path):
    """=file is opened without O_TRUNC: bytes past 1001 survive."""
    for prog in (qbin("multilog"), cbin("multilog")):
        st = tmp_path / "st"
        st.write_bytes(b"z" * 3000)
        assert run([prog, "=st"], b"abc\n", env, tmp_path)[0] == 0
        assert st.read_bytes() == b"abc" + b"\n" * 998 + b"z" * 1999, prog


# ---- match.c semantics (§2.8 vectors, verified with the real multilog)
VECTORS = [
    ("one", "one", True), ("one", "on", False), ("one", "one*", False), ("", "", True),
    ("", "x", False), ("*", "", True), ("*", "one", True), ("one*", "onetwo", True),
    ("one*", "", False), ("* one", " one", True), ("* one", "x one", True),
    ("* one", "* one", True), ("* one", "one", False), ("* one", "  one", False),
    ("* one", "xy one ", False), ("* * one", "  one", True), ("* * one", "x y one", True),
    ("* * one", " one", False), ("* * one", "   one", False),
    # rts.tests' matchtest lines
    ("one", "", False), ("one", "onf", False), ("*", "*", True), ("*", "x", True),
    ("one*", "one", True), ("one*", "one*", True), ("one*", "x", False), ("one*", "on", False),
    ("one*", "onf", False), ("* one", "xy one", True), ("* one", " two", False),
    ("* * one", "x  one", True), ("* * one", " y one", True), ("* * one", "one", False),
]


@pytest.mark.parametrize("pattern,line,result", VECTORS)
def test_match_vectors(pattern, line, result):
    p, s = pattern.encode(), line.encode()
    assert multilog.match(p, s) is result
    assert multilog.compile_pattern(p)(s) is result


def test_compiled_patterns_fuzz():
    """The regex translation agrees with match.c's loop on random input."""
    rnd = random.Random(7)
    alpha = b"ab*x "
    for _ in range(20000):
        p = bytes(rnd.choice(alpha) for _ in range(rnd.randrange(0, 7)))
        s = bytes(rnd.choice(alpha) for _ in range(rnd.randrange(0, 9)))
        assert multilog.compile_pattern(p)(s) == multilog.match(p, s), (p, s)


def test_match_against_c(env, cbin):
    """Selection through a real multilog run, both binaries, many lines per pattern."""
    rnd = random.Random(3)
    alpha = "ab*x "
    lines = sorted({"".join(rnd.choice(alpha) for _ in range(rnd.randrange(0, 8)))
                    for _ in range(150)})
    inp = "".join(x + "\n" for x in lines).encode()
    patterns = ["* one", "* * one", "a*", "*b", "a*b", "**", "*x*", "a b", "* *", "", "*", "x**a"]
    for pat in patterns:
        q, c = both("multilog", ["-*", "+" + pat, "e"], cbin, env, input=inp)
        assert q == c, pat
        want = b"".join(x.encode() + b"\n" for x in lines
                        if multilog.match(pat.encode(), x.encode()))
        assert q[2] == want, pat


# ---- selection, alerts, status, long lines: byte-identical with C (I11)
def long_input():
    rnd = random.Random(11)
    out = []
    for n in (0, 1, 5, 199, 200, 201, 973, 974, 975, 999, 1000, 1001, 1500, 2500, 5000):
        for tag in (b"x", b"fatal: ", b"7", b"5"):
            body = tag + bytes(rnd.choice(b"abc 57:") for _ in range(n))
            out.append(body[:max(n, 1)])
    return b"\n".join(out) + b"\n" + b"tail fatal: " + b"q" * 1400     # partial last line


@pytest.mark.parametrize("script", [
    ["e", "-*5", "./A", "+*7", "=st", "e", "./B"],
    ["-*", "+* fatal: *", "e", "=st", "./A"],
    ["t", "-*", "+* fatal: *", "e", "=st", "./A", "+*", "./B"],
    ["t", "e", "./A"],
])
def test_selection_like_c(env, cbin, tmp_path, script):
    inp = long_input()
    results = []
    for name, prog in (("q", qbin("multilog")), ("c", cbin("multilog"))):
        d = tmp_path / name
        d.mkdir()
        code, out, err = run([prog] + script, inp, env, d)
        files = {}
        for sub in ("A", "B"):
            if (d / sub).exists():
                files[sub] = mask((d / sub / "current").read_bytes())
                assert stat.S_IMODE((d / sub / "current").stat().st_mode) == 0o744
        st = mask((d / "st").read_bytes()) if (d / "st").exists() else None
        results.append((code, out, mask(err), files, st))
    assert results[0] == results[1]
    assert results[0][0] == 0 and results[0][3]["A"]


def test_timestamp_only_first(env, tmp_path):
    code, _, _ = run([qbin("multilog"), "e", "t", "./L"], b"a\n", env, tmp_path)
    assert code == 0 and (tmp_path / "L" / "current").read_bytes() == b"a\n"
    code, _, _ = run([qbin("multilog"), "t", "./M"], b"a\n\nb", env, tmp_path)
    cur = (tmp_path / "M" / "current").read_bytes()
    assert re.fullmatch(rb"(@4000[0-9a-f]{20} )a\n\1\n\1b\n", cur), cur


# ---- logdirs
def listing(d):
    return sorted(os.listdir(d))


def archives(d):
    return [n for n in listing(d) if n.startswith("@")]


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def all_lines(d):
    data = b"".join((d / n).read_bytes() for n in archives(d))
    return data + (d / "current").read_bytes()


def check_logdir(d, n):
    names = listing(d)
    arch = archives(d)
    assert all(ARCHIVE.match(x) for x in arch), names
    assert set(names) - set(arch) <= {"current", "lock", "state"}, names
    assert len(arch) <= n - 1
    assert mode(d / "current") == 0o744
    for a in arch:
        if a.endswith(".s"):
            assert mode(d / a) == 0o744
    return arch


@pytest.mark.parametrize("first", ["q", "c"])
def test_logdir_interop(env, cbin, tmp_path, first):
    """I10: one implementation rotates, the other appends to the 0744 current,
    then each recovers the other's crashed (0644) current as .u."""
    progs = {"q": qbin("multilog"), "c": cbin("multilog")}
    a, b = progs[first], progs["c" if first == "q" else "q"]
    L = tmp_path / "L"
    seq = b"".join(b"%d\n" % i for i in range(1, 5001))
    assert run([a, "s4096", "n3", "./L"], seq, env, tmp_path) == (0, b"", b"")
    arch = check_logdir(L, 3)
    assert len(arch) == 2
    for x in arch:                               # rotation window: [size-2000, size]
        assert 2096 <= os.path.getsize(L / x) <= 4096
        assert (L / x).read_bytes().endswith(b"\n")
    assert seq.endswith(all_lines(L))
    before = (L / "current").read_bytes()
    assert run([b, "s4096", "n3", "./L"], b"x\n", env, tmp_path) == (0, b"", b"")
    assert (L / "current").read_bytes() == before + b"x\n"
    assert archives(L) == arch
    # crash: current left 0644 -> the other one archives it as .u
    os.chmod(L / "current", 0o644)
    assert run([a, "s4096", "n3", "./L"], b"y\n", env, tmp_path) == (0, b"", b"")
    arch2 = check_logdir(L, 3)
    u = [x for x in arch2 if x.endswith(".u")]
    assert len(u) == 1 and (L / u[0]).read_bytes() == before + b"x\n" and mode(L / u[0]) == 0o644
    assert (L / "current").read_bytes() == b"y\n"
    os.chmod(L / "current", 0o644)
    assert run([b, "s4096", "n3", "./L"], b"z\n", env, tmp_path) == (0, b"", b"")
    arch3 = check_logdir(L, 3)
    assert [(L / x).read_bytes() for x in arch3] == [before + b"x\n", b"y\n"]
    assert all(x.endswith(".u") for x in arch3)
    assert (L / "current").read_bytes() == b"z\n"


RECOVERY = {
    "processed done": {"current": (b"cur\n", 0o644), "previous": (b"prev\n", 0o744),
                       "processed": (b"proc\n", 0o744), "newstate": (b"ns", 0o644),
                       "state": (b"st", 0o644)},
    "processed partial": {"current": (b"cur\n", 0o644), "previous": (b"prev\n", 0o744),
                          "processed": (b"half", 0o644), "state": (b"st", 0o644)},
    "previous only": {"previous": (b"prev\n", 0o744)},
    "clean exit": {"current": (b"cur\n", 0o744), "state": (b"st", 0o644)},
}


@pytest.mark.parametrize("case", sorted(RECOVERY))
def test_crash_recovery_like_c(env, cbin, tmp_path, case):
    """Start-up after an outage in each rotation state: the same files,
    archive codes, modes and contents as C multilog leaves."""
    results = []
    for name, prog in (("q", qbin("multilog")), ("c", cbin("multilog"))):
        L = tmp_path / name
        L.mkdir(mode=0o700)
        for fn, (data, m) in RECOVERY[case].items():
            (L / fn).write_bytes(data)
            os.chmod(L / fn, m)
        assert run([prog, "./" + name], b"new\n", env, tmp_path) == (0, b"", b"")
        got = []
        for fn in listing(L):
            key = "@X" + fn[25:] if fn.startswith("@") else fn
            got.append((key, (L / fn).read_bytes(), mode(L / fn)))
        results.append(sorted(got))
    assert results[0] == results[1]


def test_big_current_identical_to_c(env, cbin, tmp_path):
    """Without rotation the logdir holds exactly what C writes."""
    inp = b"".join(b"line %d %s\n" % (i, b"x" * (i % 300)) for i in range(3000)) + b"end"
    for name, prog in (("q", qbin("multilog")), ("c", cbin("multilog"))):
        assert run([prog, "s16777215", "./" + name], inp, env, tmp_path)[0] == 0
    assert (tmp_path / "q" / "current").read_bytes() == (tmp_path / "c" / "current").read_bytes()
    assert listing(tmp_path / "q") == listing(tmp_path / "c") == ["current", "lock", "state"]


def test_rotation_keeps_every_line(env, tmp_path):
    """n large: archives + current are the input, in order; every archive
    ends at a line boundary within [size-2000, size]."""
    inp = b"".join(b"%06d %s\n" % (i, b"y" * (i % 97)) for i in range(20000))
    assert run([qbin("multilog"), "s5000", "n1000", "./L"], inp, env, tmp_path)[0] == 0
    L = tmp_path / "L"
    assert all_lines(L) == inp
    for a in archives(L):
        assert 3000 <= os.path.getsize(L / a) <= 5000 and a.endswith(".s")


def test_long_line_rotation(env, cbin, tmp_path):
    """A line with no newline for more than SIZE bytes is cut at SIZE, like C."""
    inp = b"a" * 10000 + b"\nb\n"
    for name, prog in (("q", qbin("multilog")), ("c", cbin("multilog"))):
        assert run([prog, "s4096", "n10", "./" + name], inp, env, tmp_path)[0] == 0
        L = tmp_path / name
        assert all_lines(L) == inp
        sizes = [os.path.getsize(L / a) for a in archives(L)]
        assert sizes[:2] == [4096, 4096], (name, sizes)


PROC = """#!/bin/sh
t=$(cat <&4)
n=0
while IFS= read -r l; do echo "P$l"; n=$((n+1)); done
echo $(( ${t:-0} + n )) >&5
pwd >&2
"""


@pytest.mark.parametrize("first", ["q", "c"])
def test_processor_state(env, cbin, tmp_path, first):
    """The processor runs in the logdir with fd 0 = previous, 1 = processed,
    4 = state, 5 = newstate; state carries over rotations and across
    implementations."""
    proc = tmp_path / "proc.sh"
    proc.write_text(PROC)
    proc.chmod(0o755)
    progs = {"q": qbin("multilog"), "c": cbin("multilog")}
    L = tmp_path / "L"
    total = b""
    for i, who in enumerate([first, "c" if first == "q" else "q"]):
        inp = b"".join(b"%s%d-%05d\n" % (who.encode(), i, k) for k in range(1500))
        total += inp
        code, out, err = run([progs[who], "s4096", "n1000", "!" + str(proc), "./L"], inp,
                             env, tmp_path)
        assert code == 0 and out == b""
        assert set(err.splitlines()) == {str(L).encode()}
    arch = archives(L)
    assert arch and all(x.endswith(".s") and mode(L / x) == 0o744 for x in arch)
    processed = b"".join((L / a).read_bytes() for a in arch)
    plines = processed.splitlines()
    assert all(x.startswith(b"P") for x in plines)
    assert b"".join(x[1:] + b"\n" for x in plines) + (L / "current").read_bytes() == total
    assert (L / "state").read_bytes() == b"%d\n" % len(plines)
    assert not {"previous", "processed", "newstate"} & set(os.listdir(L))


def test_processor_relative_cwd(env, tmp_path):
    """A relative processor runs from inside the logdir."""
    L = tmp_path / "L"
    L.mkdir()
    (L / "proc").write_text("#!/bin/sh\ntr a-z A-Z\n")
    (L / "proc").chmod(0o755)
    inp = b"".join(b"line %d\n" % i for i in range(400))
    assert run([qbin("multilog"), "s4096", "!./proc", "./L"], inp, env, tmp_path)[0] == 0
    arch = archives(L)
    assert arch and (L / arch[0]).read_bytes().startswith(b"LINE 0\n")


def test_processor_failure_retried(env, tmp_path):
    """A failing processor: the C warning, a pause, and a rerun; no data lost."""
    L = tmp_path / "L"
    flag = tmp_path / "flag"
    proc = "if [ -e %s ]; then cat; else touch %s; exit 1; fi" % (flag, flag)
    inp = b"".join(b"%04d\n" % i for i in range(1000))
    e = dict(env, QTOOLS_MULTILOG_PAUSE="0.05")
    code, out, err = run([qbin("multilog"), "s4096", "n100", "!" + proc, "./L"], inp, e, tmp_path)
    assert code == 0
    assert err == b"multilog: warning: processor failed in ./L, pausing\n"
    assert all_lines(L) == inp


def test_processor_crash_message(env, tmp_path):
    L = tmp_path / "L"
    flag = tmp_path / "flag"
    proc = "if [ -e %s ]; then cat; else touch %s; kill -9 $$; fi" % (flag, flag)
    e = dict(env, QTOOLS_MULTILOG_PAUSE="0.01")
    inp = b"".join(b"%04d\n" % i for i in range(1000))
    code, out, err = run([qbin("multilog"), "s4096", "!" + proc, "./L"], inp, e, tmp_path)
    assert code == 0
    # the errno text is C's stale errno: ENOENT from the start-up stat of current
    assert err == (b"multilog: warning: processor crashed in ./L, pausing: file does not exist\n"
                   b"multilog: warning: processor failed in ./L, pausing\n")


@pytest.mark.parametrize("script,nums", [(["n1"], 2), (["n3"], 3), (["n5"], 5)])
def test_archive_count(env, tmp_path, script, nums):
    inp = b"".join(b"%05d\n" % i for i in range(10000))
    assert run([qbin("multilog"), "s4096"] + script + ["./L"], inp, env, tmp_path)[0] == 0
    assert len(archives(tmp_path / "L")) == nums - 1


def test_size_clamped(env, tmp_path):
    inp = b"".join(b"%05d\n" % i for i in range(3000))
    for arg, lo, hi in (("s1", 2096, 4096), ("s99999999999", 0, 10 ** 9)):
        d = tmp_path / arg
        assert run([qbin("multilog"), arg, "./" + arg], inp, env, tmp_path)[0] == 0
        for a in archives(d):
            assert lo <= os.path.getsize(d / a) <= hi
        if arg != "s1":
            assert archives(d) == []


def test_fatal_messages(env, cbin, tmp_path):
    (tmp_path / "file").write_text("x")
    for args in (["./file"], ["./file/sub"], ["=nodir/st"]):
        q, c = both("multilog", args, cbin, env, cwd=tmp_path)
        assert q == c and q[0] == 111, (args, q)
    assert q[2] == b"multilog: fatal: unable to create nodir/st: file does not exist\n"


# ---- processes: locks, signals, a full disk
class Logger:
    """A multilog reading from a pipe the test writes to."""

    def __init__(self, args, env, cwd, prog=None, keep_read_end=False):
        r, self.w = os.pipe()
        self.proc = subprocess.Popen([prog or qbin("multilog")] + args, stdin=r,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=cwd, start_new_session=True)
        self.r = r if keep_read_end else None
        if not keep_read_end:
            os.close(r)

    def write(self, b):
        os.write(self.w, b)

    def close(self, timeout=20):
        if self.w is not None:
            os.close(self.w)
            self.w = None
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for fd in (self.w, self.r):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.w = self.r = None
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


locked = flock_held


@pytest.mark.parametrize("holder", ["c", "q"])
def test_lock_conflict(env, cbin, tmp_path, holder):
    """I16: while one multilog runs on L, the other exits 111 with C's message."""
    progs = {"q": qbin("multilog"), "c": cbin("multilog")}
    other = progs["q" if holder == "c" else "c"]
    lg = Logger(["t", "./L"], env, tmp_path, prog=progs[holder])
    try:
        wait_until(lambda: locked(tmp_path / "L" / "lock"), 10, lg.proc, "lock held")
        code, out, err = run([other, "t", "./L"], b"x\n", env, tmp_path)
        assert (code, out, err) == (
            111, b"", b"multilog: fatal: unable to lock directory ./L: temporary failure\n")
        lg.write(b"after\n")
        assert lg.close()[0] == 0
    finally:
        lg.kill()
    assert (tmp_path / "L" / "current").read_bytes().endswith(b" after\n")


def test_sigalrm_rotates(env, tmp_path):
    L = tmp_path / "L"
    lg = Logger(["./L"], env, tmp_path)
    try:
        lg.write(b"one\ntwo\n")
        wait_until(lambda: (L / "current").exists() and (L / "current").read_bytes() == b"one\ntwo\n",
                   10, lg.proc, "lines")
        assert archives(L) == []
        lg.proc.send_signal(signal.SIGALRM)
        wait_until(lambda: len(archives(L)) == 1, 10, lg.proc, "rotation")
        assert (L / archives(L)[0]).read_bytes() == b"one\ntwo\n"
        assert archives(L)[0].endswith(".s") and mode(L / archives(L)[0]) == 0o744
        lg.write(b"three\n")
        assert lg.close() == (0, b"", b"")
    finally:
        lg.kill()
    assert (L / "current").read_bytes() == b"three\n" and len(archives(L)) == 1


def test_sigalrm_empty_current(env, tmp_path):
    """ALRM with an empty current archives nothing (then TERM: exit 0)."""
    L = tmp_path / "L"
    lg = Logger(["./L"], env, tmp_path)
    try:
        wait_until(lambda: (L / "current").exists(), 10, lg.proc, "current")
        lg.proc.send_signal(signal.SIGALRM)
        lg.proc.send_signal(signal.SIGTERM)
        assert lg.proc.wait(10) == 0
    finally:
        lg.kill()
    assert listing(L) == ["current", "lock", "state"]


def test_sigterm_finishes_line(env, tmp_path):
    """TERM: finish the current line, exit 0, leave the rest of stdin unread."""
    L = tmp_path / "L"
    lg = Logger(["./L"], env, tmp_path, keep_read_end=True)
    try:
        lg.write(b"1\n2\npart")
        wait_until(lambda: (L / "current").exists() and (L / "current").read_bytes() == b"1\n2\n",
                   10, lg.proc, "lines")
        lg.proc.send_signal(signal.SIGTERM)
        lg.write(b"ial\nnext\n")
        assert lg.proc.wait(10) == 0
        assert (L / "current").read_bytes() == b"1\n2\npartial\n"
        assert os.read(lg.r, 100) == b"next\n"
    finally:
        lg.kill()


def test_sigterm_at_line_boundary_exits_at_once(env, tmp_path):
    L = tmp_path / "L"
    lg = Logger(["./L"], env, tmp_path, keep_read_end=True)
    try:
        lg.write(b"a\n")
        wait_until(lambda: (L / "current").exists() and (L / "current").read_bytes() == b"a\n",
                   10, lg.proc, "line")
        lg.proc.send_signal(signal.SIGTERM)
        assert lg.proc.wait(10) == 0
        assert mode(L / "current") == 0o744
    finally:
        lg.kill()


def logged(d):
    try:
        return sum(os.path.getsize(d / n) for n in os.listdir(d))
    except OSError:
        return 0


def test_sigterm_restarts_lose_nothing(env, tmp_path):
    """5.3 item 3: a writer streams numbered lines while the logger is
    TERMed and restarted on the same pipe; every line lands once, in order."""
    r, w = os.pipe()
    N = 60000

    def writer():
        for i in range(N):
            os.write(w, b"%07d %s\n" % (i, b"z" * (i % 50)))
        os.close(w)

    t = threading.Thread(target=writer, daemon=True)
    procs = []
    try:
        t.start()
        for k in range(4):
            before = logged(tmp_path / "L")
            p = subprocess.Popen([qbin("multilog"), "t", "s20000", "n10000", "./L"], stdin=r,
                                 env=env, cwd=tmp_path, start_new_session=True)
            procs.append(p)
            if k < 3:
                # it has read something, so its TERM handler is in place
                wait_until(lambda: logged(tmp_path / "L") > before, 10, p, "logging")
                p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0
        t.join(30)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        os.close(r)
    data = all_lines(tmp_path / "L")
    nums = [int(x[26:33]) for x in data.splitlines()]
    assert nums == list(range(N))


def test_full_disk(env, tmp_path):
    """5.3 item 7: ENOSPC -> warning, pause, retry; after space is freed every
    line is there, in order."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True)
    if m.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % m.stderr.decode().strip())
    lg = None
    try:
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for _ in range(64):
                os.write(fd, b"f" * 1024)
        except OSError:
            pass
        os.close(fd)
        os.truncate(filler, 40 * 1024)
        e = dict(env, QTOOLS_MULTILOG_PAUSE="0.05")
        lg = Logger(["./L"], e, mnt)
        errs = []
        os.set_blocking(lg.proc.stderr.fileno(), False)

        def warned():
            try:
                errs.append(os.read(lg.proc.stderr.fileno(), 4096))
            except BlockingIOError:
                pass
            return b"pausing: out of disk space" in b"".join(errs)

        lines = [b"%05d %s\n" % (i, b"d" * 90) for i in range(300)]      # ~29 KB
        data = b"".join(lines)
        lg.write(data[:16000])
        lg.write(data[16000:])
        wait_until(warned, 20, lg.proc, "disk-full warning")
        first = b"".join(errs).splitlines()[0]
        assert first == b"multilog: warning: unable to write to ./L/current, pausing: out of disk space"
        filler.unlink()
        os.set_blocking(lg.proc.stderr.fileno(), True)
        code, out, err = lg.close()
        assert code == 0
        assert (mnt / "L" / "current").read_bytes() == data
    finally:
        if lg:
            lg.kill()
        subprocess.run(["umount", "-l", str(mnt)])
