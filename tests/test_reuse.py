"""QTOOLS_REUSE: a tcpserver child that serves connection after connection
(qtools.lib.reuse).  What must hold: each connection's program sees exactly
what the first one saw (and what an exec'd program sees), nothing of one
connection reaches the next (environment, relay rights, descriptors), the
-c limit and the log lines keep their meaning, and any doubt ends the child
as a C child ends."""
import json
import os
import re
import signal
import socket
import sys

import pytest

from helpers import TcpServer, qbin, qenv, wait_until
from smtpdtools import GREETING, Client, checkpassword, make_home, queued, smtpd_env
from test_tcpserver import PROBE

REUSABLE_PROBE = PROBE.replace('PROG = "tcpprobe"', '''PROG = "tcpprobe"
REUSABLE = True


def meddle():
    """Change what a careless program might change: all of it must be back
    for the next connection."""
    import signal
    os.environ["PROBE_LEAK"] = "1"
    os.environ.pop("TCPLOCALIP", None)
    os.chdir("/")
    os.umask(0o077)
    signal.signal(signal.SIGUSR1, lambda n, f: None)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    signal.alarm(1000)
    sys.argv.append("leaked")''').replace(
    '''    os.write(1, json.dumps(state, sort_keys=True).encode())
    return 3''', '''    state["pid"] = os.getpid()
    state["cloexec"] = sorted(f for f in state["fds"] if not os.get_inheritable(int(f)))
    state["umask"] = os.umask(0o022)
    os.umask(state["umask"])
    state["sysargv"] = list(sys.argv)
    os.write(1, json.dumps(state, sort_keys=True).encode())
    meddle()
    if os.environ.get("PROBE_OPEN"):
        os.open("/dev/null", os.O_RDONLY)           # left open: the child must end
    if os.environ.get("PROBE_CHILD"):
        if os.fork() == 0:                          # still running: the child must end
            import time
            os.close(0)
            os.close(1)
            time.sleep(30)
            os._exit(0)
    return 3''')


def probe_dir(tmp_path, name="tcpprobe", text=REUSABLE_PROBE):
    d = tmp_path / "probe"
    d.mkdir(exist_ok=True)
    (d / (name + ".py")).write_text(text)
    p = d / name
    p.write_text("#!%s\n# qtools-program: %s\n"
                 "from qtools.lib.run import launch; launch(%r)\n" % (sys.executable, name, name))
    p.chmod(0o755)
    return d


def probe_env(d, mode="elide", **extra):
    env = qenv(mode, PYTHONPATH=str(d), **extra)
    env["PATH"] = str(d) + ":" + env["PATH"]
    return env


def pids(log, what="pid"):
    return [int(x) for x in re.findall(r"^tcpserver: %s (\d+)" % what, log, re.M)]


def ends(srv, n):
    return wait_until(lambda: len(pids(srv.log(), "end")) >= n and srv.log(), 10, srv.proc,
                      "%d end lines" % n)


