"""qmail-queue: the queue files it writes (byte for byte), its exit codes,
the order of its syncs, crash safety under kill -9, disk full, concurrency,
and exec elision (a preloaded parent forking it through pathexec gives the
same queue as an exec)."""
import calendar
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import qbin, qenv, small_tmpfs, wait_until
from qqtools import (RECEIVED, assert_empty, check_queue, envelope, listing, mkqueue,
                     run_qq)

from qtools.lib import queue as qlib

BODY = (b"Subject: test\n\nline one\nbinary \0\x01\xff bytes\r\n"
        b"a lone \r carriage return\n.\n..dot\nno final newline")
RCPTS = [b"joe@example.com", b"fred@example.net", b"\xc3\xa9t\xc3\xa9@example.org"]


def env_part(sender, rcpts):
    """What intd/todo hold after u/p: the envelope without its final \\0."""
    return envelope(sender, rcpts)[:-1]


@pytest.fixture
def home(tmp_path):
    h = str(tmp_path / "qmail")
    mkqueue(h)
    return h


def qdir(home):
    return os.path.join(home, "queue")


# ---- the round trip --------------------------------------------------------

def test_round_trip(home, tmp_path, mode):
    before = int(time.time())
    rc, pid = run_qq(home, BODY, envelope(b"sender@example.com", RCPTS), str(tmp_path), mode)
    assert rc == 0
    q = qdir(home)
    todo = os.listdir(os.path.join(q, "todo"))
    assert len(todo) == 1
    n = int(todo[0])
    assert os.listdir(os.path.join(q, "intd")) == todo
    assert os.listdir(os.path.join(q, "pid")) == []
    # mess/N%23/N has inode N; todo/N is a link to intd/N
    messfn = os.path.join(q, "mess", str(n % 23), str(n))
    st = os.stat(messfn)
    assert st.st_ino == n and st.st_nlink == 1
    assert oct(st.st_mode & 0o777) == oct(0o644)                 # umask 033
    ist = os.stat(os.path.join(q, "intd", str(n)))
    assert ist.st_ino == os.stat(os.path.join(q, "todo", str(n))).st_ino and ist.st_nlink == 2
    with open(messfn, "rb") as f:
        mess = f.read()
    m = RECEIVED.match(mess)
    assert m, mess[:120]
    assert int(m.group(1)) == pid and int(m.group(2)) == os.getuid()
    mon = "JanFebMarAprMayJunJulAugSepOctNovDec".index(m.group(4).decode()) // 3 + 1
    t = calendar.timegm((int(m.group(5)), mon, int(m.group(3)), int(m.group(6)),
                         int(m.group(7)), int(m.group(8))))
    assert before - 1 <= t <= time.time() + 1
    assert mess[m.end():] == BODY
    with open(os.path.join(q, "todo", str(n)), "rb") as f:
        assert f.read() == b"u%d\0p%d\0" % (os.getuid(), pid) + env_part(b"sender@example.com",
                                                                         RCPTS)
    assert check_queue(q, BODY, env_part(b"sender@example.com", RCPTS)) == {pid: n}


def test_null_sender_empty_message(home, tmp_path, mode):
    rc, pid = run_qq(home, b"", envelope(b"", [b"postmaster@example.com"]), str(tmp_path), mode)
    assert rc == 0
    assert list(check_queue(qdir(home), b"", b"F\0Tpostmaster@example.com\0")) == [pid]


def test_large_envelope_and_message_stream(home, tmp_path):
    """A 3 MB message and a 250 kB envelope (many 64 KiB reads on both fds)."""
    body = bytes(random.Random(1).randbytes(3 * 1024 * 1024))
    rcpts = [b"r%04d-" % i + b"x" * 980 + b"@example.com" for i in range(250)]
    rc, _ = run_qq(home, body, envelope(b"s@example.com", rcpts), str(tmp_path))
    assert rc == 0
    assert len(check_queue(qdir(home), body, env_part(b"s@example.com", rcpts))) == 1


