"""mconnect and mconnect-io against Debian's (the script /usr/bin/mconnect runs
/usr/bin/tcpclient -RHl0 -- host port /usr/bin/mconnect-io).

The server is a qtools tcpserver running a small SMTP-like responder that
echoes what it received byte for byte, so the CRs mconnect adds are visible.
"""
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import TcpServer, qbin, qenv

RESPONDER = r'''
import sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
out.write(b"220 test ESMTP\r\n"); out.flush()
for line in inp:
    out.write(b"250 got " + repr(line).encode() + b"\r\n"); out.flush()
    if line.upper().startswith(b"QUIT"):
        out.write(b"221 bye\r\n"); out.flush()
        break
'''
SESSION = b"HELO me\nMAIL FROM:<a@b>\r\nQUIT\n"
EXPECT = (b"220 test ESMTP\r\n250 got b'HELO me\\r\\n'\r\n250 got b'MAIL FROM:<a@b>\\r\\r\\n'\r\n"
          b"250 got b'QUIT\\r\\n'\r\n221 bye\r\n")


@pytest.fixture
def server(mode, tmp_path):
    script = tmp_path / "responder.py"
    script.write_text(RESPONDER)
    with TcpServer(["-H", "-R", "-l", "0"], [sys.executable, str(script)], env=qenv(mode),
                   logpath=str(tmp_path / "srv.log")) as srv:
        try:
            yield srv
        finally:
            os.killpg(srv.proc.pid, signal.SIGKILL)


def run(binary, args, env, inp=SESSION):
    p = subprocess.run([binary] + args, input=inp, capture_output=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "", "0"])
def test_session_same_as_c(server, cbin, mode, host):
    q = run(qbin("mconnect"), [host, str(server.port)], qenv(mode))
    assert q == (0, EXPECT, b"")
    assert run(cbin("mconnect"), [host, str(server.port)], qenv(mode)) == q


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_refused_same_as_c(cbin, mode):
    port = free_port()
    q = run(qbin("mconnect"), ["127.0.0.1", str(port)], qenv(mode))
    assert q == (111, b"", b"tcpclient: unable to connect to 127.0.0.1 port %d:"
                           b" connection refused\n" % port)
    assert run(cbin("mconnect"), ["127.0.0.1", str(port)], qenv(mode)) == q


def test_server_hangup_ends_it(mode, tmp_path):
    """The server closes while our input is still open: mconnect exits 0."""
    with TcpServer(["-H", "-R", "-l", "0"], ["sh", "-c", "echo 554 go away"], env=qenv(mode),
                   logpath=str(tmp_path / "srv.log")) as srv:
        p = subprocess.Popen([qbin("mconnect"), "127.0.0.1", str(srv.port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=qenv(mode), start_new_session=True)
        try:
            assert p.wait(10) == 0
            assert p.stdout.read() == b"554 go away\n"
            assert p.stderr.read() == b""
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            os.killpg(srv.proc.pid, signal.SIGKILL)
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()


@pytest.mark.parametrize("which", ["c", "q"])
def test_mconnect_io_on_a_socketpair(cbin, mode, which):
    """mconnect-io by itself: fd 6/7 are one end of a socketpair."""
    binary = cbin("mconnect-io") if which == "c" else qbin("mconnect-io")
    ours, theirs = socket.socketpair()
    n = theirs.fileno()
    p = None
    try:
        # a trampoline moves our end of the pair to fds 6 and 7, as tcpclient would
        tramp = ("import os, sys; os.dup2(%d, 6); os.dup2(6, 7); os.close(%d);"
                 " os.execv(sys.argv[1], sys.argv[1:])" % (n, n))
        p = subprocess.Popen([sys.executable, "-c", tramp, binary],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=qenv(mode), pass_fds=(n,),
                             start_new_session=True)
        theirs.close()
        p.stdin.write(b"one\ntwo\r\nthree")
        p.stdin.close()                         # no half-close follows: the server decides
        got = b""
        deadline = time.monotonic() + 10
        while got != b"one\r\ntwo\r\r\nthree" and time.monotonic() < deadline:
            if select.select([ours], [], [], 0.5)[0]:
                got += ours.recv(4096)
        assert got == b"one\r\ntwo\r\r\nthree"
        ours.sendall(b"220 from the server\n\x00\xff")
        ours.shutdown(socket.SHUT_WR)
        assert p.wait(10) == 0
        assert p.stdout.read() == b"220 from the server\n\x00\xff"
        assert p.stderr.read() == b""
    finally:
        if p is not None:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            p.stdout.close()
            p.stderr.close()
        ours.close()
