"""tcpserver against Debian's /usr/bin/tcpserver (inventory 1.1, checks I7/I8).

Every test that starts a qtools tcpserver runs with exec elision on and off
(the `mode` fixture).  Where the C original is run too, both get the same
arguments and their outputs are compared after pids and ports are replaced
by names.  The one deliberate difference in the logs: qtools' waiting
children accept themselves, so the parent's `status: N/L` line may come just
after the child's `pid P from IP` instead of just before it; the comparison
therefore looks at the status lines and at the other lines each in order.
"""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from helpers import CBIN, TcpServer, qbin, qenv, wait_until

# The rts `print` script, plus the signal dispositions the program inherits.
PRINT = """#!/bin/sh
LC_ALL=C; export LC_ALL
env | grep -a -E '^(PROTO|TCP|RELAYCLIENT|which|who)' | sort
grep -E '^Sig(Ign|Blk)' /proc/self/status
exit 3
"""

USAGE = (b"tcpserver: usage: tcpserver [ -1UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ]"
         b" [ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ]"
         b" [ -t timeout ] host port program\n")


@pytest.fixture
def printer(tmp_path):
    p = tmp_path / "print"
    p.write_text(PRINT)
    p.chmod(0o755)
    return str(p)


def tcprules(maker, path, text):
    binary = os.path.join(CBIN, "tcprules") if maker == "c" else qbin("tcprules")
    r = subprocess.run([binary, str(path), str(path) + ".tmp"], input=text,
                       capture_output=True, env=qenv(), timeout=30)
    assert (r.returncode, r.stderr) == (0, b"")


@contextlib.contextmanager
def serve(binary, args, prog, env, tmp_path, name="srv"):
    """A tcpserver whose whole process group is killed at the end."""
    with TcpServer(args, prog, env=env, binary=binary,
                   logpath=str(tmp_path / (name + ".log"))) as srv:
        yield srv


def binaries(cbin):
    return {"c": cbin("tcpserver"), "q": qbin("tcpserver")}


def wait_count(srv, text, n, timeout=10):
    wait_until(lambda: srv.log().count(text) >= n, timeout, srv.proc,
               "%d x %r in the log" % (n, text))


def settle(srv, limit, conns):
    """Wait until `conns` connections have ended and been reported."""
    wait_count(srv, "tcpserver: status: 0/%d\n" % limit, conns + 1)


def norm_log(log, port):
    """(status lines, other lines) with pids named P1, P2... and ports masked."""
    names = {}

    def pid(m):
        return "%s %s" % (m.group(1), names.setdefault(m.group(2), "P%d" % (len(names) + 1)))

    status, other = [], []
    for line in log.splitlines():
        line = re.sub(r"^tcpserver: (pid|ok|deny|end) (\d+)", lambda m: "tcpserver: " + pid(m),
                      line)
        if line.startswith(("tcpserver: ok ", "tcpserver: deny ")):
            line = line.replace(":%d " % port, ":PORT ")
            line = re.sub(r":\d+$", ":RPORT", line)
        (status if line.startswith("tcpserver: status: ") else other).append(line)
    return status, other


def norm_out(data, port=None):
    text = data.decode("latin-1")
    text = re.sub(r"TCPLOCALPORT=\d+", "TCPLOCALPORT=PORT", text)
    return re.sub(r"TCPREMOTEPORT=\d+", "TCPREMOTEPORT=RPORT", text)


# -- environment, log lines, rules (I7, I8) ---------------------------------

RULES1 = b"127.0.0.1:allow,RELAYCLIENT=\"\",which=/one/,TCPLOCALHOST=+Over+\n:deny\n"
RULES2 = b"127.0.0.:allow,which=/two/\n"
RULES3 = b"127.0.0.1:deny,which=/three/\n"


