"""Helpers for the daemontools supervision tests (supervise, svc, svstat, svok,
svscan, readproctitle): service directories, the 18-byte status file, real
supervise processes in their own session, /proc inspection."""
import os
import signal
import struct
import subprocess
import time

from helpers import qbin, wait_until

TAIBASE = (1 << 62) + 10


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def service(d, run="exec sleep 1000\n", log=None, down=False, finish=None):
    """A service directory: run (a sh script), optional log/run, down, finish."""
    os.makedirs(d, exist_ok=True)
    if run is not None:
        write(os.path.join(d, "run"), "#!/bin/sh\n" + run, 0o755)
    if finish is not None:
        write(os.path.join(d, "finish"), "#!/bin/sh\n" + finish, 0o755)
    if down:
        write(os.path.join(d, "down"), "")
    if log is not None:
        os.makedirs(os.path.join(d, "log"), exist_ok=True)
        write(os.path.join(d, "log", "run"), "#!/bin/sh\n" + log, 0o755)
    return str(d)


def pack_status(sec, nano, pid, paused, want):
    return struct.pack(">QL", sec, nano) + struct.pack("<L", pid) + bytes((paused, want))


def read_status(d):
    """(tai seconds, nanoseconds, pid, paused, want) or None."""
    try:
        with open(os.path.join(d, "supervise", "status"), "rb") as f:
            b = f.read()
    except OSError:
        return None
    if len(b) < 18:
        return None
    sec, nano = struct.unpack(">QL", b[:12])
    pid, = struct.unpack("<L", b[12:16])
    return sec, nano, pid, b[16], b[17]


def status_time(st):
    """Unix time (float) of a status tuple."""
    return st[0] - TAIBASE + st[1] / 1e9


def supervised(d):
    """True if some supervise holds d/supervise/ok open (what svok tests)."""
    try:
        fd = os.open(os.path.join(d, "supervise", "ok"), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def wait_pid(d, pred=lambda pid: pid != 0, timeout=10.0, proc=None, what="status"):
    """Poll d/supervise/status until pred(pid); return the status tuple."""
    def check():
        st = read_status(d)
        return st if st and pred(st[2]) else None
    return wait_until(check, timeout, proc, what)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def proc_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def cmdline(pid):
    """argv as ps shows it: NULs to spaces, trailing NULs dropped; b"" for a
    process that has just gone (a listing of children can be stale)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ")
    except (FileNotFoundError, ProcessLookupError):
        return b""


def children(pid):
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def fdlink(pid, fd):
    try:
        return os.readlink("/proc/%d/fd/%d" % (pid, fd))
    except OSError:
        return None


def cwd(pid):
    """The working directory, or "" for a process that has just gone."""
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return ""


class Proc:
    """A process in its own session; everything in its process group (also
    orphans it leaves) is killed on exit.  stderr goes to a file."""

    def __init__(self, argv, env=None, cwd=None, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, errpath=None):
        self.argv, self.env, self.cwd = argv, env, cwd
        self.stdin, self.stdout = stdin, stdout
        self.errpath = errpath

    def __enter__(self):
        self.errf = open(self.errpath, "wb") if self.errpath else subprocess.DEVNULL
        self.p = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=self.stdin,
                                  stdout=self.stdout, stderr=self.errf,
                                  start_new_session=True)
        self.pid = self.p.pid
        return self

    def err(self):
        with open(self.errpath, "rb") as f:
            return f.read()

    def wait(self, timeout=10):
        return self.p.wait(timeout)

    def __exit__(self, *a):
        killgroup(self.pid)
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.errpath:
            self.errf.close()


def killgroup(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def start_supervise(d, env, binary=None, errpath=None, wait=True, cwd=None, prefix=()):
    """A supervise (qtools by default) on d; waits until svok would say yes."""
    pr = Proc(list(prefix) + [binary or qbin("supervise"), str(d)], env=env, errpath=errpath,
              cwd=cwd)
    pr.__enter__()
    if wait:
        full = os.path.join(cwd or "", str(d))
        try:
            wait_until(lambda: supervised(full), 10, pr.p, "supervise on %s" % d)
        except BaseException:
            pr.__exit__()
            raise
    return pr


def run(argv, env=None, cwd=None, input=None, timeout=20):
    p = subprocess.run(argv, env=env, cwd=cwd, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def noaccess_prefix():
    """A command prefix under which root loses its permission override, so
    mode-000 directories are really inaccessible (empty when not root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def sleep_until(t):
    """For the few checks of an absence: wait for a fixed point in time."""
    while True:
        d = t - time.monotonic()
        if d <= 0:
            return
        time.sleep(min(d, 0.05))
