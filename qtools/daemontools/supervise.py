"""supervise - start a service and keep it running.

usage: supervise dir

supervise switches to DIR and starts ./run (argv `./run`, supervise's own
environment and fds 0, 1, 2).  When ./run exits it is started again.  After
every start supervise sleeps one second, so a ./run that exits at once is
restarted at most once a second.  If DIR/down exists, ./run is not started
until `svc -u` or `svc -o` asks for it.

Files, compatible byte for byte with daemontools 0.76 (C svc, svstat and svok
work on a qtools supervise and the other way round):
  supervise/lock      held with flock(LOCK_EX|LOCK_NB): one supervise per DIR
  supervise/control   fifo; svc writes one command byte per action
  supervise/ok        fifo kept open for reading: svok/svstat test it
  supervise/status    18 bytes: TAI64N of the last start or death (big-endian
                      seconds 2^62+10+unix, nanoseconds), pid little-endian
                      (0 = down), paused flag, want byte `u`/`d`/NUL; written
                      to supervise/status.new and renamed over it
If DIR/supervise is a dangling symlink its target is created (Debian patch).

Control bytes (one per loop, others ignored): u up, d down (TERM then CONT),
o once, p pause (STOP), c continue (CONT), h HUP, a ALRM, i INT, t TERM,
k KILL, x exit as soon as the service is down.

qtools extension: if DIR/finish exists and is executable, it runs each time
./run exits, as `./finish CODE SIG` (CODE = exit code, or 256 if ./run was
killed by a signal; SIG = that signal's number, else 0), like runit and s6.
The service stays down (pid 0 in the status) while finish runs; it is
restarted, and `x` makes supervise exit, only when finish has ended.  finish
is killed (KILL) after DIR/timeout-finish milliseconds (default 5000; 0 = no
limit), as in s6.

qtools extension: when ./run fails (non-zero exit or a signal) within 2
seconds of its start twice in a row and is to be restarted, supervise says so on stderr (at most once a minute):
`supervise: warning: DIR/run keeps dying at once (exit code N); restarting it
every second`.  Under svscanboot that shows in readproctitle's title, so a
crashing log/run that leaves its service blocked on a full pipe is visible.

Killing supervise leaves ./run running (no SIGTERM handler, as in C).  qtools:
a new supervise on the same DIR finds that ./run through the pid in the
status file (it must still work in DIR) and stops it (TERM+CONT, KILL after 5
seconds) before starting its own, with a warning, where C would run a second
copy beside it.  A fork failure is reported as
`supervise: warning: unable to fork for DIR, sleeping 60 seconds: ERR` and the
start is retried (Debian patch).  The process title is `supervise DIR`.

Exit codes: 0 after `svc -x`, 100 usage, 111 set-up failure (e.g.
`supervise: fatal: unable to acquire DIR/supervise/lock: temporary failure`
when another supervise runs in DIR).  A ./run that cannot be executed makes
the forked child print `supervise: fatal: unable to start DIR/run: ERR` and
exit 111; supervise itself goes on and retries once a second.
"""
import errno
import fcntl
import os
import select
import signal
import struct
import time

from qtools.lib import fd as fdio, proctitle, sig, strerr, tai64

PROG, USAGE = "supervise", "supervise dir"
FINISH_TIMEOUT_MS = 5000        # s6-supervise's default
WANT_UP, WANT_DOWN = 0x75, 0x64


QUICK = 2.0                             # a death this soon after the start is a crash


def deepsleep(seconds):
    """Sleep through signals (PEP 475 resumes time.sleep after a handler)."""
    time.sleep(seconds)


