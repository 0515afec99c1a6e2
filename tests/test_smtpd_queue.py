"""qmail-smtpd's hand-off to qmail-queue.  With exec elision on and the
qtools qmail-queue as the queue program, qmail-smtpd runs it in-process
(qtools.qmail.queue.Inline, no fork); otherwise (QTOOLS_NOELIDE=1, or a
QMAILQUEUE that is not the qtools launcher) it forks the child.  Both must
leave the same queue, give the same replies, sync before the 250, and leave
no debris when a message is given up."""
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading

import pytest

from helpers import qbin, small_tmpfs, wait_until
from qqtools import assert_empty, listing
from smtpdtools import (Client, body_of, connect, fake_queue, make_home, queued, server,
                        smtpd_env, smtpd_pid)

BODY = b"Subject: q\r\n\r\nline one\r\n..dot\r\nlast\r\n"
STORED = b"Subject: q\n\nline one\n.dot\nlast\n"


def send(srv, rcpts=(b"u@example.test",), body=BODY, sender=b"a@b.test"):
    c = connect(srv)
    assert c.cmd(b"HELO client.test").startswith(b"250 ")
    assert c.cmd(b"MAIL FROM:<" + sender + b">") == b"250 ok\r\n"
    for r in rcpts:
        assert c.cmd(b"RCPT TO:<" + r + b">") == b"250 ok\r\n"
    assert c.cmd(b"DATA") == b"354 go ahead\r\n"
    c.send(body + b".\r\n")
    reply = c.reply()
    assert c.cmd(b"QUIT").startswith(b"221 ")
    c.close()
    return reply


def qdir(home):
    return os.path.join(home, "queue")


def test_same_queue_in_both_modes(mode, tmp_path):
    """Two messages in one session, one in the next: complete, checked by the
    queue invariants (inode = number, todo = intd, Received line of the pid
    in the envelope), mode 0644 whatever the caller's umask."""
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        for rc in (b"u@example.test", b"v@example.test"):
            assert c.cmd(b"MAIL FROM:<a@b.test>") == b"250 ok\r\n"
            assert c.cmd(b"RCPT TO:<" + rc + b">") == b"250 ok\r\n"
            assert c.cmd(b"DATA") == b"354 go ahead\r\n"
            c.send(BODY + b".\r\n")
            r = c.reply()
            assert re.match(rb"250 ok \d+ qp \d+\r\n$", r), r
        c.close()
        assert re.match(rb"250 ok \d+ qp \d+\r\n$", send(srv))
    got = queued(home)
    assert len(got) == 3
    for msg, env in got:
        assert body_of(msg) == STORED
        assert re.match(rb"u%d\0p\d+\0Fa@b\.test\0T[uv]@example\.test\0$" % os.getuid(), env), env
    q = qdir(home)
    for sub in ("todo", "intd"):
        for f in os.listdir(os.path.join(q, sub)):
            assert stat.S_IMODE(os.stat(os.path.join(q, sub, f)).st_mode) == 0o644
    for msg, env in got:
        n = [f for f in os.listdir(os.path.join(q, "todo"))
             if open(os.path.join(q, "todo", f), "rb").read() == env][0]
        assert stat.S_IMODE(os.stat(os.path.join(q, "mess", str(int(n) % 23), n)).st_mode) == 0o644
    assert os.listdir(os.path.join(q, "pid")) == []


def test_umask_of_the_server_does_not_matter(mode, tmp_path):
    home = make_home(tmp_path)
    old = os.umask(0o077)
    try:
        srv_cm = server(mode, home, tmp_path)
        srv = srv_cm.__enter__()
    finally:
        os.umask(old)
    try:
        assert send(srv).startswith(b"250 ok ")
    finally:
        srv_cm.__exit__(None, None, None)
    q = qdir(home)
    (n,) = os.listdir(os.path.join(q, "todo"))
    for p in (os.path.join(q, "todo", n), os.path.join(q, "mess", str(int(n) % 23), n)):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644


def test_qp_is_the_queuer(mode, tmp_path):
    """qp in the 250, the Received line's pid and the envelope's p field
    agree (in-process: qmail-smtpd's pid; forked: qmail-queue's)."""
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        r = send(srv)
        pid = smtpd_pid(srv)
    qp = int(re.match(rb"250 ok \d+ qp (\d+)", r).group(1))
    (msg, env), = queued(home)
    assert msg.startswith(b"Received: (qmail %d invoked " % qp)
    assert env.split(b"\0")[1] == b"p%d" % qp
    assert (qp == pid) == (mode == "elide")