@pytest.mark.parametrize("maker", ["c", "q"], ids=["c-cdb", "qtools-cdb"])
def test_env_log_and_live_rules_like_c(tmp_path, cbin, mode, printer, maker):
    """Three connections; the rules cdb is replaced with tcprules while the
    server runs: allow with variables, another rule, then deny (the banner
    still reaches the denied client)."""
    results = {}
    for impl, binary in binaries(cbin).items():
        rules = tmp_path / ("%s.cdb" % impl)
        tcprules(maker, rules, RULES1)
        args = ["-v", "-c", "2", "-B", "banner\n", "-H", "-R", "-l", "Local",
                "-x", str(rules)]
        with serve(binary, args, [printer], qenv(mode), tmp_path, impl) as srv:
            out1 = srv.talk()
            settle(srv, 2, 1)
            tcprules(maker, rules, RULES2)
            out2 = srv.talk()
            settle(srv, 2, 2)
            tcprules(maker, rules, RULES3)
            out3 = srv.talk()
            settle(srv, 2, 3)
            results[impl] = (norm_out(out1), norm_out(out2), out3,
                             norm_log(srv.log(), srv.port))
    assert results["q"] == results["c"]
    out1, out2, out3, (status, other) = results["q"]
    env1 = out1.splitlines()
    assert env1[0] == "banner"
    assert env1[1:9] == ["PROTO=TCP", "RELAYCLIENT=", "TCPLOCALHOST=Over",
                         "TCPLOCALIP=127.0.0.1", "TCPLOCALPORT=PORT",
                         "TCPREMOTEIP=127.0.0.1", "TCPREMOTEPORT=RPORT", "which=one"]
    assert "which=two" in out2 and "RELAYCLIENT" not in out2
    assert "TCPLOCALHOST=Local" in out2
    assert "TCPREMOTEHOST" not in out1 + out2 and "TCPREMOTEINFO" not in out1 + out2
    assert out3 == b"banner\n"
    assert status == ["tcpserver: status: 0/2"] + ["tcpserver: status: 1/2",
                                                   "tcpserver: status: 0/2"] * 3
    assert other == [
        "tcpserver: pid P1 from 127.0.0.1",
        "tcpserver: ok P1 Local:127.0.0.1:PORT :127.0.0.1::RPORT",
        "tcpserver: end P1 status 768",
        "tcpserver: pid P2 from 127.0.0.1",
        "tcpserver: ok P2 Local:127.0.0.1:PORT :127.0.0.1::RPORT",
        "tcpserver: end P2 status 768",
        "tcpserver: pid P3 from 127.0.0.1",
        "tcpserver: deny P3 Local:127.0.0.1:PORT :127.0.0.1::RPORT",
        "tcpserver: end P3 status 25600",
    ]


def test_rule_bytes_exported_verbatim(tmp_path, cbin, mode, printer):
    """Rule values outside ASCII reach the program byte for byte."""
    rules = tmp_path / "r.cdb"
    tcprules("c", rules, b"127.0.0.1:allow,which=/\xc3\xa9\xff/\n")
    outs = {}
    for impl, binary in binaries(cbin).items():
        args = ["-H", "-R", "-l", "0", "-x", str(rules)]
        with serve(binary, args, [printer], qenv(mode), tmp_path, impl) as srv:
            outs[impl] = norm_out(srv.talk())
    assert outs["q"] == outs["c"]
    assert "which=\xc3\xa9\xff\n" in outs["q"]


# -- rules cdb trouble ---------------------------------------------------------

def test_rules_cdb_trouble_like_c(tmp_path, cbin, mode, printer):
    """Missing cdb: dropped (111) unless -X; truncated or empty: dropped with
    djb's cdb errors even with -X."""
    good = tmp_path / "good.cdb"
    tcprules("c", good, b"127.0.0.1:allow,which=/good/\n")
    states = [None, good.read_bytes()[:2060], b"", good.read_bytes()]
    results = {}
    for impl, binary in binaries(cbin).items():
        for flagX in ([], ["-X"]):
            path = tmp_path / ("%s%s.cdb" % (impl, "X" if flagX else ""))
            args = ["-v", "-B", "b\n", "-H", "-R", "-l", "0"] + flagX + ["-x", str(path)]
            outs = []
            with serve(binary, args, [printer], qenv(mode), tmp_path,
                       impl + "X" * len(flagX)) as srv:
                for n, content in enumerate(states, 1):
                    if content is not None:
                        path.write_bytes(content)
                    outs.append(norm_out(srv.talk()))
                    settle(srv, 40, n)
                log = norm_log(srv.log().replace(str(path), "RULES"), srv.port)
            results[impl, bool(flagX)] = (outs, log)
    assert results["q", False] == results["c", False]
    assert results["q", True] == results["c", True]
    outs, (status, other) = results["q", False]
    drop = "tcpserver: warning: dropping connection, unable to read RULES: "
    assert outs[:3] == ["b\n"] * 3 and "which=good" in outs[3]
    assert other == [
        "tcpserver: pid P1 from 127.0.0.1", drop + "file does not exist",
        "tcpserver: end P1 status 28416",
        "tcpserver: pid P2 from 127.0.0.1", drop + "protocol error",
        "tcpserver: end P2 status 28416",
        "tcpserver: pid P3 from 127.0.0.1", drop + "invalid argument",
        "tcpserver: end P3 status 28416",
        "tcpserver: pid P4 from 127.0.0.1", "tcpserver: ok P4 0:127.0.0.1:PORT :127.0.0.1::RPORT",
        "tcpserver: end P4 status 768"]
    outs, (status, other) = results["q", True]
    assert "PROTO=TCP" in outs[0] and "which" not in outs[0]
    assert other[1:3] == ["tcpserver: ok P1 0:127.0.0.1:PORT :127.0.0.1::RPORT",
                          "tcpserver: end P1 status 768"]
    assert other[4] == drop + "protocol error"