class Supervise:
    """The state of one supervise process: daemontools' globals, plus finish."""

    def __init__(self, d):
        self.dir = d
        self.flagexit = False
        self.flagwant = True
        self.flagwantup = True
        self.flagpaused = False
        self.flagfailed = False         # Debian 0003: fork failed, retry the start
        self.pid = 0                    # ./run, 0 = down
        self.finpid = 0                 # ./finish, 0 = not running
        self.findeadline = None
        self.pending = False            # u/o arrived while finish ran: start after it
        self.stamp = b"\0" * 12
        self.started = 0.0              # monotonic time of the last start
        self.quickdeaths = 0            # consecutive deaths within QUICK seconds
        self.lastwarned = None
        self.selfpipe = None
        self.fdcontrol = -1

    # -- status file --------------------------------------------------------
    def pidchange(self):
        self.stamp = tai64.pack(*tai64.now())

    def announce(self):
        want = (WANT_UP if self.flagwantup else WANT_DOWN) if self.flagwant else 0
        status = (self.stamp + struct.pack("<L", self.pid)
                  + bytes((1 if self.pid and self.flagpaused else 0, want)))
        try:
            fd = os.open("supervise/status.new",
                         os.O_WRONLY | os.O_NONBLOCK | os.O_TRUNC | os.O_CREAT, 0o644)
        except OSError as e:
            strerr.warn(PROG, "unable to open ", self.dir, "/supervise/status.new: ", e)
            return
        try:
            r = os.write(fd, status)
        except OSError as e:
            strerr.warn(PROG, "unable to write ", self.dir, "/supervise/status.new: ", e)
            return
        finally:
            os.close(fd)
        if r < len(status):
            strerr.warn(PROG, "unable to write ", self.dir,
                        "/supervise/status.new: partial write")
            return
        try:
            os.rename("supervise/status.new", "supervise/status")
        except OSError as e:
            strerr.warn(PROG, "unable to rename ", self.dir,
                        "/supervise/status.new to status: ", e)

    def trigger(self):
        try:
            os.write(self.selfpipe[1], b"\0")
        except OSError:
            pass

    # -- children -----------------------------------------------------------
    def spawn(self, argv, what):
        """fork + a real execve of ./run or ./finish (they are usually shell
        scripts; eliding into them would buy nothing).  Returns the pid."""
        pid = os.fork()
        if pid == 0:
            try:
                # the state a C supervise's child has: SIGCHLD back to default;
                # Python ignores SIGPIPE/SIGXFSZ, a service must not inherit that
                for s in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                    signal.signal(s, signal.SIG_DFL)
                os.execv(argv[0], argv)
            except OSError as e:
                strerr.write(PROG, ": fatal: unable to start ", self.dir, "/", what, ": ", e, "\n")
            except BaseException:                   # noqa: BLE001 - never return to the loop
                pass
            os._exit(111)
        return pid

    def trystart(self):
        try:
            f = self.spawn(["./run"], "run")
        except OSError as e:
            strerr.warn(PROG, "unable to fork for ", self.dir, ", sleeping 60 seconds: ", e)
            deepsleep(60)
            self.flagfailed = True
            self.trigger()
            return
        self.flagpaused = False
        self.pid = f
        self.started = time.monotonic()
        self.pidchange()
        self.announce()
        deepsleep(1)

    def startfinish(self, wstat):
        """Run ./finish CODE SIG if it is there; True if it was started."""
        try:
            st = os.stat("finish")
        except OSError:
            return False
        if not (st.st_mode & 0o170000 == 0o100000 and os.access("finish", os.X_OK)):
            return False
        if os.WIFSIGNALED(wstat):
            code, signum = 256, os.WTERMSIG(wstat)
        else:
            code, signum = os.WEXITSTATUS(wstat), 0
        try:
            self.finpid = self.spawn(["./finish", str(code), str(signum)], "finish")
        except OSError as e:
            strerr.warn(PROG, "unable to fork for ", self.dir, "/finish: ", e)
            return False
        ms = finish_timeout()
        self.findeadline = time.monotonic() + ms / 1000.0 if ms else None
        return True

    def died(self, wstat):
        """./run exited: record it, then finish, exit or restart."""
        self.pid = 0
        self.pidchange()
        self.announce()
        self.crashloop(wstat)
        if self.startfinish(wstat):
            return False
        return self.after_down()

    def crashloop(self, wstat):
        """qtools: say so when ./run keeps dying at once.  C supervise just
        restarts it every second, silently; for a log service that means the
        service blocks on a full pipe with no word anywhere.  The warning
        goes to supervise's stderr, which svscanboot shows in readproctitle's
        `service errors` title; at most one a minute per service."""
        now = time.monotonic()
        if now - self.started >= QUICK or wstat == 0:
            self.quickdeaths = 0                # exit 0 at once is a choice, not a crash
            return
        self.quickdeaths += 1
        if self.quickdeaths < 2 or not (self.flagwant and self.flagwantup):
            return
        if self.lastwarned is not None and now - self.lastwarned < 60:
            return
        self.lastwarned = now
        how = ("killed by signal %d" % os.WTERMSIG(wstat) if os.WIFSIGNALED(wstat)
               else "exit code %d" % os.WEXITSTATUS(wstat))
        strerr.warn(PROG, self.dir, "/run keeps dying at once (", how,
                    "); restarting it every second")

    def after_down(self):
        """The service is down and nothing runs: True means exit now."""
        if self.flagexit:
            return True
        if self.pending or (self.flagwant and self.flagwantup):
            self.pending = False
            self.trystart()
        return False

    def reap(self):
        """Collect dead children; True means supervise must exit."""
        while True:
            try:
                r, wstat = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if r == 0:
                return False
            # as C: stop after the service's own death, so that a ./run that
            # dies at once cannot keep the loop from reading commands
            if r == self.pid:
                return self.died(wstat)
            if r == self.finpid:
                self.finpid = 0
                self.findeadline = None
                return self.after_down()

    # -- commands -----------------------------------------------------------
    def busy(self):
        return self.pid or self.finpid

    def command(self, ch):
        pid = self.pid
        if ch == b"d":
            self.flagwant, self.flagwantup = True, False
            self.pending = False
            if pid:
                kill(pid, signal.SIGTERM)
                kill(pid, signal.SIGCONT)
                self.flagpaused = False
            self.announce()
        elif ch == b"u":
            self.flagwant, self.flagwantup = True, True
            self.announce()
            if not pid:
                if self.finpid:
                    self.pending = True
                else:
                    self.trystart()
        elif ch == b"o":
            self.flagwant = False
            self.announce()
            if not pid:
                if self.finpid:
                    self.pending = True
                else:
                    self.trystart()
        elif ch in SIGNALS:
            if pid:
                kill(pid, SIGNALS[ch])
        elif ch == b"p":
            self.flagpaused = True
            self.announce()
            if pid:
                kill(pid, signal.SIGSTOP)
        elif ch == b"c":
            self.flagpaused = False
            self.announce()
            if pid:
                kill(pid, signal.SIGCONT)
        elif ch == b"x":
            self.flagexit = True
            self.announce()

    # -- the loop -----------------------------------------------------------
    def doit(self):
        self.announce()
        rfd = self.selfpipe[0]
        fds = [rfd, self.fdcontrol]
        while True:
            if self.flagexit and not self.busy():
                return
            timeout = 3600.0
            if self.findeadline is not None:
                timeout = max(0.0, min(timeout, self.findeadline - time.monotonic()))
            try:
                select.select(fds, [], [], timeout)
            except OSError:
                pass
            fdio.drain(rfd)
            if self.reap():
                return
            if self.finpid and self.findeadline is not None \
                    and time.monotonic() >= self.findeadline:
                kill(self.finpid, signal.SIGKILL)
                self.findeadline = None         # reaped at the next SIGCHLD
            if self.flagfailed and self.flagwant and self.flagwantup and not self.busy():
                self.flagfailed = False
                self.trystart()
            try:
                ch = os.read(self.fdcontrol, 1)
            except OSError:
                ch = b""
            if ch:
                self.command(ch)


