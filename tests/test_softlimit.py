"""softlimit: rts.tests cases, every limit flag (checked through
/proc/self/limits of the child) including `=` and values above the hard
limit, option-order and junk handling, all identical to Debian's C softlimit."""
import subprocess

import pytest

from dtools import both
from helpers import qbin

USAGE = (b"softlimit: usage: softlimit [-a allbytes] [-c corebytes] [-d databytes]"
         b" [-f filebytes] [-l lockbytes] [-m membytes] [-o openfiles] [-p processes]"
         b" [-r residentbytes] [-s stackbytes] [-t cpusecs] child\n")


@pytest.mark.parametrize("args,out,err,code", [
    ([], b"", USAGE, 100),
    (["./nonexistent"], b"", b"softlimit: fatal: unable to run ./nonexistent: file does not exist\n",
     111),
    (["-p0", "echo", "./nonexistent"], b"./nonexistent\n", b"", 0),
    (["-o", "5x", "true"], b"", USAGE, 100),
    (["-o", "5x", "-z", "true"], b"", USAGE, 100),
    (["-z", "-o", "5x", "true"], b"", b"softlimit: illegal option -- z\n" + USAGE, 100),
    (["-o"], b"", b"softlimit: option requires an argument -- o\n" + USAGE, 100),
    (["-o", "50"], b"", USAGE, 100),
    (["--", "echo", "x"], b"x\n", b"", 0),
    (["--foo", "echo", "x"], b"x\n", b"", 0),
    (["-", "x"], b"", b"softlimit: fatal: unable to run -: file does not exist\n", 111),
])
def test_rts_and_usage(env, cbin, tmp_path, args, out, err, code):
    q, c = both("softlimit", args, cbin, env, cwd=tmp_path)
    assert q == c == (code, out, err)


LIMITS = [
    ["-a", "300000000"], ["-c", "0"], ["-c", "="], ["-d", "200000000"], ["-f", "1000000"],
    ["-l", "65536"], ["-m", "300000000"], ["-m", "="], ["-o", "50"], ["-o", "="],
    ["-o", "99999999"], ["-p", "100"], ["-r", "1000000"], ["-s", "1000000"], ["-t", "100"],
    ["-t", "="], ["-o", ""], ["-a", "18446744073709551615"], ["-a", "18446744073709551616"],
    ["-o", "40", "-o", "30", "-d", "=", "-s4000000"],
]


@pytest.mark.parametrize("args", LIMITS)
def test_limits_like_c(env, cbin, tmp_path, args):
    q, c = both("softlimit", args + ["cat", "/proc/self/limits"], cbin, env, cwd=tmp_path)
    assert q == c
    # -o '' is 0 open files and 2^64 wraps to 0 bytes: cat cannot even start
    if args not in (["-o", ""], ["-a", "18446744073709551616"]):
        assert q[0] == 0


def test_lowered_to_hard(env, cbin):
    """A value above the hard limit becomes the hard limit (set in a shell first)."""
    script = 'ulimit -n 64; exec "$0" -o 1000 sh -c "ulimit -S -n"'
    outs = []
    for p in (qbin("softlimit"), cbin("softlimit")):
        r = subprocess.run(["sh", "-c", script, p], capture_output=True, env=env)
        outs.append((r.returncode, r.stdout, r.stderr))
    assert outs[0] == outs[1] == (0, b"64\n", b"")
