"""vdelivermail - vpopmail's delivery agent for virtual domains.

usage: vdelivermail '' instruction

Run by qmail-local from a domain's .qmail-default, e.g.
    | /home/vpopmail/bin/vdelivermail '' delete
with the message on descriptor 0 (qmail's queue file; a pipe is first copied
to an unlinked temporary file, so it can be read more than once) and the
recipient in $EXT (the user) and $HOST (the domain), both lowercased.
qmail-local's other variables are used as it sets them: RPLINE
(`Return-Path: <sender>\\n`, written at the top of a stored message), DTLINE
(the forwarded copy's Delivered-To), SENDER and NEWSENDER (the envelope
sender of a forward).

Steps (vpopmail's vdelivermail.c):
 1. exactly two arguments, else 111 `vdelivermail: invalid syntax in
    .qmail-default file`; no $EXT or $HOST: 100; a user or domain name with
    characters vpopmail refuses (or `/`, `..`, a leading `.` or `-`): 100
    `invalid username` / `invalid domain name`.
 2. loop check: $DTLINE or a header line `Delivered-To: user@domain` (any
    case) already there: 100 `mail is looping`.  Every instruction line
    below is checked the same way against its own target.
 3. valias: the store's valias_select(user, domain) lines (then the
    `prefix-default` wildcards, $DEFAULT set to the rest, then the user
    without its extension) are delivered one by one, exit 0.
 4. the user (exactly, then without `-extension`, vpopmail's QMAIL_EXT):
    BOUNCE_MAIL flag: 100 `vdelivermail: account is locked email bounced
    user@domain`; a missing directory is made again (below the domain's
    directory only); the user's `.qmail-<ext>`, `.qmail-<prefix>default` or
    `.qmail` lines are delivered (a file of comments only drops the mail, as
    in vpopmail); else $QMAILHOME/control/defaultdelivery unless it names
    vdelivermail (DEFAULT_DELIVERY); else <userdir>/Maildir/ with the Maildir++
    quota of the user's quota field.
 5. no such user: the instruction decides.  `delete`: exit 0, the mail is
    dropped.  `bounce-no-mailbox`: <domain dir>/.no-user.msg, else
    $VPOPMAILHOME/domains/.no-user.msg, else `Sorry, no mailbox here by that
    name. (#5.1.1)`; exit 100.  `/path`: `user does not exist, but will
    deliver to /path/` and that directory's .qmail, else /path/Maildir/.
    Anything else is one delivery line (an address: a forward).
Delivery lines: `#` comment; `|command` runs /bin/sh -c command with the
message on descriptor 0 (exit 0 ok, 99 ok and stop, 64 65 70 76 77 78 100
112 bounce, anything else or a signal defer); `/dir/` or `./dir/` a Maildir
(a path without the final `/` is an mbox: 111 `can't handle mbox delivery
for ...`); anything else, with or without `&`, an address to forward to.

Maildir delivery: over quota (maildirquota(3): maildirsize, recounted when
stale) prints <domain dir>/.over-quota.msg, $VPOPMAILHOME/domains/
.over-quota.msg or `user is over quota`, exit 100, nothing stored.  At 90 %
or more, the quota warning (.quotawarn.msg of the domain, else of
$VPOPMAILHOME/domains) is stored first, at most once a day (Maildir/quotawarn
is its time stamp).  The message goes to tmp/<time>.<pid>.<host> (host at
most 32 characters) created exclusively, with RPLINE and `Delivered-To:
user@domain` on top; the file is fsync'ed, linked to new/<name>,S=<size>,
new/ is fsync'ed, the tmp name removed, and `<size> 1` is appended to
maildirsize.  A read or write error removes the file and exits 111 (disk
quota exceeded: 100 `user is over quota`).

Forwards go straight to qmail-queue ($QMAILQUEUE, else
$QMAILHOME/bin/qmail-queue, else qmail-queue on $PATH, through pathexec):
the message with `Delivered-To: <$DTLINE without the domain- prefix>` on top
(no Return-Path, as qmail-local forwards), envelope sender $NEWSENDER, else
$SENDER.  A qmail-queue failure prints `Unable to forward message: <qq
text>.` (qmail-local's words) and exits 100 or 111 as qmail-local would.

Messages go to descriptor 1, which qmail-local puts into the bounce or the
log, in vpopmail's words.

Exit codes: 0 delivered (or dropped by `delete`), 99 a command asked to stop
(qmail-local: ok), 100 bounce (also over quota), 111 try again later: the
store cannot answer (database down: `vdelivermail: deferred, database
down`), a disk or queue error, a user directory outside its domain's
directory.

Differences from vpopmail: forwards use qmail-queue with qmail-local's
envelope sender and header (vpopmail runs qmail-inject, whose sender is the
vpopmail user); the tmp/ and new/ names are never reused (an existing name
gets `_<n>` after the pid instead of being overwritten); new/ is fsync'ed;
a NOQUOTA user gets no maildirsize; a user directory outside the domain's
directory is refused (111) instead of written to; blank instruction lines
are skipped; a NUL in a line or an empty forward address defers (111); a
read error is a temporary failure, not a short message; an empty message is
stored (vpopmail's MAKE_SEEKABLE build drops it); the
`.qmail-<ext>` files of step 4 are looked for only when the user was found
without its extension; the size in maildirsize and the quota check include
the two header lines; vpopmail's spamassassin, maildrop and vusaged hooks
are not there.
"""
import errno
import os

