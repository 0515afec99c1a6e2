"""qmail-qread - list outgoing messages and recipients.

usage: qmail-qread

Scans $QMAILHOME/queue (default /var/qmail/queue): for every preprocessed
message (info/<0..22>/<id>) one line
    26 Sep 1995 04:46:54 GMT  #457  1234  <a@b.c> 
(the birth time, which is info/<id>'s mtime, in GMT; the message number; the
size of mess/<id>, Received line included; the envelope sender; a trailing
space; then ` bouncing` if bounce/<id> exists), followed by one line per
recipient still listed in local/<id> and remote/<id>:
    \\tlocal\\tuser@example.com
      done\\tremote\\tother@example.net
(`  done` in front once the recipient is marked done).  Bytes outside
32..126 print as `_`.  Messages still in todo/ are not listed (see
qmail-qstat).  Run it as root or as qmails with group qmail.

As qmail-qread.c, problems go to stdout, in the listing:
`warning: trouble with #ID: ERR` (the message is skipped), and
`fatal: unable to chdir: ERR` / `fatal: unable to opendir info/N: ERR`
(exit 111).  Difference: qmail-qread.c lists a subdirectory in readdir order,
qtools in ascending message number.

Exit codes: 0 ok, 100 usage, 111 the queue could not be read.
"""
import os

from qtools.lib import queue as qlib
from qtools.lib import strerr

PROG = "qmail-qread"
USAGE = "qmail-qread"

_PRINTABLE = bytes(c if 32 <= c <= 126 else 95 for c in range(256))


class Out:
    def __init__(self):
        self.buf = bytearray()

    def put(self, b):
        self.buf += b
        if len(self.buf) >= 65536:
            self.flush()

    def flush(self):
        view = memoryview(bytes(self.buf))
        while view:
            try:
                n = os.write(1, view)
            except OSError:
                break
            view = view[n:]
        del self.buf[:]


def errtext(e):
    return strerr.errstr(e).encode()


def main(argv):
    if len(argv) > 1:
        strerr.die_usage(PROG, USAGE)
    out = Out()

    def die(*parts):
        out.put(b"".join(parts) + b"\n")
        out.flush()
        raise SystemExit(111)

    try:
        os.chdir(qlib.qmailhome())
        os.chdir("queue")
    except OSError as e:
        die(b"fatal: unable to chdir: ", errtext(e))
    for split in range(qlib.SPLIT):
        d = "info/%d" % split
        try:
            names = os.listdir(d)
        except OSError as e:
            die(b"fatal: unable to opendir ", d.encode(), b": ", errtext(e))
        ids = sorted(int(n) for n in names if n.isdigit() and n.isascii())
        for i in ids:
            listing = message(i)
            if isinstance(listing, OSError):
                out.put(b"warning: trouble with #%d: %s\n" % (i, errtext(listing)))
            else:
                out.put(listing)
    out.flush()
    return 0


def message(i):
    """The lines for message i, or the OSError that makes qmail-qread skip it."""
    try:
        size = os.stat(qlib.fmtqfn("mess/", i, 1)).st_size
    except OSError as e:
        return e
    bouncing = os.path.exists(qlib.fmtqfn("bounce/", i, 0))
    try:
        fd = os.open(qlib.fmtqfn("info/", i, 1), os.O_RDONLY)
    except OSError as e:
        return e
    try:
        info = os.read(fd, 1024)
        while b"\0" not in info:
            more = os.read(fd, 1024)
            if not more:
                break
            info += more
        qtime = os.fstat(fd).st_mtime
    except OSError as e:
        return e
    finally:
        os.close(fd)
    sender = info.split(b"\0", 1)[0][1:]
    stats = (qlib.date822fmt(qtime)[:-7] + b" GMT  #%d  %d  <" % (i, size)
             + sender + b"> " + (b" bouncing" if bouncing else b""))
    lines = [stats.translate(_PRINTABLE), b"\n"]
    for channel in ("local", "remote"):
        try:
            with open(qlib.fmtqfn(channel + "/", i, 1), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        except OSError as e:
            lines.append(b"warning: trouble with #%d: %s\n" % (i, errtext(e)))
            continue
        for rec in data.split(b"\0")[:-1]:          # getln: only \0-terminated records
            if rec[:1] == b"D":
                lines.append(b"  done")
            elif rec[:1] != b"T":
                continue
            lines.append(b"\t" + channel.encode() + b"\t" + rec[1:].translate(_PRINTABLE) + b"\n")
    return b"".join(lines)