def test_other_queue_programs_are_forked(tmp_path):
    """QMAILQUEUE naming another program: a child, its exit code's text."""
    home = make_home(tmp_path)
    with server("elide", home, tmp_path, QMAILQUEUE=fake_queue(tmp_path, 31)) as srv:
        assert send(srv) == b"554 mail server permanently rejected message (#5.3.0)\r\n"
    assert queued(home) == []


@pytest.mark.parametrize("damage", ["queue", "pid", "mess", "intd", "todo"])
def test_queue_trouble(mode, tmp_path, damage):
    """A broken queue: the same 451 in both modes (qmail-queue's 62 to 66),
    and nothing left behind (qmail-queue's cleanup: mess and intd removed)."""
    home = make_home(tmp_path)
    q = qdir(home)
    if damage == "queue":
        shutil.rmtree(q)
    elif damage == "mess":
        for i in range(23):
            os.rmdir(os.path.join(q, "mess", str(i)))
    else:
        os.rmdir(os.path.join(q, damage))
    with server(mode, home, tmp_path) as srv:
        assert send(srv) == b"451 qq trouble creating files in queue (#4.3.0)\r\n"
    assert_empty(q)


def test_refused_then_queued_in_one_session(mode, tmp_path):
    """A message over databytes, then a small one in the same session: 552,
    then 250; only the second is in the queue."""
    home = make_home(tmp_path, databytes="200\n")
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        for body, want in ((b"y" * 500 + b"\r\n", b"552 "), (BODY, b"250 ok ")):
            assert c.cmd(b"MAIL FROM:<a@b.test>") == b"250 ok\r\n"
            assert c.cmd(b"RCPT TO:<u@example.test>") == b"250 ok\r\n"
            assert c.cmd(b"DATA") == b"354 go ahead\r\n"
            c.send(body + b".\r\n")
            assert c.reply().startswith(want)
        assert c.cmd(b"QUIT").startswith(b"221 ")
        c.close()
    (msg, _), = queued(home)
    assert body_of(msg) == STORED


def test_address_too_long_for_qq(mode, tmp_path):
    """RELAYCLIENT appended to an 899-byte address passes 1003 bytes:
    qmail-queue's 11, a 554, nothing queued."""
    home = make_home(tmp_path)
    addr = b"x" * 880 + b"@example.test"
    with server(mode, home, tmp_path, RELAYCLIENT="y" * 200) as srv:
        assert send(srv, rcpts=(addr,)) == b"554 envelope address too long for qq (#5.1.3)\r\n"
    assert_empty(qdir(home))


def test_given_up_messages_leave_nothing(mode, tmp_path):
    """databytes exceeded (552), too many hops (554), a bare LF (451 and the
    end), the client gone in the middle, a DATA timeout: no file anywhere in
    the queue."""
    home = make_home(tmp_path, databytes="100\n", timeoutsmtpd="1\n")
    q = qdir(home)

    def empty():
        if mode == "elide":                 # in-process: gone before qmail-smtpd exits
            assert_empty(q)
        else:                               # a forked qmail-queue may clean up after it
            wait_until(lambda: not listing(q), 10, None, "an empty queue")

    with server(mode, home, tmp_path) as srv:
        def ended(n):
            wait_until(lambda: srv.log().count("tcpserver: end ") >= n, 10, srv.proc,
                       "%d qmail-smtpd exits" % n)

        assert send(srv, body=b"x" * 300 + b"\r\n") == \
            b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
        assert_empty(q)

        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        assert c.cmd(b"DATA") == b"354 go ahead\r\n"
        c.send(b"Subject: x\n\nbare\n.\r\n")
        assert c.rest() == b"451 See https://cr.yp.to/docs/smtplf.html.\r\n"
        c.close()
        ended(2)
        empty()

        for n, how in ((3, "close"), (4, "timeout")):
            c = connect(srv)
            c.cmd(b"MAIL FROM:<a@b.test>")
            c.cmd(b"RCPT TO:<u@example.test>")
            assert c.cmd(b"DATA") == b"354 go ahead\r\n"
            c.send(b"Subject: x\r\n\r\npart")
            if how == "timeout":
                assert c.rest() == b"451 timeout (#4.4.2)\r\n"
            c.close()
            ended(n)
            empty()
    home2 = make_home(tmp_path / "hops")
    with server(mode, home2, tmp_path, name="hops") as srv:
        assert send(srv, body=b"Received: x\r\n" * 100 + b"\r\nhi\r\n") == \
            b"554 too many hops, this message is looping (#5.4.6)\r\n"
    assert_empty(qdir(home2))


