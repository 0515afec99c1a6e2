#!/usr/bin/env python3
"""SMTP acceptance: qtools vs Postfix vs aiosmtpd, in one run, as ratios.

The client is Postfix's smtp-source (from a `dpkg -x` of Debian's postfix
package, see pfinstance.py): `smtp-source -4 -M test.example -l 4096
-f a@test.example -t b@test.example -s S -m M`, one message of 4096 body
bytes per connection, no pipelining; S = 20 sessions for throughput and
S = 1 for the per-message latency (ms/msg = wall time / M).  Targets, all on
127.0.0.1, all started here and stopped by pid:

  sink     smtp-sink -u root (accepts and discards: the client's ceiling)
  qtools   tcpserver -H -R -l 0 -c 40 -x rules.cdb 127.0.0.1 0 qmail-smtpd
           with exec elision; the rules give 127.0.0.1 RELAYCLIENT=""; a
           private QMAILHOME with control/me, control/rcpthosts and a queue
           made by queue-fix; qmail-queue leaves each message in todo/ (no
           qmail-send runs); one process per connection, as qmail
  qtools-reuse  the same with QTOOLS_REUSE=100: a child serves up to 100
           connections one after another (Postfix's max_use), put back as
           it was between them (qtools.lib.reuse)
  noelide  the same with QTOOLS_NOELIDE=1 (a Python start-up per connection
           and per qmail-queue), fewer messages
  postfix  a private Postfix 3.7 (pfinstance.py, the anchors' pf_setup.sh):
           smtpd -> cleanup -> qmgr -> virtual into a Maildir; it is
           drained (everything delivered) after each of its runs, so its
           acceptance overlaps only its own delivery
  aio      aiosmtpd, write + fsync + rename + fsync(new/) per message before
           the 250 (aio_smtpd.py, the anchors' "aio")

Each target gets a warm-up, then REPS interleaved rounds (the order rotates
each round) of s=20 and s=1; the table gives the median [min-max] of the
rounds and ms/msg = wall time / messages (at s=1: the latency of one
message, connection included).  cpu/msg is the CPU time (user+sys,
children included) of the server's whole process tree per message, read
from /proc around each run (Postfix's includes its delivery).  The header
gives the disk's file-creation and fsync costs where everything is stored.  At the end every stored message is
counted: todo/ and mess/ files of each qtools queue, the Maildir files of
Postfix and aio; any shortfall fails the run.  Every load is bounded by a
message count and a timeout; temp dirs are removed.

usage: bench/smtp.py [-r REPS] [-m M20] [-1 M1] [-n] [-b CHECKOUT] [DIR]
  -r REPS  rounds (default 5); -m M20  messages per s=20 run (default 2000);
  -1 M1    messages per s=1 run (default 500); -n  skip the noelide case;
  -b CHECKOUT  also measure the qtools of another checkout (PYTHONPATH), e.g.
           `git worktree add /tmp/base HEAD~3`: before/after in one run;
  DIR      where the queues and Maildirs go (default /var/tmp: the disk)
Needs root (Postfix's master; smtp-sink -u root) and aiosmtpd in this venv (run/bootstrap bench).
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pfinstance  # noqa: E402

QBIN = os.path.dirname(os.path.abspath(sys.executable))
REUSE = 100             # QTOOLS_REUSE of the qtools-reuse target: Postfix's max_use
SOURCE_ARGS = ["-4", "-M", "test.example", "-l", "4096", "-f", "a@test.example",
               "-t", "b@test.example"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("bench: server exited %s before listening" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit("bench: nothing listening on %d" % port)


def read_port(proc, timeout=20):
    """The first stdout line of proc (tcpserver -1, aio_smtpd.py)."""
    import select
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    if not r:
        raise SystemExit("bench: server did not say its port")
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        raise SystemExit("bench: server said %r" % line)
    return int(line)


def disk_probe(d, n=200):
    """The disk's costs where the queues and Maildirs go: microseconds per
    file creation (ext4 without a journal skips recently deleted inodes one
    by one, so this varies with the directory's history) and per fsync of a
    4 KiB file."""
    p = os.path.join(d, "probe")
    os.mkdir(p)
    try:
        t = time.perf_counter()
        for i in range(n):
            os.close(os.open(os.path.join(p, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        create = (time.perf_counter() - t) / n * 1e6
        fd = os.open(os.path.join(p, "f"), os.O_WRONLY | os.O_CREAT, 0o644)
        t = time.perf_counter()
        for _ in range(n):
            os.pwrite(fd, b"x" * 4096, 0)
            os.fsync(fd)
        fsync = (time.perf_counter() - t) / n * 1e6
        os.close(fd)
    finally:
        shutil.rmtree(p, ignore_errors=True)
    return create, fsync


def tree_cpu(root):
    """CPU seconds (utime+stime+cutime+cstime) of root and its descendants."""
    stats = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        stats[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    kids = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(kids.get(pid, ()))
    return total / TICK


class Target:
    """A server: start(), the port, the pid whose tree does the work, stop(),
    after(m) once a run's m messages were sent, stored()."""
    drain = None

    def __init__(self, name, label):
        self.name, self.label = name, label
        self.sent = 0

    def after(self, m):
        self.sent += m

    def stop(self):
        p = self.proc
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        try:
            os.killpg(p.pid, signal.SIGKILL)        # leftovers in its group (spares, children)
        except OSError:
            pass


class Sink(Target):
    def __init__(self, pfroot, work):
        Target.__init__(self, "sink", "smtp-sink (discards: client ceiling)")
        self.pfroot = pfroot
        self.work = work

    def start(self):
        self.port = free_port()
        self.err = open(os.path.join(self.work, "sink.stderr"), "wb")
        self.proc = subprocess.Popen(
            [pfinstance.tool(self.pfroot, "smtp-sink"), "-u", "root",
             "127.0.0.1:%d" % self.port, "256"], env=pfinstance.libenv(self.pfroot),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err,
            start_new_session=True)
        wait_port(self.port, self.proc)

    def stored(self):
        return None


class Qtools(Target):
    def __init__(self, work, noelide=False, base=None, reuse=0):
        name = ("noelide" if noelide else "base" if base else "qtools") + ("-reuse" if reuse else "")
        Target.__init__(self, name, "qtools tcpserver+qmail-smtpd" +
                        (", QTOOLS_NOELIDE=1" if noelide else " (elided)") +
                        (", QTOOLS_REUSE=%d" % reuse if reuse else "") +
                        (" from -b" if base else ""))
        self.home = os.path.join(work, name)
        self.noelide = noelide
        self.base = base
        self.reuse = reuse

    def start(self):
        home = self.home
        os.makedirs(os.path.join(home, "control"))
        with open(os.path.join(home, "control", "me"), "w") as f:
            f.write("qtools.test.example\n")
        with open(os.path.join(home, "control", "rcpthosts"), "w") as f:
            f.write("test.example\n")
        subprocess.run([os.path.join(QBIN, "queue-fix"), os.path.join(home, "queue")],
                       check=True, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)     # "no such user": root owns it
        rules = os.path.join(home, "rules.cdb")
        subprocess.run([os.path.join(QBIN, "tcprules"), rules, rules + ".tmp"],
                       input=b'127.0.0.1:allow,RELAYCLIENT=""\n', check=True, timeout=60)
        env = dict(os.environ, PATH=QBIN + ":/usr/bin:/bin", QMAILHOME=home)
        env.pop("QTOOLS_NOELIDE", None)
        env.pop("QTOOLS_REUSE", None)
        if self.reuse:
            env["QTOOLS_REUSE"] = str(self.reuse)
        if self.base:
            env["PYTHONPATH"] = self.base
        if self.noelide:
            env["QTOOLS_NOELIDE"] = "1"
        self.err = open(os.path.join(home, "smtpd.log"), "wb")
        self.proc = subprocess.Popen(
            [os.path.join(QBIN, "tcpserver"), "-1", "-H", "-R", "-l", "0", "-c", "40",
             "-x", rules, "127.0.0.1", "0", "qmail-smtpd"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err,
            start_new_session=True)
        self.port = read_port(self.proc)

    def stored(self):
        q = os.path.join(self.home, "queue")
        todo = len(os.listdir(os.path.join(q, "todo")))
        mess = sum(len(os.listdir(os.path.join(q, "mess", d)))
                   for d in os.listdir(os.path.join(q, "mess")))
        return min(todo, mess), "todo/ %d, mess/ %d" % (todo, mess)


class Postfix(Target):
    def __init__(self, pfroot, work):
        Target.__init__(self, "postfix", "Postfix 3.7 -> virtual Maildir")
        self.inst = pfinstance.Instance(pfroot, os.path.join(work, "postfix"), free_port())

    def start(self):
        self.port = self.inst.port
        self.proc = self.inst.start()
        wait_port(self.port, self.proc)

    def after(self, m):
        Target.after(self, m)
        self.inst.drain(self.sent)

    def stop(self):
        self.inst.stop()

    def stored(self):
        n = self.inst.delivered()
        return n, "Maildir %d, still queued %d" % (n, self.inst.queued())


class Aio(Target):
    def __init__(self, work):
        Target.__init__(self, "aio", "aiosmtpd write+fsync+rename+fsync(dir)")
        self.maildir = os.path.join(work, "aio")

    def start(self):
        self.err = open(self.maildir + ".stderr", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "aio_smtpd.py"), self.maildir],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err,
            start_new_session=True)
        self.port = read_port(self.proc)

    def stored(self):
        n = len(os.listdir(os.path.join(self.maildir, "new")))
        return n, "Maildir %d" % n


