"""multilog - read a sequence of lines from stdin, append selected lines to logs.

usage: multilog script

daemontools 0.76 behaviour.  The script is a list of actions carried out in
order for each line of input; an action is picked by its first character
(arguments starting with anything else are ignored):

  t          prefix each line with `@` + TAI64N label + space (only as the
             first action; elsewhere it is ignored, like the original)
  -pattern   deselect the line if pattern matches (each line starts selected)
  +pattern   select the line if pattern matches
             pattern: a literal character matches itself; `*` followed by c
             skips to the first c (which must exist, no backtracking); `*` at
             the end matches the rest; the whole line must be consumed.
             Patterns see the first 1000 bytes of a line (stamp included).
  e          print the selected line to stderr (first 200 bytes + `...`)
  =file      overwrite file with the selected line (first 1000 bytes),
             padded with newlines to 1001 bytes
  sSIZE      maximum size of `current` for later logdirs (4096..16777215,
             default 99999)
  nNUM       number of logs for later logdirs (at least 2, default 10)
  !processor run `/bin/sh -c processor` on each full log for later logdirs
             (cwd the logdir, fd 0 the log, fd 1 the processed output, fd 4
             `state`, fd 5 `newstate`)
  ./dir /dir a logdir: `lock`, `current` (0644 while multilog writes it, 0744
             after a clean exit), `state`, archives `@<tai64n>.s` (complete)
             and `@<tai64n>.u` (found unfinished after a crash); at most
             NUM-1 archives are kept.

`current` is rotated at the first line end at or past SIZE-2000 bytes and
never grows past SIZE (C multilog rotates at a line end within the same
window; where exactly depends on its 512-byte buffer, so archive sizes can
differ by a few hundred bytes between the two).  The file is fsynced before it
is renamed.  SIGALRM rotates every non-empty `current`; SIGTERM makes multilog
finish the line it is reading and exit, leaving the rest of stdin unread.  At
end of input a partial last line gets a newline and multilog exits 0.

Disk trouble after start-up is never fatal: multilog prints
`multilog: warning: unable to ..., pausing: ERR`, sleeps and retries, without
losing or reordering lines (which blocks whatever feeds it).  A processor that
fails prints `multilog: warning: processor failed in DIR, pausing` and is
rerun.

qtools: input is read in 64 KiB chunks and lines that arrive in one read share
one timestamp (the original stamps each line when its first byte is read, so
such lines differ only by nanoseconds).  The pause is 5 seconds, or
$QTOOLS_MULTILOG_PAUSE seconds if that is set (for tests).

Exit codes: 0 at end of input or after SIGTERM, 111 if a logdir cannot be set
up (`multilog: fatal: unable to lock directory DIR: temporary failure` when
another multilog holds it) or a status file cannot be created.
"""
import errno
import fcntl
import os
import select
import signal
import time

from qtools.lib import fd as fdlib
from qtools.lib import sig, strerr, tai64

PROG = "multilog"
USAGE = "multilog script"

NL = b"\n"
LINE = 1000             # multilog.c line[1001]: patterns, e and = see 1000 bytes
ALERT = 200             # e: longer lines are cut to 200 bytes + "..."
STATUS = 1001           # =file: always exactly 1001 bytes
READ = 65536
MASK64 = (1 << 64) - 1

O_READ = os.O_RDONLY | os.O_NONBLOCK                                    # open_read
O_WRITE = os.O_WRONLY | os.O_NONBLOCK                                   # open_write
O_APPEND = os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CREAT       # open_append, 0600
O_TRUNC = os.O_WRONLY | os.O_NONBLOCK | os.O_TRUNC | os.O_CREAT         # open_trunc, 0644


def scan_ulong(s):
    """djb scan_ulong on unsigned long: leading digits, wrapping at 2^64."""
    v = 0
    for ch in s:
        if "0" <= ch <= "9":
            v = (v * 10 + ord(ch) - 48) & MASK64
        else:
            break
    return v