def title(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().rstrip(b"\0").decode()


def talk_json(srv):
    return json.loads(srv.talk())


def normal(state):
    s = dict(state)
    s["env"] = {k: v for k, v in s["env"].items() if k not in ("TCPREMOTEPORT",)}
    s["fds"] = {k: v.split(":")[0] if v.startswith("socket:") else v for k, v in s["fds"].items()}
    s["fds"]["2"] = "the log"
    for k in ("pid", "elided"):
        s.pop(k, None)
    return s


# -- the program's view: the same for every connection, and as an exec's ------

def test_each_connection_sees_what_the_first_saw(tmp_path):
    d = probe_dir(tmp_path)
    with TcpServer(["-v", "-H", "-R", "-l", "0", "-c", "1"], ["tcpprobe", "a b"],
                   env=probe_env(d, QTOOLS_REUSE="3")) as srv:
        states = [talk_json(srv) for _ in range(4)]
        log = ends(srv, 4)
        # between connections ps shows the child as a waiting one again
        wait_until(lambda: title(states[3]["pid"]) == "tcpserver: waiting for a connection",
                   10, srv.proc, "the waiting title")
    first = normal(states[0])
    # the child's own descriptors (listener, pipes) are in the table the
    # program shares, all close-on-exec: what it runs further never has them
    assert first["fds"].keys() - {"0", "1", "2"} == set(first["cloexec"]), first["fds"]
    assert first["fds"]["0"] == first["fds"]["1"] == "socket"
    assert first["umask"] == 0o022 and "PROBE_LEAK" not in first["env"]
    for s in states[1:]:
        assert normal(s) == first
    # one child served three in turn, then a new one took the fourth
    served = [s["pid"] for s in states]
    assert served[0] == served[1] == served[2] != served[3]
    assert pids(log) == served
    # the C tcpserver's log lines: an end for every connection, status 3 << 8
    assert re.findall(r"^tcpserver: end (\d+) status (\d+)$", log, re.M) == \
        [(str(p), "768") for p in served]
    status = re.findall(r"^tcpserver: status: (\d+)/1$", log, re.M)
    assert status == ["0"] + ["1", "0"] * 4


def test_reused_program_sees_what_an_exec_would_give(tmp_path):
    d = probe_dir(tmp_path)
    views = {}
    for mode in ("elide", "noelide"):
        with TcpServer(["-H", "-R", "-l", "0", "-c", "1"], ["tcpprobe", "a b"],
                       env=probe_env(d, mode, QTOOLS_REUSE="5")) as srv:
            views[mode] = [talk_json(srv) for _ in range(2)]
    e, n = views["elide"], views["noelide"]
    assert e[0]["pid"] == e[1]["pid"] and e[1]["elided"]
    assert n[0]["pid"] != n[1]["pid"] and not n[1]["elided"]    # exec'd: one process each
    own = set(e[1]["cloexec"])
    assert own and n[1]["cloexec"] == []
    for s in e + n:
        s["fds"] = {k: v for k, v in s["fds"].items() if k not in own}
        s["cloexec"] = []
        s["argv"] = s["argv"][1:]
        s["sysargv"] = s["sysargv"][1:]
        s["env"].pop("QTOOLS_NOELIDE", None)
        s["env"]["TCPLOCALPORT"] = "PORT"
    assert normal(e[1]) == normal(n[1])


@pytest.mark.parametrize("leave", ["PROBE_OPEN", "PROBE_CHILD"])
def test_a_leftover_ends_the_child(tmp_path, leave):
    """A descriptor left open or a child process still running: the child
    exits, as a C child does after every connection."""
    d = probe_dir(tmp_path)
    with TcpServer(["-v", "-H", "-R", "-l", "0", "-c", "1"], ["tcpprobe"],
                   env=probe_env(d, QTOOLS_REUSE="10", **{leave: "1"})) as srv:
        served = [talk_json(srv)["pid"] for _ in range(2)]
        ends(srv, 2)
    assert served[0] != served[1]


def test_a_program_that_is_not_reusable_ends_the_child(tmp_path):
    """The plain probe (no REUSABLE) elided in a reusing child: it sees no
    descriptor of the child's (the listener, the pipes), and the child ends
    with it."""
    d = probe_dir(tmp_path, text=PROBE)
    with TcpServer(["-v", "-H", "-R", "-l", "0", "-c", "1"], ["tcpprobe"],
                   env=probe_env(d, QTOOLS_REUSE="10")) as srv:
        states = [talk_json(srv) for _ in range(2)]
        log = ends(srv, 2)
    for s in states:
        assert s["elided"] and sorted(s["fds"]) == ["0", "1", "2"], s["fds"]
    p = pids(log)
    assert p[0] != p[1] and pids(log, "end") == p


def test_reusing_child_keeps_its_descriptors_from_what_it_runs_further(tmp_path):
    """qmail-smtpd in a reusing child forks qmail-queue-like children: an
    elided grandchild closes the child's own descriptors as an exec would."""
    import subprocess
    code = r'''
import os, sys
from qtools.lib import pathexec, reuse
r, w = os.pipe()
lst = os.dup(0)                                 # stands for the listener
pathexec.snapshot()
base = reuse.Baseline()
pathexec.reusing(os.getpid(), (lst, r, w) + base.fds)
pathexec.exec_state(keep_own=True)              # the REUSABLE program itself
open_now = set(int(f) for f in os.listdir("/proc/self/fd"))
ok_self = {lst, r, w} <= open_now
pid = os.fork()
if pid == 0:
    pathexec.exec_state()                       # a grandchild that elides
    left = [fd for fd in (lst, r, w) + base.fds if os.path.exists("/proc/self/fd/%d" % fd)]
    os._exit(10 + len(left))
_, st = os.waitpid(pid, 0)
print(ok_self, os.waitstatus_to_exitcode(st))
'''
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       env=qenv("elide"))
    assert p.stdout.split() == ["True", "10"], p.stderr