STRACE = shutil.which("strace")


@pytest.mark.skipif(not STRACE, reason="strace not installed")
def test_durable_before_250(mode, tmp_path):
    """The 250 goes out only after the message file and its directory, the
    envelope, and todo/ after the link, are fsync'd, in qmail-queue's
    order, whichever process does it (qmail-smtpd on a socket pair, traced)."""
    home = make_home(tmp_path)
    log = tmp_path / "strace.log"
    ours, theirs = socket.socketpair()
    p = subprocess.Popen([STRACE, "-f", "-y", "-qq", "-o", str(log), "-e",
                          "trace=openat,write,fsync,link,linkat,unlink,unlinkat",
                          qbin("qmail-smtpd")], stdin=theirs, stdout=theirs,
                         stderr=subprocess.DEVNULL, env=smtpd_env(mode, home))
    theirs.close()
    try:
        c = Client(0, sock=ours)
        assert c.reply().startswith(b"220 ")
        assert c.cmd(b"MAIL FROM:<a@b.test>") == b"250 ok\r\n"
        assert c.cmd(b"RCPT TO:<u@example.test>") == b"250 ok\r\n"
        assert c.cmd(b"DATA") == b"354 go ahead\r\n"
        c.send(BODY + b".\r\n")
        assert c.reply().startswith(b"250 ok ")
        assert c.cmd(b"QUIT").startswith(b"221 ")
        assert p.wait(30) == 0
    finally:
        ours.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    q = os.path.realpath(qdir(home))
    seq = []
    for line in log.read_text(errors="replace").splitlines():
        line = re.sub(r"^\d+\s+", "", line)
        call = line.split("(", 1)[0]
        names = [re.sub(r"\d+", "N", a) for a in re.findall(r'"([^"]*)"', line)]
        if call == "fsync":
            path = re.search(r"^fsync\(\d+<([^>]*)>", line).group(1).replace(" (deleted)", "")
            ev = "fsync " + re.sub(r"\d+", "N", os.path.relpath(path, q))
        elif call == "openat" and "O_CREAT" in line:
            ev = "create " + names[0]
        elif call in ("link", "linkat"):
            ev = "link " + " ".join(names)
        elif call in ("unlink", "unlinkat"):
            ev = "unlink " + names[0]
        elif call == "write" and "250 ok " in line:
            ev = "reply 250"
        else:
            continue
        seq.append(ev)
    start = seq.index("create pid/N.N.N")
    assert seq[start:start + 10] == [
        "create pid/N.N.N", "link pid/N.N.N mess/N/N", "unlink pid/N.N.N",
        "fsync pid/N.N.N", "fsync mess/N",
        "create intd/N", "fsync intd/N",
        "link intd/N todo/N", "fsync todo", "reply 250"], seq[start:]


