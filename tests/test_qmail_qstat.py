"""qmail-qstat and qmail-qread on a queue made by queue-fix and filled by
qmail-queue, with the preprocessing qmail-send does (info/local/remote)
written by hand in qmail's formats."""
import calendar
import os
import subprocess

import pytest

from helpers import qbin, qenv
from qqtools import envelope, mkqueue, run_qq

from qtools.lib import queue as qlib


def run(prog, home):
    return subprocess.run([qbin(prog)], capture_output=True, timeout=30,
                          env=qenv(QMAILHOME=str(home)))


def preprocess(q, n, sender, local=(), remote=(), birth=None, bounce=None):
    """What qmail-send's todo run leaves: info/local/remote, todo+intd gone."""
    with open(os.path.join(q, qlib.fmtqfn("info/", n, 1)), "wb") as f:
        f.write(b"F" + sender + b"\0")
    for chan, recs in (("local", local), ("remote", remote)):
        if recs:
            with open(os.path.join(q, qlib.fmtqfn(chan + "/", n, 1)), "wb") as f:
                f.write(b"".join(r + b"\0" for r in recs))
    for d in ("todo", "intd"):
        os.unlink(os.path.join(q, d, str(n)))
    if birth is not None:
        os.utime(os.path.join(q, qlib.fmtqfn("info/", n, 1)), (birth, birth))
    if bounce is not None:
        with open(os.path.join(q, "bounce", str(n)), "wb") as f:
            f.write(bounce)


@pytest.fixture
def queue3(tmp_path):
    """Three messages queued by qmail-queue; returns (home, queue, [numbers])."""
    home = tmp_path / "qmail"
    q = mkqueue(str(home))
    for i in range(3):
        rc, _ = run_qq(str(home), b"Subject: %d\n\nbody\n" % i,
                       envelope(b"s%d@example.com" % i, [b"r@example.com"]), str(tmp_path))
        assert rc == 0
    nums = sorted(int(n) for n in os.listdir(os.path.join(q, "todo")))
    return home, q, nums


def test_qstat_counts(queue3):
    home, q, nums = queue3
    p = run("qmail-qstat", home)
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout == b"messages in queue: 3\nmessages in queue but not yet preprocessed: 3\n"
    preprocess(q, nums[0], b"s0@example.com", local=[b"Tr@example.com"])
    p = run("qmail-qstat", home)
    assert p.stdout == b"messages in queue: 3\nmessages in queue but not yet preprocessed: 2\n"


def test_qstat_empty_and_errors(tmp_path):
    home = tmp_path / "qmail"
    mkqueue(str(home))
    p = run("qmail-qstat", home)
    assert p.stdout == b"messages in queue: 0\nmessages in queue but not yet preprocessed: 0\n"
    p = run("qmail-qstat", tmp_path / "nothing")
    assert p.returncode == 111
    assert p.stderr == b"qmail-qstat: fatal: unable to read %s/nothing/queue/mess: file does not exist\n" \
        % str(tmp_path).encode()
    p = subprocess.run([qbin("qmail-qstat"), "x"], capture_output=True, timeout=30)
    assert (p.returncode, p.stderr) == (100, b"qmail-qstat: usage: qmail-qstat\n")


def test_qread_listing(queue3):
    home, q, nums = queue3
    birth = calendar.timegm((1995, 9, 26, 4, 46, 54))
    a, b, c = nums
    preprocess(q, a, b"s0@example.com", local=[b"Tjoe@example.com", b"Dann@example.com"],
               remote=[b"Dfred@example.net", b"Tbob\x01\xe9@example.org"], birth=birth)
    preprocess(q, b, b"", remote=[b"Tx@example.net"], birth=birth + 86400 * 10 + 1,
               bounce=b"<y@example.net>:\nfailure\n\n")
    size = lambda n: os.path.getsize(os.path.join(q, qlib.fmtqfn("mess/", n, 1)))  # noqa: E731
    p = run("qmail-qread", home)
    assert (p.returncode, p.stderr) == (0, b"")
    blocks = {
        a: (b"26 Sep 1995 04:46:54 GMT  #%d  %d  <s0@example.com> \n" % (a, size(a))
            + b"\tlocal\tjoe@example.com\n  done\tlocal\tann@example.com\n"
            + b"  done\tremote\tfred@example.net\n\tremote\tbob__@example.org\n"),
        b: (b"6 Oct 1995 04:46:55 GMT  #%d  %d  <>  bouncing\n" % (b, size(b))
            + b"\tremote\tx@example.net\n"),
    }
    # split-directory order, ascending within a directory; c is still in todo/
    order = sorted((a, b), key=lambda n: (n % 23, n))
    assert p.stdout == b"".join(blocks[n] for n in order)
    assert c not in order


def test_qread_trouble(queue3):
    home, q, nums = queue3
    a = nums[0]
    preprocess(q, a, b"s@x", local=[b"Tr@x"])
    os.unlink(os.path.join(q, qlib.fmtqfn("mess/", a, 1)))
    p = run("qmail-qread", home)
    assert p.returncode == 0
    assert p.stdout == b"warning: trouble with #%d: file does not exist\n" % a
    d = 5 if a % 23 != 5 else 6             # an info/ split the message does not use
    os.rmdir(os.path.join(q, "info", str(d)))
    p = run("qmail-qread", home)
    assert p.returncode == 111
    assert p.stdout.endswith(b"fatal: unable to opendir info/%d: file does not exist\n" % d)


def test_qread_no_home(tmp_path):
    p = run("qmail-qread", tmp_path / "nothing")
    assert (p.returncode, p.stdout) == (111, b"fatal: unable to chdir: file does not exist\n")
    p = subprocess.run([qbin("qmail-qread"), "-x"], capture_output=True, timeout=30)
    assert (p.returncode, p.stderr) == (100, b"qmail-qread: usage: qmail-qread\n")


def test_qread_empty_queue(tmp_path):
    home = tmp_path / "qmail"
    mkqueue(str(home))
    p = run("qmail-qread", home)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")


@pytest.mark.parametrize("prog,rc", [("qmail-qstat", -13), ("qmail-qread", 0)])
def test_closed_pipe_is_quiet(queue3, prog, rc):
    """`qmailctl stat | head -1`: a reader that went away ends qmail-qstat by
    SIGPIPE, as the C tool (a shell script), not with an internal error;
    qmail-qread gives up its output quietly."""
    home, q, nums = queue3
    for n in nums:                      # qmail-qread lists preprocessed messages
        preprocess(q, n, b"s@example.com", remote=[b"Tr@example.net"])
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([qbin(prog)], stdout=w, stderr=subprocess.PIPE, timeout=30,
                           env=qenv(QMAILHOME=str(home)))
    finally:
        os.close(w)
    assert p.stderr == b""
    assert p.returncode == rc
