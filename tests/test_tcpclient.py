"""tcpclient against Debian's /usr/bin/tcpclient (ucspi-tcp 0.88).

The client runs against a qtools tcpserver and a C tcpserver; its program
sees the socket on fds 6 and 7 and the TCP* environment.  Messages and exit
codes (usage, unable to connect, no IP address, unable to run) are compared
with the C binary.  Names are looked up in a private dnsmasq.
"""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from dnstest import Dnsmasq
from helpers import CBIN, TcpServer, qbin, qenv

USAGE = (b"tcpclient: usage: tcpclient [ -hHrRdDqQv ] [ -i localip ] [ -p localport ]"
         b" [ -T timeoutconn ] [ -l localname ] [ -t timeoutinfo ] host port program\n")

# the client's program: environment, a line from the server, a reply, fds 6 and 7
CLIENT = ("env | grep -E '^(PROTO|TCP)' | sort; read -r l <&6; echo \"server: $l\";"
          " echo ping >&7; read -r l <&6; echo \"server: $l\";"
          " a=$(readlink /proc/$$/fd/6); b=$(readlink /proc/$$/fd/7);"
          " case $a in socket:*) [ \"$a\" = \"$b\" ] && echo fds 6 and 7: one socket;; esac")
SERVER = ["sh", "-c", "echo hello; read -r l; echo \"got $l\""]


def free_port(ip="127.0.0.1"):
    s = socket.socket()
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tcpclient(which):
    return os.path.join(CBIN, "tcpclient") if which == "c" else qbin("tcpclient")


