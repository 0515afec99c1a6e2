"""queue-fix - create or repair qmail's queue hierarchy.

usage: queue-fix [-N] [queue_dir]

Makes queue_dir (default $QMAILHOME/queue, $QMAILHOME defaulting to
/var/qmail) look the way qmail's installer leaves it (notqmail hier.c,
conf-split 23): pid, intd, todo, bounce, lock; mess, info, local and remote
with 23 subdirectories each; lock/tcpto (1024 zero bytes), lock/sendmutex
(empty) and the lock/trigger fifo.  Whatever is missing is created; a wrong
mode, a wrong owner, a tcpto of the wrong size and a trigger that is not a
fifo are fixed.  Files already in the queue (messages) are left alone.

Owners: run as root with qmail's users (qmaild qmailq qmails qmailr alias
qmaill) and groups (qmail nofiles) present, entries belong to qmailq,
qmails or qmailr and group qmail, as qmail installs them.  Otherwise
everything belongs to the invoking user and group (a warning says so when
root lacks the qmail users).

Each change is printed on stdout as a line like `mkdir 0700 QUEUE/pid`,
`chmod 0750 QUEUE/todo`, `chown 1001:1002 QUEUE/todo`, `mkfifo 0622
QUEUE/lock/trigger`, `create 0644 QUEUE/lock/tcpto`.  -N prints the same lines
and changes nothing.

Differences from Eric Huss's queue-fix: no -i/-v, no renumbering of messages
whose name is not their inode, no removal of orphaned queue files.

Exit codes: 0 done (with -N: nothing to change); 1 with -N: something would
change; 100 usage; 111 a change failed, or an entry has the wrong type
(a file where a directory belongs, a symbolic link inside the queue).
"""
import os
import stat
import sys

from qtools.lib import queue as qlib
from qtools.lib import sgetopt, strerr

PROG = "queue-fix"
USAGE = "queue-fix [-N] [queue_dir]"


def owners():
    """(uid by qmail user name, gid, why-not) for the entries."""
    missing = [u for u in qlib.USERS if qlib.uid(u) is None]
    missing += [g for g in qlib.GROUPS if qlib.gid(g) is None]
    if os.geteuid() == 0 and not missing:
        return {u: qlib.uid(u) for u in qlib.USERS}, qlib.gid(qlib.GROUP_Q), None
    me = os.geteuid()
    return {u: me for u in qlib.USERS}, os.getegid(), missing


def entries(qdir):
    """(path, kind, user, mode), parents first."""
    out = []
    for rel, kind, user, mode in qlib.HIER:
        path = os.path.join(qdir, rel) if rel else qdir
        if kind == "s":
            out.append((path, "d", user, mode))
            out.extend((os.path.join(path, str(i)), "d", user, mode) for i in range(qlib.SPLIT))
        else:
            out.append((path, kind, user, mode))
    return out


class Fixer:
    def __init__(self, report_only):
        self.report_only = report_only
        self.changes = 0

    def say(self, *words):
        self.changes += 1
        sys.stdout.write(" ".join(words) + "\n")
        sys.stdout.flush()

    def do(self, what, path, fn, *args):
        if self.report_only:
            return
        try:
            fn(*args)
        except OSError as e:
            strerr.die(111, PROG, "unable to ", what, " ", path, ": ", e)

    def create(self, path, kind, mode):
        if kind == "d":
            self.say("mkdir", "%04o" % mode, path)
            self.do("mkdir", path, os.mkdir, path, 0o700)
        elif kind == "p":
            self.say("mkfifo", "%04o" % mode, path)
            self.do("mkfifo", path, os.mkfifo, path, 0o600)
        else:
            self.say("create", "%04o" % mode, path)
            self.do("create", path, self.makefile, path, int(kind[1:]))

    @staticmethod
    def makefile(path, size):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if size:
                os.write(fd, b"\0" * size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def fix(self, path, kind, uid, gid, mode, top):
        try:
            st = os.stat(path) if top else os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            strerr.die(111, PROG, "unable to stat ", path, ": ", e)
        if st is not None:
            fmt = stat.S_IFMT(st.st_mode)
            if fmt == stat.S_IFLNK:
                strerr.die(111, PROG, path, " is a symbolic link")
            if kind == "d" and fmt != stat.S_IFDIR:
                strerr.die(111, PROG, path, " is not a directory")
            if kind == "p" and fmt != stat.S_IFIFO:
                if fmt == stat.S_IFDIR:
                    strerr.die(111, PROG, path, " is a directory")
                self.say("rm", path)                    # a lock, not data
                self.do("remove", path, os.unlink, path)
                st = None
            elif kind[0] == "f":
                if fmt != stat.S_IFREG:
                    strerr.die(111, PROG, path, " is not a regular file")
                size = int(kind[1:])
                if st.st_size != size:
                    # tcpto is a cache of remote timeouts: zeros are a valid table
                    self.say("truncate", str(size), path)
                    self.do("truncate", path, self.resize, path, size)
        if st is None:
            self.create(path, kind, mode)
            if self.report_only:
                return
            self.do("chmod", path, os.chmod, path, mode)    # exact, whatever the umask
            st = os.lstat(path)
            if st.st_uid != uid or st.st_gid != gid:
                self.do("chown", path, os.chown, path, uid, gid)
            return
        if stat.S_IMODE(st.st_mode) != mode:
            self.say("chmod", "%04o" % mode, path)
            self.do("chmod", path, os.chmod, path, mode)
        if st.st_uid != uid or st.st_gid != gid:
            self.say("chown", "%d:%d" % (uid, gid), path)
            self.do("chown", path, os.chown, path, uid, gid)

    @staticmethod
    def resize(path, size):
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, 0)
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)


def main(argv):
    try:
        opts, args = sgetopt.getopt(argv, "N", PROG)
    except sgetopt.UsageError:
        strerr.die_usage(PROG, USAGE)
    if len(args) > 1:
        strerr.die_usage(PROG, USAGE)
    report_only = any(o == "N" for o, _ in opts)
    qdir = args[0] if args else qlib.queuedir()
    uids, gid, missing = owners()
    if missing and os.geteuid() == 0:
        strerr.warn(PROG, "no such user or group: ", " ".join(missing),
                    "; entries belong to uid %d gid %d" % (os.geteuid(), gid))
    f = Fixer(report_only)
    for path, kind, user, mode in entries(qdir):
        f.fix(path, kind, uids[user], gid, mode, path == qdir)
    if not report_only and f.changes:
        # directory entries made here must survive a crash like queue files
        for path, kind, _, _ in entries(qdir):
            if kind == "d":
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as e:
                    strerr.die(111, PROG, "unable to fsync ", path, ": ", e)
    return 1 if report_only and f.changes else 0
