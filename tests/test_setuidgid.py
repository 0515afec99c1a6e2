"""setuidgid: usage, unknown account, ids and groups of the child for
`nobody` (compared with Debian's C setuidgid), failure when not root, and
`setuidgid nobody multilog ...` in both elision modes."""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from dtools import both, run
from helpers import needs_root, qbin

USAGE = b"setuidgid: usage: setuidgid account child\n"


@pytest.mark.parametrize("args,out,err,code", [
    ([], b"", USAGE, 100),
    (["nobody"], b"", USAGE, 100),
    (["nosuchuser_q", "true"], b"", b"setuidgid: fatal: unknown account nosuchuser_q\n", 111),
    pytest.param(["nobody", "./nonexistent"], b"",
                 b"setuidgid: fatal: unable to run ./nonexistent: file does not exist\n", 111,
                 marks=needs_root),
    pytest.param(["nobody", "sh", "-c", "exit 3"], b"", b"", 3, marks=needs_root),
])
def test_usage_and_errors(env, cbin, args, out, err, code):
    q, c = both("setuidgid", args, cbin, env, cwd="/")
    assert q == c == (code, out, err)


@needs_root
def test_ids(env, cbin):
    """uid, gid and supplementary groups are nobody's, like C setuidgid."""
    nobody = pwd.getpwnam("nobody")
    q, c = both("setuidgid", ["nobody", "id"], cbin, env, cwd="/")
    assert q == c and q[0] == 0
    q, c = both("setuidgid", ["nobody", "cat", "/proc/self/status"], cbin, env, cwd="/")
    assert q[0] == c[0] == 0
    pick = lambda b: [x for x in b.splitlines() if x.split(b":")[0] in (b"Uid", b"Gid", b"Groups")]
    assert pick(q[1]) == pick(c[1])
    assert b"Groups:\t%d" % nobody.pw_gid in q[1]


def test_not_root(mode, env, cbin):
    """Dropping privileges again as nobody fails at setgroups: unable to setgid."""
    want = (111, b"", b"setuidgid: fatal: unable to setgid: permission denied\n")
    q, c = both("setuidgid", ["nobody", cbin("setuidgid"), "root", "true"], cbin, env, cwd="/")
    assert q == c == want
    if mode == "elide" or nobody_can_run_python():
        # qtools in qtools: elided (the module is loaded before the ids change)
        assert run([qbin("setuidgid"), "nobody", "setuidgid", "root", "true"], env=env,
                   cwd="/") == want


def nobody_can_run_python():
    return subprocess.run([
        "/usr/bin/setuidgid", "nobody", sys.executable, "-c", "import select"],
        capture_output=True, cwd="/").returncode == 0


@needs_root
def test_multilog_as_nobody(mode, env, tmp_path):
    """setuidgid nobody multilog t ./L: the logdir belongs to nobody.  With exec
    elision the multilog module is loaded before the ids change."""
    if mode == "noelide" and not nobody_can_run_python():
        pytest.skip("nobody cannot read this Python installation, so an exec'd launcher "
                    "cannot start as nobody")
    nobody = pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="qtools-su-")
    try:
        os.chmod(top, 0o777)
        r = run([qbin("setuidgid"), "nobody", "multilog", "t", "-*", "+*ok*", "./L"],
                b"ok 1\nno\nok 2\n", env, top)
        assert r == (0, b"", b"")
        cur = os.path.join(top, "L", "current")
        st = os.stat(cur)
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        with open(cur, "rb") as f:
            assert [x[26:] for x in f.read().splitlines()] == [b"ok 1", b"ok 2"]
    finally:
        shutil.rmtree(top, ignore_errors=True)
