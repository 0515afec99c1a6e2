"""queue-fix: builds qmail's queue hierarchy (hier.c modes), reports with -N,
repairs modes, owners, tcpto and trigger, refuses wrong types."""
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from helpers import qbin, qenv

from qtools.lib import queue as qlib


def fix(*args, user=None, env=None):
    kw = {}
    if user is not None:
        def drop():
            os.setgid(user[1])
            os.setgroups([])
            os.setuid(user[0])
        kw["preexec_fn"] = drop
    return subprocess.run([qbin("queue-fix")] + list(args), capture_output=True, timeout=30,
                          env=env or qenv(), **kw)


def fatal(p):
    """The last stderr line (root without qmail's users also gets a warning)."""
    return p.stderr.decode().splitlines()[-1]


def expected():
    """(relative path, S_IFMT, mode) of every entry queue-fix makes."""
    out = []
    for rel, kind, _user, mode in qlib.HIER:
        fmt = {"d": stat.S_IFDIR, "s": stat.S_IFDIR, "p": stat.S_IFIFO}.get(kind, stat.S_IFREG)
        out.append((rel, fmt, mode))
        if kind == "s":
            out += [(os.path.join(rel, str(i)), fmt, mode) for i in range(23)]
    return out


def test_creates_the_hierarchy(tmp_path):
    q = tmp_path / "queue"
    p = fix(str(q))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert len(lines) == len(expected()) == 4 + 4 * 24 + 1 + 3 + 1
    assert lines[:3] == ["mkdir 0750 %s" % q, "mkdir 0700 %s/pid" % q, "mkdir 0700 %s/intd" % q]
    assert "mkfifo 0622 %s/lock/trigger" % q in lines
    for rel, fmt, mode in expected():
        st = os.lstat(os.path.join(q, rel))
        assert (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)) == (fmt, mode), rel
        assert st.st_uid == os.geteuid()
    assert os.path.getsize(q / "lock" / "tcpto") == 1024
    assert (q / "lock" / "tcpto").read_bytes() == b"\0" * 1024
    assert os.path.getsize(q / "lock" / "sendmutex") == 0
    # a second run has nothing to do
    p = fix(str(q))
    assert (p.returncode, p.stdout) == (0, b"")
    p = fix("-N", str(q))
    assert (p.returncode, p.stdout) == (0, b"")


def test_report_only(tmp_path):
    q = tmp_path / "queue"
    p = fix("-N", str(q))
    assert p.returncode == 1
    assert len(p.stdout.decode().splitlines()) == len(expected())
    assert not q.exists()


def test_default_is_qmailhome_queue(tmp_path):
    p = fix(env=qenv(QMAILHOME=str(tmp_path)))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "queue" / "mess" / "22").is_dir()


def test_repairs(tmp_path):
    q = tmp_path / "queue"
    assert fix(str(q)).returncode == 0
    os.chmod(q / "todo", 0o755)
    os.rmdir(q / "info" / "7")
    (q / "lock" / "trigger").unlink()
    (q / "lock" / "trigger").write_bytes(b"")
    (q / "lock" / "tcpto").write_bytes(b"\1" * 10)
    (q / "mess" / "3" / "12345").write_bytes(b"a message stays")
    p = fix("-N", str(q))
    assert p.returncode == 1
    want = ["chmod 0750 %s/todo" % q, "mkdir 0700 %s/info/7" % q,
            "truncate 1024 %s/lock/tcpto" % q,
            "rm %s/lock/trigger" % q, "mkfifo 0622 %s/lock/trigger" % q]
    assert p.stdout.decode().splitlines() == want
    p = fix(str(q))
    assert p.returncode == 0 and p.stdout.decode().splitlines() == want
    assert stat.S_IMODE(os.stat(q / "todo").st_mode) == 0o750
    assert stat.S_ISFIFO(os.lstat(q / "lock" / "trigger").st_mode)
    assert (q / "lock" / "tcpto").read_bytes() == b"\0" * 1024
    assert (q / "mess" / "3" / "12345").read_bytes() == b"a message stays"
    assert fix("-N", str(q)).returncode == 0