SIGNALS = {b"a": signal.SIGALRM, b"h": signal.SIGHUP, b"k": signal.SIGKILL,
           b"t": signal.SIGTERM, b"i": signal.SIGINT}


def kill(pid, signum):
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def finish_timeout():
    """Milliseconds from ./timeout-finish (s6's file), default 5000."""
    try:
        with open("timeout-finish", "rb") as f:
            text = f.read(64)
    except OSError:
        return FINISH_TIMEOUT_MS
    digits = text.strip().split(b"\n")[0]
    return int(digits) if digits.isdigit() else FINISH_TIMEOUT_MS


def make_supervise_dir(d):
    """mkdir supervise, or the target of a dangling ./supervise symlink (Debian 0002)."""
    try:
        os.mkdir("supervise", 0o700)
        return
    except OSError:
        pass
    try:
        target = os.readlink("supervise")
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL):
            strerr.write("unable to readlink ./supervise: ", e, "\n")
            raise SystemExit(111)
        return
    if len(os.fsencode(target)) >= 256:
        strerr.write("unable to readlink ./supervise: ", strerr.errstr(errno.EOVERFLOW), "\n")
        raise SystemExit(111)
    try:
        os.mkdir(target, 0o700)
    except OSError:
        pass


def open_fifo(d, name, flags, verb):
    try:
        return os.open(name, flags | os.O_NONBLOCK)
    except OSError as e:
        strerr.die(111, PROG, "unable to ", verb, " ", d, "/", name, ": ", e)


