"""svscan - start and monitor a collection of services.

usage: svscan [ dir ]

svscan switches to DIR (if given) and every 5 seconds scans it: for each
subdirectory NAME (names starting with `.` are skipped; symlinks are
followed; at most 1000) it starts `supervise NAME` unless one it started is
still running.  If NAME/log exists (or, as in daemontools 0.70 and below, NAME
is sticky) it also starts `supervise log` with NAME as
working directory, and creates one pipe for the pair: the service's stdout
(fd 1) is its write end, the logger's stdin (fd 0) its read end.  svscan keeps
both ends open for the life of the entry, so a restarted logger finds the
lines it has not read yet and the service never gets SIGPIPE.  A service is
known by its directory's device and inode, not its name: renaming a directory
does not restart it.  stderr of both supervise processes is svscan's stderr
(svscanboot sends it to readproctitle).  supervise is found through $PATH.

qtools: svscan preloads the supervise program and starts each supervise as a
fork of itself (no new interpreter: a supervise then costs about 1.2 MB of
private memory, 1.5 MB Pss, against about 4.7 MB exec'd; bench/memory.py).  QTOOLS_NOELIDE=1 makes it exec supervise instead.  The
process title is `svscan DIR`.

Signals (daemontools' svscan has no handlers; qtools adds a policy that lets
svscan run as process 1 of a container):
  SIGCHLD  dead children are reaped at once, also orphans reparented to
           svscan; a dead supervise is restarted at the next scan.
  SIGHUP   scan now.
  SIGTERM  stop the tree and exit: each service's supervise is sent `dx`
           (as `svc -dx`); when it has exited, svscan sends the log's
           supervise `x`, waits until it has read it, then closes its end of
           the log pipe, so the logger reads
           every line up to end-of-file before it stops.  After 5 seconds
           services still up are sent `k` and loggers `dx`; after 8 seconds
           everything left is sent `k`; at 9 seconds svscan gives up.
  SIGINT   default (kills svscan), as in daemontools.

Messages: `svscan: fatal: unable to chdir to DIR: ERR`, warnings
`svscan: warning: unable to stat NAME: ERR`, `unable to stat NAME/log: ERR`,
`unable to start NAME: running too many services`,
`unable to create pipe for NAME: ERR`, `unable to fork for NAME[/log]: ERR`,
`unable to read directory: ERR`, `unable to start supervise NAME[/log]: ERR`.

Exit codes: svscan runs until SIGTERM, then exits 0 when every supervise it
started has exited, 111 if some were still running after 9 seconds
(`svscan: warning: giving up with supervise NAME still running`).  111 if DIR
is not accessible.
"""
import errno
import os
import struct
import select
import signal
import stat
import time

from qtools.lib import fd as fdio, pathexec, proctitle, sig, strerr

PROG, USAGE = "svscan", "svscan [ dir ]"
SERVICES = 1000                 # svscan.c: #define SERVICES 1000
SCAN_INTERVAL = 5.0
# SIGTERM policy (qtools): seconds after SIGTERM
GRACE, KILL, GIVEUP = 5.0, 8.0, 9.0
TICK = 0.1                      # retry interval for control fifos during shutdown


class Entry:
    """One service directory: svscan.c's struct, keyed by (dev, ino)."""
    __slots__ = ("name", "pid", "pidlog", "flaglog", "pi", "active", "sent", "sentlog")

    def __init__(self, name):
        self.name = name
        self.pid = 0
        self.pidlog = 0
        self.flaglog = False
        self.pi = None              # (read end, write end) of the log pipe
        self.active = False
        self.sent = b""             # shutdown: commands delivered to the service's supervise
        self.sentlog = b""          # ... and to the log's

    def close_pipe(self):
        if self.pi:
            for fd in self.pi:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self.pi = None

    def close_write_end(self):
        if self.pi and self.pi[1] >= 0:
            try:
                os.close(self.pi[1])
            except OSError:
                pass
            self.pi = (self.pi[0], -1)