def test_memory_stays_bounded(home, tmp_path):
    """A 100 MB message streamed through a pipe: qmail-queue's peak RSS stays
    near an idle interpreter's (64 KiB reads, never the whole message)."""
    ef = tmp_path / "env"
    ef.write_bytes(envelope(b"a@b", [b"c@d"]))
    code = ("import resource, subprocess, sys\n"
            "head = subprocess.Popen(['head', '-c', '100000000', '/dev/zero'], stdout=subprocess.PIPE)\n"
            "with open(sys.argv[2], 'rb') as e:\n"
            "    rc = subprocess.run([sys.argv[1]], stdin=head.stdout, stdout=e).returncode\n"
            "head.stdout.close(); head.wait()\n"
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    p = subprocess.run([sys.executable, "-c", code, qbin("qmail-queue"), str(ef)],
                       capture_output=True, env=qenv(QMAILHOME=home), timeout=120)
    rc, maxrss_kb = map(int, p.stdout.split())
    assert rc == 0
    print("qmail-queue max RSS: %d kB" % maxrss_kb)
    assert maxrss_kb < 40 * 1024, maxrss_kb
    n = int(os.listdir(os.path.join(qdir(home), "todo"))[0])
    st = os.stat(os.path.join(qdir(home), qlib.fmtqfn("mess/", n, 1)))
    assert st.st_size > 100_000_000


def test_received_line_and_date():
    t = calendar.timegm((1995, 9, 26, 4, 46, 54))
    assert qlib.date822fmt(t) == b"26 Sep 1995 04:46:54 -0000\n"
    assert qlib.date822fmt(calendar.timegm((2000, 1, 1, 0, 0, 0))) == b"1 Jan 2000 00:00:00 -0000\n"
    r = qlib.received(1234, 89, t, uida=7, uidd=8, uids=9)
    assert r == b"Received: (qmail 1234 invoked by uid 89); 26 Sep 1995 04:46:54 -0000\n"
    assert b"(qmail 1 invoked by alias);" in qlib.received(1, 7, t, 7, 8, 9)
    assert b"(qmail 1 invoked from network);" in qlib.received(1, 8, t, 7, 8, 9)
    assert b"(qmail 1 invoked for bounce);" in qlib.received(1, 9, t, 7, 8, 9)
    # no such users: everybody is "by uid"
    assert b"invoked by uid 0);" in qlib.received(1, 0, t, None, None, None)


def test_qq_text_table():
    """qmail.c qmail_close(), for the callers (qmail-smtpd's 451/554 texts)."""
    ex = lambda code: code << 8                                    # noqa: E731
    assert qlib.qq_text(ex(0)) == ""
    assert qlib.qq_text(ex(0), flagerr=True) == "Zqq read error (#4.3.0)"
    assert qlib.qq_text(ex(11)) == "Denvelope address too long for qq (#5.1.3)"
    assert qlib.qq_text(ex(53)) == "Zqq write error or disk full (#4.3.0)"
    assert qlib.qq_text(ex(64)) == "Zqq trouble creating files in queue (#4.3.0)"
    assert qlib.qq_text(ex(91)) == "Zqq internal bug (#4.3.0)"
    assert qlib.qq_text(ex(30)) == "Dqq permanent problem (#5.3.0)"
    assert qlib.qq_text(ex(99)) == "Zqq temporary problem (#4.3.0)"
    assert qlib.qq_text(signal.SIGKILL) == "Zqq crashed (#4.3.0)"


# ---- exit codes, and nothing left behind ------------------------------------

@pytest.mark.parametrize("env_bytes,code", [
    (b"Xa@b\0Tc@d\0\0", 91),                   # not F
    (b"Fa@b\0Xc@d\0\0", 91),                   # not T
    (b"Fa@b\0Tc@d\0Tx", 54),                   # end of file inside an address
    (b"Fa@b\0Tc@d\0", 54),                     # no final \0
    (b"F", 54),
    (b"", 54),
    (b"F" + b"s" * 1003 + b"\0Tc@d\0\0", 11),  # sender: 1003 bytes + \0 does not fit
    (b"Fa@b\0T" + b"r" * 1003 + b"\0\0", 11),
    (b"Fa@b\0T" + b"r" * 5000, 11),            # no \0 at all: 11 before end of file
])
def test_envelope_errors(home, tmp_path, mode, env_bytes, code):
    rc, _ = run_qq(home, BODY, env_bytes, str(tmp_path), mode)
    assert rc == code
    assert_empty(qdir(home))                   # no todo, intd, mess or pid file


def test_address_limit_exact(home, tmp_path):
    """1002 bytes + \\0 = ADDR (1003) fits, for the sender and recipients, also
    when the address straddles a 64 KiB read."""
    ok_sender = b"s" * 1002
    rc, _ = run_qq(home, b"x", envelope(ok_sender, [b"r" * 1002]), str(tmp_path))
    assert rc == 0
    pad = [b"p" * 900] * 72                    # 72 * 902 = 64944: the next one straddles 65536
    rc, _ = run_qq(home, b"x", envelope(b"a", pad + [b"r" * 1002]), str(tmp_path))
    assert rc == 0
    assert len(os.listdir(os.path.join(qdir(home), "todo"))) == 2
    shutil.rmtree(qdir(home))
    mkqueue(home)
    rc, _ = run_qq(home, b"x", envelope(b"a", pad + [b"r" * 1003]), str(tmp_path))
    assert rc == 11
    assert_empty(qdir(home))


@pytest.mark.parametrize("damage,code", [
    ("nohome", 61), ("noqueue", 62), ("pid", 63), ("mess", 64), ("intd", 65), ("todo", 66),
])
def test_queue_trouble(home, tmp_path, mode, damage, code):
    q = qdir(home)
    h = home
    if damage == "nohome":
        h = str(tmp_path / "does-not-exist")
    elif damage == "noqueue":
        shutil.rmtree(q)
    elif damage == "mess":
        for i in range(23):
            os.rmdir(os.path.join(q, "mess", str(i)))
    else:
        os.rmdir(os.path.join(q, damage))
    rc, _ = run_qq(h, BODY, envelope(b"a@b", [b"c@d"]), str(tmp_path), mode)
    assert rc == code
    if damage not in ("nohome", "noqueue"):
        for d in ("pid", "intd", "todo"):
            if d != damage:
                assert os.listdir(os.path.join(q, d)) == []
        if damage != "mess":
            assert all(os.listdir(os.path.join(q, "mess", str(i))) == [] for i in range(23))


def test_unreadable_message_is_54(home, tmp_path):
    fd = os.open(str(tmp_path / "wo"), os.O_WRONLY | os.O_CREAT)        # read() -> EBADF
    ef = tmp_path / "env"
    ef.write_bytes(envelope(b"a@b", [b"c@d"]))
    try:
        with open(ef, "rb") as e:
            p = subprocess.run([qbin("qmail-queue")], stdin=fd, stdout=e, env=qenv(QMAILHOME=home),
                               timeout=30)
    finally:
        os.close(fd)
    assert p.returncode == 54
    assert_empty(qdir(home))


def test_alarm_is_52_and_cleans_up(home, tmp_path):
    """SIGALRM (qmail's 24-hour DEATH timer) while qmail-queue waits for the
    message: exit 52, the half-made mess file removed."""
    ef = tmp_path / "env"
    ef.write_bytes(envelope(b"a@b", [b"c@d"]))
    q = qdir(home)
    r, w = os.pipe()
    with open(ef, "rb") as e:
        p = subprocess.Popen([qbin("qmail-queue")], stdin=r, stdout=e, env=qenv(QMAILHOME=home))
    os.close(r)
    try:
        os.write(w, b"partial message\n")
        wait_until(lambda: any(os.listdir(os.path.join(q, "mess", str(i))) for i in range(23)),
                   proc=p, what="mess file")
        p.send_signal(signal.SIGALRM)
        assert p.wait(10) == 52
    finally:
        os.close(w)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert_empty(q)


def test_trigger_is_pulled(home, tmp_path):
    trig = os.path.join(qdir(home), "lock", "trigger")
    fd = os.open(trig, os.O_RDONLY | os.O_NONBLOCK)
    try:
        rc, _ = run_qq(home, BODY, envelope(b"a@b", [b"c@d"]), str(tmp_path))
        assert rc == 0
        assert os.read(fd, 10) == b"\0"
    finally:
        os.close(fd)
    # nobody reading the fifo (ENXIO), or no fifo at all: still queued
    os.unlink(trig)
    rc, _ = run_qq(home, BODY, envelope(b"a@b", [b"c@d"]), str(tmp_path))
    assert rc == 0
    assert len(os.listdir(os.path.join(qdir(home), "todo"))) == 2


# ---- durability: the order of syncs ----------------------------------------

STRACE = shutil.which("strace")


@pytest.mark.skipif(not STRACE, reason="strace not installed")
def test_sync_order(home, tmp_path):
    """fsync(mess), fsync(mess/S), [intd written], fsync(intd/N) (not intd/:
    only a staging name), link(intd/N, todo/N), fsync(todo), exit 0: the 250 only follows a durable
    message, and todo/N appears only for a complete, synced envelope."""
    mf, ef, log = tmp_path / "m", tmp_path / "e", tmp_path / "strace.log"
    mf.write_bytes(BODY)
    ef.write_bytes(envelope(b"a@b", [b"c@d"]))
    with open(mf, "rb") as m, open(ef, "rb") as e:
        p = subprocess.run([STRACE, "-f", "-y", "-qq", "-o", str(log), "-e",
                            "trace=openat,write,fsync,fdatasync,link,linkat,unlink,rename,exit_group",
                            qbin("qmail-queue")], stdin=m, stdout=e, env=qenv(QMAILHOME=home),
                           timeout=60)
    assert p.returncode == 0
    q = os.path.realpath(qdir(home))

    def name(m):
        """A queue path with the numbers taken out: mess/N/N, pid/N.N.N ..."""
        path = m.group(1).replace(" (deleted)", "")
        return re.sub(r"\d+", "N", os.path.relpath(path, q) if path.startswith("/") else path)

    seq = []
    for line in log.read_text(errors="replace").splitlines():
        line = re.sub(r"^\d+\s+", "", line)
        call = line.split("(", 1)[0]
        if call in ("fsync", "fdatasync", "write"):
            ev = "%s %s" % (call, name(re.search(r"^\w+\(\d+<([^>]*)>", line)))
        elif call in ("link", "linkat", "rename", "unlink"):
            ev = call + " " + " ".join(re.sub(r"\d+", "N", a) for a in re.findall(r'"([^"]*)"', line))
        elif call == "openat" and "O_CREAT" in line:
            ev = "create " + re.sub(r"\d+", "N", re.search(r'"([^"]*)"', line).group(1))
        elif call == "exit_group":
            ev = line.split("=")[0].strip()
        else:
            continue
        if ev.startswith(("write /", "write pipe", "write socket")) or (seq and seq[-1] == ev):
            continue
        seq.append(ev)
    start = seq.index("create pid/N.N.N")
    assert seq[start:] == [
        "create pid/N.N.N", "link pid/N.N.N mess/N/N", "unlink pid/N.N.N",
        "write pid/N.N.N",                  # the fd opened as pid/..., now only mess/N/N
        "fsync pid/N.N.N", "fsync mess/N",
        "create intd/N", "write intd/N", "fsync intd/N",
        "link intd/N todo/N", "fsync todo",
        "exit_group(0)"], seq[start:]


# ---- crash safety ------------------------------------------------------------

def crash_check(q, body, env_part_, finished_pids):
    found = check_queue(q, body, env_part_)
    for pid in finished_pids:
        assert pid in found, "exit 0 but not in todo/"
    return found


def test_kill9_at_random_points(home, tmp_path):
    """30 runs of qmail-queue on a 16 MiB message, each SIGKILLed after a
    random delay spread over a normal run's duration (start-up, copy, syncs;
    the kills after the todo link are test_kill9_at_each_step's).  After every kill the
    queue holds only complete messages in todo/, and every run that exited 0
    is there."""
    q = qdir(home)
    body = random.Random(2).randbytes(16 * 1024 * 1024)
    ep = env_part(b"big@example.com", RCPTS)
    mf, ef = tmp_path / "m", tmp_path / "e"
    mf.write_bytes(body)
    ef.write_bytes(envelope(b"big@example.com", RCPTS))
    env = qenv(QMAILHOME=home)

    def start():
        with open(mf, "rb") as m, open(ef, "rb") as e:
            return subprocess.Popen([qbin("qmail-queue")], stdin=m, stdout=e, env=env)

    finished, durations = [], []
    for _ in range(2):
        t0 = time.monotonic()
        p = start()
        assert p.wait(60) == 0
        durations.append(time.monotonic() - t0)
        finished.append(p.pid)
    duration = min(durations)
    rng = random.Random(3)
    killed = 0
    deadline = time.monotonic() + 60
    for _ in range(30):
        assert time.monotonic() < deadline
        p = start()
        time.sleep(rng.uniform(0, duration))            # the kill point, not a synchronisation
        p.kill()
        rc = p.wait(30)
        if rc == 0:
            finished.append(p.pid)
        else:
            assert rc == -signal.SIGKILL
            killed += 1
        crash_check(q, body, ep, finished)
    print("kill -9: %d killed, %d finished, run %.0f ms" % (killed, len(finished) - 2, duration * 1000))
    assert killed >= 5, "the kills mostly came too late: %d" % killed


@pytest.mark.skipif(not STRACE, reason="strace not installed")
@pytest.mark.parametrize("point", ["fsync:when=1", "fsync:when=2", "fsync:when=3",
                                   "link:when=1", "link:when=2", "unlink:when=1",
                                   "fsync:when=4"])
def test_kill9_at_each_step(home, tmp_path, point):
    """SIGKILL delivered exactly at a syscall (strace fault injection): before
    each sync and each link.  Nothing but the todo link makes a message
    visible; killed before it, nothing is in todo/."""
    q = qdir(home)
    mf, ef = tmp_path / "m", tmp_path / "e"
    mf.write_bytes(BODY)
    ef.write_bytes(envelope(b"a@b", [b"c@d"]))
    sysc, when = point.split(":")
    with open(mf, "rb") as m, open(ef, "rb") as e:
        p = subprocess.run([STRACE, "-f", "-qq", "-o", os.devnull, "-e", "trace=" + sysc,
                            "-e", "inject=%s:signal=KILL:%s" % (sysc, when),
                            qbin("qmail-queue")], stdin=m, stdout=e, env=qenv(QMAILHOME=home),
                           timeout=60)
    assert p.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL, 137), p.returncode
    found = check_queue(q, BODY, env_part(b"a@b", [b"c@d"]))
    # only the kill at the todo fsync (the 4th) comes after the todo link
    assert len(found) == (1 if point == "fsync:when=4" else 0)
    if point != "fsync:when=4":
        assert os.listdir(os.path.join(q, "todo")) == []


