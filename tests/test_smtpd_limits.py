"""qmail-smtpd under hostile input (security-reliability 2, 6): overlong
command and AUTH lines, 100 000 recipients, NUL bytes, big messages, slow
clients.  The RSS of the qmail-smtpd process (/proc/PID/status) stays
bounded, each case ends with a clear reply, nothing is half-queued, and no
traceback reaches the client or the log."""
import base64
import re
import socket
import threading
import time

import pytest

from smtpdtools import (Client, checkpassword, connect, make_home, queued, rss_kb, server,
                        smtpd_pid, todo)

from qtools.qmail.smtpd import LINE_MAX, RCPT_MAX, REPLY

RSS_GROWTH_KB = 24 * 1024           # what one session may add to its RSS


class Sampler(threading.Thread):
    """The largest RSS of pid while the attack runs."""

    def __init__(self, pid):
        threading.Thread.__init__(self, daemon=True)
        self.pid = pid
        self.base = rss_kb(pid)
        self.peak = self.base or 0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.01):
            r = rss_kb(self.pid)
            if r is None:
                return
            self.peak = max(self.peak, r)

    def stop(self):
        self.stopped.set()
        self.join(5)
        assert self.base is not None
        assert self.peak - self.base < RSS_GROWTH_KB, (self.base, self.peak)


def blaster(sock, data, piece=1 << 20):
    """Send data from a thread; the server may close half-way."""
    def run():
        try:
            for k in range(0, len(data), piece):
                sock.sendall(data[k:k + piece])
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def no_traceback(srv):
    assert "Traceback" not in srv.log()
    assert "internal error" not in srv.log()


