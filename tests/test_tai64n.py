"""tai64n and tai64nlocal: label format, I9 interop with Debian's C binaries
both ways in several time zones, exact agreement on valid labels, malformed
labels passed through (the C tai64nlocal segfaults on them), chunk
boundaries, partial lines, SIGPIPE, and elided chains (`envdir ./env
tai64nlocal` picks up TZ)."""
import os
import random
import re
import subprocess
import time

import pytest

from dtools import both, run
from helpers import qbin, qenv

LABEL = re.compile(rb"^@4000[0-9a-f]{20} ", re.M)
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


def tz(env, zone):
    return dict(env, TZ=zone)


def test_rts_format(env, cbin):
    q, c = both("tai64n", [], cbin, env, input=b"ONE\nTWO\n")
    assert q[0] == 0 and q[2] == b""
    x = re.sub(rb"[0-9a-f]", b"x", q[1])
    assert x == re.sub(rb"[0-9a-f]", b"x", c[1]) == (b"@" + b"x" * 24 + b" ONE\n@"
                                                     + b"x" * 24 + b" TWO\n")


def test_rts_non_label_lines(env, cbin):
    q, c = both("tai64nlocal", [], cbin, env, input=b"one\ntwo\n")
    assert q == c == (0, b"one\ntwo\n", b"")


def test_label_is_now(env):
    before = time.time()
    code, out, _ = run([qbin("tai64n")], b"x\n", env)
    after = time.time()
    assert code == 0 and LABEL.match(out)
    secs = int(out[1:17], 16) - (2 ** 62 + 10)
    nano = int(out[17:25], 16)
    assert int(before) <= secs <= after and nano < 10 ** 9 and nano % 1000 == 500


def test_partial_last_line(env, cbin):
    q, c = both("tai64n", [], cbin, env, input=b"a\n\nb")
    assert q[0] == c[0] == 0
    assert re.fullmatch(rb"(@[0-9a-f]{24} )a\n\1\n\1b", q[1])
    assert re.fullmatch(rb"@[0-9a-f]{24} a\n@[0-9a-f]{24} \n@[0-9a-f]{24} b", c[1])


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_i9_both_ways(env, cbin, zone):
    """qtools tai64n | C tai64nlocal and C tai64n | qtools tai64nlocal agree
    with each other and with the clock."""
    e = tz(env, zone)
    a = subprocess.run("%s | %s" % (qbin("tai64n"), cbin("tai64nlocal")), shell=True,
                       input=b"hi\n", capture_output=True, env=e)
    b = subprocess.run("%s | %s" % (cbin("tai64n"), qbin("tai64nlocal")), shell=True,
                       input=b"hi\n", capture_output=True, env=e)
    now = subprocess.run(["date", "+%Y-%m-%d %H:%M"], capture_output=True, env=e).stdout.strip()
    for r in (a, b):
        assert r.returncode == 0
        assert re.fullmatch(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}500 hi\n", r.stdout)
    assert a.stdout[:16] == b.stdout[:16] or now in (a.stdout[:16], b.stdout[:16])


FIXED = [
    (b"@4000000037c219bf2ef02e94 x\n", "UTC", b"1999-08-24 04:04:05.787492500 x\n"),
    (b"@400000006553f10a075bcbf4\n", "UTC", b"2023-11-14 22:13:20.123456500\n"),
    (b"@400000006553f10a075bcbf4\n", "America/New_York", b"2023-11-14 17:13:20.123456500\n"),
    (b"@400000003b4a39c23294b13c\n", "UTC", b"2001-07-09 23:09:44.848605500\n"),
    (b"@4000000037c219bf2ef02e94\n", "US/Pacific", b"1999-08-23 21:04:05.787492500\n"),
]


@pytest.mark.parametrize("line,zone,want", FIXED)
def test_fixed_labels(env, cbin, line, zone, want):
    q, c = both("tai64nlocal", [], cbin, tz(env, zone), input=line, cenv=tz(env, zone))
    assert q == c == (0, want, b"")


def test_right_zone(env, cbin):
    """With a leap-second (right/) zone, the man page's value."""
    if not os.path.exists("/usr/share/zoneinfo/right/UTC"):
        pytest.skip("no right/ zoneinfo installed")
    e = tz(env, "right/UTC")
    q, c = both("tai64nlocal", [], cbin, e, input=b"@4000000037c219bf2ef02e94\n", cenv=e)
    assert q == c == (0, b"1999-08-24 04:03:43.787492500\n", b"")


def valid_lines(rnd, n):
    """Lines C tai64nlocal converts without crashing: 24-digit labels in
    range, odd terminators, plus lines that are not labels."""
    out = []
    for _ in range(n):
        k = rnd.random()
        if k < 0.6:
            sec = (2 ** 62) + rnd.randrange(0, 2 ** 33)
            lab = b"@%016x%08x" % (sec, rnd.randrange(0, 2 ** 32))
            out.append(lab + rnd.choice([b"", b" ", b"x", b" rest @40 of line", b"\t@"]) + b"\n")
        elif k < 0.8:
            out.append(b"no label @4000000037c219bf2ef02e94\n")
        else:
            out.append(bytes(rnd.choice(b"abc @\t") for _ in range(rnd.randrange(0, 40)))
                       .lstrip(b"@") + b"\n")
    return b"".join(out)