# ---- disk full ----------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    with small_tmpfs(tmp_path / "small", "200k") as d:
        yield str(d)


def test_disk_full(small_fs, tmp_path, mode):
    home = os.path.join(small_fs, "qmail")
    q = mkqueue(home)
    # the message does not fit
    rc, _ = run_qq(home, b"x" * 400_000, envelope(b"a@b", [b"c@d"]), str(tmp_path), mode)
    assert rc == 53
    assert_empty(q)
    # the envelope does not fit
    rc, _ = run_qq(home, b"small", envelope(b"a@b", [b"r" * 1000] * 300), str(tmp_path), mode)
    assert rc == 53
    assert_empty(q)
    # space is back: service is back
    rc, _ = run_qq(home, b"small", envelope(b"a@b", [b"c@d"]), str(tmp_path), mode)
    assert rc == 0
    assert len(check_queue(q, b"small", b"Fa@b\0Tc@d\0")) == 1


# ---- concurrency ----------------------------------------------------------------

def test_fifty_in_parallel(home, tmp_path):
    q = qdir(home)
    mf, ef = tmp_path / "m", tmp_path / "e"
    mf.write_bytes(BODY)
    ef.write_bytes(envelope(b"a@b", RCPTS))
    env = qenv(QMAILHOME=home)
    procs = []
    try:
        for _ in range(50):
            with open(mf, "rb") as m, open(ef, "rb") as e:
                procs.append(subprocess.Popen([qbin("qmail-queue")], stdin=m, stdout=e, env=env))
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * 50
    found = check_queue(q, BODY, env_part(b"a@b", RCPTS))
    assert sorted(found) == sorted(p.pid for p in procs)
    assert len(set(found.values())) == 50
    assert os.listdir(os.path.join(q, "pid")) == []