def match(pattern, line):
    """match.c, literally: the reference the compiled matchers are checked against."""
    i = j = 0
    np, nl = len(pattern), len(line)
    while True:
        if i == np:
            return j == nl
        ch = pattern[i]
        i += 1
        if ch == 42:                            # '*'
            if i == np:
                return True
            k = line.find(pattern[i:i + 1], j)
            if k < 0:
                return False
            j = k
            continue
        if j == nl or line[j] != ch:
            return False
        j += 1


def compile_pattern(pattern):
    """A function line -> bool with match()'s semantics.  `*c` becomes the
    possessive `[^c]*+(?=c)` (skip to the first c, no backtracking), a final
    `*` becomes `.*`, everything else is literal; fullmatch = whole line."""
    if b"*" not in pattern:
        return pattern.__eq__
    if pattern == b"*":
        return lambda line: True
    import re
    out = []
    n = len(pattern)
    for i in range(n):
        c = pattern[i:i + 1]
        if c == b"*":
            if i + 1 == n:
                out.append(b"(?s:.*)")
            else:
                nxt = re.escape(pattern[i + 1:i + 2])
                out.append(b"[^" + nxt + b"]*+(?=" + nxt + b")")
        else:
            out.append(re.escape(c))
    rx = re.compile(b"".join(out), re.S)
    fm = rx.fullmatch
    return lambda line: fm(line) is not None


class Logdir:
    __slots__ = ("dir", "size", "num", "processor", "fddir", "fdlock", "fdcurrent",
                 "bytes", "out")

    def __init__(self, path, size, num, processor):
        self.dir = path
        self.size = size
        self.num = num
        self.processor = processor
        self.fddir = self.fdlock = self.fdcurrent = -1
        self.bytes = 0
        self.out = []


