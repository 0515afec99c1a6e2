"""pgrphack: rts.tests cases and setsid (new session and process group),
like Debian's C pgrphack; a chain in both elision modes."""
import subprocess

import pytest

from dtools import both, run
from helpers import qbin

USAGE = b"pgrphack: usage: pgrphack child\n"
IDS = ("import os; p = os.getpid(); print(os.getsid(0) == p, os.getpgrp() == p)")


@pytest.mark.parametrize("args,out,err,code", [
    ([], b"", USAGE, 100),
    (["./nonexistent"], b"",
     b"pgrphack: fatal: unable to run ./nonexistent: file does not exist\n", 111),
    (["echo", "ok"], b"ok\n", b"", 0),
    (["sh", "-c", "exit 9"], b"", b"", 9),
])
def test_rts(env, cbin, args, out, err, code):
    q, c = both("pgrphack", args, cbin, env, cwd="/")
    assert q == c == (code, out, err)


def test_setsid(env, cbin):
    import sys
    q, c = both("pgrphack", [sys.executable, "-c", IDS], cbin, env, cwd="/")
    assert q == c == (0, b"True True\n", b"")


def test_already_leader(env, cbin):
    """setsid fails for a session leader: ignored, the program still runs."""
    import sys
    for prog in (qbin("pgrphack"), cbin("pgrphack")):
        p = subprocess.run([prog, sys.executable, "-c", IDS], capture_output=True, env=env,
                           start_new_session=True)
        assert (p.returncode, p.stdout, p.stderr) == (0, b"True True\n", b"")


def test_chain(env, tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "X").write_text("y\n")
    r = run([qbin("pgrphack"), "envdir", "e", "sh", "-c", 'echo $X; ps -o sid= -p $$ | tr -d " "; echo $$'],
            env=env, cwd=tmp_path)
    lines = r[1].split()
    assert r[0] == 0 and lines[0] == b"y" and lines[1] == lines[2]
