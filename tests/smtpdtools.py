"""Helpers for the qmail-smtpd tests: a QMAILHOME with control files and a
real queue (queue-fix), a tcpserver running qmail-smtpd on 127.0.0.1, a raw
SMTP client that reads whole replies, a self-signed certificate made once
per session, and readers for what was queued."""
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from helpers import TcpServer, qbin, qenv, wait_until
from qqtools import mkqueue

GREETING = b"mx.example.test"


@pytest.fixture(scope="session")
def certfile(tmp_path_factory):
    """An EC P-256 self-signed certificate and its key in one PEM file."""
    d = tmp_path_factory.mktemp("cert")
    key, crt = d / "ec.key", d / "ec.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=mail.example.test", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=60)
    pem = d / "servercert.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return str(pem)


def make_home(tmp_path, cert=None, **controls):
    """QMAILHOME with control/me, rcpthosts (example.test), the given control
    files (name=text, None to leave out) and a queue."""
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True, exist_ok=True)
    files = {"me": "mx.example.test\n", "rcpthosts": "example.test\n.sub.example.test\n"}
    files.update(controls)
    for name, text in files.items():
        if text is not None:
            p = home / "control" / name
            p.write_bytes(text if isinstance(text, bytes) else text.encode())
    if cert:
        (home / "control" / "servercert.pem").write_bytes(open(cert, "rb").read())
    mkqueue(str(home))
    return str(home)


def smtpd_env(mode, home, **extra):
    return qenv(mode, QMAILHOME=home, QTOOLS_AUTHSLEEP="0.2", **extra)


@contextlib.contextmanager
def server(mode, home, tmp_path, args=(), env=None, opts=("-v",), name="smtpd", **extra):
    """tcpserver -v ... qmail-smtpd args; the whole process group is killed
    at the end.  extra: environment for qmail-smtpd."""
    e = env or smtpd_env(mode, home, **extra)
    with TcpServer(list(opts), [qbin("qmail-smtpd")] + list(args), env=e,
                   logpath=str(tmp_path / (name + ".log"))) as srv:
        yield srv


class Client:
    """A raw SMTP client: exact bytes out, whole replies in."""

    def __init__(self, port, timeout=10, sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def readline(self):
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def reply(self):
        """One reply, all its lines, as bytes."""
        out = b""
        while True:
            line = self.readline()
            out += line
            if len(line) < 4 or line[3:4] != b"-":
                return out

    def cmd(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def rest(self):
        """Everything until the server closes."""
        out = self.buf
        self.buf = b""
        while True:
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return out

    def starttls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        assert self.buf == b""
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mail.example.test")
        return self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def connect(srv, timeout=10):
    c = Client(srv.port, timeout)
    greet = c.reply()
    assert greet == b"220 " + GREETING + b" ESMTP\r\n", greet
    return c


def todo(home):
    """Message numbers in queue/todo."""
    out = []
    for root, _, files in os.walk(os.path.join(home, "queue", "todo")):
        out += files
    return sorted(out)


def queued(home):
    """[(message bytes, envelope bytes)] of everything in queue/todo."""
    out = []
    q = os.path.join(home, "queue")
    for n in todo(home):
        mess = os.path.join(q, "mess", str(int(n) % 23), n)
        with open(mess, "rb") as f:
            m = f.read()
        for root, _, files in os.walk(os.path.join(q, "todo")):
            if n in files:
                with open(os.path.join(root, n), "rb") as f:
                    e = f.read()
        out.append((m, e))
    return out


def body_of(message):
    """The message without qmail-queue's and qmail-smtpd's Received lines."""
    lines = message.split(b"\n")
    assert lines[0].startswith(b"Received: (qmail ")
    assert lines[1].startswith(b"Received: from ")
    assert lines[2].startswith(b"  by ")
    return b"\n".join(lines[3:])


def smtpd_pid(srv, n=1):
    """The pid of the n-th qmail-smtpd (tcpserver -v: `pid P from IP`)."""
    def find():
        pids = [int(line.split()[2]) for line in srv.log().splitlines()
                if line.startswith("tcpserver: pid ")]
        return pids[n - 1] if len(pids) >= n else None
    return wait_until(find, 10, srv.proc, "tcpserver pid line")


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def checkpassword(tmp_path):
    """A checkpassword program: records fd 3 in $CPLOG, then exits 0 for
    password `good`, 111 for `temp`, 1 otherwise (then runs argv[1:] on 0)."""
    p = tmp_path / "checkpw"
    log = tmp_path / "fd3.log"
    p.write_text("#!%s\n" % sys.executable + """
import os, sys
data = b""
while True:
    d = os.read(3, 512)
    if not d:
        break
    data += d
with open(%r, "ab") as f:
    f.write(data + b"|")
parts = data.split(b"\\0")
pw = parts[1] if len(parts) > 1 else b""
chal = parts[2] if len(parts) > 2 else b""
if chal:
    import hmac
    ok = pw == hmac.new(b"good", chal, "md5").hexdigest().encode()
else:
    ok = pw == b"good"
if ok:
    os.execvp(sys.argv[1], sys.argv[1:])
sys.exit(111 if pw == b"temp" else 1)
""" % str(log))
    p.chmod(0o755)
    return str(p), log


def fake_queue(tmp_path, code=0, custom=b""):
    """A qmail-queue stand-in that reads both descriptors and exits code
    (writing custom to fd 4 first)."""
    p = tmp_path / ("fakeqq%d" % code)
    p.write_text("#!%s\n" % sys.executable + """
import os
def readall(fd):
    out = b""
    while True:
        d = os.read(fd, 65536)
        if not d:
            return out
        out += d
readall(0); readall(1)
if %r:
    os.write(4, %r)
os._exit(%d)
""" % (custom, custom, code))
    p.chmod(0o755)
    return str(p)


def until(pred, timeout=10, what="condition"):
    return wait_until(pred, timeout, None, what)


def elapsed(fn):
    t = time.monotonic()
    r = fn()
    return r, time.monotonic() - t