from qtools.lib.fd import fsync_dir

PROG = "vdelivermail"
USAGE = "vdelivermail '' instruction"
FAST_EXIT = True

EXIT_OK, EXIT_BOUNCE, EXIT_DEFER = 0, 100, 111
QUOTA_WARN_PERCENT = 90         # vpopmail's config.h default
CHUNK = 65536
MAXTEXT = 65536                 # .no-user.msg and friends, .qmail files
DELETE_ALL, BOUNCE_ALL = "delete", "bounce-no-mailbox"

# vdelivermail.c's texts, word for word (typos included)
TEXT = {
    "syntax": "vdelivermail: invalid syntax in .qmail-default file",
    "noext": "vdelivermail: no EXT environment varilable",
    "nohost": "vdelivermail: no HOST environment varilable",
    "baduser": "invalid username",
    "baddomain": "invalid domain name",
    "loop": "mail is looping",
    "valias": "vdelivermail: valiases processed",
    "dbdown": "vdelivermail: deferred, database down",
    "locked": "vdelivermail: account is locked email bounced %s@%s",
    "autocreate": "Auto creation of maildir failed. (#5.9.8)",
    "recreate": "Auto re-creation of maildir failed. (#5.9.9)",
    "mbox": "can't handle mbox delivery for %s",
    "overquota": "user is over quota",
    "system": "system error",
    "nouser": "Sorry, no mailbox here by that name. (#5.1.1)",
    "willdeliver": "user does not exist, but will deliver to %s",
    "forward": "Unable to forward message: %s.",
    "outside": "vdelivermail: user directory outside the domain directory: %s",
    "nul": "vdelivermail: NUL in a delivery instruction",
    "noaddress": "vdelivermail: empty forward address",
}
BOUNCE_CODES = (64, 65, 70, 76, 77, 78, 100, 112)


class Exit(Exception):
    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


def out(text):
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    while data:
        try:
            data = data[os.write(1, data):]
        except InterruptedError:
            continue
        except OSError:
            return


def vexit(code, text=None):
    """vexiterr(): the text and a newline on descriptor 1, then exit."""
    if text is not None:
        out(text + "\n")
    raise Exit(code)


def main(argv):
    try:
        Delivery(argv).run()
    except Exit as e:
        return e.code
    return EXIT_OK


def seekable_stdin():
    """Make descriptor 0 a regular file at offset 0 (vpopmail's
    MAKE_SEEKABLE): a pipe is copied to an unlinked temporary file."""
    try:
        os.lseek(0, 0, os.SEEK_SET)
        return
    except OSError as e:
        if e.errno != errno.ESPIPE:
            vexit(EXIT_DEFER, "vdelivermail: unable to read message: %s" % e.strerror)
    d = os.environ.get("TMPDIR") or "/tmp"
    try:
        try:
            fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            fd = _anonymous_file(d)             # a file system without O_TMPFILE
        while True:
            data = os.read(0, CHUNK)
            if not data:
                break
            while data:
                data = data[os.write(fd, data):]
        os.dup2(fd, 0)
        os.close(fd)
        os.lseek(0, 0, os.SEEK_SET)
    except OSError as e:
        vexit(EXIT_DEFER, "vdelivermail: unable to copy the message: %s" % e.strerror)