def test_wrong_types_are_fatal(tmp_path):
    q = tmp_path / "queue"
    assert fix(str(q)).returncode == 0
    os.rmdir(q / "bounce")
    (q / "bounce").write_bytes(b"")
    p = fix(str(q))
    assert p.returncode == 111
    assert fatal(p) == "queue-fix: fatal: %s/bounce is not a directory" % q
    (q / "bounce").unlink()
    os.symlink("/tmp", q / "bounce")
    p = fix(str(q))
    assert p.returncode == 111
    assert fatal(p) == "queue-fix: fatal: %s/bounce is a symbolic link" % q


def test_missing_parent(tmp_path):
    p = fix(str(tmp_path / "no" / "queue"))
    assert p.returncode == 111
    assert fatal(p) == ("queue-fix: fatal: unable to mkdir %s/no/queue: "
                        "file does not exist" % tmp_path)


def test_usage():
    p = fix("-x")
    assert p.returncode == 100
    assert p.stderr == b"queue-fix: illegal option -- x\nqueue-fix: usage: queue-fix [-N] [queue_dir]\n"
    p = fix("a", "b")
    assert (p.returncode, p.stderr) == (100, b"queue-fix: usage: queue-fix [-N] [queue_dir]\n")


def test_owners(tmp_path):
    """Root without qmail's users: root owns everything, with a warning.
    With the users: qmail's owners.  A normal user: that user, silently."""
    have_users = all(qlib.uid(u) is not None for u in qlib.USERS) and \
        all(qlib.gid(g) is not None for g in qlib.GROUPS)
    q = tmp_path / "queue"
    p = fix(str(q))
    assert p.returncode == 0
    if os.geteuid() == 0 and have_users:
        assert p.stderr == b""
        for rel, _kind, user, _mode in qlib.HIER:
            st = os.lstat(os.path.join(q, rel))
            assert (st.st_uid, st.st_gid) == (qlib.uid(user), qlib.gid(qlib.GROUP_Q)), rel
    elif os.geteuid() == 0:
        assert p.stderr.decode().startswith("queue-fix: warning: no such user or group: ")
        assert p.stderr.decode().endswith("; entries belong to uid 0 gid %d\n" % os.getegid())
    else:
        assert p.stderr == b""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_owners_as_a_normal_user():
    """Run as nobody: nobody owns everything, no warning; then root, without
    qmail's users, takes the queue back."""
    have_users = all(qlib.uid(u) is not None for u in qlib.USERS) and \
        all(qlib.gid(g) is not None for g in qlib.GROUPS)
    nobody = (65534, 65534)
    d = tempfile.mkdtemp(prefix="queue-fix.")
    try:
        os.chown(d, *nobody)
        os.chmod(d, 0o755)
        try:
            p = fix(os.path.join(d, "queue"), user=nobody)
        except PermissionError:
            pytest.skip("nobody cannot run %s" % qbin("queue-fix"))
        assert (p.returncode, p.stderr) == (0, b"")
        for rel, _fmt, _mode in expected():
            st = os.lstat(os.path.join(d, "queue", rel))
            assert (st.st_uid, st.st_gid) == nobody
        # root repairs owners of a queue that belongs to someone else
        p = fix("-N", os.path.join(d, "queue"))
        if not have_users:
            assert p.returncode == 1
            assert p.stdout.decode().splitlines()[0] == "chown 0:%d %s/queue" % (os.getegid(), d)
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("rel", ["pid", "mess/0", "lock/trigger"])
def test_queue_fix_output_is_usable_by_qmail_queue(tmp_path, rel):
    """After a repair of any part, qmail-queue works."""
    home = tmp_path / "qmail"
    home.mkdir()
    q = home / "queue"
    assert fix(str(q)).returncode == 0
    p = q / rel
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()
    assert fix(str(q)).returncode == 0
    ef = tmp_path / "env"
    ef.write_bytes(b"Fa@b\0Tc@d\0\0")
    with open(ef, "rb") as e:
        r = subprocess.run([qbin("qmail-queue")], input=b"hi\n", stdout=e,
                           env=qenv(QMAILHOME=str(home)), timeout=30)
    assert r.returncode == 0
    assert len(os.listdir(q / "todo")) == 1
