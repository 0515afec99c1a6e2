"""maildirquota - Maildir++ quota: the maildirsize file as courier and
vpopmail (maildirquota.c) keep it.

Maildir/maildirsize holds the quota spec on its first line (`<bytes>S`,
`<n>C`, `<bytes>S,<n>C`; a number without a letter is bytes) and then lines
`<bytes> <count>`, deltas that are summed: a delivery appends `<size> 1`, an
IMAP server deleting mail appends negative ones.  Each line is appended with
one write(2) on an O_APPEND descriptor, so concurrent deliveries never
interleave and never need a lock.

The file is a cache.  It is rebuilt by counting the messages (new/ and cur/
of the Maildir and of every `.Folder` but `.Trash`; names starting with `.`
and messages flagged T (deleted) do not count; a message's size is the
`,S=<size>` of its name, else its stat size) when it is missing, when it is
5120 bytes or more, when it is older than 15 minutes, when its first line is
not the spec being checked, when its totals are negative, and, as courier
does, when the deltas say "over quota" but the file has more than one delta
line (a verdict from deltas is confirmed by a count before a bounce).  The new
file is written under tmp/<time>.<pid>_NeWmAiLdIrSiZe.<host> and renamed over
the old one; a count that raced a delivery (new/ or cur/ changed meanwhile)
is repeated, at most three times.  A Maildir containing `maildirfolder` is a
folder: its parent's maildirsize counts.  The file is opened O_NOFOLLOW: a
symbolic link named maildirsize is never read or written through.
As in courier, a recount racing deliveries may count a message twice (its
link came before the count, its delta after the rename) or miss a delta
written to the replaced file; the error stays until the next recount, which
the rules above make happen within 15 minutes or at the next over-quota
verdict.

Functions (qmail-smtpd's chkuser imports these names):
  parse_spec(spec) -> (max_bytes, max_count)     0 = unlimited
  usage(maildir, spec=None) -> (bytes, count)
  percent_used(maildir, spec) -> int             0..100 (100 when over)
  over_quota(maildir, spec, msgsize) -> bool     would msgsize more exceed it?
  add(maildir, spec, bytes, count)               append a delta line
A spec that sets no limit (`NOQUOTA`, "") never writes a maildirsize.
"""
import os
import stat
import time

MAXFILE = 5120                  # Maildir++: a bigger maildirsize is recalculated
MAXAGE = 15 * 60                # ... and so is one older than 15 minutes
TRIES = 3
NOQUOTA = "NOQUOTA"


def parse_spec(spec):
    """(max_bytes, max_count) of a Maildir++ spec, as qcalc() reads it:
    digits followed by `C` are a message count, digits followed by anything
    else (`S`, `,`, the end) bytes; `NOQUOTA` or "" -> (0, 0)."""
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    size = count = 0
    i, n = 0, len(spec or "")
    while i < n:
        if not "0" <= spec[i] <= "9":
            i += 1
            continue
        j = i
        while j < n and "0" <= spec[j] <= "9":
            j += 1
        v = int(spec[i:j])
        if j < n and spec[j] == "C":
            count = v
        else:
            size = v
        i = j
    return size, count


def limited(spec):
    s, c = parse_spec(spec or "")
    return bool(s or c)


def top(maildir):
    """The Maildir whose maildirsize counts (a folder's parent)."""
    maildir = maildir.rstrip("/") or "/"
    if os.path.exists(os.path.join(maildir, "maildirfolder")):
        return os.path.dirname(maildir) or "."
    return maildir


# -- counting ----------------------------------------------------------------
def name_size(name):
    """The S= size of a Maildir file name (maildir_parsequota: the last
    `,S=` before the `:2,` info), or None."""
    i = name.find(":")
    head = name if i < 0 else name[:i]
    j = head.rfind(",S=")
    if j < 0:
        return None
    k = j + 3
    while k < len(head) and "0" <= head[k] <= "9":
        k += 1
    return int(head[j + 3:k]) if k > j + 3 else 0


def deleted(name):
    """A message flagged T (trashed) in its `:2,FLAGS` info."""
    i = name.find(":2,")
    if i < 0:
        return False
    for c in name[i + 3:]:
        if c == "T":
            return True
        if not "A" <= c <= "Z":
            return False
    return False


def _count_dir(d):
    """(bytes, count) of one new/ or cur/ (missing: nothing)."""
    size = count = 0
    try:
        names = os.listdir(d)
    except OSError:
        return 0, 0
    for n in names:
        if n.startswith(".") or deleted(n):
            continue
        s = name_size(n)
        if s is None:
            try:
                s = os.stat(os.path.join(d, n)).st_size
            except OSError:
                continue                        # gone meanwhile (read, expunged)
        size += s
        count += 1
    return size, count


def folders(maildir):
    """The Maildir and its Maildir++ folders (not .Trash)."""
    out = [maildir]
    try:
        names = os.listdir(maildir)
    except OSError:
        return out
    for n in sorted(names):
        if n.startswith(".") and n not in (".", "..", ".Trash") \
                and os.path.isdir(os.path.join(maildir, n)):
            out.append(os.path.join(maildir, n))
    return out


def _stamp(dirs):
    st = []
    for f in dirs:
        for sub in ("new", "cur"):
            try:
                s = os.stat(os.path.join(f, sub))
                st.append((s.st_ino, s.st_mtime_ns, s.st_size))
            except OSError:
                st.append(None)
    return st