def source(pfroot, port, s, m, timeout):
    """One smtp-source run: (seconds, rc, last stderr lines)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([pfinstance.tool(pfroot, "smtp-source")] + SOURCE_ARGS +
                           ["-s", str(s), "-m", str(m), "127.0.0.1:%d" % port],
                           env=pfinstance.libenv(pfroot), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, "timeout", b""
    return time.perf_counter() - t0, p.returncode, p.stderr[-300:]


def measure(pfroot, t, s, m, results):
    c0 = tree_cpu(t.proc.pid)
    dt, rc, err = source(pfroot, t.port, s, m, timeout=max(60, m * 0.2))
    t.after(m)
    cpu = tree_cpu(t.proc.pid) - c0
    if rc != 0:
        raise SystemExit("bench: %s s=%d m=%d: smtp-source %s: %s"
                         % (t.name, s, m, rc, err.decode("ascii", "replace")))
    results.setdefault((t.name, s), []).append((m / dt, dt / m * 1000, cpu / m * 1000))


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description="SMTP acceptance benchmark")
    ap.add_argument("-r", type=int, default=5, dest="reps")
    ap.add_argument("-m", type=int, default=2000, dest="m20")
    ap.add_argument("-1", type=int, default=500, dest="m1")
    ap.add_argument("-n", action="store_true", dest="skip_noelide")
    ap.add_argument("-b", dest="base", help="another qtools checkout (e.g. a git worktree of "
                    "an older commit): its tcpserver+qmail-smtpd as one more target")
    ap.add_argument("dir", nargs="?", default="/var/tmp")
    a = ap.parse_args()
    if os.getuid() != 0:
        raise SystemExit("bench: run as root (Postfix's master, smtp-sink -u root)")
    try:
        import aiosmtpd  # noqa: F401 - the "aio" anchor runs in this interpreter
    except ImportError:
        raise SystemExit("bench: aiosmtpd is not installed here: run/bootstrap bench "
                         "(pip install 'qtools-mail[bench]')")
    pfroot = pfinstance.root()
    made = pfinstance.ensure_users()
    if made:
        print("# created " + ", ".join(made))
    import qtools       # as an install does: without .pyc files every exec recompiles
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(qtools.__file__)],
                   check=True)
    work = tempfile.mkdtemp(prefix="smtpbench.", dir=a.dir)
    os.chmod(work, 0o755)        # Postfix's daemons (postfix, nobody) must reach their dirs
    fstype = subprocess.run(["stat", "-f", "-c", "%T", work], capture_output=True,
                            text=True).stdout.strip()
    create, fsync = disk_probe(work)
    print("# smtp bench %s: nproc=%d load=%s fs=%s (%s) reps=%d, s=20 x %d msgs, s=1 x %d msgs"
          % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.cpu_count(),
             open("/proc/loadavg").read().split()[0], fstype, work, a.reps, a.m20, a.m1))
    print("# disk there: %.0f us per file creation, %.0f us per 4 KiB write+fsync "
          "(qtools and Postfix create 2 files a message, aio 1)" % (create, fsync))
    targets = [Sink(pfroot, work), Qtools(work), Qtools(work, reuse=REUSE),
               Postfix(pfroot, work), Aio(work)]
    if a.base:
        base = os.path.abspath(a.base)
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(base, "qtools")],
                       check=True)
        targets.insert(3, Qtools(work, base=base))
    noelide = None if a.skip_noelide else Qtools(work, noelide=True)
    started = []
    results = {}
    ok = True
    try:
        for t in targets + ([noelide] if noelide else []):
            t.start()
            started.append(t)
        for t in targets:                   # warm-up: spawn, caches, first files
            measure(pfroot, t, 20, 200, {})
        for r in range(a.reps):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for t in order:
                measure(pfroot, t, 20, a.m20, results)
                measure(pfroot, t, 1, a.m1, results)
        if noelide:
            m20, m1 = max(40, a.m20 // 10), max(20, a.m1 // 10)
            measure(pfroot, noelide, 20, m20, results)
            measure(pfroot, noelide, 1, m1, results)
        for t in started:
            t.stop()
        print("# load at the end: %s" % open("/proc/loadavg").read().split()[0])
        print("%-62s %2s  %-28s %8s %8s" % ("target", "s", "msgs/s median [min-max]",
                                            "ms/msg", "cpu/msg"))
        for t in targets + ([noelide] if noelide else []):
            for s in (20, 1):
                rs = results.get((t.name, s))
                if not rs:
                    continue
                rates = [x[0] for x in rs]
                print("%-62s %2d  %7.1f [%7.1f-%7.1f]    %6.2fms %6.2fms"
                      % (t.label, s, med(rates), min(rates), max(rates),
                         med(x[1] for x in rs), med(x[2] for x in rs)))
        for t in started:
            got = t.stored()
            if got is None:
                continue
            n, what = got
            flag = "ok" if n == t.sent else "MISSING %d" % (t.sent - n)
            ok = ok and n == t.sent
            print("stored %-8s sent %6d: %s  %s" % (t.name, t.sent, what, flag))

        def rate(name, s):
            return med(x[0] for x in results[(name, s)])

        def lat(name, s):
            return med(x[1] for x in results[(name, s)])
        for q in ("qtools", "qtools-reuse"):
            print("ratio %-13s/postfix  s=20 msgs/s : %.2fx   (target >= 1.0x)"
                  % (q, rate(q, 20) / rate("postfix", 20)))
            print("ratio %-13s/postfix  s=1 ms/msg  : %.2fx   (target <= 1.5x)"
                  % (q, lat(q, 1) / lat("postfix", 1)))
        print("ratio qtools/aio      s=20 msgs/s : %.2fx ; s=1 ms/msg %.2fx"
              % (rate("qtools", 20) / rate("aio", 20), lat("qtools", 1) / lat("aio", 1)))
        if a.base:
            print("ratio qtools/base     s=20 msgs/s : %.2fx ; s=1 ms/msg %.2fx   (base: -b %s)"
                  % (rate("qtools", 20) / rate("base", 20), lat("qtools", 1) / lat("base", 1),
                     a.base))
        if noelide:
            print("ratio qtools/noelide  s=20 msgs/s : %.2fx ; s=1 ms/msg %.2fx"
                  % (rate("qtools", 20) / rate("noelide", 20),
                     lat("qtools", 1) / lat("noelide", 1)))
    finally:
        for t in started:
            try:
                t.stop()
            except Exception as e:          # noqa: BLE001 - stop the others anyway
                print("bench: stopping %s: %s" % (t.name, e), file=sys.stderr)
        if os.environ.get("QTOOLS_BENCH_KEEP"):
            print("# kept " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