def test_rules_cdb_is_a_directory(tmp_path, mode, printer):
    """The C tcpserver's child crashes here (SIGSEGV); qtools drops it."""
    d = tmp_path / "dir.cdb"
    d.mkdir()
    args = ["-v", "-H", "-R", "-l", "0", "-x", str(d)]
    with serve(qbin("tcpserver"), args, [printer], qenv(mode), tmp_path) as srv:
        assert srv.talk() == b""
        settle(srv, 40, 1)
        log = srv.log()
    assert ("tcpserver: warning: dropping connection, unable to read %s: is a directory\n"
            % d) in log
    assert re.search(r"end \d+ status 28416\n", log)


# -- -c limit ----------------------------------------------------------------------

def test_limit_defers_second_client(tmp_path, cbin, mode):
    """-c 1: the second client is accepted only after the first one's child
    has ended (the log orders them), and the count never passes 1/1."""
    prog = ["/bin/sh", "-c", 'echo start; read x; echo "done $x"']
    results = {}
    for impl, binary in binaries(cbin).items():
        with serve(binary, ["-v", "-c", "1", "-H", "-R", "-l", "0"], prog, qenv(mode),
                   tmp_path, impl) as srv:
            a = srv.connect()
            fa = a.makefile("rb")
            assert fa.readline() == b"start\n"
            b = srv.connect()                   # completes in the kernel's backlog
            b.sendall(b"b\n")
            assert srv.log().count(" from ") == 1
            a.sendall(b"a\n")
            assert fa.read() == b"done a\n"
            fb = b.makefile("rb")
            assert fb.read() == b"start\ndone b\n"
            settle(srv, 1, 2)
            for x in (fa, fb, a, b):
                x.close()
            results[impl] = norm_log(srv.log(), srv.port)
    assert results["q"] == results["c"]
    status, other = results["q"]
    assert set(status) == {"tcpserver: status: 0/1", "tcpserver: status: 1/1"}
    assert other.index("tcpserver: end P1 status 0") < other.index(
        "tcpserver: pid P2 from 127.0.0.1")


# -- verbosity, failures --------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-v", "-Q", "-q"])
def test_verbosity_and_missing_program(tmp_path, cbin, mode, flag):
    results = {}
    for impl, binary in binaries(cbin).items():
        with serve(binary, [flag, "-H", "-R", "-l", "0"], ["no-such-program-qt"],
                   qenv(mode), tmp_path, impl) as srv:
            assert srv.talk() == b""
            if flag == "-v":
                settle(srv, 40, 1)
            results[impl] = norm_log(srv.log(), srv.port)
    assert results["q"] == results["c"]
    status, other = results["q"]
    drop = ("tcpserver: warning: dropping connection, unable to run no-such-program-qt:"
            " file does not exist")
    if flag == "-v":
        assert status == ["tcpserver: status: 0/40", "tcpserver: status: 1/40",
                          "tcpserver: status: 0/40"]
        assert other == ["tcpserver: pid P1 from 127.0.0.1",
                         "tcpserver: ok P1 0:127.0.0.1:PORT :127.0.0.1::RPORT",
                         drop, "tcpserver: end P1 status 28416"]
    elif flag == "-Q":
        assert (status, other) == ([], [drop])
    else:
        assert (status, other) == ([], [])


def run_both(cbin, args, mode, **kw):
    out = {}
    for impl, binary in binaries(cbin).items():
        r = subprocess.run([binary] + args, capture_output=True, env=qenv(mode),
                           timeout=30, stdin=subprocess.DEVNULL, **kw)
        out[impl] = (r.returncode, r.stdout, r.stderr)
    return out