class Multilog:
    def __init__(self, script):
        self.script = script
        self.pause_seconds = 5.0
        p = os.environ.get("QTOOLS_MULTILOG_PAUSE")
        if p:
            try:
                self.pause_seconds = max(0.0, float(p))
            except ValueError:
                pass
        self.errno = 0                  # C's errno, for the one message that prints a stale one
        self.dirs = []
        self.status = []                # [fd, name, pending line or None]
        self.actions = []               # ("+"/"-", matcher) ("e",) ("=", k) ("d", logdir)
        self.timestamp = bool(script) and script[0][:1] == "t"
        self.exitasap = False
        self.forcerotate = False
        self.part = b""                 # stamped start of a line shorter than LINE, not yet acted on
        self.longsel = None             # logdirs taking the rest of a line past LINE bytes
        self.errout = []

    # ---- messages
    def pause(self, *parts):
        """multilog.c pause3/pause5: warn with ERR and sleep."""
        e = parts[-1]
        if isinstance(e, OSError):
            self.errno = e.errno or 0
        strerr.warn(PROG, *parts)
        time.sleep(self.pause_seconds)

    def stale_errstr(self):
        return "no error" if not self.errno else strerr.errstr(self.errno)

    def quiet(self, fn, *a, **kw):
        """A call whose failure C ignores (but which leaves errno behind)."""
        try:
            fn(*a, **kw)
        except OSError as e:
            self.errno = e.errno or 0

    # ---- set-up: f_init and c_init
    def setup(self):
        """f_init (status files, from the starting directory), then c_init
        (logdirs, each with the s/n/! settings before it), then the action list."""
        status = {}
        for i, a in enumerate(self.script):
            if a[:1] == "=":
                name = a[1:]
                try:
                    os.close(os.open(name, O_APPEND, 0o600))
                except OSError as e:
                    strerr.die(111, PROG, "unable to create ", name, ": ", e)
                try:
                    fd = os.open(name, O_WRITE)
                except OSError as e:
                    strerr.die(111, PROG, "unable to write ", name, ": ", e)
                status[i] = len(self.status)
                self.status.append([fd, name, None])
        size, num, processor = 99999, 10, None
        dirs = {}
        for i, a in enumerate(self.script):
            c = a[:1]
            if c == "s":
                size = min(max(scan_ulong(a[1:]), 4096), 16777215)
            elif c == "n":
                num = max(scan_ulong(a[1:]), 2)
            elif c == "!":
                processor = a[1:]
            elif c in (".", "/"):
                d = Logdir(a, size, num, processor)
                self.restart(d)
                dirs[i] = d
                self.dirs.append(d)
        for i, a in enumerate(self.script):
            c = a[:1]
            if c in ("+", "-"):
                self.actions.append((c, compile_pattern(os.fsencode(a[1:]))))
            elif c == "e":
                self.actions.append(("e",))
            elif c == "=":
                self.actions.append(("=", status[i]))
            elif c in (".", "/"):
                self.actions.append(("d", dirs[i]))
        # no -, e or =: every line goes to every logdir, whole chunks at a time
        self.fast = not any(x[0] in ("-", "e", "=") for x in self.actions)

    def restart(self, d):
        """multilog.c restart(): open, lock, recover after a crash."""
        self.quiet(os.mkdir, d.dir, 0o700)
        try:
            d.fddir = os.open(d.dir, O_READ | os.O_DIRECTORY)
        except OSError as e:
            strerr.die(111, PROG, "unable to open directory ", d.dir, ": ", e)
        dfd = d.fddir
        try:
            d.fdlock = os.open("lock", O_APPEND, 0o600, dir_fd=dfd)
            fcntl.flock(d.fdlock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            strerr.die(111, PROG, "unable to lock directory ", d.dir, ": ", e)
        try:
            st = os.stat("current", dir_fd=dfd)
        except OSError as e:
            self.errno = e.errno
            if e.errno != errno.ENOENT:
                strerr.die(111, PROG, "unable to stat ", d.dir, "/current: ", e)
            st = None
        if st is not None and st.st_mode & 0o100:
            self.open_current(d, dfd, "append to ", st.st_size)
            return
        self.quiet(os.unlink, "state", dir_fd=dfd)
        self.quiet(os.unlink, "newstate", dir_fd=dfd)
        flagprocessed = False
        try:
            st = os.stat("processed", dir_fd=dfd)
            flagprocessed = bool(st.st_mode & 0o100)
        except OSError as e:
            self.errno = e.errno
            if e.errno != errno.ENOENT:
                strerr.die(111, PROG, "unable to stat ", d.dir, "/processed: ", e)
        if flagprocessed:
            self.quiet(os.unlink, "previous", dir_fd=dfd)
            self.finish(d, "processed", "s")
        else:
            self.quiet(os.unlink, "processed", dir_fd=dfd)
            self.finish(d, "previous", "u")
        self.finish(d, "current", "u")
        try:
            os.close(os.open("state", O_TRUNC, 0o644, dir_fd=dfd))
        except OSError as e:
            strerr.die(111, PROG, "unable to write to ", d.dir, "/state: ", e)
        self.open_current(d, dfd, "write to ", 0)

    def open_current(self, d, dfd, what, size):
        """current for appending, mode 644 (multilog.c's startup), size bytes in it."""
        try:
            fd = os.open("current", O_APPEND, 0o600, dir_fd=dfd)
        except OSError as e:
            strerr.die(111, PROG, "unable to ", what, d.dir, "/current: ", e)
        try:
            os.fchmod(fd, 0o644)
        except OSError as e:
            strerr.die(111, PROG, "unable to set mode of ", d.dir, "/current: ", e)
        d.fdcurrent = fd
        d.bytes = size

    # ---- archives
    def filesfit(self, d):
        """1 if fewer than NUM `@` files remain, 0 after deleting the oldest, -1 on error."""
        try:
            names = [os.fsencode(x) for x in os.listdir(d.fddir)]
        except OSError as e:
            self.errno = e.errno
            return -1, e
        fn = b"@z"
        count = 0
        for x in names:
            if x[:1] == b"@" and len(x) >= 25:
                count += 1
                if x < fn:
                    fn = x[:25]
        if count < d.num:
            return 1, None
        for x in names:
            if x[:1] == b"@" and len(x) >= 25 and x.startswith(fn):
                self.quiet(os.unlink, x, dir_fd=d.fddir)
                break
        return 0, None

    def finish(self, d, name, code):
        """multilog.c finish(): archive name as @<now>.code, keep NUM-1 archives."""
        dfd = d.fddir
        while True:
            try:
                st = os.stat(name, dir_fd=dfd)
                break
            except OSError as e:
                if e.errno == errno.ENOENT:
                    self.errno = e.errno
                    return
                self.pause("unable to stat ", d.dir, "/", name, ", pausing: ", e)
        if st.st_nlink == 1:
            while True:
                fn = tai64.label().decode() + "." + code
                try:
                    os.link(name, fn, src_dir_fd=dfd, dst_dir_fd=dfd)
                    break
                except OSError as e:
                    self.pause("unable to link to ", d.dir, "/", fn, ", pausing: ", e)
        while True:
            try:
                os.unlink(name, dir_fd=dfd)
                break
            except OSError as e:
                self.pause("unable to remove ", d.dir, "/", name, ", pausing: ", e)
        while True:
            r, e = self.filesfit(d)
            if r == 1:
                return
            if r < 0:
                self.pause("unable to read ", d.dir, ", pausing: ", e)

    def retry(self, fn, *parts):
        """Run fn() until it succeeds, pausing with the message on each failure."""
        while True:
            try:
                return fn()
            except OSError as e:
                self.pause(*parts, e)

    def fullcurrent(self, d):
        """multilog.c fullcurrent(): fsync, rename to previous, new current,
        then archive previous directly or through the processor."""
        dfd = d.fddir
        dn = d.dir
        self.retry(lambda: os.fsync(d.fdcurrent),
                   "unable to write ", dn, "/current to disk, pausing: ")
        os.close(d.fdcurrent)
        d.fdcurrent = -1
        self.retry(lambda: os.rename("current", "previous", src_dir_fd=dfd, dst_dir_fd=dfd),
                   "unable to rename current to previous in directory ", dn, ", pausing: ")
        d.fdcurrent = self.retry(lambda: os.open("current", O_APPEND, 0o600, dir_fd=dfd),
                                 "unable to create ", dn, "/current, pausing: ")
        d.bytes = 0
        self.retry(lambda: os.fchmod(d.fdcurrent, 0o644),
                   "unable to set mode of ", dn, "/current, pausing: ")
        self.retry(lambda: os.chmod("previous", 0o744, dir_fd=dfd),
                   "unable to set mode of ", dn, "/previous, pausing: ")
        if d.processor is None:
            self.finish(d, "previous", "s")
            return
        while True:
            pid = self.retry(os.fork, "unable to fork for processor in ", dn, ", pausing: ")
            if pid == 0:
                self.startprocessor(d)              # never returns
            try:
                _, wstat = os.waitpid(pid, 0)
            except OSError as e:
                self.pause("wait failed for processor in ", dn, ", pausing: ", e)
            else:
                if wstat & 0x7f:
                    self.pause("processor crashed in ", dn, ", pausing: ", self.stale_errstr())
                elif not (wstat >> 8) & 0xff:
                    break
            strerr.warn(PROG, "processor failed in ", dn, ", pausing")
            time.sleep(self.pause_seconds)

        def sync_processed():
            fd = self.retry(lambda: os.open("processed", O_APPEND, 0o600, dir_fd=dfd),
                            "unable to create ", dn, "/processed, pausing: ")
            self.retry(lambda: os.fsync(fd), "unable to write ", dn, "/processed to disk, pausing: ")
            self.retry(lambda: os.fchmod(fd, 0o744), "unable to set mode of ", dn, "/processed, pausing: ")
            os.close(fd)
        sync_processed()
        fd = self.retry(lambda: os.open("newstate", O_APPEND, 0o600, dir_fd=dfd),
                        "unable to create ", dn, "/newstate, pausing: ")
        self.retry(lambda: os.fsync(fd), "unable to write ", dn, "/newstate to disk, pausing: ")
        os.close(fd)
        self.retry(lambda: os.unlink("previous", dir_fd=dfd),
                   "unable to remove ", dn, "/previous, pausing: ")
        self.retry(lambda: os.rename("newstate", "state", src_dir_fd=dfd, dst_dir_fd=dfd),
                   "unable to rename newstate to state in directory ", dn, ", pausing: ")
        self.finish(d, "processed", "s")

    def startprocessor(self, d):
        """In the forked child: cwd = logdir, fds 0 previous, 1 processed,
        4 state, 5 newstate, then /bin/sh -c processor.  Never returns."""
        try:
            try:
                signal.set_wakeup_fd(-1)
                for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGPIPE):
                    signal.signal(s, signal.SIG_DFL)
                signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGALRM))
                os.fchdir(d.fddir)
                fdlib.move(os.open("previous", O_READ), 0)
                fdlib.move(os.open("processed", O_TRUNC, 0o644), 1)
                fdlib.move(os.open("state", O_READ), 4)
                fdlib.move(os.open("newstate", O_TRUNC, 0o644), 5)
                os.execv("/bin/sh", ["sh", "-c", d.processor])
            except OSError as e:
                strerr.die(111, PROG, "unable to run ", d.processor, ": ", e)
        except SystemExit:
            pass
        finally:
            os._exit(111)

    # ---- writing: multilog.c c_write on whole batches
    def write_logdir(self, d, data):
        """Append data to d's current: never past SIZE, rotating at the first
        line end at or past SIZE-2000.  Short writes and errors are retried."""
        mv = memoryview(data)
        n = len(data)
        pos = 0
        while pos < n:
            if d.bytes >= d.size:
                self.fullcurrent(d)
            room = d.size - d.bytes
            end = n if n - pos <= room else pos + room
            rotate = False
            threshold = d.size - 2000
            if d.bytes + (end - pos) >= threshold:
                k = data.find(NL, pos + max(0, threshold - d.bytes - 1), end)
                if k >= 0:
                    end = k + 1
                    rotate = True
            while True:
                try:
                    w = os.write(d.fdcurrent, mv[pos:end])
                    if w > 0:
                        break
                    e = OSError(self.errno, "")
                except OSError as ex:
                    e = ex
                self.pause("unable to write to ", d.dir, "/current, pausing: ", e)
            d.bytes += w
            pos += w
            if rotate and pos == end:
                self.fullcurrent(d)

    def flush(self):
        for d in self.dirs:
            if d.out:
                data = d.out[0] if len(d.out) == 1 else b"".join(d.out)
                d.out.clear()
                self.write_logdir(d, data)

    def flush_alerts(self):
        if self.errout:
            data = b"".join(self.errout)
            self.errout.clear()
            try:
                fdlib.writeall(2, data)
            except OSError:
                pass
        for s in self.status:
            if s[2] is not None:
                line = s[2]
                s[2] = None
                buf = line + NL * (STATUS - len(line))
                while True:
                    try:
                        if os.pwrite(s[0], buf, 0) == STATUS:
                            break
                        e = OSError(self.errno, "")
                    except OSError as ex:
                        e = ex
                    if e.errno == errno.ESPIPE:
                        self.pause("unable to move to beginning of ", s[1], ", pausing: ", e)
                    else:
                        self.pause("unable to write ", s[1], ", pausing: ", e)

    # ---- lines
    def select(self, window):
        """Run the actions on one line window; return the selected logdirs."""
        sel = True
        chosen = []
        for a in self.actions:
            k = a[0]
            if k == "d":
                if sel:
                    chosen.append(a[1])
            elif k == "-":
                if sel and a[1](window):
                    sel = False
            elif k == "+":
                if not sel and a[1](window):
                    sel = True
            elif k == "e":
                if sel:
                    if len(window) > ALERT:
                        self.errout.append(window[:ALERT] + b"...\n")
                    else:
                        self.errout.append(window + NL)
            elif sel:                                   # "="
                self.status[a[1]][2] = window
        return chosen

    def line(self, line):
        """A complete line (stamped, without its newline)."""
        for d in self.select(line[:LINE] if len(line) > LINE else line):
            d.out.append(line)
            d.out.append(NL)

    def process(self, data, ts):
        """One read's worth of input; ts is the stamp for lines starting in it."""
        if self.longsel is not None:                    # the rest of a line past LINE bytes
            nl = data.find(NL)
            if nl < 0:
                for d in self.longsel:
                    d.out.append(data)
                return
            seg = data[:nl + 1]
            for d in self.longsel:
                d.out.append(seg)
            self.longsel = None
            data = data[nl + 1:]
            if not data:
                return
        if self.fast:
            if not self.dirs:
                return
            head = self.part or ts
            if data[-1] == 10:
                body = head + data[:-1].replace(NL, NL + ts) + NL if ts else head + data
                self.part = b""
            else:
                body = head + data.replace(NL, NL + ts) if ts else head + data
                k = body.rfind(NL)
                if len(body) - k - 1 >= LINE:           # the open line reached LINE: stream it
                    self.part = b""
                    self.longsel = self.dirs
                else:
                    self.part = body[k + 1:]
                    body = body[:k + 1]
            if body:
                for d in self.dirs:
                    d.out.append(body)
            return
        lines = data.split(NL)
        last = lines.pop()
        for i, ln in enumerate(lines):
            if i == 0 and self.part:
                ln = self.part + ln
                self.part = b""
            else:
                ln = ts + ln
            self.line(ln)
        if last:
            if self.part:
                last = self.part + last
            else:
                last = ts + last
            if len(last) >= LINE:
                sel = self.select(last[:LINE])
                for d in sel:
                    d.out.append(last)
                self.part = b""
                self.longsel = sel
            else:
                self.part = last
        self.flush_alerts()

    def eof(self):
        if self.part:
            part, self.part = self.part, b""
            self.line(part)
            self.flush_alerts()
        elif self.longsel is not None:
            for d in self.longsel:
                d.out.append(NL)
            self.longsel = None

    # ---- the loop: multilog.c doit() + flushread()
    def catch_signals(self):
        """Before the logdirs are set up, as multilog.c does: TERM and ALRM
        only set flags; the wakeup fd interrupts the wait for input."""
        def on_term(signum, frame):
            self.exitasap = True

        def on_alarm(signum, frame):
            self.forcerotate = True

        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        sig.catch(signal.SIGTERM, on_term)
        sig.catch(signal.SIGALRM, on_alarm)
        # multilog.c unblocks them around every read, whatever mask it inherited
        sig.unblock(signal.SIGTERM, signal.SIGALRM)

    def run(self):
        wake_r = self.wake_r
        poller = select.poll()
        poller.register(0, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        poll = poller.poll
        newline = True
        stamp = self.timestamp
        label = tai64.label
        read = os.read
        try:
            while True:
                self.flush()
                if self.forcerotate:
                    self.forcerotate = False
                    for d in self.dirs:
                        if d.bytes > 0:
                            self.fullcurrent(d)
                n = READ
                if self.exitasap:
                    if newline:
                        break
                    n = 1
                poll()
                # a signal delivered at the latest on the return from poll has
                # written to the wakeup fd: look at the flags before reading
                try:
                    if read(wake_r, 512):
                        continue
                except BlockingIOError:
                    pass
                try:
                    data = read(0, n)
                except OSError:
                    data = b""
                if not data:
                    break
                newline = data[-1] == 10
                self.process(data, label() + b" " if stamp else b"")
            self.eof()
            self.flush()
            self.quit()
        finally:
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            os.close(self.wake_w)

    def quit(self):
        """multilog.c c_quit(): current safely on disk, mode 0744."""
        for d in self.dirs:
            self.retry(lambda: os.fsync(d.fdcurrent),
                       "unable to write ", d.dir, "/current to disk, pausing: ")
            self.retry(lambda: os.fchmod(d.fdcurrent, 0o744),
                       "unable to set mode of ", d.dir, "/current, pausing: ")



def preload(argv):
    """pathexec.preload hook (e.g. from setuidgid before it drops privileges):
    the pattern compiler's re, imported lazily otherwise, and setproctitle."""
    if any(a[:1] in ("+", "-") and "*" in a for a in argv[1:]):
        import re  # noqa: F401
    from qtools.lib import proctitle
    proctitle.load()


def main(argv):
    # long-running: ps shows `multilog t /var/log/qmail/smtpd`, as in the seed
    from qtools.lib import proctitle
    proctitle.from_argv(argv)           # a no-op if setproctitle cannot be loaded
    os.umask(0o022)
    sig.pipe_default()                  # like the C program: a broken stderr kills it
    try:
        os.close(os.open(".", O_READ))
    except OSError as e:
        strerr.die(111, PROG, "unable to switch to current directory: ", e)
    m = Multilog(list(argv[1:]))
    m.catch_signals()
    m.setup()
    m.run()
    return 0
