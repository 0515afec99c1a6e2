"""qmail-smtpd: transcripts of real tcpserver + qmail-smtpd sessions on
127.0.0.1, with exec elision on and off, against the replies of sagredo's
qmail-smtpd (qmail-inventory 1.1) and the seed transcripts; the real
qmail-queue and queue underneath."""
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from helpers import qbin, qenv
from smtpdtools import (GREETING, Client, body_of, certfile, connect, fake_queue,  # noqa: F401
                        make_home, queued, server, smtpd_env, todo)

from qtools.lib import cdb
from qtools.qmail.smtpd import REPLY, Blast, addrparse, date822, received

MODES = ("elide", "noelide", "reuse")    # conftest: the reuse mode too

EHLO_PLAIN = (b"250-mx.example.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250-8BITMIME\r\n"
              b"250 SIZE 0\r\n")


def tcprules(tmp_path, text):
    path = str(tmp_path / "tcp.smtp.cdb")
    subprocess.run([qbin("tcprules"), path, path + ".tmp"], input=text.encode(),
                   check=True, capture_output=True, env=qenv())
    return path


def test_session_basics(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO client.test") == EHLO_PLAIN
        assert c.cmd(b"HELO client.test") == b"250 mx.example.test\r\n"
        assert c.cmd(b"noop") == REPLY["ok"]
        assert c.cmd(b"VRFY root") == REPLY["vrfy"]
        assert c.cmd(b"HELP") == REPLY["help"]
        assert c.cmd(b"FOO bar") == b"500 unrecognised (#5.5.2)\r\n"
        assert c.cmd(b"") == REPLY["unrecog"]
        assert c.cmd(b"RCPT TO:<u@example.test>") == b"503 MAIL first (#5.5.1)\r\n"
        assert c.cmd(b"DATA") == REPLY["wantmail"]
        assert c.cmd(b"MAIL FROM:<a@b.test>") == b"250 ok\r\n"
        assert c.cmd(b"DATA") == b"503 RCPT first (#5.5.1)\r\n"
        assert c.cmd(b"RSET") == b"250 flushed\r\n"
        assert c.cmd(b"STARTTLS") == b"454 TLS unable to initialize ctx: " \
            + c.buf[:0] + _ctx_reason(home) + b" (#4.3.0)\r\n"
        assert c.cmd(b"quit") == b"221 mx.example.test\r\n"
        assert c.rest() == b""
        c.close()


def _ctx_reason(home):
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(os.path.join(home, "control/servercert.pem"))
    except OSError as e:
        return e.strerror.encode()


def test_greeting_and_controls(mode, tmp_path):
    home = make_home(tmp_path, smtpgreeting="smtp.yourdomain.net some text\n")
    with server(mode, home, tmp_path) as srv:
        c = Client(srv.port)
        assert c.reply() == b"220 smtp.yourdomain.net some text ESMTP\r\n"
        assert c.cmd(b"HELO x") == b"250 smtp.yourdomain.net some text\r\n"
        c.close()
    os.unlink(os.path.join(home, "control", "me"))
    os.unlink(os.path.join(home, "control", "smtpgreeting"))
    with server(mode, home, tmp_path, name="nome") as srv:
        assert srv.talk(b"") == b"421 unable to read controls (#4.3.0)\r\n"


def test_seed_relay_transcript(mode, tmp_path):
    """The seed's first telnet session: a relay client (tcp.smtp gives
    RELAYCLIENT) sends to a remote address; lowercase verbs, bare addresses."""
    home = make_home(tmp_path, databytes="3000000\n")
    rules = tcprules(tmp_path, '127.:allow,RELAYCLIENT=""\n')
    with server(mode, home, tmp_path, opts=("-v", "-H", "-R", "-l", "0", "-x", rules)) as srv:
        c = connect(srv)
        assert c.cmd(b"mail from:<user@yourdomain.net>") == b"250 ok\r\n"
        assert c.cmd(b"rcpt to:<someone@somewhere.else.net>") == b"250 ok\r\n"
        assert c.cmd(b"data") == b"354 go ahead\r\n"
        c.send(b"subject: This is the subject\r\nto: someone@somewhere.else.net\r\n"
               b"from: user@yourdomain.net\r\n\r\nThis is the msg body FOLLOWING A BLANK LINE.\r\n.\r\n")
        r = c.reply()
        m = re.match(rb"250 ok (\d+) qp (\d+)\r\n$", r)
        assert m, r
        assert abs(int(m.group(1)) - time.time()) < 60
        assert c.cmd(b"quit") == b"221 mx.example.test\r\n"
        c.close()
    (msg, env), = queued(home)
    assert env.endswith(b"Fuser@yourdomain.net\0Tsomeone@somewhere.else.net\0")
    lines = msg.split(b"\n")
    assert lines[0].startswith(b"Received: (qmail %s invoked " % m.group(2))
    # RELAYCLIENT set: the IP is left out (sagredo's received.c); -H: unknown host
    assert lines[1] == b"Received: from unknown (HELO unknown) ()" or \
        lines[1] == b"Received: from unknown ()", lines[1]
    assert re.match(rb"  by 0 with SMTP; \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$",
                    lines[2]), lines[2]
    assert body_of(msg) == (b"subject: This is the subject\nto: someone@somewhere.else.net\n"
                            b"from: user@yourdomain.net\n\nThis is the msg body FOLLOWING A BLANK LINE.\n")


def test_received_line(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path, opts=("-v", "-H", "-R")) as srv:
        c = connect(srv)
        c.cmd(b"EHLO evil\rX-Injected: 1 (;)")
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        c.cmd(b"DATA")
        c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        assert c.reply().startswith(b"250 ok ")
        c.close()
    (msg, env), = queued(home)
    assert env == b"u%d\0p%s\0Fa@b.test\0Tu@example.test\0" % (os.getuid(), env.split(b"\0")[1][1:])
    line = msg.split(b"\n")[1]
    assert line == b"Received: from unknown (HELO evil?X-Injected:?1????) (127.0.0.1)"


def test_received_function():
    when = 1291897368
    r = received(b"ESMTPA", b"mx.example.com", b"1.2.3.4", b"host.example.org", b"u@d",
                 b"c l(i)", None, when)
    assert r == (b"Received: from host.example.org (HELO c?l?i?) (u@d@1.2.3.4)\n"
                 b"  by mx.example.com with ESMTPA; " + date822(when) + b"\n")
    assert received(b"SMTP", b"l", b"1.2.3.4", b"h", b"u", None, b"", when).startswith(
        b"Received: from h (u)\n  by l with SMTP; ")
    os.environ["TZ"] = "Europe/Rome"
    time.tzset()
    try:
        assert date822(when) == b"9 Dec 2010 13:22:48 +0100"
    finally:
        del os.environ["TZ"]
        time.tzset()


@pytest.mark.parametrize("arg,addr", [
    (b"FROM:<a@b.c>", b"a@b.c"),
    (b"FROM: <a@b.c> SIZE=10", b"a@b.c"),
    (b"FROM:a@b.c", b"a@b.c"),
    (b"FROM: a@b.c SIZE=10", b"a@b.c"),
    (b"FROM:<>", b""),
    (b"FROM: ", b""),
    (b"FROM:", None),
    (b"FROM", None),
    (b"<@r1,@r2:u@d>", b"u@d"),
    (b'FROM:<"a b"@c>', b"a b@c"),
    (b'FROM:<a\\>b@c>', b"a>b@c"),
    (b"FROM:<a@b.c", b"a@b.c"),
    (b"FROM:<" + b"a" * 900 + b">", None),
    (b"FROM:<" + b"a" * 899 + b">", b"a" * 899),
])
def test_addrparse(arg, addr):
    assert addrparse(arg) == addr


def test_addrparse_localiphost():
    me = lambda: {(127, 0, 0, 1)}              # noqa: E731
    assert addrparse(b"TO:<box@[127.0.0.1]>", b"mx.example.test", me) == b"box@mx.example.test"
    assert addrparse(b"TO:<box@[127.0.0.257]>", b"mx.example.test", me) == b"box@mx.example.test"
    assert addrparse(b"TO:<box@[10.0.0.1]>", b"mx.example.test", me) == b"box@[10.0.0.1]"
    assert addrparse(b"TO:<box@[127.0.0.1]>", None, me) == b"box@[127.0.0.1]"


def test_mail_rcpt_rules(mode, tmp_path):
    home = make_home(tmp_path, badmailfrom="spam@bad.test\n@worse.test\n", databytes="1000\n",
                     localiphost="local.example.test\n")
    mk = cdb.make(os.path.join(home, "control", "morercpthosts.cdb"))
    mk.add(b"more.test", b"")
    mk.finish()
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@b.test> SIZE=1001") == REPLY["size"]
        assert c.cmd(b"MAIL FROM:<a@b.test> SIZE=1000") == REPLY["ok"]
        assert c.cmd(b"MAIL FROM:<a@b.test> SIZE=99999999999999999999") == REPLY["size"]
        assert c.cmd(b"MAIL FROM:<" + b"x" * 900 + b">") == b"555 syntax error (#5.5.4)\r\n"
        assert c.cmd(b"RCPT TO:<u@example.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@EXAMPLE.TEST>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@x.sub.example.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@sub.example.test>") == REPLY["nogateway"]
        assert c.cmd(b"RCPT TO:<u@more.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@a.more.test>") == REPLY["nogateway"]
        assert c.cmd(b"RCPT TO:<postmaster>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@remote.test>") == \
            b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
        assert c.cmd(b"RCPT TO:<@example.test:u@remote.test>") == REPLY["nogateway"]
        assert c.cmd(b'RCPT TO:<"u@remote.test">') == REPLY["nogateway"]
        assert c.cmd(b"RCPT TO:<u@remote.test@example.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<box@[127.0.0.1]>") == REPLY["nogateway"]
        assert c.cmd(b"RSET") == REPLY["flushed"]
        assert c.cmd(b"MAIL FROM:<SPAM@bad.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@example.test>") == \
            b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
        assert c.cmd(b"MAIL FROM:<x@worse.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@example.test>") == REPLY["bmf"]
        assert c.cmd(b"MAIL FROM:<>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@example.test>") == REPLY["ok"]
        c.close()
    with open(os.path.join(home, "control", "rcpthosts"), "a") as f:
        f.write("local.example.test\n")
    with server(mode, home, tmp_path, name="liphost") as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        assert c.cmd(b"RCPT TO:<box@[127.0.0.1]>") == REPLY["ok"]
        c.cmd(b"DATA")
        c.send(b"\r\n.\r\n")
        assert c.reply().startswith(b"250 ok")
        c.close()
    (_, env), = queued(home)
    assert env.endswith(b"Tbox@local.example.test\0")


def test_relayclient_appended(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path, RELAYCLIENT="-relay") as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        assert c.cmd(b"RCPT TO:<u@remote.test>") == REPLY["ok"]
        c.cmd(b"DATA")
        c.send(b"\r\n.\r\n")
        assert c.reply().startswith(b"250 ok")
        c.close()
    (_, env), = queued(home)
    assert env.endswith(b"Tu@remote.test-relay\0")


def test_pipelining_two_messages(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        one = (b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n"
               b"Subject: %d\r\n\r\nbody\r\n.\r\n")
        c.send(b"EHLO x\r\n" + one % 1 + one % 2 + b"QUIT\r\n")
        out = c.rest()
        c.close()
    replies = out.split(b"\r\n")
    assert replies[:6] == EHLO_PLAIN.split(b"\r\n")[:5] + [b"250 ok"]
    assert len(re.findall(rb"250 ok \d+ qp \d+", out)) == 2
    assert out.endswith(b"221 mx.example.test\r\n")
    bodies = sorted(body_of(m) for m, _ in queued(home))
    assert bodies == [b"Subject: 1\n\nbody\n", b"Subject: 2\n\nbody\n"]


def test_hops_and_databytes(mode, tmp_path):
    home = make_home(tmp_path, databytes="2000\n")
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        for hdr, want in ((b"Received: x\r\n" * 99, b"250 ok"),
                          (b"Received: x\r\n" * 50 + b"delivered-to: y\r\n" * 50, REPLY["hops"]),
                          (b"X: y\r\n\r\n" + b"Received: x\r\n" * 100, b"250 ok")):
            c.cmd(b"MAIL FROM:<a@b.test>")
            c.cmd(b"RCPT TO:<u@example.test>")
            assert c.cmd(b"DATA") == REPLY["data"]
            c.send(hdr + b"\r\nbody\r\n.\r\n")
            assert c.reply().startswith(want)
        # databytes counts bytes as stored: 2000 is fine, 2001 is not
        for n, want in ((2000 - 8, b"250 ok"), (2001 - 8, REPLY["size"])):
            c.cmd(b"MAIL FROM:<a@b.test>")
            c.cmd(b"RCPT TO:<u@example.test>")
            c.cmd(b"DATA")
            c.send(b"S: x\r\n\r\n" + b"y" * n + b".\r\n.\r\n")
            r = c.reply()
            assert r.startswith(want), (n, r)
        assert c.cmd(b"NOOP") == REPLY["ok"]
        c.close()
    assert len(todo(home)) == 3


@pytest.mark.parametrize("code,reply", [
    (53, b"451 qq write error or disk full (#4.3.0)\r\n"),
    (31, b"554 mail server permanently rejected message (#5.3.0)\r\n"),
    (11, b"554 envelope address too long for qq (#5.1.3)\r\n"),
    (20, b"554 qq permanent problem (#5.3.0)\r\n"),
    (99, b"451 qq temporary problem (#4.3.0)\r\n"),
    (0, None),
])
def test_queue_exit_codes(code, reply, tmp_path):
    home = make_home(tmp_path)
    qq = fake_queue(tmp_path, code)
    with server("elide", home, tmp_path, QMAILQUEUE=qq) as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        c.cmd(b"DATA")
        c.send(b"\r\n.\r\n")
        r = c.reply()
        if reply is None:
            assert re.match(rb"250 ok \d+ qp \d+\r\n$", r)
        else:
            assert r == reply
        c.close()


def test_queue_custom_error_and_exec_failure(mode, tmp_path):
    home = make_home(tmp_path)
    qq = fake_queue(tmp_path, 82, b"Dvirus found (#5.7.1)")
    with server(mode, home, tmp_path, QMAILQUEUE=qq) as srv:
        c = connect(srv)
        for _ in range(2):
            c.cmd(b"MAIL FROM:<a@b.test>")
            c.cmd(b"RCPT TO:<u@example.test>")
            c.cmd(b"DATA")
            c.send(b"\r\n.\r\n")
            assert c.reply() == b"554 virus found (#5.7.1)\r\n"
        c.close()
    with server(mode, home, tmp_path, QMAILQUEUE=str(tmp_path / "missing"), name="x") as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        assert c.cmd(b"DATA") == REPLY["data"]
        c.send(b"\r\n.\r\n")
        assert c.reply() == b"451 unable to exec qq (#4.3.0)\r\n"
        c.close()


def test_smtplib(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            code, text = s.ehlo("client.test")
            assert code == 250 and text.split(b"\n")[0] == GREETING
            assert s.has_extn("pipelining") and s.has_extn("size") and not s.has_extn("auth")
            s.sendmail("a@b.test", ["u@example.test", "v@example.test"],
                       b"Subject: smtplib\r\n\r\nline\r\n.dot\r\n")
    (msg, env), = queued(home)
    assert body_of(msg) == b"Subject: smtplib\n\nline\n.dot\n"
    assert env.endswith(b"Fa@b.test\0Tu@example.test\0Tv@example.test\0")


def test_swaks(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        r = subprocess.run(["swaks", "-s", "127.0.0.1", "-p", str(srv.port), "-t", "u@example.test",
                            "-f", "a@b.test", "--helo", "client.test", "--header", "Subject: swaks",
                            "--body", "hello"], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout
        assert re.search(rb"<-  250 ok \d+ qp \d+", r.stdout), r.stdout
        r = subprocess.run(["swaks", "-s", "127.0.0.1", "-p", str(srv.port), "-t", "u@remote.test",
                            "-f", "a@b.test", "--quit-after", "RCPT"], capture_output=True, timeout=60)
        assert b"<** 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)" in r.stdout
    (msg, _), = queued(home)
    assert b"Subject: swaks\n" in msg and b"\nhello\n" in msg


# -- TLS ----------------------------------------------------------------------

def test_starttls_openssl(mode, tmp_path, certfile):
    """The seed's `openssl s_client -starttls smtp -crlf` session."""
    home = make_home(tmp_path, cert=certfile, databytes="3000000\n")
    with server(mode, home, tmp_path, SMTPAUTH="") as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO test") == (b"250-mx.example.test\r\n250-STARTTLS\r\n250-PIPELINING\r\n"
                                       b"250-SMTPUTF8\r\n250-8BITMIME\r\n250 SIZE 3000000\r\n")
        c.close()
        script = (b"EHLO a.test\nMAIL FROM:<yourself@somedomain.net>\nRCPT TO:<u@example.test>\n"
                  b"DATA\nsubject: smtp-auth + tls test\n\nThis is the body.\n.\nQUIT\n")
        r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-crlf", "-quiet",
                            "-connect", "127.0.0.1:%d" % srv.port], input=script,
                           capture_output=True, timeout=60)
        out = r.stdout
        assert (b"250-mx.example.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250-8BITMIME\r\n"
                b"250-SIZE 3000000\r\n250 AUTH LOGIN PLAIN\r\n") in out, out
        assert re.search(rb"250 ok \d+ qp \d+\r\n221 mx.example.test\r\n$", out), out
    (msg, _), = queued(home)
    assert re.search(rb"\n  by \S+ with ESMTPS \(TLS_[A-Z0-9_]+ encrypted\); ", msg), msg


def test_starttls_misuse(mode, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        assert c.cmd(b"STARTTLS now") == b"501 Syntax error (no parameters allowed) (#5.5.4)\r\n"
        assert c.cmd(b"STARTTLS") == b"220 ready for tls\r\n"
        c.starttls()
        assert c.cmd(b"STARTTLS") == b"502 unimplemented (#5.5.1)\r\n"
        assert b"STARTTLS" not in c.cmd(b"EHLO x")
        assert c.cmd(b"QUIT") == b"221 mx.example.test\r\n"
        c.close()
        # garbage instead of a ClientHello: 454 and the end, never plaintext service
        c = connect(srv)
        assert c.cmd(b"STARTTLS") == REPLY["tlsready"]
        c.send(b"HELO this is not tls\r\n" * 20)
        out = c.rest()
        assert out.startswith(b"\x15\x03") or out.startswith(b"454 TLS connection failed: ") \
            or b"454 TLS connection failed: " in out, out
        assert b"250" not in out
        c.close()
    with server(mode, home, tmp_path, name="dis", DISABLETLS="1") as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO x") == EHLO_PLAIN
        assert c.cmd(b"STARTTLS") == REPLY["unimpl"]
        c.close()


def test_starttls_injection(mode, tmp_path, certfile):
    """CVE-2011-0411: what was pipelined after STARTTLS is thrown away, and
    the session starts afresh (RFC 3207 4.2)."""
    home = make_home(tmp_path, cert=certfile)
    with server(mode, home, tmp_path) as srv:
        for inject in (b"RSET\r\n", b"MAIL FROM:<a@b.test>\r\n", b"AUTH PLAIN AHUAcA==\r\n"):
            c = connect(srv)
            c.cmd(b"EHLO x")
            assert c.cmd(b"MAIL FROM:<before@tls.test>") == REPLY["ok"]
            c.send(b"STARTTLS\r\n" + inject)
            assert c.reply() == REPLY["tlsready"]
            s = c.starttls()
            s.settimeout(1.0)
            with pytest.raises(socket.timeout):
                s.recv(100)
            s.settimeout(10)
            assert c.cmd(b"RCPT TO:<u@example.test>") == REPLY["wantmail"]
            assert c.cmd(b"QUIT") == b"221 mx.example.test\r\n"
            c.close()
    assert todo(home) == []


def test_smtps(mode, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile)
    with server(mode, home, tmp_path, SMTPS="1", SMTPAUTH="!", FORCETLS="0") as srv:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        c = Client(srv.port, sock=ctx.wrap_socket(raw))
        assert c.reply() == b"220 mx.example.test ESMTP\r\n"
        assert c.cmd(b"EHLO x") == (b"250-mx.example.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n"
                                    b"250-8BITMIME\r\n250-SIZE 0\r\n250 AUTH LOGIN PLAIN\r\n")
        assert c.cmd(b"MAIL FROM:<a@b.test>") == b"530 Authorization required (#5.7.1) \r\n"
        c.close()


def test_starttls_behind_recordio(mode, tmp_path, certfile):
    """fds 0/1 are pipes under recordio: STARTTLS still works (memory BIOs)."""
    home = make_home(tmp_path, cert=certfile)
    e = smtpd_env(mode, home)
    from helpers import TcpServer
    srv = TcpServer(["-v"], [qbin("recordio"), qbin("qmail-smtpd")], env=e,
                    logpath=str(tmp_path / "rec.log"))
    with srv:
        try:
            c = connect(srv)
            assert c.cmd(b"STARTTLS") == REPLY["tlsready"]
            c.starttls()
            assert c.cmd(b"EHLO x").startswith(b"250-mx.example.test\r\n250-PIPELINING")
            assert c.cmd(b"MAIL FROM:<a@b.test>") == REPLY["ok"]
            assert c.cmd(b"RCPT TO:<u@example.test>") == REPLY["ok"]
            assert c.cmd(b"DATA") == REPLY["data"]
            c.send(b"Subject: tls\r\n\r\nvia pipes\r\n.\r\n")
            assert c.reply().startswith(b"250 ok ")
            assert c.cmd(b"QUIT") == b"221 mx.example.test\r\n"
            c.close()
        finally:
            os.killpg(srv.proc.pid, 9)
    assert b"< STARTTLS" in open(tmp_path / "rec.log", "rb").read()
    (msg, _), = queued(home)
    assert msg.endswith(b"Subject: tls\n\nvia pipes\n")


def test_swaks_tls(mode, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile)
    with server(mode, home, tmp_path) as srv:
        r = subprocess.run(["swaks", "-s", "127.0.0.1", "-p", str(srv.port), "--tls", "-t",
                            "u@example.test", "-f", "a@b.test", "--body", "tls body"],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout
        assert b"=== TLS started with cipher" in r.stdout
    (msg, _), = queued(home)
    assert b"with ESMTPS (" in msg


def test_blast_simple():
    b = Blast()
    out, used, act = b.feed(b"Received: a\r\nX: y\r\n\r\n.hello\r\n..\r\n.\r\nMAIL")
    assert (out, act) == (b"Received: a\nX: y\n\nhello\n.\n", 1)
    assert b.hops == 1 and used == len(b"Received: a\r\nX: y\r\n\r\n.hello\r\n..\r\n.\r\n")


def test_lean_import_preload_rehearse(tmp_path, certfile):
    """Importing the module loads no ssl/base64; preload() loads ssl and the
    certificate, qmail-queue and the checkprogram; rehearse() changes nothing."""
    home = make_home(tmp_path, cert=certfile)
    code = r"""
import os, sys
import qtools.qmail.smtpd as m
heavy = [x for x in ("ssl", "_ssl", "binascii", "base64", "hmac", "spf", "dns") if x in sys.modules]
assert not heavy, heavy
assert m.FAST_EXIT is True
cwd, fds = os.getcwd(), sorted(os.listdir("/proc/self/fd"))
m.rehearse(["qmail-smtpd"])
assert (os.getcwd(), sorted(os.listdir("/proc/self/fd"))) == (cwd, fds)
assert "ssl" not in sys.modules
m.preload(["qmail-smtpd", "qmail-queue"])
assert "ssl" in sys.modules and "binascii" in sys.modules
assert "qtools.qmail.queue" in sys.modules
assert len(m._TLS) == 1
print("ok")
"""
    r = subprocess.run([qbin("python3") if os.path.exists(qbin("python3")) else "python3",
                        "-c", code], capture_output=True, env=qenv("elide", QMAILHOME=home),
                       timeout=60)
    assert r.stdout == b"ok\n", r.stderr


def test_certificate_change_is_seen(tmp_path, certfile):
    """The parent preloaded the certificate; a new file is used at once."""
    home = make_home(tmp_path, cert=certfile)
    d = tmp_path / "new"
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=other.example.test", "-keyout", str(d / "k"), "-out", str(d / "c")],
                   check=True, capture_output=True, timeout=60)

    def peer_cn(srv):
        c = connect(srv)
        assert c.cmd(b"STARTTLS") == REPLY["tlsready"]
        s = c.starttls()
        der = s.getpeercert(binary_form=True)
        c.close()
        return der

    with server("elide", home, tmp_path) as srv:
        first = peer_cn(srv)
        pem = os.path.join(home, "control", "servercert.pem")
        with open(pem + ".new", "wb") as f:
            f.write((d / "c").read_bytes() + (d / "k").read_bytes())
        os.rename(pem + ".new", pem)
        second = peer_cn(srv)
    assert first != second
    assert b"other.example.test" in second


def test_unreadable_controls(mode, tmp_path):
    """A control file that cannot be read is a temporary error (421), at the
    start for rcpthosts, at the first lookup for morercpthosts.cdb."""
    home = make_home(tmp_path, rcpthosts=None)
    os.mkdir(os.path.join(home, "control", "rcpthosts"))
    with server(mode, home, tmp_path) as srv:
        assert srv.talk(b"") == REPLY["control"]
    os.rmdir(os.path.join(home, "control", "rcpthosts"))
    with open(os.path.join(home, "control", "rcpthosts"), "w") as f:
        f.write("example.test\n")
    open(os.path.join(home, "control", "morercpthosts.cdb"), "w").close()
    with server(mode, home, tmp_path, name="cdb") as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        assert c.cmd(b"RCPT TO:<u@example.test>") == REPLY["ok"]
        c.send(b"RCPT TO:<u@other.test>\r\n")
        assert c.rest() == b"421 unable to read controls (#4.3.0)\r\n"
        c.close()
        assert "Traceback" not in srv.log()


def test_sni_certificate(mode, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile)
    d = os.path.join(home, "control", "servercerts", "sni.example.test")
    os.makedirs(d)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=sni.example.test", "-keyout", d + "/k", "-out", d + "/c"],
                   check=True, capture_output=True, timeout=60)
    with open(d + "/servercert.pem", "wb") as f:
        f.write(open(d + "/c", "rb").read() + open(d + "/k", "rb").read())
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        assert c.cmd(b"STARTTLS") == REPLY["tlsready"]
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.sock = ctx.wrap_socket(c.sock, server_hostname="sni.example.test")
        assert b"sni.example.test" in c.sock.getpeercert(binary_form=True)
        assert c.cmd(b"HELO x") == b"250 sni.example.test\r\n"
        c.close()