def test_many_sessions_at_once(mode, tmp_path):
    """20 messages over 4 concurrent sessions: each complete in todo/, its
    mess/ file named by its inode."""
    home = make_home(tmp_path)
    errors = []
    with server(mode, home, tmp_path) as srv:
        def worker():
            try:
                for _ in range(5):
                    assert send(srv).startswith(b"250 ok ")
            except BaseException as e:      # noqa: BLE001 - reported below
                errors.append(e)
        ts = [threading.Thread(target=worker) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
    assert not errors, errors
    got = queued(home)
    assert len(got) == 20
    assert all(body_of(m) == STORED for m, _ in got)
    q = qdir(home)
    for n in os.listdir(os.path.join(q, "todo")):
        assert os.stat(os.path.join(q, "mess", str(int(n) % 23), n)).st_ino == int(n)
        assert os.stat(os.path.join(q, "intd", n)).st_ino == os.stat(os.path.join(q, "todo", n)).st_ino


def smtpd_pair(home, mode, argv_prefix=(), **extra):
    """qmail-smtpd on a socket pair (optionally under argv_prefix, e.g.
    strace); returns (process, Client)."""
    ours, theirs = socket.socketpair()
    p = subprocess.Popen(list(argv_prefix) + [qbin("qmail-smtpd")], stdin=theirs, stdout=theirs,
                         stderr=subprocess.DEVNULL, env=smtpd_env(mode, home, **extra))
    theirs.close()
    return p, Client(0, sock=ours)


@pytest.mark.skipif(not STRACE, reason="strace not installed")
@pytest.mark.parametrize("point", ["fsync:when=1", "fsync:when=2", "fsync:when=3",
                                   "linkat:when=1", "linkat:when=2", "unlinkat:when=1",
                                   "fsync:when=4"])
def test_kill9_at_each_step_in_process(tmp_path, point):
    """qmail-smtpd queueing in-process, SIGKILLed exactly at each sync and
    link (strace fault injection): no 250, and nothing in todo/ unless the
    kill came after the todo link (the 4th fsync: todo/ itself)."""
    home = make_home(tmp_path)
    sysc, when = point.split(":")
    p, c = smtpd_pair(home, "elide", [STRACE, "-f", "-qq", "-o", os.devnull, "-e",
                                      "trace=" + sysc, "-e",
                                      "inject=%s:signal=KILL:%s" % (sysc, when)])
    try:
        assert c.reply().startswith(b"220 ")
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        c.send(b"DATA\r\n" + BODY + b".\r\n")        # the kill may come before the 354
        assert b"250" not in c.rest()
        assert p.wait(30) in (-signal.SIGKILL, 128 + signal.SIGKILL, 137)
    finally:
        c.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    q = qdir(home)
    todo = os.listdir(os.path.join(q, "todo"))
    if point == "fsync:when=4":
        (msg, env), = queued(home)
        assert body_of(msg) == STORED
    else:
        assert todo == []


@pytest.fixture
def small_fs(tmp_path):
    with small_tmpfs(tmp_path / "small", "300k") as d:
        yield d


def test_disk_full(small_fs, mode):
    """A message larger than the file system: qmail-queue's 53 as a 451, the
    partial file removed, and the next small message is queued."""
    home = make_home(small_fs)
    with server(mode, home, small_fs, name="../smtpd-full") as srv:
        big = (b"x" * 998 + b"\r\n") * 400
        assert send(srv, body=big) == b"451 qq write error or disk full (#4.3.0)\r\n"
        assert_empty(qdir(home))
        assert send(srv).startswith(b"250 ok ")
    assert len(queued(home)) == 1


# -- Authentication-Results (sagredo's qmail-queue, from QMAILAUTHENTICATED) ----

def headers(msg):
    """The lines before smtpd's Received line: qmail-queue's own."""
    lines = msg.split(b"\n")
    i = next(k for k, x in enumerate(lines) if x.startswith(b"Received: from "))
    assert lines[0].startswith(b"Received: (qmail ") and lines[i + 1].startswith(b"  by ")
    j = i + 3 if lines[i + 2].startswith(b"Received-SPF: ") else i + 2
    return lines[1:i], b"\n".join(lines[j:])


def test_authentication_results_from_spf(mode, tmp_path):
    """spfbehavior 1: qmail-smtpd's SPF verdict goes to qmail-queue in
    QMAILAUTHENTICATED and comes back as the line after qmail-queue's
    Received line, authserv-id control/authservid (else control/me); a value
    the session started with goes first."""
    from qtools.qmail import spf
    home = make_home(tmp_path, spfbehavior="1\n")
    with server(mode, home, tmp_path, QMAILAUTHENTICATED=None) as srv:
        assert re.match(rb"250 ok \d+ qp \d+\r\n$", send(srv))
    with open(os.path.join(home, "control", "authservid"), "w") as f:
        f.write("auth.example.test\n")
    with server(mode, home, tmp_path, name="env", QMAILAUTHENTICATED="iprev=pass") as srv:
        assert re.match(rb"250 ok \d+ qp \d+\r\n$", send(srv, sender=b"c@d.test"))
    r = spf.check(b"a@b.test", b"client.test", b"127.0.0.1", b"127.0.0.1", lambda: ())
    got = sorted((headers(m) for m, _ in queued(home)), key=lambda h: len(h[0]))
    assert got[0] == ([b"Authentication-Results: mx.example.test;",
                       b"\tspf=" + r.authinfo()], STORED)
    assert r.authinfo().startswith(b"pass (") and r.authinfo().endswith(b" smtp.mailfrom=a@b.test")
    r = spf.check(b"c@d.test", b"client.test", b"127.0.0.1", b"127.0.0.1", lambda: ())
    assert got[1] == ([b"Authentication-Results: auth.example.test;", b"\tiprev=pass;",
                       b"\tspf=" + r.authinfo()], STORED)


def test_authentication_results_in_an_authd_session(mode, tmp_path):
    """After AUTH the client relays: no SPF check, so the line carries only
    what QMAILAUTHENTICATED held (tcprules may set it); without it there is
    no line (sagredo's AUTH does not set QMAILAUTHENTICATED)."""
    from smtpdtools import checkpassword
    import base64
    cp, _ = checkpassword(tmp_path)
    home = make_home(tmp_path, spfbehavior="1\n")

    def authd(name, **extra):
        with server(mode, home, tmp_path, args=(cp, "true"), name=name, SMTPAUTH="",
                    FORCETLS="0", **extra) as srv:
            c = connect(srv)
            assert c.cmd(b"EHLO client.test").startswith(b"250-")
            assert c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0u@example.test\0good")) == \
                b"235 ok, go ahead (#2.0.0)\r\n"
            assert c.cmd(b"MAIL FROM:<u@example.test>") == b"250 ok\r\n"
            assert c.cmd(b"RCPT TO:<far@remote.test>") == b"250 ok\r\n"
            assert c.cmd(b"DATA") == b"354 go ahead\r\n"
            c.send(BODY + b".\r\n")
            assert re.match(rb"250 ok \d+ qp \d+\r\n$", c.reply())
            c.close()

    authd("plain", QMAILAUTHENTICATED=None)
    assert [headers(m) for m, _ in queued(home)] == [([], STORED)]
    shutil.rmtree(os.path.join(home, "queue"))
    from qqtools import mkqueue
    mkqueue(home)
    authd("env", QMAILAUTHENTICATED="auth=pass smtp.auth=u@example.test")
    assert [headers(m) for m, _ in queued(home)] == [
        ([b"Authentication-Results: mx.example.test;", b"\tauth=pass smtp.auth=u@example.test"],
         STORED)]


@pytest.mark.parametrize("how", ["exec", "smtpd"])
def test_authentication_results_stays_one_header(mode, tmp_path, how):
    """Line breaks in QMAILAUTHENTICATED are folded (a line that does not
    start with a blank gets a tab; empty lines and CRs go): no header or
    body can be injected.  No authserv-id (no authservid, no me): no line.
    An unreadable control/authservid: exit 55, nothing queued."""
    from qqtools import envelope, run_qq
    home = make_home(tmp_path)
    evil = "spf=pass;\r\nX-Injected: 1\n\n\tdkim=none\n"
    want = [b"Authentication-Results: mx.example.test;", b"\tspf=pass;", b"\tX-Injected: 1",
            b"\tdkim=none"]

    def one(name, expect=0):
        if how == "exec":
            code, _ = run_qq(home, b"Subject: q\n\nbody\n", envelope(b"a@b.test", [b"u@x.test"]),
                             str(tmp_path), mode, {"QMAILAUTHENTICATED": evil})
            assert code == expect
            return
        with server(mode, home, tmp_path, name=name, QMAILAUTHENTICATED=evil) as srv:
            r = send(srv)
            if expect:
                assert r == b"451 qq unable to read configuration (#4.3.0)\r\n"
            else:
                assert re.match(rb"250 ok \d+ qp \d+\r\n$", r)

    def first_lines():
        (m, _), = queued(home)
        shutil.rmtree(os.path.join(home, "queue"))
        from qqtools import mkqueue
        mkqueue(home)
        lines = m.split(b"\n")
        i = next(k for k, x in enumerate(lines) if not x.startswith((b"Auth", b"\t")) and k)
        return lines[1:i]

    one("evil")
    assert first_lines() == want
    os.unlink(os.path.join(home, "control", "me"))
    with open(os.path.join(home, "control", "smtpgreeting"), "w") as f:
        f.write("mx.example.test\n")
    one("noid")
    assert first_lines() == []
    os.mkdir(os.path.join(home, "control", "authservid"))
    one("unreadable", 55)
    assert_empty(qdir(home))
