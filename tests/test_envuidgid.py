"""envuidgid: usage, UID/GID for root and nobody, errors, identical to
Debian's C envuidgid; a chain into setuidgid/envdir in both elision modes."""
import os
import pwd

import pytest

from dtools import both, run
from helpers import qbin

USAGE = b"envuidgid: usage: envuidgid account child\n"


@pytest.mark.parametrize("args,out,err,code", [
    ([], b"", USAGE, 100),
    (["root"], b"", USAGE, 100),
    (["root", "printenv", "UID"], b"0\n", b"", 0),
    (["root", "./nonexistent"], b"",
     b"envuidgid: fatal: unable to run ./nonexistent: file does not exist\n", 111),
    (["nosuchuser_q", "true"], b"", b"envuidgid: fatal: unknown account nosuchuser_q\n", 111),
])
def test_rts(env, cbin, args, out, err, code):
    q, c = both("envuidgid", args, cbin, env, cwd="/")
    assert q == c == (code, out, err)


def test_nobody(env, cbin):
    nobody = pwd.getpwnam("nobody")
    q, c = both("envuidgid", ["nobody", "sh", "-c", 'echo "$UID $GID"; id -u'], cbin,
                dict(env, UID="x", GID="y"), cwd="/")
    assert q == c == (0, b"%d %d\n%d\n" % (nobody.pw_uid, nobody.pw_gid, os.getuid()), b"")


def test_chain(env, tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "UID").write_bytes(b"")
    r = run([qbin("envuidgid"), "nobody", "envdir", "e", "sh", "-c", 'echo "${UID-unset} $GID"'],
            env=env, cwd=tmp_path)
    assert r == (0, b"unset %d\n" % pwd.getpwnam("nobody").pw_gid, b"")