# ---- exec elision ------------------------------------------------------------------

def normalize(files):
    """Queue files with message numbers, pids and dates taken out."""
    out = []
    for path, data in files.items():
        kind = path.split("/")[0]
        data = re.sub(rb"^Received: \(qmail \d+ (.*?)\); [^\n]*\n", rb"Received: (qmail PID \1); DATE\n",
                      data)
        data = re.sub(rb"^u(\d+)\0p\d+\0", rb"u\1\0pPID\0", data)
        out.append((kind, data))
    return sorted(out)


def test_elided_and_exec_queue_the_same(tmp_path):
    results = {}
    for mode in ("elide", "noelide"):
        home = str(tmp_path / mode / "qmail")
        mkqueue(home)
        rc, pid = run_qq(home, BODY, envelope(b"s@example.com", RCPTS), str(tmp_path), mode)
        assert rc == 0
        results[mode] = normalize(listing(qdir(home)))
        assert len(results[mode]) == 3                  # mess, intd, todo
    assert results["elide"] == results["noelide"]
    rc_e, _ = run_qq(str(tmp_path / "elide" / "qmail"), BODY, b"Fbad", str(tmp_path), "elide")
    rc_x, _ = run_qq(str(tmp_path / "noelide" / "qmail"), BODY, b"Fbad", str(tmp_path), "noelide")
    assert rc_e == rc_x == 54


def test_no_output_on_fd1_and_silent(home, tmp_path):
    """qmail-queue prints no diagnostics; fd 1 is its envelope input."""
    ef = tmp_path / "env"
    ef.write_bytes(b"Xbad")
    with open(ef, "rb") as e:
        p = subprocess.run([qbin("qmail-queue")], input=BODY, stdout=e, stderr=subprocess.PIPE,
                           env=qenv(QMAILHOME=home), timeout=30)
    assert (p.returncode, p.stderr) == (91, b"")

