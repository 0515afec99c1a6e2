"""qmail-queue - queue a mail message for delivery.

usage: qmail-queue

Reads a message from descriptor 0, then an envelope from descriptor 1, and
puts both into $QMAILHOME/queue (default /var/qmail/queue) for qmail-send.
The envelope is `F<sender>\\0` then `T<recipient>\\0` per recipient, then one
extra `\\0`; the null sender is `F\\0`.  Every address (and its \\0) must fit in
1003 bytes.  qmail-queue adds one line at the top of the message:
    Received: (qmail PID invoked by uid UID); 26 Sep 1995 04:46:54 -0000
(`invoked by alias`, `invoked from network` or `invoked for bounce` when the
real uid is that of alias, qmaild or qmails).  It prints no diagnostics.

Authentication-Results (sagredo's qmail-queue): when $QMAILAUTHENTICATED is
set and not empty (qmail-smtpd puts its SPF verdict there, `spf=<result>
smtp.mailfrom=<sender>`, after any value the session started with), the
Received line is followed by
    Authentication-Results: <authserv-id>;
    \t<QMAILAUTHENTICATED>
with authserv-id the first line of control/authservid, else of control/me
(neither: no such line).  A line break in the value not followed by a blank
gets a tab, empty lines and CRs are dropped: it stays one header field.  A
control file that exists but cannot be read: exit 55.

The steps are qmail-queue.c's, with durability qmail left to BSD's
synchronous directory updates made explicit for Linux:
 1. umask 033, chdir $QMAILHOME (61) and queue (62), alarm 24 h (52).
 2. create pid/<pid>.<time>.<seq> exclusively (63); its inode number N is the
    message number; link it to mess/<N%23>/<N> (64); unlink the pid file (63).
 3. write the Received line and copy descriptor 0 in 64 KiB chunks (read
    error 54, write error 53); fsync the file and mess/<N%23>/ (53).
 4. create intd/N exclusively (65); write u<uid>\\0p<pid>\\0 and the envelope
    as read (bad byte 91, address too long 11, end of file 54); fsync the
    file (53).  Not intd/ itself: intd/N is only the staging name of the
    inode todo/N links to, and a crash that loses it loses nothing
    (qmail-clean's unlink of intd/N takes ENOENT as done).
 5. link intd/N to todo/N (66) and fsync todo/ (53): the message is queued.
 6. write a byte to lock/trigger without blocking (no reader: fine); exit 0.
Files created per message: the pid file and intd/N (mess/N and todo/N are
links).  Any failure before step 5 truncates and removes intd/N and mess/N
(qmail leaves them for qmail-send's 36-hour cleanup on 11, 91 and 52); a
crash leaves at most such debris, never an entry in todo/.  After the todo
link nothing is removed: a failed directory fsync there exits 53 and the
message may be delivered although the caller said 451 (a duplicate, never a
loss).

QMAILQUEUE: qmail-smtpd, qmail-inject and the other callers run the program
named there instead of qmail-queue; qmail-queue itself does not read it.

In-process (qtools): a caller that would run this qmail-queue with exec
elision (qmail-smtpd) may use Inline instead of a fork: the same steps, files,
syncs and exit codes, in the caller's process, fed by put()/close() instead
of descriptors 0 and 1.  The pid in the Received line, the pid file name and
the envelope's p field are then the caller's; the 24-hour limit is checked on
every write instead of by SIGALRM.  A fork of a Python process costs ~1.5 ms
of CPU here, as much as the rest of qmail-queue's work.

Exit codes: 0 queued; 11 address too long; 51 out of memory; 52 timeout;
53 write error or disk full; 54 unable to read the message or envelope;
55 unable to read control/authservid or control/me;
61 trouble with $QMAILHOME; 62 queue; 63 queue/pid; 64 queue/mess;
65 queue/intd; 66 queue/todo; 81 internal bug; 91 envelope format error.
"""
import os
import time

try:
    import _signal as signal    # the C module: `signal` imports enum, ~5 ms per exec
except ImportError:             # pragma: no cover - not CPython
    import signal

from qtools.lib import queue as qlib
from qtools.lib.fd import fsync_dir

