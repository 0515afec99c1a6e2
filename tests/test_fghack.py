"""fghack: rts.tests cases, waiting for a daemon that backgrounds itself,
the child's exit code, `child crashed`, and 31 copies of the pipe's write
end in the child, all like Debian's C fghack."""
import time

import pytest

from dtools import both, run
from helpers import qbin

USAGE = b"fghack: usage: fghack child\n"


@pytest.mark.parametrize("args,out,err,code", [
    ([], b"", USAGE, 100),
    (["./nonexistent"], b"", b"fghack: fatal: unable to run ./nonexistent: file does not exist\n",
     111),
    (["sh", "-c", "echo hi &"], b"hi\n", b"", 0),
    (["sh", "-c", "exit 7"], b"", b"", 7),
    (["sh", "-c", "kill -9 $$"], b"", b"fghack: fatal: child crashed\n", 111),
])
def test_rts(env, cbin, args, out, err, code):
    q, c = both("fghack", args, cbin, env, cwd="/")
    assert q == c == (code, out, err)


def test_waits_for_background(env, cbin):
    """The backgrounded sleep keeps a copy of the pipe: fghack waits for it."""
    for prog in (qbin("fghack"), cbin("fghack")):
        t0 = time.monotonic()
        r = run([prog, "sh", "-c", "sleep 0.6 & exit 3"], env=env, cwd="/")
        assert r == (3, b"", b"") and time.monotonic() - t0 >= 0.5, prog


def test_pipe_copies(env, cbin):
    """The child has the write end plus 30 dups, nothing else beyond 0-2."""
    script = ('for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && readlink "$f"; done'
              ' | sed "s/[0-9]//g" | sort | uniq -c')
    q, c = both("fghack", ["sh", "-c", script], cbin, env, cwd="/")
    assert q == c
    assert q[1].split() == [b"31", b"pipe:[]"]