def _anonymous_file(d):
    import time
    for n in range(100):
        p = os.path.join(d, "vdelivermail.%d.%d.%d" % (os.getpid(), time.time_ns(), n))
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        os.unlink(p)
        return fd
    raise FileExistsError(errno.EEXIST, "no unique temporary name", d)


def read_text(paths):
    """The first of paths that can be read (bytes), or None."""
    for p in paths:
        if not p:
            continue
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            return os.read(fd, MAXTEXT)
        except OSError:
            continue
        finally:
            os.close(fd)
    return None


def _hostname():
    h = os.uname().nodename or "localhost"
    return h.replace("/", "\\057").replace(":", "\\072")[:32]


class Delivery:
    """One run: vdelivermail.c's globals as attributes."""

    def __init__(self, argv):
        self.argv = argv
        self.st = None
        self.pw = None
        self.delivered_to = None        # header values already in the message

    # -- setup -------------------------------------------------------------
    def run(self):
        from qtools.vpopmail import store as S
        self.S = S
        argv = self.argv
        if len(argv) != 3:
            vexit(EXIT_DEFER, TEXT["syntax"])
        self.bounce = argv[2]
        ext = os.environ.get("EXT")
        if ext is None:
            vexit(EXIT_BOUNCE, TEXT["noext"])
        host = os.environ.get("HOST")
        if host is None:
            vexit(EXIT_BOUNCE, TEXT["nohost"])
        self.user, self.domain = ext.lower(), host.lower()
        if not S.username_valid(self.user):
            vexit(EXIT_BOUNCE, TEXT["baduser"])
        if not S.domain_valid(self.domain):
            vexit(EXIT_BOUNCE, TEXT["baddomain"])
        # QMAIL_EXT: user-ext is user's address with an extension
        i = self.user.find("-")
        self.user_noext = self.user if i < 0 else self.user[:i]
        self.ext = "" if i < 0 else self.user[i + 1:].replace(".", ":")
        if not S.username_valid(self.user_noext):
            vexit(EXIT_BOUNCE)
        self.use_ext = False
        seekable_stdin()
        try:
            self.assign = S.get_assign(self.domain) \
                if len(self.domain) <= S.MAX_PW_DOMAIN else None
        except S.TempFail as e:
            self.defer(e)
        self.realdomain = self.assign.domain if self.assign else self.domain
        self.domdir = self.assign.dir if self.assign else ""

        if self.is_looping("%s@%s" % (self.user, self.domain)):
            vexit(EXIT_BOUNCE, TEXT["loop"])
        try:
            if self.assign is not None and self.process_valias():
                vexit(EXIT_OK, TEXT["valias"])
            pw = self.getpw(self.user)
            if pw is None and self.user_noext != self.user:
                pw = self.getpw(self.user_noext)
                self.use_ext = pw is not None
        except (S.TempFail, S.StoreError) as e:
            self.defer(e)
        if pw is not None:
            self.pw = pw
            self.checkuser()
        else:
            self.usernotfound()
        vexit(EXIT_OK)

    def defer(self, e):
        os.write(2, ("vdelivermail: %s\n" % e).encode("utf-8", "replace"))
        vexit(EXIT_DEFER, TEXT["dbdown"])

    def store(self):
        if self.st is None:
            self.st = self.S.open_store()
        return self.st

    def getpw(self, user):
        S = self.S
        if self.assign is None or len(user) > S.MAX_PW_NAME:
            return None
        return self.store().getpw(user, self.realdomain)

    # -- loops ---------------------------------------------------------------
    def header_delivered_to(self):
        """The `Delivered-To: ` values of the header, lowercased, with their
        newline (vdelivermail reads up to the first empty line)."""
        if self.delivered_to is None:
            found = set()
            os.lseek(0, 0, os.SEEK_SET)
            pending, skipping = b"", False
            while True:
                try:
                    data = os.read(0, CHUNK)
                except OSError as e:
                    vexit(EXIT_DEFER, "vdelivermail: unable to read message: %s" % e.strerror)
                if not data:
                    if pending and not skipping and pending[:14].lower() == b"delivered-to: ":
                        found.add(pending[14:].lower())
                    break
                pending += data
                pos, end = 0, False
                while True:
                    i = pending.find(b"\n", pos)
                    if i < 0:
                        break
                    line, pos = pending[pos:i + 1], i + 1
                    if skipping:
                        skipping = False
                        continue
                    if line[:1] in (b"\n", b"\r"):
                        end = True
                        break
                    if line[:14].lower() == b"delivered-to: ":
                        found.add(line[14:].lower())
                if end:
                    break
                pending = pending[pos:]
                if len(pending) > 4096:         # a line that long names no one
                    pending, skipping = b"", True
            self.delivered_to = found
            os.lseek(0, 0, os.SEEK_SET)
        return self.delivered_to

    def is_looping(self, address):
        if address.startswith("&"):
            address = address[1:]
        want = address.encode("utf-8", "surrogateescape").lower() + b"\n"
        dt = os.environb.get(b"DTLINE")
        if dt is not None and dt[:14].lower() == b"delivered-to: " and dt[14:].lower() == want:
            return True
        return want in self.header_delivered_to()

    # -- valias --------------------------------------------------------------
    def valias(self, alias):
        fn = getattr(self.store(), "valias_select", None)
        if fn is None:
            return []
        got = fn(alias, self.realdomain)
        if not got:
            return []
        if isinstance(got, (str, bytes)):
            got = [got]
        return [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else str(x)
                for x in got if x]

    def process_valias(self):
        lines = self.valias(self.user)
        if not lines:
            u = self.user
            for i in range(len(u), 0, -1):
                if u[i - 1] == "-":
                    lines = self.valias(u[:i] + "default")
                    if lines:
                        os.environ["DEFAULT"] = u[i:]
                        break
        if not lines and self.user_noext != self.user:
            lines = self.valias(self.user_noext)
        for line in lines:
            self.deliver_mail(line, "")
        return bool(lines)

    # -- the user ------------------------------------------------------------
    def checkuser(self):
        S, pw = self.S, self.pw
        if pw.gid & S.BOUNCE_MAIL:
            vexit(EXIT_BOUNCE, TEXT["locked"] % (self.user, self.domain))
        a = self.assign
        if not pw.dir:
            from qtools.vpopmail import admin
            udir = os.path.join(a.dir, pw.name)
            try:
                if not inside(udir, a.dir):
                    raise OSError(errno.EINVAL, "outside")
                os.mkdir(udir, admin.DIR_MODE)
                admin.make_maildir(udir, a.uid, a.gid)
                pw.dir = udir
                self.store().setpw(pw, self.realdomain)
            except S.TempFail as e:
                self.defer(e)
            except (OSError, S.StoreError):
                vexit(EXIT_BOUNCE, TEXT["autocreate"])
        if not inside(pw.dir, a.dir) or os.path.realpath(pw.dir) == os.path.realpath(a.dir):
            vexit(EXIT_DEFER, TEXT["outside"] % pw.dir)
        if not os.path.isdir(os.path.join(pw.dir, "Maildir")):
            try:
                self.make_maildir(pw.dir)
            except OSError:
                vexit(EXIT_BOUNCE, TEXT["recreate"])
        if self.check_forward_deliver(pw.dir) == 1:
            vexit(EXIT_OK)
        if self.check_default_delivery() == 1:
            vexit(EXIT_OK)
        self.deliver_mail(os.path.join(pw.dir, "Maildir") + "/", pw.shell or "NOQUOTA")

    def make_maildir(self, udir):
        from qtools.vpopmail import admin       # imports signal: only when needed
        a = self.assign
        old = os.umask(0o077)
        try:
            if not os.path.isdir(udir):
                os.makedirs(udir, admin.DIR_MODE)
                admin.make_maildir(udir, a.uid, a.gid)
                return
            for sub in ("Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
                p = os.path.join(udir, sub)
                if not os.path.isdir(p):
                    os.mkdir(p, admin.DIR_MODE)
                    admin.chown(p, a.uid, a.gid)
        finally:
            os.umask(old)

    def qmail_files(self):
        """check_forward_deliver's file names, in order."""
        names = []
        ext = self.ext if self.use_ext else ""
        if ext:
            names.append(".qmail-" + ext)
            for i in range(len(ext), -1, -1):
                if i == 0 or ext[i - 1] == "-":
                    names.append(".qmail-" + ext[:i] + "default")
        names.append(".qmail")
        return names

    def instruction_lines(self, data):
        for line in data.split(b"\n"):
            yield line.decode("utf-8", "surrogateescape")

    def check_forward_deliver(self, d):
        """1 if d has a .qmail file (its lines delivered), else -1."""
        try:
            os.chdir(d)
        except OSError:
            pass
        data = None
        for name in self.qmail_files():
            try:
                fd = os.open(os.path.join(d, name), os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                data = b""
                while len(data) < MAXTEXT * 16:
                    chunk = os.read(fd, CHUNK)
                    if not chunk:
                        break
                    data += chunk
            except OSError as e:
                vexit(EXIT_DEFER, "vdelivermail: unable to read %s: %s" % (name, e.strerror))
            finally:
                os.close(fd)
            break
        if data is None:
            return -1
        rv = 0
        for line in self.instruction_lines(data):
            if line.startswith("#"):
                rv = 1
                continue
            line = line.rstrip(" \t\r")
            if not line:
                continue
            self.deliver_mail(line, "")
            rv = 1
        return rv

    def check_default_delivery(self):
        """DEFAULT_DELIVERY: control/defaultdelivery's lines, unless one of
        them calls vdelivermail (then 0); -1 without the file."""
        path = os.path.join(self.S.qmailhome(), "control", "defaultdelivery")
        data = read_text([path])
        if data is None:
            return -1
        rv = 0
        for line in self.instruction_lines(data):
            if line.startswith("#"):
                continue
            line = line.rstrip(" \t\r")
            if not line:
                continue
            if "vdelivermail" in line:
                return 0
            self.deliver_mail(line, "")
            rv = 1
        return rv

    def usernotfound(self):
        b = self.bounce
        if b == DELETE_ALL:
            vexit(EXIT_OK)
        if b == BOUNCE_ALL:
            text = read_text([self.domdir and os.path.join(self.domdir, ".no-user.msg"),
                              os.path.join(self.S.vpopmailhome(), "domains", ".no-user.msg")])
            out(text if text is not None else TEXT["nouser"] + "\n")
            vexit(EXIT_BOUNCE)
        if b.startswith("/"):
            if not b.endswith("/"):
                b += "/"
            out(TEXT["willdeliver"] % b + "\n")
            self.bounce = b
            if self.check_forward_deliver(b) == 1:
                vexit(EXIT_OK)
            b += "Maildir/"
            self.bounce = b
        self.deliver_mail(b, "")

    # -- one delivery line ---------------------------------------------------
    def deliver_mail(self, address, quota):
        if address.startswith("#"):
            return
        if "\0" in address:
            vexit(EXIT_DEFER, TEXT["nul"])
        if self.is_looping(address):
            vexit(EXIT_BOUNCE, TEXT["loop"])
        os.lseek(0, 0, os.SEEK_SET)
        if address.startswith("|"):
            self.run_command(address)
        elif address[:1] in (".", "/"):
            self.maildir(address, quota)
        else:
            self.forward(address)

    def maildir_to_email(self, maildir):
        """The address whose Maildir this is (<domain dir>/[hash/]user/Maildir/),
        or "" (vpopmail's maildir_to_email, for this domain's tree)."""
        if not self.domdir:
            return ""
        p = os.path.realpath(maildir)
        top = os.path.realpath(self.domdir).rstrip("/") + "/"
        if not p.startswith(top):
            return ""
        parts = p[len(top):].split("/")
        if len(parts) < 2 or parts[-1] != "Maildir":
            return ""
        return "%s@%s" % (parts[-2], self.realdomain)

    def maildir(self, address, quota):
        from qtools.vpopmail import maildirquota as mq
        if not address.endswith("/"):
            out(TEXT["mbox"] % address)
            vexit(EXIT_DEFER)
        if not quota:
            quota = self.quota_of(address)
        email = self.maildir_to_email(address)
        rpline = os.environ.get("RPLINE", "")
        if address == self.bounce or not email:
            headers = "%sDelivered-To: %s@%s\n" % (rpline, self.user, self.domain)
        else:
            headers = "%sDelivered-To: %s\n" % (rpline, email)
        headers = headers.encode("utf-8", "surrogateescape")
        spec = ""
        if quota and not quota.startswith("NO"):
            spec = self.S.format_maildirquota(quota)
        if mq.limited(spec):
            size = os.fstat(0).st_size + len(headers)
            if mq.over_quota(address, spec, size):
                text = read_text([self.domdir and os.path.join(self.domdir, ".over-quota.msg"),
                                  os.path.join(self.S.vpopmailhome(), "domains",
                                               ".over-quota.msg")])
                out(text if text is not None else TEXT["overquota"] + "\n")
                self.quota_warning(address, spec)
                vexit(EXIT_BOUNCE, "")
            if QUOTA_WARN_PERCENT >= 0 and \
                    mq.percent_used(address, spec) >= QUOTA_WARN_PERCENT:
                self.quota_warning(address, spec)
        r = self.to_maildir(address, headers, 0, spec)
        if r == -1:
            vexit(EXIT_BOUNCE, TEXT["overquota"])
        if r == -2:
            vexit(EXIT_DEFER, TEXT["system"])

    def quota_of(self, maildir):
        """read_quota_from_maildir(): maildirsize's first line, else the
        user's quota when this is the user's own Maildir."""
        data = read_text([os.path.join(maildir, "maildirsize")])
        if data is not None:
            return data.split(b"\n", 1)[0].decode("latin-1").strip()
        pw = self.pw
        if pw is not None and pw.dir and \
                os.path.realpath(maildir) == os.path.realpath(os.path.join(pw.dir, "Maildir")):
            return pw.shell
        return ""

    def to_maildir(self, maildir, headers, fd, spec):
        """deliver_to_maildir(): 0 stored, -1 over quota (EDQUOT), -2 failure."""
        import time
        from qtools.vpopmail import maildirquota as mq
        t, pid, host = int(time.time()), os.getpid(), _hostname()
        for n in range(100):
            base = "%d.%d.%s" % (t, pid, host) if n == 0 else "%d.%d_%d.%s" % (t, pid, n, host)
            tmp = maildir + "tmp/" + base
            try:
                wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno == errno.EDQUOT:
                    return -1
                out("can not open new email file errno=%d file=%s\n" % (e.errno, tmp))
                return -2
            try:
                self.copy(wfd, headers, fd)
                os.fsync(wfd)
                size = os.fstat(wfd).st_size
            except OSError as e:
                os.close(wfd)
                _unlink(tmp)
                if e.errno == errno.EDQUOT:
                    return -1
                out("write failed errno = %d\n" % e.errno)
                return -2
            os.close(wfd)
            new = "%snew/%s,S=%d" % (maildir, base, size)
            try:
                os.link(tmp, new)
            except FileExistsError:
                _unlink(tmp)
                continue
            except OSError as e:
                # a file system without hard links: rename, never over a message
                if os.path.lexists(new):
                    _unlink(tmp)
                    continue
                try:
                    os.rename(tmp, new)
                except OSError:
                    out("rename failed %s %s errno = %d\n" % (tmp, new, e.errno))
                    _unlink(tmp)
                    return -2
            try:
                fsync_dir(maildir + "new")
            except OSError as e:
                # not known to be durable: take it back, qmail will retry
                _unlink(new)
                _unlink(tmp)
                out("fsync failed %snew errno = %d\n" % (maildir, e.errno))
                return -2
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            except OSError as e:
                out("unlink failed %s errno = %d\n" % (tmp, e.errno))
            if mq.limited(spec):
                mq.add(maildir, spec, size, 1)
            return 0
        out("can not open new email file errno=%d file=%s\n" % (errno.EEXIST, maildir + "tmp/"))
        return -2

    @staticmethod
    def copy(wfd, headers, rfd):
        view = memoryview(headers)
        while view:
            view = view[os.write(wfd, view):]
        os.lseek(rfd, 0, os.SEEK_SET)
        while True:
            data = os.read(rfd, CHUNK)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]

    def quota_warning(self, maildir, spec):
        """deliver_quota_warning(): at most one a day."""
        import time
        stamp = os.path.join(maildir, "quotawarn")
        now = time.time()
        try:
            if os.stat(stamp).st_mtime + 86400 > now:
                return 0
        except OSError:
            pass
        try:
            fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            os.utime(fd)
            os.close(fd)
        except OSError:
            out("couldn't update quotawarn timestamp\n")
            return -2
        rfd = -1
        for p in (self.domdir and os.path.join(self.domdir, ".quotawarn.msg"),
                  os.path.join(self.S.vpopmailhome(), "domains", ".quotawarn.msg")):
            if not p:
                continue
            try:
                rfd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
                break
            except OSError:
                continue
        if rfd < 0:
            return 0
        date = time.strftime("Date: %a, %d %b %Y %H:%M:%S %z\n", time.localtime(now))
        if maildir == self.bounce:
            headers = os.environ.get("DTLINE", "") + date
        else:
            email = self.maildir_to_email(maildir) or "%s@%s" % (self.user, self.domain)
            headers = "Delivered-To: %s\n%s" % (email, date)
        try:
            return self.to_maildir(maildir, headers.encode("utf-8", "surrogateescape"),
                                   rfd, spec)
        finally:
            os.close(rfd)

    # -- programs and forwards -------------------------------------------------
    def run_command(self, prog):
        prog = prog.lstrip(" |")
        pid = _fork()
        if pid == 0:
            try:
                from qtools.lib import pathexec
                os.environ["SHELL"] = "/bin/sh"
                os.lseek(0, 0, os.SEEK_SET)
                pathexec.pathexec_run(["/bin/sh", "-c", prog])
            except OSError as e:
                out("Unable to run /bin/sh: %d." % (e.errno or 0))
            finally:
                os._exit(EXIT_DEFER)
        _, status = _wait(pid)
        if not os.WIFEXITED(status):
            vexit(EXIT_DEFER)
        code = os.WEXITSTATUS(status)
        if code in BOUNCE_CODES:
            vexit(EXIT_BOUNCE)
        if code == 99:
            vexit(99)
        if code != 0:
            vexit(EXIT_DEFER)

    def forward_dtline(self, address):
        """vpopmail's Delivered-To for a forward: $DTLINE without the
        `domain-` qmail-local's virtual domain prefix."""
        dt = os.environ.get("DTLINE")
        if dt is None or len(dt) < 15:
            return "Delivered-To: %s\n" % address
        value = dt[14:]
        local, at, dom = value.partition("@")
        prefix = dom.rstrip("\n") + "-"
        if at and local.lower().startswith(prefix.lower()):
            value = value[len(prefix):]
        return "Delivered-To: " + value

    def forward(self, address):
        from qtools.lib import queue as qlib
        if address.startswith("&"):
            address = address[1:]
        if not address.strip():
            vexit(EXIT_DEFER, TEXT["noaddress"])
        headers = self.forward_dtline(address).encode("utf-8", "surrogateescape")
        sender = os.environb.get(b"NEWSENDER")
        if sender is None:
            sender = os.environb.get(b"SENDER", b"")
        envelope = b"F" + sender + b"\0T" + address.encode("utf-8", "surrogateescape") \
            + b"\0\0"
        qq = os.environ.get("QMAILQUEUE")
        if not qq:
            qq = os.path.join(self.S.qmailhome(), "bin", "qmail-queue")
            if not os.path.exists(qq):
                qq = "qmail-queue"
        try:
            mr, mw = os.pipe()
            er, ew = os.pipe()
        except OSError as e:
            vexit(EXIT_DEFER, "Unable to open pipe: %d." % e.errno)
        pid = _fork()
        if pid == 0:
            try:
                from qtools.lib import pathexec
                os.dup2(mr, 0)
                os.dup2(er, 1)
                for fd in (mr, mw, er, ew):
                    os.close(fd)
                pathexec.pathexec_run([qq])
            except BaseException:
                pass
            os._exit(120)
        os.close(mr)
        os.close(er)
        flagerr = False
        try:
            self.copy(mw, headers, 0)
        except OSError:
            flagerr = True
        os.close(mw)
        try:
            view = memoryview(envelope)
            while view:
                view = view[os.write(ew, view):]
        except OSError:
            flagerr = True
        os.close(ew)
        _, status = _wait(pid)
        text = qlib.qq_text(status, flagerr)
        if text:
            vexit(EXIT_BOUNCE if text[0] == "D" else EXIT_DEFER, TEXT["forward"] % text[1:])


def inside(path, top):
    """Whether path resolves to top or below it (admin.inside)."""
    rp, rt = os.path.realpath(path), os.path.realpath(top)
    return rp == rt or rp.startswith(rt.rstrip("/") + "/")


def _fork():
    try:
        return os.fork()
    except OSError as e:
        out("Unable to fork: %d." % e.errno)
        vexit(EXIT_DEFER)


def _wait(pid):
    while True:
        try:
            return os.waitpid(pid, 0)
        except InterruptedError:
            continue


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
