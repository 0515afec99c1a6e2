"""queue - qmail's queue: layout, file names, dates, users, exit texts.

One place for what qmail-queue, qmail-send, qmail-clean, qmail-qread,
qmail-qstat and queue-fix must agree on (notqmail's hier.c, fmtqfn.c,
date822fmt.c, qmail.c; conf-split 23).

    queue/            qmailq  0750   the queue, group qmail throughout
      pid/            qmailq  0700   pid/<pid>.<time>.<seq>, a new message's first name
      mess/<0..22>/   qmailq  0750   mess/<n%23>/<n>: Received line + message
      intd/           qmailq  0700   intd/<n>: envelope under construction (not split)
      todo/           qmailq  0750   todo/<n>: link to intd/<n>, the message is queued
      info/<0..22>/   qmails  0700   "F<sender>\\0"; its mtime is the birth time
      local/<0..22>/  qmails  0700   "T<addr>\\0" per local recipient (T -> D when done)
      remote/<0..22>/ qmails  0700   the same for remote recipients
      bounce/         qmails  0700   bounce/<n>: failure paragraphs (not split)
      lock/           qmailq  0750
        sendmutex     qmails  0600   empty; qmail-send's flock
        tcpto         qmailr  0644   1024 bytes, qmail-remote's timeout table
        trigger       qmails  0622   fifo; one byte written = "look at todo/"

A message number is the inode number of its pid file (then of mess/<n>), so
numbers are unique without locks.  The queue must be on one file system.

The intd/todo envelope (envelopes(5)): `u<uid>\\0p<pid>\\0F<sender>\\0T<r1>\\0...`.
"""
import os
import time

SPLIT = 23                      # conf-split
ADDR = 1003                     # qmail-queue.c: an address and its \0 within 1003 bytes

# conf-users / conf-groups
USER_ALIAS, USER_D, USER_L, USER_Q, USER_R, USER_S = (
    "alias", "qmaild", "qmaill", "qmailq", "qmailr", "qmails")
GROUP_Q, GROUP_N = "qmail", "nofiles"
USERS = (USER_D, USER_Q, USER_S, USER_R, USER_ALIAS, USER_L)
GROUPS = (GROUP_Q, GROUP_N)

# hier.c, queue part: (path, kind, owner, mode); kind d = dir, s = split dir
# (the dir and its 23 subdirs), f<size> = regular file of that size, p = fifo.
# The group is always GROUP_Q.
HIER = (
    ("", "d", USER_Q, 0o750),
    ("pid", "d", USER_Q, 0o700),
    ("intd", "d", USER_Q, 0o700),
    ("todo", "d", USER_Q, 0o750),
    ("bounce", "d", USER_S, 0o700),
    ("mess", "s", USER_Q, 0o750),
    ("info", "s", USER_S, 0o700),
    ("local", "s", USER_S, 0o700),
    ("remote", "s", USER_S, 0o700),
    ("lock", "d", USER_Q, 0o750),
    ("lock/tcpto", "f1024", USER_R, 0o644),
    ("lock/sendmutex", "f0", USER_S, 0o600),
    ("lock/trigger", "p", USER_S, 0o622),
)

MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
          b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def qmailhome():
    return os.environ.get("QMAILHOME") or "/var/qmail"


def queuedir():
    return os.path.join(qmailhome(), "queue")


def fmtqfn(dirslash, n, flagsplit):
    """fmtqfn.c: ("mess/", 457, 1) -> "mess/20/457"; ("todo/", 457, 0) -> "todo/457"."""
    if flagsplit:
        return "%s%d/%d" % (dirslash, n % SPLIT, n)
    return "%s%d" % (dirslash, n)


def date822fmt(t):
    """date822fmt.c, in GMT as vanilla qmail writes it: b'26 Sep 1995 04:46:54 -0000\\n'."""
    g = time.gmtime(int(t))
    return b"%d %s %d %02d:%02d:%02d -0000\n" % (
        g.tm_mday, MONTHS[g.tm_mon - 1], g.tm_year, g.tm_hour, g.tm_min, g.tm_sec)


_ids = {}