# -- qmail-smtpd: nothing of a client reaches the next one -------------------

RELAY_RULES = b'127.0.0.2:allow,RELAYCLIENT="",WHICH="two"\n127.0.0.1:allow\n'


def rules_cdb(tmp_path, text):
    import subprocess
    cdb = tmp_path / "rules.cdb"
    subprocess.run([qbin("tcprules"), str(cdb), str(cdb) + ".tmp"], input=text, check=True,
                   timeout=30)
    return str(cdb)


def client_from(port, source):
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    c = Client(port, sock=s)
    assert c.reply() == b"220 " + GREETING + b" ESMTP\r\n"
    return c


def test_relay_rights_do_not_cross_connections(tmp_path):
    """One child (-c 1) serves a relay client (RELAYCLIENT from its rule,
    then from AUTH) and, in turn, clients that may not relay: each of those
    gets 553, and each message records its own client."""
    home = make_home(tmp_path)
    cp, _ = checkpassword(tmp_path)
    env = smtpd_env("elide", home, QTOOLS_REUSE="50", SMTPAUTH="", FORCETLS="0")
    args = ["-v", "-H", "-R", "-l", "0", "-c", "1", "-x", rules_cdb(tmp_path, RELAY_RULES)]
    with TcpServer(args, [qbin("qmail-smtpd"), cp, "/bin/true"], env=env) as srv:
        replies = []
        for source, auth in (("127.0.0.2", False), ("127.0.0.1", False),
                             ("127.0.0.1", True), ("127.0.0.1", False)):
            c = client_from(srv.port, source)
            c.cmd(b"EHLO " + source.encode())
            if auth:
                assert c.cmd(b"AUTH PLAIN AHVzZXIAZ29vZA==").startswith(b"235 ")
            c.cmd(b"MAIL FROM:<a@example.test>")
            r = c.cmd(b"RCPT TO:<x@elsewhere.example>")
            replies.append(r)
            if r.startswith(b"250"):
                c.cmd(b"DATA")
                assert c.cmd(b"Subject: from %s\r\n\r\nbody\r\n." % source.encode()) \
                    .startswith(b"250 ok ")
            assert c.cmd(b"QUIT").startswith(b"221 ")
            assert c.rest() == b""                      # the connection ends at once
            c.close()
        log = ends(srv, 4)
    assert [r[:4] for r in replies] == [b"250 ", b"553 ", b"250 ", b"553 "], replies
    assert replies[1] == b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
    assert len(set(pids(log))) == 1                     # all four in one child
    msgs = sorted(m for m, _ in queued(home))
    assert len(msgs) == 2
    froms = sorted(re.search(rb"Received: from \S+ \(HELO (\S+)\)", m).group(1) for m in msgs)
    assert froms == [b"127.0.0.1", b"127.0.0.2"]


def test_denied_client_is_dropped_and_the_child_goes_on(tmp_path):
    rules = rules_cdb(tmp_path, b"127.0.0.2:deny\n:allow\n")
    home = make_home(tmp_path)
    env = smtpd_env("elide", home, QTOOLS_REUSE="50")
    with TcpServer(["-v", "-H", "-R", "-l", "0", "-c", "1", "-x", rules],
                   [qbin("qmail-smtpd")], env=env) as srv:
        s = socket.socket()
        s.settimeout(10)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", srv.port))
        assert s.recv(100) == b""                       # dropped: no greeting
        s.close()
        c = client_from(srv.port, "127.0.0.1")
        assert c.cmd(b"QUIT").startswith(b"221 ")
        c.close()
        log = ends(srv, 2)
    p = pids(log)
    assert len(set(p)) == 1
    assert re.findall(r"^tcpserver: (ok|deny) \d+", log, re.M) == ["deny", "ok"]
    assert re.findall(r"^tcpserver: end \d+ status (\d+)$", log, re.M) == ["25600", "0"]