def test_usage_like_c(cbin, mode):
    cases = {
        ("-T", "5", "127.0.0.1", "0", "true"): b"tcpserver: illegal option -- T\n" + USAGE,
        ("-c",): b"tcpserver: option requires an argument -- c\n" + USAGE,
        (): USAGE,
        ("127.0.0.1", "0"): USAGE,
        ("-v", "127.0.0.1"): USAGE,
    }
    for args, err in cases.items():
        r = run_both(cbin, list(args), mode)
        assert r["q"] == r["c"] == (100, b"", err), args


def test_setup_failures_like_c(cbin, mode):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = str(busy.getsockname()[1])
        r = run_both(cbin, ["127.0.0.1", port, "true"], mode)
        assert r["q"] == r["c"] == (111, b"", b"tcpserver: fatal: unable to bind: "
                                    b"address already used\n")
        r = run_both(cbin, ["-q", "127.0.0.1", port, "true"], mode)
        assert r["q"] == r["c"] == (111, b"", b"")
    finally:
        busy.close()
    r = run_both(cbin, ["127.0.0.1", "no-such-service-qt", "true"], mode)
    assert r["q"] == r["c"] == (111, b"", b"tcpserver: fatal: unable to figure out port "
                                b"number for no-such-service-qt\n")
    r = run_both(cbin, ["192.0.2.1", "0", "true"], mode)          # not a local address
    assert r["q"] == r["c"] == (111, b"", b"tcpserver: fatal: unable to bind: "
                                b"address not available\n")


def test_sigterm_exits_0_and_stops_accepting(tmp_path, cbin, mode):
    for impl, binary in binaries(cbin).items():
        with serve(binary, ["-H", "-R", "-l", "0"], ["/bin/echo", "hi"], qenv(mode),
                   tmp_path, impl) as srv:
            assert srv.talk() == b"hi\n"
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(10) == 0

            def refused():
                try:
                    socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()
                except ConnectionRefusedError:
                    return True
                except OSError:                 # reset: queued as the socket closed
                    pass
                return False
            wait_until(refused, 10, what="%s: port closed after SIGTERM" % impl)


# -- privileges, ident -------------------------------------------------------------

@pytest.mark.skipif(os.getuid() != 0, reason="needs root")
def test_uid_gid_dropped_like_c(tmp_path, cbin, mode):
    prog = ["/bin/sh", "-c", "id -u; id -g; id -G"]
    for args, env in ((["-u", "65534", "-g", "65534"], qenv(mode)),
                      (["-U"], qenv(mode, UID="65534", GID="65534"))):
        outs = {}
        for impl, binary in binaries(cbin).items():
            with serve(binary, args + ["-H", "-R", "-l", "0"], prog, env, tmp_path,
                       impl) as srv:
                outs[impl] = srv.talk()
                with open("/proc/%d/status" % srv.proc.pid) as f:
                    ids = [ln.split()[1:] for ln in f if ln.startswith(("Uid:", "Gid:"))]
                assert ids == [["65534"] * 4] * 2, impl      # the parent dropped too
        assert outs["q"] == outs["c"] == b"65534\n65534\n65534\n"


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_ident_with_nothing_on_113(tmp_path, cbin, mode, printer):
    """-r (the default): the lookup fails at once, TCPREMOTEINFO is unset."""
    if not _refused(113):
        pytest.skip("something answers on 127.0.0.1:113")
    results = {}
    for impl, binary in binaries(cbin).items():
        with serve(binary, ["-v", "-H", "-l", "0"], [printer], qenv(mode), tmp_path,
                   impl) as srv:
            out = norm_out(srv.talk())
            settle(srv, 40, 1)
            results[impl] = (out, norm_log(srv.log(), srv.port))
    assert results["q"] == results["c"]
    out, (status, other) = results["q"]
    assert "TCPREMOTEINFO" not in out
    assert other[1] == "tcpserver: ok P1 0:127.0.0.1:PORT :127.0.0.1::RPORT"