def _id(kind, name):
    """Cached for the process's life, as qmail compiles them in (auto_uids.c)."""
    key = (kind, name)
    if key not in _ids:
        if kind == "u":
            import pwd
            get = lambda: pwd.getpwnam(name).pw_uid        # noqa: E731
        else:
            import grp
            get = lambda: grp.getgrnam(name).gr_gid        # noqa: E731
        try:
            _ids[key] = get()
        except KeyError:
            _ids[key] = None
    return _ids[key]


def uid(name):
    """uid of a qmail user, or None if there is no such user."""
    return _id("u", name)


def gid(name):
    """gid of a qmail group, or None."""
    return _id("g", name)


def received(pid, uid_, when, uida=None, uidd=None, uids=None):
    """qmail-queue's first line:
    b'Received: (qmail 1234 invoked by uid 89); 26 Sep 1995 04:46:54 -0000\\n'.
    uida/uidd/uids are the uids of alias, qmaild and qmails (None: no such user)."""
    if uid_ == uida:
        who = b"by alias"
    elif uid_ == uidd:
        who = b"from network"
    elif uid_ == uids:
        who = b"for bounce"
    else:
        who = b"by uid %d" % uid_
    return b"Received: (qmail %d invoked %s); %s" % (pid, who, date822fmt(when))


def parse_envelope(data):
    """An intd/todo file -> (uid, pid, sender, [recipients]) as bytes; raises
    ValueError if the file is not a complete envelope."""
    fields = data.split(b"\0")
    if fields[-1] != b"":
        raise ValueError("envelope does not end in \\0")
    fields = fields[:-1]
    u = p = sender = None
    rcpts = []
    for f in fields:
        tag, val = f[:1], f[1:]
        if tag == b"u" and u is None and sender is None:
            u = val
        elif tag == b"p" and p is None and sender is None:
            p = val
        elif tag == b"F" and sender is None:
            sender = val
        elif tag == b"T" and sender is not None:
            rcpts.append(val)
        else:
            raise ValueError("unexpected envelope field %r" % f[:20])
    if sender is None:
        raise ValueError("envelope without sender")
    return u, p, sender, rcpts


def triggerpull(qdir="."):
    """triggerpull.c: one byte to lock/trigger without blocking; if nobody
    reads it (ENXIO) or it is missing, bummer: qmail-send scans todo/ anyway."""
    try:
        fd = os.open(os.path.join(qdir, "lock/trigger"), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, b"\0")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# qmail.c qmail_close(): qmail-queue's exit code -> the caller's text; the
# first letter is D (permanent: SMTP 554) or Z (temporary: 451).
QQ_TEXT = {
    0: "",
    11: "Denvelope address too long for qq (#5.1.3)",
    115: "Denvelope address too long for qq (#5.1.3)",
    31: "Dmail server permanently rejected message (#5.3.0)",
    51: "Zqq out of memory (#4.3.0)",
    52: "Zqq timeout (#4.3.0)",
    53: "Zqq write error or disk full (#4.3.0)",
    54: "Zqq read error (#4.3.0)",
    55: "Zqq unable to read configuration (#4.3.0)",
    56: "Zqq trouble making network connection (#4.3.0)",
    61: "Zqq trouble in home directory (#4.3.0)",
    62: "Zqq trouble creating files in queue (#4.3.0)",
    63: "Zqq trouble creating files in queue (#4.3.0)",
    64: "Zqq trouble creating files in queue (#4.3.0)",
    65: "Zqq trouble creating files in queue (#4.3.0)",
    66: "Zqq trouble creating files in queue (#4.3.0)",
    71: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    81: "Zqq internal bug (#4.3.0)",
    91: "Zqq internal bug (#4.3.0)",
    120: "Zunable to exec qq (#4.3.0)",
}


def qq_text(wstatus, flagerr=False):
    """qmail_close() for a waitpid status: "" if queued, else the D/Z text.
    flagerr: the caller failed writing to qmail-queue (exit 0 then means a
    read error, as in qmail.c)."""
    if os.WIFSIGNALED(wstatus):
        return "Zqq crashed (#4.3.0)"
    if not os.WIFEXITED(wstatus):
        return "Zqq waitpid surprise (#4.3.0)"
    code = os.WEXITSTATUS(wstatus)
    if code == 0:
        return QQ_TEXT[54] if flagerr else ""
    t = QQ_TEXT.get(code)
    if t is not None:
        return t
    if 11 <= code <= 40:
        return "Dqq permanent problem (#5.3.0)"
    return "Zqq temporary problem (#4.3.0)"