def run(binary, args, env, timeout=30):
    p = subprocess.run([binary] + args, capture_output=True, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def masked(res, *ports):
    rc, out, err = res
    for i, port in enumerate(ports):
        out = out.replace(b"=%d\n" % port, b"=PORT%d\n" % i)
        err = err.replace(b"port %d" % port, b"port PORT%d" % i)
    out = re.sub(rb"TCPLOCALPORT=\d+", b"TCPLOCALPORT=N", out)
    return rc, out, err


@pytest.fixture(params=["q", "c"])
def server(request, mode, tmp_path):
    binary = qbin("tcpserver") if request.param == "q" else os.path.join(CBIN, "tcpserver")
    with TcpServer(["-H", "-R", "-l", "0"], SERVER, env=qenv(mode), binary=binary,
                   logpath=str(tmp_path / "srv.log")) as srv:
        try:
            yield srv
        finally:
            os.killpg(srv.proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("flags", [["-RHl0"], ["-v", "-R", "-H", "-l", "local.name", "-D"],
                                   ["-Rhl0"], ["-RH", "-d", "-t", "5"]])
def test_env_and_fds(server, mode, flags):
    env = qenv(mode)
    args = flags + ["127.0.0.1", str(server.port), "sh", "-c", CLIENT]
    c = masked(run(tcpclient("c"), args, env), server.port)
    q = masked(run(tcpclient("q"), args, env), server.port)
    assert q == c
    rc, out, err = q
    assert rc == 0
    assert b"PROTO=TCP\n" in out and b"TCPREMOTEIP=127.0.0.1\n" in out
    assert b"TCPREMOTEPORT=PORT0\n" in out and b"TCPLOCALIP=127.0.0.1\n" in out
    assert b"TCPREMOTEINFO" not in out
    assert out.endswith(b"server: hello\nserver: got ping\nfds 6 and 7: one socket\n")
    assert err == (b"tcpclient: connected to 127.0.0.1 port PORT0\n" if "-v" in flags else b"")


def test_local_address_and_port(server, mode):
    for which in ("c", "q"):
        lport = free_port("127.0.0.2")
        rc, out, err = run(tcpclient(which), ["-RHl0", "-i", "127.0.0.2", "-p", str(lport),
                                              "127.0.0.1", str(server.port), "sh", "-c", CLIENT],
                           qenv(mode))
        assert (rc, err) == (0, b""), which
        assert b"TCPLOCALIP=127.0.0.2\nTCPLOCALPORT=%d\n" % lport in out


@pytest.mark.parametrize("args", [
    [], ["-x"], ["-q"], ["-q", "1", "2"], ["-v"], ["127.0.0.1"], ["127.0.0.1", "25"],
    ["-i", "1.2.3", "127.0.0.1", "1", "true"], ["-i"], ["-T"],
    ["127.0.0.1", "nosuchport", "true"],
    ["1", "2", "3", "-q"], ["1.2.3", "25", "true"], ["-q", "1.2.3", "25", "true"],
    ["-i", "192.0.2.99", "127.0.0.1", "CLOSED", "true"],
    ["127.0.0.1", "CLOSED", "true"], ["-q", "127.0.0.1", "CLOSED", "true"],
    ["", "CLOSED", "true"], ["0", "CLOSED", "true"], ["-v", "0", "CLOSED", "true"],
    ["127.0.0.2.127.0.0.3", "CLOSED", "true"],
])
def test_messages_same_as_c(cbin, mode, args):
    port = str(free_port())
    args = [port if a == "CLOSED" else a for a in args]
    c = run(cbin("tcpclient"), args, qenv(mode))
    q = run(qbin("tcpclient"), args, qenv(mode))
    assert q == c
    assert q[0] in (100, 111)


def test_refused_message(mode):
    port = free_port()
    assert run(qbin("tcpclient"), ["127.0.0.1", str(port), "true"], qenv(mode)) == (
        111, b"", b"tcpclient: unable to connect to 127.0.0.1 port %d: connection refused\n" % port)


def test_unable_to_run(server, cbin, mode):
    args = ["-RHl0", "127.0.0.1", str(server.port), "nonexist-program"]
    c = run(cbin("tcpclient"), args, qenv(mode))
    q = run(qbin("tcpclient"), args, qenv(mode))
    assert q == c == (111, b"", b"tcpclient: fatal: unable to run nonexist-program:"
                                b" file does not exist\n")


def test_several_addresses(mode):
    """djbdns reads "a.b.c.d.e.f.g.h" as two addresses: the first refuses,
    the second answers."""
    port = free_port("127.0.0.6")
    srv = subprocess.Popen([qbin("tcpserver"), "-1", "-HRl0", "127.0.0.6", str(port)] + SERVER,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=qenv(mode),
                           start_new_session=True)
    try:
        assert srv.stdout.readline() == b"%d\n" % port
        args = ["-RHl0", "127.0.0.5.127.0.0.6", str(port), "sh", "-c", CLIENT]
        c = masked(run(tcpclient("c"), args, qenv(mode)), port)
        q = masked(run(tcpclient("q"), args, qenv(mode)), port)
        assert q == c
        assert q[2] == b"tcpclient: unable to connect to 127.0.0.5 port PORT0: connection refused\n"
        assert b"TCPREMOTEIP=127.0.0.6\n" in q[1] and q[0] == 0
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait()
        srv.stdout.close()


def test_connect_timeout(cbin, mode):
    """A listener whose backlog is full drops SYNs: -T x+y gives up in time.
    127.0.0.2 refuses at once; 127.0.0.1 times out in the first round (1 s),
    is tried again in the second (1 s) and only then reported."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    held = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            held.append(s)
        args = ["-T1+1", "127.0.0.2.127.0.0.1", str(port), "true"]
        want = (111, b"", b"tcpclient: unable to connect to 127.0.0.2 port %d: connection refused\n"
                b"tcpclient: unable to connect to 127.0.0.1 port %d: timed out\n" % (port, port))
        for binary in ([cbin("tcpclient")] if mode == "elide" else []) + [qbin("tcpclient")]:
            t0 = time.monotonic()
            assert run(binary, args, qenv(mode)) == want, binary
            assert 1.8 < time.monotonic() - t0 < 6
    finally:
        for s in held:
            s.close()
        lst.close()


# -- names -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    with Dnsmasq(tmp_path_factory.mktemp("dns"), [
            "host-record=server.test,127.0.0.1",
            "address=/noname.test/127.0.0.7",      # no PTR, unlike host-record
            "ptr-record=1.0.0.127.in-addr.arpa,loop.example.test"]) as d:
        yield d


def test_names(dns, mode, tmp_path):
    """A name is looked up; TCPREMOTEHOST/TCPLOCALHOST come from PTR records
    and are set but empty when there is none."""
    env = qenv(mode, DNSCACHEIP=dns.dnscacheip)
    port = free_port("127.0.0.7")
    srv = subprocess.Popen([qbin("tcpserver"), "-1", "-HRl0", "127.0.0.7", str(port)] + SERVER,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                           start_new_session=True)
    try:
        assert srv.stdout.readline() == b"%d\n" % port
        with TcpServer(["-H", "-R", "-l", "0"], SERVER, env=env) as srv1:
            try:
                rc, out, err = run(qbin("tcpclient"), ["-R", "server.test", str(srv1.port),
                                                       "sh", "-c", CLIENT], env)
                assert (rc, err) == (0, b"")
                assert b"TCPLOCALHOST=loop.example.test\n" in out
                assert b"TCPREMOTEHOST=loop.example.test\n" in out
                assert b"TCPREMOTEIP=127.0.0.1\n" in out
            finally:
                os.killpg(srv1.proc.pid, signal.SIGKILL)
        rc, out, err = run(qbin("tcpclient"), ["-R", "noname.test", str(port),
                                               "sh", "-c", CLIENT], env)
        assert (rc, err) == (0, b"")
        assert b"TCPREMOTEHOST=\n" in out and b"TCPREMOTEIP=127.0.0.7\n" in out
        if dns.port53:
            c = run(cbin_path("tcpclient"), ["-R", "noname.test", str(port),
                                             "sh", "-c", CLIENT], env)
            assert masked(c) == masked((rc, out, err))
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait()
        srv.stdout.close()


def cbin_path(name):
    return os.path.join(CBIN, name)


@pytest.mark.parametrize("host,err", [
    ("nosuch.test", b"tcpclient: fatal: no IP address for nosuch.test\n"),
    ("x.servfail.test", b"tcpclient: fatal: temporarily unable to figure out IP address for"
                        b" x.servfail.test: temporary failure\n"),
])
def test_name_failures(dns, mode, host, err):
    env = qenv(mode, DNSCACHEIP=dns.dnscacheip)
    assert run(qbin("tcpclient"), ["-RHl0", host, "25", "true"], env) == (111, b"", err)
    if dns.port53 and "servfail" not in host:          # djbdns retries SERVFAIL for ~11 s
        assert run(cbin_path("tcpclient"), ["-RHl0", host, "25", "true"], env) == (111, b"", err)