class Svscan:
    def __init__(self):
        self.entries = {}
        self.selfpipe = None
        self.hup = False
        self.term = False

    # -- children -------------------------------------------------------
    def reap(self):
        while True:
            try:
                r, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if r == 0:
                return
            for e in self.entries.values():
                if e.pid == r:
                    e.pid = 0
                    break
                if e.pidlog == r:
                    e.pidlog = 0
                    break

    def child(self, e, log):
        """In the forked child: wire fds, then run supervise (never returns)."""
        try:
            signal.set_wakeup_fd(-1)
            for fd in self.selfpipe:
                os.close(fd)
            what = e.name + "/log" if log else e.name
            try:
                if e.flaglog:
                    if log:
                        os.dup2(e.pi[0], 0)
                    else:
                        os.dup2(e.pi[1], 1)
            except OSError as err:
                strerr.write(PROG, ": warning: unable to set up descriptors for ", what,
                             ": ", err, "\n")
                os._exit(111)
            # only fd 0/1 may carry a log pipe into supervise (C: close-on-exec)
            for other in self.entries.values():
                if other.pi:
                    for fd in other.pi:
                        if fd > 2:
                            try:
                                os.close(fd)
                            except OSError:
                                pass
            if log:
                try:
                    os.chdir(e.name)
                except OSError as err:
                    strerr.write(PROG, ": warning: unable to switch to ", e.name, ": ", err, "\n")
                    os._exit(111)
            try:
                pathexec.pathexec_run(["supervise", "log" if log else e.name])
            except OSError as err:
                strerr.write(PROG, ": warning: unable to start supervise ", what, ": ", err, "\n")
        except BaseException:                       # noqa: BLE001 - never back into the loop
            pass
        os._exit(111)

    def fork(self, e, log):
        try:
            pid = os.fork()
        except OSError as err:
            strerr.warn(PROG, "unable to fork for ", e.name, "/log" if log else "", ": ", err)
            return 0
        if pid == 0:
            self.child(e, log)
        return pid

    # -- scanning ---------------------------------------------------------
    def start(self, fn):
        try:
            st = os.stat(fn)
        except OSError as err:
            strerr.warn(PROG, "unable to stat ", fn, ": ", err)
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        key = (st.st_dev, st.st_ino)
        e = self.entries.get(key)
        if e is None:
            if len(self.entries) >= SERVICES:
                strerr.warn(PROG, "unable to start ", fn, ": running too many services")
                return
            e = Entry(fn)
            if len(os.fsencode(fn)) <= 255:
                try:
                    os.stat(fn + "/log")
                    e.flaglog = True
                except OSError as err:
                    if err.errno != errno.ENOENT:
                        strerr.warn(PROG, "unable to stat ", fn, "/log: ", err)
                        return
                    # daemontools 0.70 and below: a sticky service directory
                    # has a log service (its log/ then had better exist)
                    e.flaglog = bool(st.st_mode & stat.S_ISVTX)
            if e.flaglog:
                try:
                    e.pi = os.pipe()        # close-on-exec (PEP 446), like coe()
                except OSError as err:
                    strerr.warn(PROG, "unable to create pipe for ", fn, ": ", err)
                    return
            self.entries[key] = e
        e.name = fn
        e.active = True
        if not e.pid:
            e.pid = self.fork(e, False)
            if not e.pid:
                return
        if e.flaglog and not e.pidlog:
            e.pidlog = self.fork(e, True)

    def doit(self):
        self.reap()
        for e in self.entries.values():
            e.active = False
        try:
            names = os.listdir(".")         # readdir order, as C
        except OSError as err:
            strerr.warn(PROG, "unable to read directory: ", err)
            return
        pathexec.snapshot()                 # the fds an elided child must close, as of now
        for fn in names:
            if fn.startswith("."):
                continue
            self.start(fn)
        for key in [k for k, e in self.entries.items()
                    if not e.active and not e.pid and not e.pidlog]:
            self.entries.pop(key).close_pipe()

    # -- SIGTERM policy ---------------------------------------------------
    def shutdown_step(self, elapsed):
        """One pass of the stop sequence; True when every supervise is gone."""
        late = elapsed >= GRACE
        later = elapsed >= KILL
        for e in self.entries.values():
            if e.pid:
                e.sent = deliver(e.name, b"dxk" if late else b"dx", e.sent)
                continue
            # the service is down and its supervise gone: the logger reads up
            # to end-of-file (svscan's write end was the last one), then stops.
            # The end-of-file must come after the log's supervise has read
            # its `x`, or it restarts the logger (which may truncate what
            # the logger wrote) instead of exiting.
            if e.pidlog:
                want = b"xdk" if later else b"xd" if late else b"x"
                e.sentlog = deliver(e.name + "/log", want, e.sentlog)
                if pending(e.name + "/log") and not late:
                    continue
            e.close_write_end()
        return not any(e.pid or e.pidlog for e in self.entries.values())

    # -- main loop --------------------------------------------------------
    def run(self):
        rfd = self.selfpipe[0]
        next_scan = time.monotonic()
        stopping = None
        while True:
            now = time.monotonic()
            if stopping is None:
                if self.term:
                    stopping = now
                    continue
                if self.hup or now >= next_scan:
                    self.hup = False
                    self.doit()
                    next_scan = time.monotonic() + SCAN_INTERVAL
                timeout = max(0.0, next_scan - time.monotonic())
            else:
                elapsed = now - stopping
                if self.shutdown_step(elapsed):
                    return 0
                if elapsed >= GIVEUP:
                    for e in self.entries.values():
                        for p, n in ((e.pid, e.name), (e.pidlog, e.name + "/log")):
                            if p:
                                strerr.warn(PROG, "giving up with supervise ", n,
                                            " still running")
                    return 111
                timeout = TICK
            try:
                select.select([rfd], [], [], timeout)
            except OSError:
                pass
            fdio.drain(rfd)
            self.reap()


def deliver(name, want, sent):
    """Send the letters of want not yet in sent; returns what has been sent."""
    missing = bytes(c for c in want if c not in sent)
    if missing and control(name, missing):
        return sent + missing
    return sent


def pending(name):
    """True while NAME/supervise/control holds bytes supervise has not read."""
    try:
        fd = os.open(name + "/supervise/control", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        import fcntl
        import termios
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0] > 0
    except OSError:
        return False
    finally:
        os.close(fd)


def control(name, data):
    """What `svc` does: write command bytes to NAME/supervise/control."""
    try:
        fd = os.open(name + "/supervise/control", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, data)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def main(argv):
    if len(argv) > 1:
        try:
            os.chdir(argv[1])
        except OSError as e:
            strerr.die(111, PROG, "unable to chdir to ", argv[1], ": ", e)
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:                     # keep pipes off fds 0-2
            os.set_inheritable(os.open("/dev/null", os.O_RDWR), True)
    sv = Svscan()
    sv.selfpipe = os.pipe()
    for fd in sv.selfpipe:
        os.set_blocking(fd, False)

    def hup(n, f):
        sv.hup = True

    def term(n, f):
        sv.term = True

    sig.catch(signal.SIGCHLD, lambda n, f: None)
    sig.catch(signal.SIGHUP, hup)
    sig.catch(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.set_wakeup_fd(sv.selfpipe[1], warn_on_full_buffer=False)
    proctitle.set(" ".join([PROG] + argv[1:2]))
    # every supervise will be a fork of this process running the preloaded module
    pathexec.preload(["supervise", "."])
    pathexec.freeze()
    return sv.run()