def count(maildir):
    """(bytes, count) by reading the directories; repeated when new/ or
    cur/ changed during the count (a delivery or a move raced it)."""
    maildir = top(maildir)
    for _ in range(TRIES):
        dirs = folders(maildir)
        before = _stamp(dirs)
        size = n = 0
        for f in dirs:
            for sub in ("new", "cur"):
                s, c = _count_dir(os.path.join(f, sub))
                size += s
                n += c
        if _stamp(dirs) == before:
            break
    return size, n


# -- the file ----------------------------------------------------------------
class Sizefile:
    __slots__ = ("spec", "size", "count", "lines", "mtime", "whole")

    def __init__(self, spec, size, count, lines, mtime, whole):
        self.spec, self.size, self.count = spec, size, count
        self.lines, self.mtime, self.whole = lines, mtime, whole


def _int(tok):
    """sscanf's %ld on one token: an optional sign and digits, else 0."""
    i = 1 if tok[:1] in (b"-", b"+") else 0
    j = i
    while j < len(tok) and 48 <= tok[j] <= 57:
        j += 1
    if j == i:
        return 0
    v = int(tok[i:j])
    return -v if tok[:1] == b"-" else v


def read(maildir):
    """The parsed maildirsize of a (top) Maildir, or None when it is
    missing, unreadable or not a regular file."""
    path = os.path.join(maildir, "maildirsize")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        data = b""
        while len(data) < MAXFILE:
            d = os.read(fd, MAXFILE - len(data))
            if not d:
                break
            data += d
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    spec = lines[0].decode("latin-1").strip() if lines else ""
    size = n = 0
    for line in lines[1:]:
        tok = line.split()
        size += _int(tok[0]) if tok else 0
        n += _int(tok[1]) if len(tok) > 1 else 0
    return Sizefile(spec, size, n, len(lines) - 1, st.st_mtime, len(data) < MAXFILE)


def _hostname():
    h = os.uname().nodename or "localhost"
    return h.replace("/", "\\057").replace(":", "\\072")


def recalc(maildir, spec):
    """Count the Maildir and write a fresh maildirsize (spec, totals)
    through tmp/ and rename; returns (bytes, count).  A failure to write
    leaves the old file; the counted totals are returned anyway."""
    maildir = top(maildir)
    size, n = count(maildir)
    tmp = os.path.join(maildir, "tmp", "%d.%d_NeWmAiLdIrSiZe.%s"
                       % (time.time(), os.getpid(), _hostname()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return size, n
    try:
        data = ("%s\n%d %d\n" % (spec, size, n)).encode("latin-1", "replace")
        ok = os.write(fd, data) == len(data)
    except OSError:
        ok = False
    finally:
        os.close(fd)
    try:
        if ok:
            os.rename(tmp, os.path.join(maildir, "maildirsize"))
        else:
            os.unlink(tmp)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return size, n


def _current(maildir, spec, now=None):
    """(bytes, count, delta_lines or 0 when just counted) of a top Maildir."""
    f = read(maildir)
    now = time.time() if now is None else now
    fresh = (f is not None and f.whole and now - f.mtime < MAXAGE and f.size >= 0
             and f.count >= 0 and (not spec or f.spec == spec))
    if fresh:
        return f.size, f.count, f.lines
    want = spec or (f.spec if f is not None else "")
    if limited(want):
        size, n = recalc(maildir, want)
    else:
        size, n = count(maildir)
    return size, n, 0


def usage(maildir, spec=None):
    """(bytes, count) in use: maildirsize's totals, recounted (and the file
    rewritten with spec, or with its own first line) when it is stale."""
    size, n, _ = _current(top(maildir), spec)
    return size, n


def _over(size, n, spec, xsize, xcount):
    qs, qc = parse_spec(spec)
    return bool((qs and size + xsize > qs) or (qc and n + xcount > qc))


def over_quota(maildir, spec, msgsize):
    """Whether one more message of msgsize bytes would exceed spec."""
    if not limited(spec):
        return False
    maildir = top(maildir)
    size, n, lines = _current(maildir, spec)
    if _over(size, n, spec, msgsize, 1) and lines > 1:
        size, n = recalc(maildir, spec)
    return _over(size, n, spec, msgsize, 1)


def _percent(used, limit):
    if limit <= 0:
        return 0
    if used > limit:
        return 100
    x = 1024 if limit > 20000000 else 1             # qcalc's overflow guard
    return max(0, (used // x) * 100 // (limit // x))


def percent_used(maildir, spec):
    """vmaildir_readquota(): the larger of the byte and count percentages
    (100 when either limit is exceeded); 0 without limits."""
    if not limited(spec):
        return 0
    maildir = top(maildir)
    size, n, lines = _current(maildir, spec)
    if _over(size, n, spec, 0, 0) and lines > 1:
        size, n = recalc(maildir, spec)
    qs, qc = parse_spec(spec)
    return max(_percent(size, qs), _percent(n, qc))


def add(maildir, spec, nbytes, ncount):
    """Record a change (after the message is in new/): one line
    `<bytes> <count>\\n` appended in one write.  No maildirsize yet: a count,
    which already includes the message, makes one."""
    if not limited(spec):
        return
    maildir = top(maildir)
    try:
        fd = os.open(os.path.join(maildir, "maildirsize"),
                     os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        recalc(maildir, spec)
        return
    except OSError:
        return                                  # a symlink or worse: leave it
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.write(fd, b"%d %d\n" % (nbytes, ncount))
    except OSError:
        pass                                    # a cache: the next count fixes it
    finally:
        os.close(fd)