PROG = "qmail-queue"
USAGE = "qmail-queue"
FAST_EXIT = True

DEATH = 86400                   # must stay below qmail-send's OSSIFIED (36 h)
CHUNK = 65536
ADDR = qlib.ADDR


class Die(Exception):
    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


def preload(argv):
    """In a parent that will fork qmail-queue children: look the qmail users
    up once (qmail has them compiled in)."""
    for name in (qlib.USER_ALIAS, qlib.USER_D, qlib.USER_S):
        qlib.uid(name)


def writeall(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Queuer:
    """One message's trip into the queue; fields name what cleanup() undoes.
    dfd: a descriptor of the queue directory (None: the queue is the cwd)."""

    def __init__(self, dfd=None):
        self.dfd = dfd
        self.pidfn = None           # pid file still to unlink on failure
        self.messfn = None
        self.messfd = -1
        self.intdfn = None
        self.intdfd = -1
        self.committed = False      # set just before the todo link: no cleanup after

    def cleanup(self):
        """qmail-queue.c cleanup(): truncate (frees the blocks at once) and
        unlink intd, then mess; also the pid file if it is still there."""
        if self.committed:
            return
        for fd, fn in ((self.intdfd, self.intdfn), (self.messfd, self.messfn)):
            if fn is None:
                continue
            try:
                if fd >= 0:
                    os.ftruncate(fd, 0)
                os.unlink(fn, dir_fd=self.dfd)
            except OSError:
                pass
        if self.pidfn is not None:
            try:
                os.unlink(self.pidfn, dir_fd=self.dfd)
            except OSError:
                pass

    def close(self):
        """Close the files (main() leaves that to _exit)."""
        for fd in (self.messfd, self.intdfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.messfd = self.intdfd = -1

    def alarm(self, signum, frame):
        # qmail: "thou shalt not clean up here" (C can't, in a handler); a
        # Python handler runs between bytecodes, and `committed` is set
        # before the todo link, so removing the debris is safe
        self.cleanup()
        os._exit(52)

    def run(self):
        """qmail-queue on descriptors 0 and 1."""
        # 1. home, queue, timer
        os.umask(0o033)
        try:
            os.chdir(qlib.qmailhome())
        except OSError:
            raise Die(61)
        try:
            os.chdir("queue")
        except OSError:
            raise Die(62)
        mypid = os.getpid()
        uid = os.getuid()
        starttime = int(time.time())
        signal.signal(signal.SIGALRM, self.alarm)
        signal.alarm(DEATH)
        authres = authentication_results(qlib.qmailhome())

        # 2. pid file -> mess/<n%23>/<n>
        received = self.begin(mypid, uid, starttime) + authres

        # 3. Received line, then the message, streamed
        first = True
        while True:
            try:
                data = os.read(0, CHUNK)
            except OSError:
                raise Die(54)
            if first:
                data = received + data
                first = False
            if not data:
                break
            self.write(data)
        self.sync_message()

        # 4. the envelope, copied as read, checked on the way
        self.write_envelope(uid, mypid, read_fd1)

        # 5. at this instant the message is queued
        self.commit()
        signal.alarm(0)

        # 6. wake qmail-send
        qlib.triggerpull()
        return 0

    def begin(self, mypid, uid, starttime):
        """Step 2: the pid file's inode is the message number; it becomes
        mess/<n%23>/<n>.  Returns the Received line."""
        received = qlib.received(mypid, uid, starttime, qlib.uid(qlib.USER_ALIAS),
                                 qlib.uid(qlib.USER_D), qlib.uid(qlib.USER_S))
        dfd = self.dfd
        for seq in range(1, 10):
            fn = "pid/%d.%d.%d" % (mypid, starttime, seq)
            try:
                self.messfd = os.open(fn, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
            except OSError:
                continue
            self.pidfn = fn
            break
        else:
            raise Die(63)
        try:
            messnum = os.fstat(self.messfd).st_ino
        except OSError:
            raise Die(63)
        messfn = qlib.fmtqfn("mess/", messnum, 1)
        self.intdfn_next = qlib.fmtqfn("intd/", messnum, 0)
        self.todofn = qlib.fmtqfn("todo/", messnum, 0)
        try:
            os.link(self.pidfn, messfn, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            raise Die(64)
        self.messfn = messfn
        try:
            os.unlink(self.pidfn, dir_fd=dfd)
        except OSError:
            raise Die(63)
        self.pidfn = None
        return received

    def write(self, data):
        """Step 3: message bytes (the Received line first)."""
        try:
            writeall(self.messfd, data)
        except OSError:
            raise Die(53)

    def sync_message(self):
        try:
            os.fsync(self.messfd)
            fsync_dir(self.messfn[:self.messfn.rfind("/")], self.dfd)
        except OSError:
            raise Die(53)

    def write_envelope(self, uid, mypid, read):
        """Step 4: intd/N holds u<uid>, p<pid> and the envelope from read()."""
        intdfn = self.intdfn_next
        try:
            self.intdfd = os.open(intdfn, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                                  dir_fd=self.dfd)
        except OSError:
            raise Die(65)
        self.intdfn = intdfn
        out = bytearray(b"u%d\0p%d\0" % (uid, mypid))
        self.envelope(out, read)
        try:
            os.fsync(self.intdfd)           # not intd/: see the module docstring
        except OSError:
            raise Die(53)

    def commit(self):
        """Step 5: link intd/N to todo/N, sync todo/: the message is queued."""
        self.committed = True
        try:
            os.link(self.intdfn, self.todofn, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
        except OSError:
            self.committed = False
            raise Die(66)
        try:
            fsync_dir("todo", self.dfd)
        except OSError:
            raise Die(53)           # linked: keep it (a duplicate, never a loss)

    def envelope(self, out, read):
        """Copy the envelope from read() (b"" at its end) to intd, up to (not
        including) the final \\0.  States: 0 = expect F, 1 = inside an
        address, 2 = expect T or the final \\0."""
        state = 0
        alen = 0                    # bytes of the current address seen, \\0 included
        while True:
            data = read()
            if not data:
                raise Die(54)
            i, n, end = 0, len(data), -1
            while i < n:
                if state == 1:
                    room = ADDR - alen
                    j = data.find(b"\0", i, i + room)
                    if j < 0:
                        take = min(n - i, room)
                        alen += take
                        i += take
                        if alen >= ADDR:
                            raise Die(11)
                    else:
                        i = j + 1
                        state = 2
                elif state == 2:
                    c = data[i]
                    if c == 0:
                        end = i
                        break
                    if c != 0x54:           # T
                        raise Die(91)
                    state, alen = 1, 0
                    i += 1
                else:
                    if data[i] != 0x46:     # F
                        raise Die(91)
                    state, alen = 1, 0
                    i += 1
            if end >= 0:
                out += data[:end]
                self.flush(out)
                return
            out += data
            if len(out) >= CHUNK:
                self.flush(out)

    def flush(self, out):
        try:
            writeall(self.intdfd, out)
        except OSError:
            raise Die(53)
        del out[:]


def authentication_results(home):
    """sagredo's Authentication-Results line, from $QMAILAUTHENTICATED (set
    by qmail-smtpd's SPF check, or by the client's tcprules): b"" when it is
    unset or empty, or when neither control/authservid nor control/me names
    the server.  Its lines are folded (a line break not followed by a blank
    gets a tab; blank lines and CRs go), so it stays one header field.
    Raises Die(55) when a control file exists but cannot be read."""
    value = os.environb.get(b"QMAILAUTHENTICATED")
    if not value:
        return b""
    servid = None
    for name in ("authservid", "me"):
        try:
            with open(os.path.join(home, "control", name), "rb") as f:
                line = f.read(1024).split(b"\n", 1)[0].strip(b" \t\r")
        except FileNotFoundError:
            continue
        except OSError:
            raise Die(55)
        if line:
            servid = line
            break
    if not servid:
        return b""
    lines = [x for x in value.replace(b"\r", b"").split(b"\n") if x.strip(b" \t")]
    if not lines:
        return b""
    folded = b"\n".join(x if i == 0 or x[:1] in (b" ", b"\t") else b"\t" + x
                         for i, x in enumerate(lines))
    return b"Authentication-Results: " + servid + b";\n\t" + folded + b"\n"


def read_fd1():
    try:
        return os.read(1, CHUNK)
    except OSError:
        raise Die(54)


class Inline:
    """qmail-queue in the caller's process (qmail-smtpd's DATA): put() the
    message bytes, then close(sender, recipients) -> the exit code qmail-queue
    would have given (0: queued, durable).  fail() or abandon() give the
    message up; the debris is removed at once.  Never raises.  Whatever
    main() comes to read from its environment, this must read too: the
    caller's environment is the one the child would have had."""

    def __init__(self, home):
        self.home = home
        self.pid = os.getpid()
        self.uid = os.getuid()
        self.code = 0
        self.buf = bytearray()
        self.q = None
        self.qdir = os.path.join(home, "queue")
        self.deadline = time.monotonic() + DEATH
        hfd = -1
        try:
            try:
                hfd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                raise Die(61)
            try:
                dfd = os.open("queue", os.O_RDONLY | os.O_DIRECTORY, dir_fd=hfd)
            except OSError:
                raise Die(62)
            self.q = Queuer(dfd)
            self.guarded(self._begin)
        except Die as d:
            self.stop(d.code)
        finally:
            if hfd >= 0:
                os.close(hfd)

    def _begin(self):
        authres = authentication_results(self.home)
        old = os.umask(0o033)
        try:
            self.buf += self.q.begin(self.pid, self.uid, int(time.time())) + authres
        finally:
            os.umask(old)

    def guarded(self, fn, *args):
        """fn(*args) with main()'s mapping of failures to exit codes."""
        try:
            fn(*args)
        except Die as d:
            self.stop(d.code)
        except MemoryError:
            self.stop(51)
        except Exception as e:                              # noqa: BLE001 - exit 81, as main()
            _internal(e)
            self.stop(81)

    def stop(self, code):
        """Give the message up with this exit code; remove what was made."""
        if not self.code:
            self.code = code
        self.buf = bytearray()
        if self.q is not None:
            self.q.cleanup()
            self.q.close()
            try:
                os.close(self.q.dfd)
            except OSError:
                pass
            self.q = None

    def put(self, data):
        if self.code:
            return
        if time.monotonic() > self.deadline:
            self.stop(52)
            return
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.guarded(self._flush)

    def _flush(self):
        if time.monotonic() > self.deadline:
            raise Die(52)
        if self.buf:
            self.q.write(self.buf)
            self.buf = bytearray()

    def fail(self):
        """The caller will not send the envelope (qmail-queue sees end of
        file there: 54)."""
        self.stop(54)

    def abandon(self):
        self.stop(54)

    def close(self, sender, rcpts):
        if not self.code:
            env = [b"F", sender, b"\0"]
            for r in rcpts:
                env += (b"T", r, b"\0")
            env.append(b"\0")
            self.guarded(self._finish, [b"".join(env)])
        if not self.code:
            qlib.triggerpull(self.qdir)
            self.stop(0)
        return self.code

    def _finish(self, env):
        self._flush()
        self.q.sync_message()
        old = os.umask(0o033)
        try:
            self.q.write_envelope(self.uid, self.pid, lambda: env.pop() if env else b"")
        finally:
            os.umask(old)
        self.q.commit()


def _internal(e):
    try:
        os.write(2, b"qmail-queue: fatal: internal error: "
                 + ("%s: %s" % (type(e).__name__, e)).encode("ascii", "replace")[:300]
                 + b"\n")
    except OSError:
        pass


def main(argv):
    signal.pthread_sigmask(signal.SIG_SETMASK, [])          # sig_blocknone
    for s in (signal.SIGPIPE, signal.SIGVTALRM, signal.SIGPROF, signal.SIGQUIT,
              signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_IGN)                    # sig_pipeignore, sig_miscignore
    q = Queuer()
    try:
        return q.run()
    except Die as d:
        q.cleanup()
        return d.code
    except MemoryError:
        q.cleanup()
        return 51
    except Exception as e:                                  # noqa: BLE001 - exit 81, not 111
        q.cleanup()
        _internal(e)
        return 81
    finally:
        signal.alarm(0)