class FakeIdentd(threading.Thread):
    """RFC 1413 on 127.0.0.1:113: answers `USERID : UNIX : reply`, or never
    answers while `stall` is set."""

    def __init__(self, sock, reply):
        super().__init__(daemon=True)
        self.sock, self.reply, self.stall, self.asked = sock, reply, False, []

    def run(self):
        held = []
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                break
            q = b""
            while not q.endswith(b"\n"):
                d = c.recv(100)
                if not d:
                    break
                q += d
            self.asked.append(q)
            if self.stall:
                held.append(c)
                continue
            c.sendall(q.strip() + b" : USERID : UNIX :" + self.reply + b"\r\n")
            c.close()
        for c in held:
            c.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root for port 113")
def test_ident_reply_like_c(tmp_path, cbin, mode, printer):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", 113))
    except OSError:
        s.close()
        pytest.skip("127.0.0.1:113 is busy")
    s.listen(8)
    identd = FakeIdentd(s, b" joe\t smith ")
    identd.start()
    rules = tmp_path / "r.cdb"
    tcprules("c", rules, b"joesmith@127.0.0.1:allow,who=/ident/\n:allow,who=/nobody/\n")
    results = {}
    try:
        for impl, binary in binaries(cbin).items():
            identd.stall = False
            with serve(binary, ["-v", "-t", "1", "-H", "-l", "0", "-x", str(rules)],
                       [printer], qenv(mode), tmp_path, impl) as srv:
                out1 = norm_out(srv.talk())
                settle(srv, 40, 1)
                identd.stall = True                     # -t 1: gives up after 1 s
                out2 = norm_out(srv.talk())
                settle(srv, 40, 2)
                results[impl] = (out1, out2, norm_log(srv.log(), srv.port))
    finally:
        s.shutdown(socket.SHUT_RDWR)                    # wakes the thread's accept()
        s.close()
        identd.join(5)
    assert results["q"] == results["c"]
    out1, out2, (status, other) = results["q"]
    assert "TCPREMOTEINFO=joesmith\n" in out1 and "who=ident\n" in out1
    assert "TCPREMOTEINFO" not in out2 and "who=nobody\n" in out2
    assert other[1] == "tcpserver: ok P1 0:127.0.0.1:PORT :127.0.0.1:joesmith:RPORT"
    assert re.fullmatch(rb"\d+ , \d+\r\n", identd.asked[0])


# -- robustness -----------------------------------------------------------------------

def _fds(pid):
    return sorted(os.listdir("/proc/%d/fd" % pid), key=int)


def _lasting(pid, fds):
    """fds of pid but those open on a file: the parent reads a launcher's
    first line now and then (pathexec.refresh), a listing may catch it."""
    out = []
    for f in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, f))
        except OSError:
            continue
        if not (target.startswith("/") and os.path.isfile(target)):
            out.append(f)
    return out


def _lasting_fds(pid):
    return _lasting(pid, _fds(pid))


