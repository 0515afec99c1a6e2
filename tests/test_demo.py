"""The README's first command, end to end: run/demo starts the service tree
(svscanboot -> svscan -> supervise -> tcpserver / multilog, readproctitle),
answers SMTP on loopback, qmailctl works on it, and stop leaves nothing."""
import os
import smtplib
import socket
import shutil
import ssl
import subprocess
import tempfile

import pytest

from pathlib import Path

from helpers import QBIN, wait_until

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ps_tree():
    return subprocess.run(["ps", "axww", "-o", "pid=,ppid=,args="], capture_output=True,
                          text=True).stdout


@pytest.fixture
def demo():
    # a directory others can enter (pytest's tmp_path is 0700): as root the
    # demo's vpopmaild reads the network as user nobody
    top = tempfile.mkdtemp(prefix="qtdemo.", dir="/tmp")
    os.chmod(top, 0o755)
    port = free_port()
    env = dict(os.environ, QTOOLS_NOINSTALL="1", QTOOLS_VENV=os.path.dirname(QBIN),
               QTOOLS_DEMO=os.path.join(top, "demo"), QTOOLS_SMTP_PORT=str(port),
               QTOOLS_SUBMISSION_PORT=str(free_port()), QTOOLS_VPOPMAILD_PORT=str(free_port()))
    env.pop("QTOOLS_NOELIDE", None)
    p = subprocess.run(["sh", os.path.join(TOP, "run", "demo"), "start"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    try:
        yield Path(top) / "demo", port, env, p.stdout
    finally:
        subprocess.run(["sh", os.path.join(TOP, "run", "demo"), "stop"], env=env,
                       capture_output=True, timeout=60)
        shutil.rmtree(top, ignore_errors=True)


def test_demo_tree_smtp_qmailctl_and_stop(demo):
    d, port, env, out = demo
    assert "SMTP on 127.0.0.1:%d" % port in out
    # the seed's process tree, as ps shows it
    tree = ps_tree()
    for title in ("svscan %s/service" % d, "supervise qmail-smtpd", "supervise log",
                  "supervise qmail-submission",
                  "supervise clear", "supervise vpopmaild", "readproctitle service errors: ...",
                  "multilog t %s/log/smtpd" % d):
        assert title in tree, title
    assert "tcpserver -v -H -R -l 0 -x %s/vpopmail/etc/tcp.smtp.cdb" % d in tree
    # the seed's relay through port 25: 127. may relay (tcp.smtp), STARTTLS
    # with the demo's self-signed certificate, the message lands in the queue
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        code, _ = s.ehlo("test")
        assert code == 250
        assert s.has_extn("starttls")
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("test")
        s.sendmail("user@example.test", ["someone@somewhere.else.net"],
                   b"Subject: demo\r\n\r\nThis is the msg body.\r\n")
    # qmailctl stat: svstat lines, then qmail-qstat
    st = subprocess.run([str(d / "qmailctl"), "stat"], capture_output=True, text=True,
                        timeout=30).stdout.splitlines()
    assert st[0].startswith("%s/service/qmail-smtpd: up (pid " % d), st
    assert st[1].startswith("%s/service/qmail-smtpd/log: up (pid " % d), st
    # the seed's submission test: 538 before TLS, 530 before AUTH, AUTH PLAIN
    # after STARTTLS as the demo's vpopmail user, then relaying is allowed
    sub = int(env["QTOOLS_SUBMISSION_PORT"])
    with smtplib.SMTP("127.0.0.1", sub, timeout=20) as s:
        s.ehlo("test")
        assert not s.has_extn("auth")                  # FORCETLS: not before STARTTLS
        assert s.docmd("AUTH", "PLAIN") == (538, b"auth not available without TLS (#5.3.3)")
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("test")
        assert s.has_extn("auth")
        assert s.docmd("MAIL", "FROM:<demo@example.test>")[0] == 530
        assert s.login("demo@example.test", "demo-secret")[0] == 235
        s.sendmail("demo@example.test", ["someone@somewhere.net"],
                   b"Subject: submission\r\n\r\nThe body.\r\n")
    st = subprocess.run([str(d / "qmailctl"), "stat"], capture_output=True, text=True,
                        timeout=30).stdout.splitlines()
    assert st[2].startswith("%s/service/qmail-submission: up (pid " % d), st
    assert st[-2:] == ["messages in queue: 2", "messages in queue but not yet preprocessed: 2"]
    # the log got tcpserver's lines
    wait_until(lambda: b"tcpserver: end " in (d / "log/smtpd/current").read_bytes(), 10,
               what="tcpserver log lines in multilog")
    # the seed's vpopmaild login, on the demo's port, as the postmaster
    # vadddomain made
    vp = int(env["QTOOLS_VPOPMAILD_PORT"])
    assert "vpopmaild on 127.0.0.1:%d" % vp in out
    with socket.create_connection(("127.0.0.1", vp), timeout=20) as c:
        f = c.makefile("rb")
        assert f.readline() == b"+OK \r\n"
        c.sendall(b"login postmaster@example.test postmaster-secret\r\n")
        assert f.readline() == b"+OK+\r\n"
        lines = []
        while True:
            line = f.readline()
            assert line, lines
            if line == b".\r\n":
                break
            lines.append(line)
        assert b"name postmaster\r\n" in lines
        c.sendall(b"bogus\r\n")
        assert f.readline() == b"-ERR 4.107 Invalid Command\r\n"
    # qmailctl clear runs the one-shot service once
    cl = subprocess.run([str(d / "qmailctl"), "clear"], capture_output=True, text=True,
                        timeout=30)
    assert cl.stdout.startswith("Clearing readproctitle service errors with")


def test_demo_stop_leaves_nothing(demo):
    d, port, env, out = demo
    subprocess.run(["sh", os.path.join(TOP, "run", "demo"), "stop"], env=env,
                   capture_output=True, timeout=60)
    wait_until(lambda: str(d) not in ps_tree(), 15, what="demo processes gone")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
