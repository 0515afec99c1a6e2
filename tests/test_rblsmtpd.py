"""rblsmtpd against Debian's /usr/bin/rblsmtpd (inventory 1.6, check I13).

The same input goes to both; stdout, stderr (pid masked) and the exit code
must be identical.  RBL lookups use a private dnsmasq (tests/dnstest.py): as
root it sits on 127.0.0.N:53, so the C binary can be compared there too.
Under tcpserver, RBLSMTPD comes from a tcprules cdb: the connection-rate
benchmark's path (`rblsmtpd -t0 true`, one `553 blocked` line per connection).
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from dnstest import Dnsmasq
from helpers import TcpServer, qbin, qenv, wait_until
from qtools.ucspi import rblsmtpd

MODES = ("elide", "noelide", "reuse")    # conftest: the reuse mode too

SESSION = (b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nhelp\r\nNOOP\r\nrset x\r\nehlo\r\n"
           b"DATA\r\nqu\0it\r\nquit\0x\r\nQuIt\r\r\nhelo\tx\r\n\r\n\nquit \r\nHELO after\r\n")
USAGE = (b"rblsmtpd: usage: rblsmtpd [ -b ] [ -R ] [ -t timeout ] [ -r base ] [ -a base ]"
         b" smtpd [ arg ... ]\n")
RAN = ["sh", "-c", "echo ran; cat >/dev/null"]

RECORDS = [
    'txt-record=4.3.2.1.rbl.test,"listed here"',
    'txt-record=4.3.2.1.multi.test,"first part","second"',
    'txt-record=4.3.2.1.empty.test,""',
    'txt-record=4.3.2.1.long.test,"%s"' % ("xyz" * 80),
    'host-record=4.3.2.1.white.test,127.0.0.2',
    'txt-record=1.0.0.127.rbl.test,"local listed"',
]


def mask(b):
    return re.sub(rb"pid \d+:", b"pid X:", b)


def run(binary, args, env, inp=SESSION, timeout=30):
    p = subprocess.run([binary] + args, input=inp, capture_output=True, env=env,
                       timeout=timeout)
    return p.returncode, p.stdout, mask(p.stderr)


def both(cbin, mode, args, inp=SESSION, **extra):
    """(C result, qtools result) for the same command line and environment."""
    extra.setdefault("TCPREMOTEIP", "1.2.3.4")
    env = qenv(mode, **extra)
    return (run(cbin("rblsmtpd"), args, env, inp), run(qbin("rblsmtpd"), args, env, inp))


@pytest.mark.parametrize("value,args", [
    ("-Go away", ["true"]),
    ("Error", ["true"]),
    ("", RAN),
    (None, RAN),
    ("-Go away", ["-t0", "true"]),
    ("Error", ["-t0", "true"]),
    ("-", ["true"]),
    ("x\x01\tyé~\x7f", ["-t0", "true"]),
    ("-" + "a" * 250, ["-t0", "true"]),
    ("-" + "b" * 250, ["true"]),
    ("-x", ["-b", "-B", "-c", "-C", "true"]),
    ("-x", ["-tabc", "true"]),
    ("-x", []),
    ("-x", ["-x", "true"]),
    ("-x", ["-t"]),
    ("-x", ["nonexist-program"]),
    ("", ["nonexist-program"]),
    ("-x", ["-r", "rbl.test", "true"]),      # decided by $RBLSMTPD: no lookup is made
])
def test_same_as_c(cbin, mode, value, args):
    c, q = both(cbin, mode, args, RBLSMTPD=value)
    assert q == c


def test_transcript(mode):
    rc, out, err = run(qbin("rblsmtpd"), ["true"],
                       qenv(mode, TCPREMOTEIP="1.2.3.4", RBLSMTPD="-Go away"))
    G, OK, BYE, NO = rblsmtpd.GREET, rblsmtpd.OK, rblsmtpd.BYE, b"553 Go away\r\n"
    assert rc == 0
    assert err == b"rblsmtpd: 1.2.3.4 pid X: 553 Go away\n"
    # HELO MAIL RCPT help NOOP rset ehlo DATA qu\0it quit\0x QuIt\r\r helo\tx "" "" quit
    assert out == G + OK + OK + NO + NO + OK + OK + OK + NO + NO + NO + NO + NO + NO + NO + BYE


def test_log_line_and_unset_ip(mode):
    rc, out, err = run(qbin("rblsmtpd"), ["-t0", "true"], qenv(mode, TCPREMOTEIP=None,
                                                               RBLSMTPD="-no ip"))
    assert (rc, out, err) == (0, b"553 no ip\r\n", b"rblsmtpd:  pid X: 553 no ip\n")


def test_reverse():
    assert rblsmtpd.reverse("1.2.3.4") == "4.3.2.1."
    assert rblsmtpd.reverse("") == ""
    assert rblsmtpd.reverse("1..2") == "2..1."
    assert rblsmtpd.reverse("1.2.") == ".2.1."
    assert rblsmtpd.reverse(".1") == "1."           # the leading empty label is dropped


def test_long_line_is_bounded(mode):
    """A huge command line is rejected like any unknown verb; the line after
    it still works."""
    inp = b"helo" + b"x" * 200000 + b"\r\nquit " + b"y" * 5000 + b"\r\n"
    rc, out, err = run(qbin("rblsmtpd"), ["true"], qenv(mode, TCPREMOTEIP="1.2.3.4",
                                                        RBLSMTPD="-no"), inp)
    assert (rc, out) == (0, rblsmtpd.GREET + b"553 no\r\n" + rblsmtpd.BYE)


@pytest.mark.parametrize("binary", ["c", "q"])
def test_timeout_ends_dialogue(cbin, mode, binary):
    """-t1: the session is dropped after a second, exit 0, with only the greeting."""
    path = cbin("rblsmtpd") if binary == "c" else qbin("rblsmtpd")
    env = qenv(mode, TCPREMOTEIP="1.2.3.4", RBLSMTPD="x")
    p = subprocess.Popen([path, "-t1", "true"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        t0 = time.monotonic()
        rc = p.wait(10)                       # stdin stays open: only the alarm ends it
        elapsed = time.monotonic() - t0
        assert rc == 0
        assert p.stdout.read() == rblsmtpd.GREET
        assert mask(p.stderr.read()) == b"rblsmtpd: 1.2.3.4 pid X: 451 x\n"
        assert 0.5 < elapsed < 5
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()


def test_imports_stay_lean():
    """The blocked path must not load DNS, sockets or the exec machinery."""
    code = (
        "import os, sys\n"
        "from qtools.lib import run\n"
        "import qtools.ucspi.rblsmtpd as m\n"
        "rc = run.guard(m, ['rblsmtpd', '-t0', 'true'])\n"
        "bad = sorted(n for n in ('dns', 'dns.resolver', 'qtools.lib.dns', 'socket', 'ssl',"
        " 'qtools.lib.pathexec', 'select') if n in sys.modules)\n"
        "os.write(2, repr((rc, m.FAST_EXIT, bad)).encode())\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                       env=qenv("elide", RBLSMTPD="-blocked", TCPREMOTEIP="1.2.3.4"))
    assert p.stdout == b"553 blocked\r\n"
    assert p.stderr.endswith(b"(0, True, [])"), p.stderr


# -- RBL lookups ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    with Dnsmasq(tmp_path_factory.mktemp("dns"), RECORDS) as d:
        yield d


LOOKUPS = [
    (["-r", "rbl.test", "true"], b"451 listed here"),
    (["-b", "-r", "rbl.test", "true"], b"553 listed here"),
    (["-r", "nothere.test"] + RAN, None),
    (["-r", "multi.test", "true"], b"451 first partsecond"),
    (["-r", "empty.test"] + RAN, None),
    (["-r", "long.test", "-t0", "true"], b"451 " + b"xyz" * 66 + b"xy"),
    (["-a", "white.test", "-r", "rbl.test"] + RAN, None),
    (["-r", "rbl.test", "-a", "white.test", "true"], b"451 listed here"),
    (["-r", "nothere.test", "-r", "rbl.test", "true"], b"451 listed here"),
    (["-r", "servfail.test"] + RAN, None),
    (["-c", "-r", "servfail.test", "true"], b"451 temporary RBL lookup error"),
    (["-c", "-b", "-r", "servfail.test", "true"], b"451 temporary RBL lookup error"),
    (["-b", "-r", "servfail.test", "-r", "rbl.test", "true"], b"451 listed here"),
    (["-a", "servfail.test", "-r", "rbl.test"] + RAN, None),
    (["-c", "-a", "servfail.test", "-r", "rbl.test", "true"], b"451 listed here"),
    (["-c", "-b", "-a", "servfail.test", "-r", "rbl.test", "true"], b"451 listed here"),
]


@pytest.mark.parametrize("args,blocked", LOOKUPS)
def test_rbl_lookups(dns, mode, args, blocked):
    rc, out, err = run(qbin("rblsmtpd"), args,
                       qenv(mode, TCPREMOTEIP="1.2.3.4", DNSCACHEIP=dns.dnscacheip), b"RCPT\r\n")
    assert rc == 0
    if blocked is None:
        assert (out, err) == (b"ran\n", b"")
    else:
        assert err == b"rblsmtpd: 1.2.3.4 pid X: " + blocked + b"\n"
        assert out in (rblsmtpd.GREET + blocked + b"\r\n", blocked + b"\r\n")


# djbdns retries a SERVFAIL for ~11 s: compare only one of those cases
SAME_AS_C = [(a, b) for a, b in LOOKUPS if "servfail.test" not in a] + [
    (["-c", "-a", "servfail.test", "-r", "rbl.test", "true"], b"451 listed here")]


@pytest.mark.parametrize("args,blocked", SAME_AS_C)
def test_rbl_lookups_same_as_c(dns, cbin, args, blocked):
    if not dns.port53:
        pytest.skip("the C resolver needs a DNS server on port 53 (run as root)")
    c, q = both(cbin, "elide", args, b"RCPT\r\n", DNSCACHEIP=dns.dnscacheip)
    assert q == c


def test_rbl_timeout_fail_closed(dns, mode):
    """A server that never answers: fail-open runs smtpd, -c blocks with 451."""
    env = qenv(mode, TCPREMOTEIP="1.2.3.4", DNSCACHEIP=dns.dnscacheip, QTOOLS_DNSTIMEOUT="0.2")
    assert run(qbin("rblsmtpd"), ["-r", "timeout.test"] + RAN, env, b"")[:2] == (0, b"ran\n")
    assert run(qbin("rblsmtpd"), ["-c", "-r", "timeout.test", "-t0", "true"], env, b"") == (
        0, b"451 temporary RBL lookup error\r\n",
        b"rblsmtpd: 1.2.3.4 pid X: 451 temporary RBL lookup error\n")


# -- under tcpserver, RBLSMTPD from the rules --------------------------------------

def read_all(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        out = b""
        while True:
            d = s.recv(4096)
            if not d:
                return out
            out += d
    finally:
        s.close()


def rules_cdb(tmp_path, text):
    cdb = tmp_path / "rules.cdb"
    p = subprocess.run([qbin("tcprules"), str(cdb), str(cdb) + ".tmp"], input=text,
                       capture_output=True, env=qenv(), timeout=30)
    assert (p.returncode, p.stderr) == (0, b"")
    return str(cdb)


def test_blocked_under_tcpserver(tmp_path, mode):
    """The benchmark path: exactly one `553 blocked` line per connection."""
    cdb = rules_cdb(tmp_path, b'127.0.0.1:allow,RBLSMTPD="-blocked"\n')
    with TcpServer(["-v", "-H", "-R", "-l", "0", "-x", cdb], ["rblsmtpd", "-t0", "true"],
                   env=qenv(mode), logpath=str(tmp_path / "log")) as srv:
        try:
            for _ in range(5):
                assert read_all(srv.port) == b"553 blocked\r\n"
            wait_until(lambda: srv.log().count(" status 0\n") >= 5, 10, srv.proc, "5 ends")
            log = srv.log()
            assert len(re.findall(r"rblsmtpd: 127\.0\.0\.1 pid (\d+): 553 blocked\n", log)) == 5
            # the pid rblsmtpd logs is the connection's (tcpserver's child, exec'd or not)
            for pid in re.findall(r"rblsmtpd: 127\.0\.0\.1 pid (\d+):", log):
                assert "tcpserver: end %s status 0" % pid in log
        finally:
            os.killpg(srv.proc.pid, signal.SIGKILL)


def test_rules_empty_rblsmtpd_runs_smtpd(tmp_path, mode, dns):
    """RBLSMTPD="" from the rules: no lookup, the real server runs."""
    cdb = rules_cdb(tmp_path, b'127.0.0.1:allow,RBLSMTPD=""\n:allow\n')
    env = qenv(mode, DNSCACHEIP=dns.dnscacheip)
    with TcpServer(["-H", "-R", "-l", "0", "-x", cdb],
                   ["rblsmtpd", "-r", "rbl.test", "sh", "-c", "echo 220 real"],
                   env=env, logpath=str(tmp_path / "log")) as srv:
        try:
            assert read_all(srv.port) == b"220 real\n"
        finally:
            os.killpg(srv.proc.pid, signal.SIGKILL)


def test_rbl_under_tcpserver(tmp_path, mode, dns):
    """No RBLSMTPD: 127.0.0.1 is looked up as 1.0.0.127.rbl.test and listed."""
    env = qenv(mode, DNSCACHEIP=dns.dnscacheip, RBLSMTPD=None)
    with TcpServer(["-H", "-R", "-l", "0"], ["rblsmtpd", "-b", "-r", "rbl.test", "true"],
                   env=env, logpath=str(tmp_path / "log")) as srv:
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            f = s.makefile("rb")
            assert f.readline() == rblsmtpd.GREET
            s.sendall(b"HELO me\r\n")
            assert f.readline() == rblsmtpd.OK
            s.sendall(b"RCPT TO:<x@y>\r\n")
            assert f.readline() == b"553 local listed\r\n"
            s.sendall(b"QUIT\r\n")
            assert f.readline() == rblsmtpd.BYE
            assert f.read() == b""
            f.close()
            s.close()
            srv.wait_log("rblsmtpd: 127.0.0.1 pid ")
            assert re.search(r"rblsmtpd: 127\.0\.0\.1 pid \d+: 553 local listed\n", srv.log())
        finally:
            os.killpg(srv.proc.pid, signal.SIGKILL)
