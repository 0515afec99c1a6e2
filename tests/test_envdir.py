"""envdir: rts.tests cases and the I17 edge cases (trailing blanks, NUL ->
newline, empty file unsets, a lone newline sets empty, dangling-symlink
reuse, dot files, `=` in a name, subdirectories) with identical
stdout/stderr/exit codes to Debian's C envdir; chains in both elision modes."""
import os

import pytest

from dtools import both, run
from helpers import qbin

SHOW = ("import os,sys; sys.stdout.write(repr(sorted((k, v) for k, v in os.environ.items()"
        " if k.startswith('T_'))))")


def python():
    import sys
    return sys.executable


def show(cbin, env, tmp_path, d="e", pre=None):
    env = dict(env, T_PRESET="preset", T_EMPTY="was set", T_GONE="x")
    return both("envdir", [d, python(), "-c", SHOW], cbin, env, cwd=tmp_path)


def test_usage(env, cbin, tmp_path):
    for args in ([], ["whatever"]):
        q, c = both("envdir", args, cbin, env, cwd=tmp_path)
        assert q == c == (111, b"", b"envdir: usage: envdir dir child\n")


def test_rts(env, cbin, tmp_path):
    os.symlink("env1", tmp_path / "env1")
    q, c = both("envdir", ["env1", "echo", "yes"], cbin, env, cwd=tmp_path)
    assert q == c == (111, b"", b"envdir: fatal: unable to switch to directory env1: "
                                b"symbolic link loop\n")
    os.unlink(tmp_path / "env1")
    os.mkdir(tmp_path / "env1")
    os.symlink("Message", tmp_path / "env1" / "Message")
    q, c = both("envdir", ["env1", "echo", "yes"], cbin, env, cwd=tmp_path)
    assert q == c == (111, b"", b"envdir: fatal: unable to read env1/Message: "
                                b"symbolic link loop\n")
    os.unlink(tmp_path / "env1" / "Message")
    (tmp_path / "env1" / "Message").write_text("This is a test. This is only a test.\n")
    q, c = both("envdir", ["env1", "sh", "-c", "echo $Message"], cbin, env, cwd=tmp_path)
    assert q == c == (0, b"This is a test. This is only a test.\n", b"")
    os.mkdir(tmp_path / "env2")
    (tmp_path / "env2" / "Message").write_bytes(b"")
    q, c = both("envdir", ["env1", "envdir", "env2", "sh", "-c", "echo $Message"], cbin, env,
                cwd=tmp_path)
    assert q == c == (0, b"\n", b"")


def test_errors(env, cbin, tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "sub").mkdir()
    q, c = both("envdir", ["e", "true"], cbin, env, cwd=tmp_path)
    assert q == c == (111, b"", b"envdir: fatal: unable to read e/sub: is a directory\n")
    q, c = both("envdir", ["nonexistent", "true"], cbin, env, cwd=tmp_path)
    assert q == c == (111, b"", b"envdir: fatal: unable to switch to directory nonexistent: "
                                b"file does not exist\n")
    os.rmdir(tmp_path / "e" / "sub")
    q, c = both("envdir", ["e", "./nonexistent"], cbin, env, cwd=tmp_path)
    assert q == c == (111, b"", b"envdir: fatal: unable to run ./nonexistent: "
                                b"file does not exist\n")


FILES = [
    ("T_A", b"value"),
    ("T_TRAIL", b"x  \t \t"),
    ("T_NUL", b"a\0b  \t \nsecond line\n"),
    ("T_NLONLY", b"\n"),
    ("T_EMPTY", b""),
    ("T_LEAD", b"  lead\tand trail \n"),
    ("T_CR", b"dos\r\n"),
    ("T_LONG", b"z" * 5000 + b"\n"),
    (".T_HIDDEN", b"hidden"),
    ("T_EQ=part", b"rest"),
    ("T_PRESET", b"over"),
]


def test_edge_cases(env, cbin, tmp_path):
    d = tmp_path / "e"
    d.mkdir()
    for name, data in FILES:
        (d / name).write_bytes(data)
    q, c = show(cbin, env, tmp_path)
    assert q == c
    got = dict(eval(q[1]))
    assert got["T_TRAIL"] == "x" and got["T_NUL"] == "a\nb" and got["T_NLONLY"] == ""
    assert "T_EMPTY" not in got and got["T_LEAD"] == "  lead\tand trail"
    assert got["T_EQ"] == "part=rest" and got["T_PRESET"] == "over"
    assert "T_HIDDEN" not in str(got)


@pytest.mark.parametrize("layout", range(6))
def test_dangling_symlink_quirk(env, cbin, tmp_path, layout):
    """A dangling symlink reuses djb's buffer: the previous value plus a
    newline (from its terminating NUL), or unset.  Which entry comes before it
    is readdir order, so several layouts are compared with C."""
    d = tmp_path / "e"
    d.mkdir()
    entries = [("T_E", b"valE"), ("T_N", b"a\0b"), ("T_M", b""), ("T_F", b"f \n")]
    entries = entries[layout % 4:] + entries[:layout % 4]
    for name, data in entries[:2 + layout // 2]:
        (d / name).write_bytes(data)
    os.symlink("nowhere", d / "T_Z")
    os.symlink("nowhere2", d / "T_Y")
    q, c = show(cbin, env, tmp_path)
    assert q == c and q[0] == 0


def test_chain_modes(env, tmp_path):
    """envdir envdir setuidgid/softlimit ...: qtools programs in a chain (elided in
    'elide' mode, exec'd in 'noelide')."""
    for sub, name, val in (("a", "T_A", "1"), ("b", "T_B", "2")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / name).write_text(val + "\n")
    (tmp_path / "b" / "T_A").write_bytes(b"")
    r = run([qbin("envdir"), "a", "envdir", "b", "softlimit", "-o", "50", "pgrphack",
             "sh", "-c", 'echo "${T_A-unset} $T_B $(ulimit -n)"'], env=env, cwd=tmp_path)
    assert r == (0, b"unset 2 50\n", b"")