def _zombies(ppid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(st[1]) == ppid and st[0] == "Z":
            out.append(int(p))
    return out


def test_no_zombies_no_fd_leak(tmp_path, mode):
    """200 clients that connect and close at once or send garbage: the
    parent ends with the fds it started with, no zombies, count 0."""
    n = 200
    args = ["-v", "-c", "40", "-b", "256", "-H", "-R", "-l", "0"]
    with serve(qbin("tcpserver"), args, ["cat"], qenv(mode), tmp_path) as srv:
        pid = srv.proc.pid
        wait_count(srv, "status: 0/40", 1)
        before = _fds(pid)
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            if i % 2:
                c.sendall(os.urandom(64) + b"\r\n\0" * 8)
            c.close()
            if i % 50 == 49:                    # keep the backlog short
                wait_count(srv, "tcpserver: end ", i - 40, timeout=30)
        wait_count(srv, "tcpserver: end ", n, timeout=60)
        wait_until(lambda: srv.log().endswith("tcpserver: status: 0/40\n"), 10, srv.proc,
                   "count back to 0")
        assert _lasting_fds(pid) == _lasting(pid, before)
        assert _zombies(pid) == []
        log = srv.log()
        assert log.rstrip("\n").rsplit("\n", 1)[1] == "tcpserver: status: 0/40"
        assert log.count("tcpserver: pid ") == n
        assert "warning" not in log and "fatal" not in log


# -- exec elision ---------------------------------------------------------------------

PROBE = '''"""tcpprobe: what a program run by tcpserver sees, as JSON on fd 1."""
import json, os, sys
PROG = "tcpprobe"


def main(argv):
    fds = {}
    for f in os.listdir("/proc/self/fd"):
        try:
            t = os.readlink("/proc/self/fd/" + f)
        except OSError:
            continue
        if not t.startswith("/proc/"):          # the listdir fd itself
            fds[f] = t
    sig = {}
    with open("/proc/self/status") as st:
        for line in st:
            if line.startswith(("SigIgn", "SigBlk", "SigCgt")):
                k, v = line.split(":")
                sig[k] = v.strip()
    state = {"fds": fds, "sig": sig, "argv": argv, "cwd": os.getcwd(),
             "env": dict(os.environ),
             "elided": "qtools.ucspi.tcpserver" in sys.modules}
    os.write(1, json.dumps(state, sort_keys=True).encode())
    return 3
'''


def probe_launcher(tmp_path):
    d = tmp_path / "probe"
    d.mkdir(exist_ok=True)
    (d / "tcpprobe.py").write_text(PROBE)
    p = d / "tcpprobe"
    p.write_text("#!%s\n# qtools-program: tcpprobe\n"
                 "from qtools.lib.run import launch; launch(\"tcpprobe\")\n" % sys.executable)
    p.chmod(0o755)
    return d


def probe_state(tmp_path, mode, printer=None):
    d = probe_launcher(tmp_path)
    env = qenv(mode, PYTHONPATH=str(d))
    env["PATH"] = str(d) + ":" + env["PATH"]
    args = ["-v", "-H", "-R", "-l", "0"]
    with serve(qbin("tcpserver"), args, ["tcpprobe", "a b"], env, tmp_path, mode) as srv:
        state = json.loads(srv.talk())
        settle(srv, 40, 1)
        parent_socks = {t for t in (os.readlink("/proc/%d/fd/%s" % (srv.proc.pid, f))
                                    for f in _fds(srv.proc.pid)) if t.startswith("socket:")}
        log = srv.log()
    return state, parent_socks, log, str(tmp_path / (mode + ".log"))


def test_program_sees_socket_log_and_nothing_else(tmp_path, mode):
    state, parent_socks, log, logpath = probe_state(tmp_path, mode)
    assert state["elided"] == (mode == "elide")
    fds = state["fds"]
    assert sorted(fds) == ["0", "1", "2"], fds
    assert fds["0"] == fds["1"] and fds["0"].startswith("socket:")
    assert fds["0"] not in parent_socks              # not the listening socket
    assert fds["2"] == logpath
    assert state["argv"] == ["tcpprobe", "a b"] or state["argv"][1:] == ["a b"]
    assert state["env"]["PROTO"] == "TCP" and state["env"]["TCPREMOTEIP"] == "127.0.0.1"
    assert not any(k.startswith("TCPREHEARSAL") for k in state["env"])
    assert re.search(r"tcpserver: end \d+ status 768\n", log)


def test_elided_program_sees_what_an_exec_would_give(tmp_path):
    a = probe_state(tmp_path, "elide")[0]
    b = probe_state(tmp_path, "noelide")[0]
    for s in (a, b):
        s["env"].pop("QTOOLS_NOELIDE", None)
        for k in ("TCPLOCALPORT", "TCPREMOTEPORT"):
            s["env"][k] = "PORT"
        s["fds"] = {k: v.split(":")[0] if v.startswith("socket:") else v.rsplit("/", 1)[0]
                    for k, v in s["fds"].items()}
        s["argv"] = s["argv"][1:]                   # a resolved path vs the name
    assert a.pop("elided") and not b.pop("elided")
    assert a == b


def test_elided_qtools_child_like_c(tmp_path, cbin, mode):
    """tcprulescheck as the program: it looks up $TCPREMOTEIP, so its output
    proves the environment got through; exit status and log as with C."""
    rules = tmp_path / "r.cdb"
    tcprules("q", rules, b"127.0.0.1:allow,X=/1/\n")
    results = {}
    for impl, binary in binaries(cbin).items():
        with serve(binary, ["-v", "-H", "-R", "-l", "0"], ["tcprulescheck", str(rules)],
                   qenv(mode), tmp_path, impl) as srv:
            out = srv.talk()
            settle(srv, 40, 1)
            results[impl] = (out, norm_log(srv.log(), srv.port))
    assert results["q"] == results["c"]
    assert results["q"][0] == b"rule 127.0.0.1:\nset environment variable X=1\nallow connection\n"
    assert results["q"][1][1][-1] == "tcpserver: end P1 status 0"