@pytest.mark.parametrize("zone", ZONES)
def test_agrees_with_c(env, cbin, zone):
    """Thousands of valid labels over 64 KiB read boundaries: identical output."""
    inp = valid_lines(random.Random(zone), 6000)
    e = tz(env, zone)
    q, c = both("tai64nlocal", [], cbin, e, input=inp, cenv=e)
    assert c[0] == 0
    assert q == c


def test_label_split_across_reads(env, cbin):
    """A label cut by a pipe write boundary is still converted."""
    script = ("printf '@4000000037c2'; sleep 0.2; printf '19bf2ef02e94 a\\nb'; sleep 0.2;"
              " printf 'c\\n@4000000037c219bf2ef02e94'; sleep 0.2; printf 'x\\n'")
    e = tz(env, "UTC")
    for prog in (qbin("tai64nlocal"), cbin("tai64nlocal")):
        r = subprocess.run("(%s) | %s" % (script, prog), shell=True, capture_output=True, env=e)
        assert (r.returncode, r.stdout) == (
            0, b"1999-08-24 04:04:05.787492500 a\nbc\n1999-08-24 04:04:05.787492500x\n"), prog


def test_label_at_eof_prints_nothing(env, cbin):
    e = tz(env, "UTC")
    q, c = both("tai64nlocal", [], cbin, e, input=b"a\n@4000000037c219bf2ef02e94", cenv=e)
    assert q == c == (0, b"a\n", b"")
    q, c = both("tai64nlocal", [], cbin, e, input=b"a\n@4000000037c219bf2ef02e94 b", cenv=e)
    assert q == c == (0, b"a\n1999-08-24 04:04:05.787492500 b", b"")
    q, c = both("tai64nlocal", [], cbin, e, input=b"ab", cenv=e)
    assert q == c == (0, b"ab", b"")


@pytest.mark.parametrize("line", [b"@zz\n", b"@4000000065\n", b"@\n",
                                  b"@" + b"f" * 24 + b"\n", b"@4" + b"0" * 31 + b" x\n",
                                  b"@4000000000000000\n"])
def test_malformed_passes_through(env, cbin, line):
    """The C binary segfaults (losing its buffered output); qtools copies the line."""
    inp = b"before\n" + line + b"after\n"
    q = run([qbin("tai64nlocal")], inp, tz(env, "UTC"))
    assert q == (0, inp, b"")
    c = run([cbin("tai64nlocal")], inp, tz(env, "UTC"))
    assert c[0] != 0


def test_sigpipe(env):
    """A filter dies of SIGPIPE when its reader goes away, like the C one."""
    for prog in ("tai64n", "tai64nlocal"):
        r = subprocess.run("yes | head -c 2000000 | %s | head -c 10 >/dev/null; "
                           "echo ${PIPESTATUS[2]}" % qbin(prog),
                           shell=True, executable="/bin/bash", capture_output=True, env=env)
        assert r.stdout.strip() == b"141", (prog, r.stderr)


def test_big_input(env):
    """1 MB in, every line stamped once; tai64nlocal undoes it."""
    inp = b"".join(b"line %d\n" % i for i in range(100000))
    code, out, _ = run([qbin("tai64n")], inp, env)
    lines = out.split(b"\n")
    assert code == 0 and lines[-1] == b"" and len(lines) == 100001
    assert all(LABEL.match(x + b" ") or LABEL.match(x) for x in lines[:-1])
    assert b"".join(x[26:] + b"\n" for x in lines[:-1]) == inp
    code, back, _ = run([qbin("tai64nlocal")], out, tz(env, "UTC"))
    assert code == 0 and len(back.split(b"\n")) == 100001


def test_envdir_tz_chain(mode, tmp_path):
    """`envdir ./env tai64nlocal` (exec elided or not) converts in the envdir's TZ."""
    envd = tmp_path / "env"
    envd.mkdir()
    (envd / "TZ").write_text("America/New_York\n")
    e = qenv(mode, TZ="UTC")
    r = run([qbin("envdir"), str(envd), "tai64nlocal"], b"@400000006553f10a075bcbf4\n", e)
    assert r == (0, b"2023-11-14 17:13:20.123456500\n", b"")
    r = run([qbin("envdir"), str(envd), "sh", "-c", "tai64n | tai64nlocal"], b"x\n", e)
    assert r[0] == 0 and re.fullmatch(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} x\n", r[1])


def test_label_lengths_like_c(env, cbin):
    """Digit runs other than 24 use djb's shift register: the last 8 digits
    are nanoseconds, the ones before them seconds (mod 2^64)."""
    e = tz(env, "UTC")
    inp = (b"@4000000037c219bf2ef02e94 x\n@04000000037c219bf2ef02e94 y\n"
           b"@0004000000037c219bf2ef02e94\n@4000000037c219bf2ef02e94\n")
    q, c = both("tai64nlocal", [], cbin, e, input=inp, cenv=e)
    assert q == c and q[0] == 0


def test_cached_label_not_reused_for_longer_run(env):
    """A line whose first 25 bytes equal a converted label but whose digit run
    goes on is converted on its own (here: not convertible, so copied)."""
    inp = b"@4000000037c219bf2ef02e94 x\n@4000000037c219bf2ef02e940 y\n"
    assert run([qbin("tai64nlocal")], inp, tz(env, "UTC")) == (
        0, b"1999-08-24 04:04:05.787492500 x\n@4000000037c219bf2ef02e940 y\n", b"")