def test_overlong_command_line(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        assert c.cmd(b"NOOP " + b"x" * (LINE_MAX - 7)) == REPLY["ok"]      # 2048 with CRLF
        c.close()
        c = connect(srv)
        s = Sampler(smtpd_pid(srv, 2))
        s.start()
        t = blaster(c.sock, b"MAIL FROM:<" + b"a" * (64 << 20))
        assert c.reply() == b"500 line too long (#5.5.2)\r\n"
        assert c.rest() == b""
        s.stop()
        t.join(30)
        c.close()
        no_traceback(srv)


def test_100000_recipients(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv, timeout=30)
        s = Sampler(smtpd_pid(srv))
        s.start()
        assert c.cmd(b"MAIL FROM:<a@b.test>") == REPLY["ok"]
        counts = {}
        batch = 1000
        for k in range(0, 100000, batch):
            c.send(b"".join(b"RCPT TO:<u%d@example.test>\r\n" % i for i in range(k, k + batch)))
            for _ in range(batch):
                r = c.reply()
                counts[r] = counts.get(r, 0) + 1
        assert counts == {REPLY["ok"]: RCPT_MAX, REPLY["maxrcpt"]: 100000 - RCPT_MAX}
        assert c.cmd(b"DATA") == REPLY["data"]
        c.send(b"Subject: many\r\n\r\n.\r\n")
        assert c.reply().startswith(b"250 ok ")
        s.stop()
        c.close()
        no_traceback(srv)
    (_, env), = queued(home)
    assert env.count(b"\0T") == RCPT_MAX


def test_maxrcpt_control(mode, tmp_path):
    home = make_home(tmp_path, maxrcpt="2\n")
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        assert [c.cmd(b"RCPT TO:<u%d@example.test>" % i) for i in range(3)] == \
            [REPLY["ok"], REPLY["ok"], b"452 max rcpt limit exceeded (#5.7.1)\r\n"]
        c.cmd(b"RSET")
        c.cmd(b"MAIL FROM:<a@b.test>")
        assert c.cmd(b"RCPT TO:<u@example.test>") == REPLY["ok"]
        c.close()


def test_huge_auth_lines(mode, tmp_path):
    home = make_home(tmp_path)
    prog, log = checkpassword(tmp_path)
    with server(mode, home, tmp_path, args=(prog, "true"), SMTPAUTH="", FORCETLS="0") as srv:
        c = connect(srv)
        s = Sampler(smtpd_pid(srv))
        s.start()
        assert c.cmd(b"AUTH PLAIN") == REPLY["plain"]
        t = blaster(c.sock, b"A" * (10 << 20) + b"\r\n")
        assert c.reply() == REPLY["toolong"]
        assert c.rest() == b""
        s.stop()
        t.join(30)
        c.close()
        c = connect(srv)
        t = blaster(c.sock, b"AUTH PLAIN " + b"A" * (10 << 20) + b"\r\n")
        assert c.reply() == REPLY["toolong"]
        t.join(30)
        c.close()
        # just under the AUTH line limit: decoded, checked, refused
        c = connect(srv)
        assert c.cmd(b"AUTH PLAIN") == REPLY["plain"]
        line = base64.b64encode(b"\0u\0" + b"p" * 9000)
        assert c.cmd(line) == REPLY["authfail"]
        c.close()
        no_traceback(srv)
    assert not log.exists() or b"p" * 9000 in log.read_bytes()


def test_nul_bytes(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        assert c.cmd(b"HELO a\0b") == b"250 mx.example.test\r\n"
        assert c.cmd(b"\0\0\0") == REPLY["unrecog"]
        assert c.cmd(b"NO\0OP") == REPLY["unrecog"]
        assert c.cmd(b"MAIL FROM:<a\0b@evil.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<u@example.test>\0<x@remote.test>") == REPLY["ok"]
        c.cmd(b"DATA")
        c.send(b"Subject: \0nul\r\n\r\n\0\0\r\n.\r\n")
        assert c.reply().startswith(b"250 ok ")
        c.close()
        no_traceback(srv)
    (msg, env), = queued(home)
    assert env.endswith(b"Fa\0Tu@example.test\0")
    assert msg.endswith(b"Subject: \0nul\n\n\0\0\n")
    assert b"(HELO a)" in msg


def test_big_messages(mode, tmp_path):
    home = make_home(tmp_path, databytes=str(1 << 20) + "\n")
    body = b"".join(b"line %08d of a big message, with some text in it.\r\n" % i
                    for i in range((10 << 20) // 56))
    with server(mode, home, tmp_path) as srv:
        c = connect(srv, timeout=60)
        s = Sampler(smtpd_pid(srv))
        s.start()
        for _ in range(2):
            c.cmd(b"MAIL FROM:<a@b.test>")
            c.cmd(b"RCPT TO:<u@example.test>")
            assert c.cmd(b"DATA") == REPLY["data"]
            t = blaster(c.sock, b"Subject: big\r\n\r\n" + body + b".\r\n")
            assert c.reply() == b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
            t.join(60)
        s.stop()
        c.close()
        no_traceback(srv)
    assert todo(home) == []
    home2 = make_home(tmp_path / "two")
    with server(mode, home2, tmp_path, name="big") as srv:
        c = connect(srv, timeout=60)
        s = Sampler(smtpd_pid(srv))
        s.start()
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        c.cmd(b"DATA")
        t0 = time.monotonic()
        t = blaster(c.sock, b"Subject: big\r\n\r\n" + body + b".\r\n")
        assert c.reply().startswith(b"250 ok ")
        took = time.monotonic() - t0
        t.join(60)
        s.stop()
        c.close()
    (msg, _), = queued(home2)
    assert msg.endswith(body.replace(b"\r\n", b"\n"))
    assert took < 20


def test_timeouts(mode, tmp_path):
    home = make_home(tmp_path, timeoutsmtpd="1\n")
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        t0 = time.monotonic()
        assert c.rest() == b"451 timeout (#4.4.2)\r\n"
        assert 0.9 < time.monotonic() - t0 < 5
        c.close()
        # stalled half-way through DATA: nothing is queued
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        assert c.cmd(b"DATA") == REPLY["data"]
        c.send(b"Subject: stalled\r\n\r\nhalf a mess")
        assert c.rest() == REPLY["timeout"]
        c.close()
        # a client that disconnects in the middle of DATA
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        c.cmd(b"DATA")
        c.send(b"Subject: cut\r\n\r\nhalf")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.rest() == b""
        c.close()
        srv.wait_log("connection closed by the client before the quit cmd")
        no_traceback(srv)
    assert todo(home) == []
    assert not [f for f in _files(home, "intd")]


def _files(home, sub):
    import os
    out = []
    for root, _, files in os.walk(os.path.join(home, "queue", sub)):
        out += files
    return out


def test_many_sessions_idle(mode, tmp_path):
    """tcpserver -c 3: idle sessions time out, then a real client is served."""
    home = make_home(tmp_path, timeoutsmtpd="1\n")
    with server(mode, home, tmp_path, opts=("-v", "-c", "3")) as srv:
        idle = [connect(srv) for _ in range(3)]
        t0 = time.monotonic()
        c = Client(srv.port, timeout=10)
        assert c.reply() == b"220 mx.example.test ESMTP\r\n"
        assert time.monotonic() - t0 < 5
        assert c.cmd(b"QUIT") == b"221 mx.example.test\r\n"
        for i in idle:
            assert i.rest() == REPLY["timeout"]
            i.close()
        c.close()


@pytest.mark.parametrize("junk", [b"\xff\xfe\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n",
                                  b"EHLO \xc3\xa9t\xc3\xa9\r\n", b"AUTH\r\n", b"STARTTLS\r\n",
                                  b"MAIL FROM:<>\r\nRCPT TO:<>\r\nDATA\r\n.\r\n"])
def test_junk_never_traceback(tmp_path, junk):
    home = make_home(tmp_path)
    with server("elide", home, tmp_path) as srv:
        c = connect(srv)
        c.send(junk + b"QUIT\r\n")
        out = c.rest()
        c.close()
        assert out.endswith(b"221 mx.example.test\r\n"), out
        assert all(re.match(rb"\d\d\d[ -]", line) for line in out.split(b"\r\n") if line)
        no_traceback(srv)