def test_limit_still_holds(tmp_path):
    """-c 2: two clients are served, a third waits for one of them to leave
    (reused children count as busy while they serve)."""
    home = make_home(tmp_path)
    env = smtpd_env("elide", home, QTOOLS_REUSE="50")
    with TcpServer(["-v", "-H", "-R", "-l", "0", "-c", "2"], [qbin("qmail-smtpd")],
                   env=env) as srv:
        for _ in range(2):                              # every child has been reused once
            c = client_from(srv.port, "127.0.0.1")
            c.cmd(b"QUIT")
            c.close()
        ends(srv, 2)
        a = client_from(srv.port, "127.0.0.1")
        b = client_from(srv.port, "127.0.0.1")
        third = socket.create_connection(("127.0.0.1", srv.port), timeout=0.5)
        with pytest.raises(socket.timeout):
            third.recv(100)                             # nobody accepts it now
        a.cmd(b"QUIT")
        a.close()
        third.settimeout(10)
        assert third.recv(100) == b"220 " + GREETING + b" ESMTP\r\n"
        third.close()
        b.close()
        log = ends(srv, 5)
    assert max(int(n) for n in re.findall(r"status: (\d+)/2", log)) == 2


def test_without_elision_every_connection_is_a_process(tmp_path):
    home = make_home(tmp_path)
    env = smtpd_env("noelide", home, QTOOLS_REUSE="50")
    with TcpServer(["-v", "-H", "-R", "-l", "0", "-c", "1"], [qbin("qmail-smtpd")],
                   env=env) as srv:
        for _ in range(3):
            c = client_from(srv.port, "127.0.0.1")
            c.cmd(b"QUIT")
            c.close()
        log = ends(srv, 3)
    assert len(set(pids(log))) == 3


# -- reuse.Baseline on its own, in a forked process ---------------------------

BASELINE = r'''
import os, sys, signal
from qtools.lib import reuse
case = sys.argv[1]
null = os.open("/dev/null", os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
start = (dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM))
base = reuse.Baseline()
if case == "clean":
    os.environ["NEW"] = "x"
    del os.environ["HOME"]
    os.environ["PATH"] = "/nowhere"
    os.chdir("/")
    os.umask(0o077)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    signal.setitimer(signal.ITIMER_REAL, 500)

    class Cycle:
        pass
    c = Cycle()
    c.me = c
    c.f = open("/dev/null")             # garbage that holds a descriptor
    del c
elif case == "fd":
    keep = open("/dev/null")
elif case == "grow":
    keep = bytearray(reuse.RSS_GROWTH + (4 << 20))
    keep[::4096] = b"x" * len(keep[::4096])
elif case == "ids":
    os.setgroups(list(os.getgroups()) + [4242])
ok = base.restore()
um = os.umask(0)
now = (dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM))
os.write(2, repr((ok, now == start, um, sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
                  signal.getitimer(signal.ITIMER_REAL)[0])).encode())
'''


def run_baseline(case):
    import subprocess
    p = subprocess.run([sys.executable, "-c", BASELINE, case], capture_output=True, timeout=30,
                       env=qenv("elide", HOME="/root"), cwd="/tmp")
    return eval(p.stderr.decode().strip().splitlines()[-1])


def test_baseline_puts_everything_back():
    ok, same, um, mask, timer = run_baseline("clean")
    assert ok and same
    assert um == 0o022 and mask == [] and timer == 0


@pytest.mark.parametrize("case", ["fd", "grow"] + (["ids"] if os.geteuid() == 0 else []))
def test_baseline_refuses_what_it_cannot_undo(case):
    assert run_baseline(case)[0] is False


def test_waiting_child_gives_up_after_idle_seconds():
    """serve_many's wait: (None, None) after `idle` seconds without a
    connection (the child then exits; the parent forks others as needed),
    a connection as soon as one comes."""
    from qtools.ucspi import tcpserver
    srv = tcpserver.Server(tcpserver.Config())
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    lsock.setblocking(False)
    srv.sock = lsock
    srv.death_r, death_w = os.pipe()
    try:
        assert srv.wait_accept(0.05) == (None, None)
        c = socket.create_connection(lsock.getsockname(), timeout=10)
        fd, addr = srv.wait_accept(10)
        assert fd is not None and addr[0] == "127.0.0.1"
        os.close(fd)
        c.close()
    finally:
        lsock.close()
        os.close(srv.death_r)
        os.close(death_w)
