"""recordio against Debian's /usr/bin/recordio (inventory 1.5, check I12).

The log format is compared line for line with the C binary (pid masked);
binary data and a STARTTLS session behind tcpserver must pass unchanged, and
the log must hold exactly the bytes that passed, one atomic line at a time.
"""
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from helpers import TcpServer, qbin, qenv, wait_until

LINE = re.compile(rb"(\d+) ([<>]) (?:\[EOF\]|(.*)([ +]))\Z", re.S)


def parse_log(log):
    """[(pid, direction, text or None for EOF, marker)] from a recordio log."""
    out = []
    assert log.endswith(b"\n") or not log
    for line in log.split(b"\n")[:-1]:
        m = LINE.match(line)
        assert m, line
        out.append((int(m.group(1)), m.group(2), m.group(3), m.group(4)))
    return out


def rebuild(entries, direction):
    """The byte stream that recordio saw in one direction."""
    data = b""
    for _, d, text, marker in entries:
        if d == direction and text is not None:
            data += text + (b"\n" if marker == b" " else b"")
    return data


def mask(log):
    return re.sub(rb"(?m)^\d+ ", b"x ", log)


def feed_and_log(binary, env, chunks, tmp_path, name, prog=("cat",)):
    """Run `recordio prog` with a stdin pipe; send each chunk and wait until the
    program's output for it has been logged, then close stdin.  So packet
    boundaries and the order of lines are the same for every implementation,
    with no sleeps."""
    logpath = tmp_path / (name + ".log")
    with open(logpath, "wb") as log:
        p = subprocess.Popen([binary] + list(prog), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=log, env=env,
                             start_new_session=True)
    try:
        sent = b""
        for chunk in chunks:
            p.stdin.write(chunk)
            p.stdin.flush()
            sent += chunk
            # log lines are single writes: the file always ends with a whole line
            wait_until(lambda: rebuild(parse_log(logpath.read_bytes()), b">") == sent, 10, None,
                       "output of %r logged" % chunk)
        p.stdin.close()
        out = p.stdout.read()
        rc = p.wait(10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdout.close()
    return rc, out, logpath.read_bytes(), p.pid


def test_usage(cbin, mode):
    for b in (cbin("recordio"), qbin("recordio")):
        p = subprocess.run([b], capture_output=True, env=qenv(mode), timeout=10)
        assert (p.returncode, p.stdout, p.stderr) == (
            100, b"", b"recordio: usage: recordio program [ arg ... ]\n")


def test_unable_to_run(cbin, mode):
    res = []
    for b in (cbin("recordio"), qbin("recordio")):
        p = subprocess.run([b, "nonexist-program"], capture_output=True, env=qenv(mode),
                           stdin=subprocess.DEVNULL, timeout=10)
        res.append((p.returncode, p.stdout, sorted(mask(p.stderr).splitlines())))
    assert res[0] == res[1]
    assert res[1][0] == 111
    assert b"recordio: fatal: unable to run nonexist-program: file does not exist" in res[1][2]


@pytest.mark.parametrize("chunks", [
    [b"a\nb\npartial"],                              # I12
    [b"test\nline2\n", b"more", b" and the end\n"],
    [b"x" * 301 + b"\n"],                            # 256 + 45: two lines
    [b"\n\n\n"],
])
def test_same_as_c(cbin, mode, tmp_path, chunks):
    c = feed_and_log(cbin("recordio"), qenv(mode), chunks, tmp_path, "c")
    q = feed_and_log(qbin("recordio"), qenv(mode), chunks, tmp_path, "q")
    assert c[:2] == q[:2] == (0, b"".join(chunks))
    assert mask(q[2]) == mask(c[2])


def test_format(mode, tmp_path):
    rc, out, log, pid = feed_and_log(qbin("recordio"), qenv(mode), [b"x" * 301 + b"\nab"],
                                     tmp_path, "q")
    assert log == (b"%d < " % pid + b"x" * 256 + b"+\n" +
                   b"%d < " % pid + b"x" * 45 + b" \n" +
                   b"%d < ab+\n" % pid +
                   b"%d > " % pid + b"x" * 256 + b"+\n" +
                   b"%d > " % pid + b"x" * 45 + b" \n" +
                   b"%d > ab+\n" % pid +
                   b"%d < [EOF]\n" % pid + b"%d > [EOF]\n" % pid)


def test_pid_is_the_programs(mode):
    """The parent becomes the program: the logged pid is the program's."""
    p = subprocess.run([qbin("recordio"), "sh", "-c", "echo $$"], capture_output=True,
                       stdin=subprocess.DEVNULL, env=qenv(mode), timeout=10)
    pid = int(p.stdout)
    entries = parse_log(p.stderr)
    assert {e[0] for e in entries} == {pid}
    assert (pid, b">", b"%d" % pid, b" ") in entries


def test_binary_safe(mode):
    data = bytes(range(256)) * 40 + b"\r\n.\r\n\0\xff"
    p = subprocess.run([qbin("recordio"), "cat"], input=data, capture_output=True,
                       env=qenv(mode), timeout=30)
    assert (p.returncode, p.stdout) == (0, data)
    entries = parse_log(p.stderr)
    assert rebuild(entries, b"<") == data
    assert rebuild(entries, b">") == data
    pid = entries[0][0]
    assert max(len(t) for _, _, t, _ in entries if t is not None) <= 256
    assert entries.count((pid, b"<", None, None)) == entries.count((pid, b">", None, None)) == 1


def test_copier_exits_at_end_of_output(mode):
    """The program exits while our end of its input stays open: the copier
    still sees the end of the output, logs it and exits (closing stdout)."""
    p = subprocess.Popen([qbin("recordio"), "sh", "-c", "echo bye"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=qenv(mode),
                         start_new_session=True)
    try:
        out = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.5)[0]:
                d = os.read(p.stdout.fileno(), 4096)
                if not d:
                    break
                out += d
        else:
            raise AssertionError("copier did not exit")
        assert out == b"bye\n"
        assert p.wait(10) == 0
        log = p.stderr.read()
        assert log == b"%d > bye \n%d > [EOF]\n" % (p.pid, p.pid)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()


def test_lines_are_atomic(mode, tmp_path):
    """Several recordio processes writing one log: no line is ever torn."""
    logpath = tmp_path / "shared.log"
    fd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    procs = []
    try:
        for i in range(4):
            data = (bytes([65 + i]) * 250 + b"\n") * 200
            procs.append(subprocess.Popen([qbin("recordio"), "cat"], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=fd,
                                          env=qenv(mode), start_new_session=True))
            procs[-1].data = data
        for p in procs:
            p.stdin.write(p.data)
            p.stdin.close()
        for p in procs:
            assert p.wait(30) == 0
            # the copier outlives the program by a moment: wait for its last line
            wait_until(lambda: b"%d > [EOF]\n" % p.pid in logpath.read_bytes(), 10, None,
                       "end of output logged")
    finally:
        os.close(fd)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    entries = parse_log(logpath.read_bytes())
    for p in procs:
        mine = [e for e in entries if e[0] == p.pid]
        assert rebuild(mine, b"<") == p.data
        assert rebuild(mine, b">") == p.data


# -- a STARTTLS session behind tcpserver + recordio --------------------------------

TLS_PEER = r'''
import os, ssl, sys

def readline():
    buf = b""
    while not buf.endswith(b"\n"):
        c = os.read(0, 1)          # byte by byte: never read past the command
        if not c:
            sys.exit(1)
        buf += c
    return buf

def send(data):
    while data:
        data = data[os.write(1, data):]

send(b"220 tls test\r\n")
if readline() != b"STARTTLS\r\n":
    sys.exit(2)
send(b"220 go ahead\r\n")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_side=True)

def pump(fn):
    while True:
        try:
            return fn()
        except ssl.SSLWantReadError:
            send(out.read())
            d = os.read(0, 65536)
            if d:
                inc.write(d)
            else:
                inc.write_eof()

pump(tls.do_handshake)
send(out.read())
data = b""
while not data.endswith(b"\n"):
    data += pump(lambda: tls.read(65536))
tls.write(b"PONG " + data)
send(out.read())
try:
    pump(tls.unwrap)
except ssl.SSLError:
    pass
send(out.read())
'''


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=30)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_starttls_through_recordio(mode, tmp_path, cert):
    peer = tmp_path / "peer.py"
    peer.write_text(TLS_PEER)
    logpath = tmp_path / "log"
    payload = b"PING " + bytes(range(1, 256)).replace(b"\n", b"") + b"\n"
    with TcpServer(["-H", "-R", "-l", "0"],
                   ["recordio", sys.executable, str(peer), cert[0], cert[1]],
                   env=qenv(mode), logpath=str(logpath)) as srv:
        try:
            raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            f = raw.makefile("rb", buffering=0)

            def readline():
                line = b""
                while not line.endswith(b"\n"):
                    c = f.read(1)
                    assert c, line
                    line += c
                return line
            assert readline() == b"220 tls test\r\n"
            raw.sendall(b"STARTTLS\r\n")
            assert readline() == b"220 go ahead\r\n"
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(cert[0])
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(payload)
            got = b""
            while not got.endswith(b"\n"):
                d = tls.recv(65536)
                assert d, got
                got += d
            assert got == b"PONG " + payload
            tls.unwrap()
            tls.close()
            wait_until(lambda: b"> [EOF]\n" in logpath.read_bytes(), 10, srv.proc,
                       "end of output logged")
        finally:
            os.killpg(srv.proc.pid, signal.SIGKILL)
    entries = parse_log(logpath.read_bytes())
    assert len({e[0] for e in entries}) == 1
    into = rebuild(entries, b"<")
    outof = rebuild(entries, b">")
    # the cleartext part, then a TLS handshake record (0x16 0x03) in both directions
    assert into.startswith(b"STARTTLS\r\n\x16\x03")
    assert outof.startswith(b"220 tls test\r\n220 go ahead\r\n\x16\x03")
    assert payload not in into and b"PONG" not in outof       # it really was encrypted


def test_recording_a_qtools_program_under_tcpserver(mode, tmp_path):
    """tcpserver -> recordio -> rblsmtpd: preloaded and elided, or exec'd, the
    log and the client see the same thing, and the pid is the connection's."""
    logpath = tmp_path / "log"
    env = qenv(mode, RBLSMTPD="-blocked")
    with TcpServer(["-v", "-H", "-R", "-l", "0"], ["recordio", "rblsmtpd", "-t0", "true"],
                   env=env, logpath=str(logpath)) as srv:
        try:
            assert srv.talk() == b"553 blocked\r\n"
            srv.wait_log(" status 0\n")
            wait_until(lambda: b"> [EOF]\n" in logpath.read_bytes(), 10, srv.proc, "EOF logged")
        finally:
            os.killpg(srv.proc.pid, signal.SIGKILL)
    log = logpath.read_bytes()
    pid = int(re.search(rb"tcpserver: pid (\d+) from", log).group(1))
    assert b"rblsmtpd: 127.0.0.1 pid %d: 553 blocked\n" % pid in log
    assert b"%d > 553 blocked\r \n" % pid in log
    assert b"%d > [EOF]\n" % pid in log
    assert b"tcpserver: end %d status 0\n" % pid in log