def main(argv):
    if len(argv) != 2:
        strerr.die_usage(PROG, USAGE)
    d = argv[1]
    sv = Supervise(d)
    try:
        sv.selfpipe = os.pipe()
    except OSError as e:
        strerr.die(111, PROG, "unable to create pipe for ", d, ": ", e)
    for fd in sv.selfpipe:
        os.set_blocking(fd, False)
    # like C's sig_catch(sig_child, trigger): a SIGCHLD wakes the select
    sig.catch(signal.SIGCHLD, lambda n, f: None)
    signal.set_wakeup_fd(sv.selfpipe[1], warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, signal.SIG_DFL)      # C has no handler: INT kills
    proctitle.set(PROG + " " + d)

    try:
        os.chdir(d)
    except OSError as e:
        strerr.die(111, PROG, "unable to chdir to ", d, ": ", e)
    try:
        os.stat("down")
        sv.flagwantup = False
    except OSError as e:
        if e.errno != errno.ENOENT:
            strerr.die(111, PROG, "unable to stat ", d, "/down: ", e)

    make_supervise_dir(d)
    try:
        fdlock = os.open("supervise/lock",
                         os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fdlock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        strerr.die(111, PROG, "unable to acquire ", d, "/supervise/lock: ", e)

    stop_orphan(d)

    mkfifo("supervise/control")
    sv.fdcontrol = open_fifo(d, "supervise/control", os.O_RDONLY, "read")
    # a writer of our own, so the reader never sees EOF
    fdcontrolwrite = open_fifo(d, "supervise/control", os.O_WRONLY, "write")

    sv.pidchange()
    sv.announce()

    mkfifo("supervise/ok")
    fdok = open_fifo(d, "supervise/ok", os.O_RDONLY, "read")   # never read: svok's probe

    if not sv.flagwant or sv.flagwantup:
        sv.trystart()
    sv.doit()
    sv.announce()
    return 0                # fdlock, fdcontrolwrite and fdok stay open until _exit


def stop_orphan(d):
    """qtools: ./run of a supervise that was killed (kill -9) keeps running.
    C supervise then starts a second copy beside it (a tcpserver that cannot
    bind its port, say, restarting every second).  The status file left by
    the old supervise names that pid: if it still runs with this service
    directory as its working directory, it is stopped first (TERM and CONT,
    KILL after 5 seconds), so the new supervise takes over cleanly."""
    try:
        with open("supervise/status", "rb") as f:
            st = f.read(18)
    except OSError:
        return
    if len(st) < 18:
        return
    pid = struct.unpack("<L", st[12:16])[0]
    here = os.getcwd()
    if not pid or pid == os.getpid() or not runs_in(pid, here):
        return
    strerr.warn(PROG, d, ": stopping ./run (pid ", str(pid),
                ") left running by a previous supervise")
    for signum, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        kill(pid, signum)
        if signum == signal.SIGTERM:
            kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + wait
        while runs_in(pid, here) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not runs_in(pid, here):
            return


def runs_in(pid, here):
    """True if pid is a live (not zombie) process working in directory here."""
    try:
        if os.readlink("/proc/%d/cwd" % pid) != here:
            return False
        with open("/proc/%d/stat" % pid, "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def mkfifo(name):
    try:
        os.mkfifo(name, 0o600)
    except OSError:
        pass
