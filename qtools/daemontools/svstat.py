"""svstat - print the status of services monitored by supervise.

usage: svstat dir ...

One line per DIR on stdout, exactly as daemontools' svstat prints it, so
scripts (qmailctl's awk) read either implementation:

  DIR: up (pid P) S seconds[, normally down][, paused][, want down]
  DIR: down S seconds[, normally up][, want up]
  DIR: supervise not running
  DIR: unable to chdir: ERR                   DIR: unable to stat down: ERR
  DIR: unable to open supervise/ok: ERR       DIR: unable to open supervise/status: ERR
  DIR: unable to read supervise/status: bad format

S counts from the last start or death recorded in DIR/supervise/status, the
18-byte file supervise writes (TAI64N timestamp, pid little-endian, paused
byte, want byte `u`/`d`/NUL); longer files (runit's runsv writes 20 bytes) are
read the same way.  `normally` reflects the presence of DIR/down.  svstat takes
no options: every argument is a directory.

Exit codes: 0 (whatever the services' state), 111 if the current directory
cannot be opened or returned to.
"""
import errno
import os
import struct
import time

from qtools.lib import strerr

PROG, USAGE = "svstat", "svstat dir ..."
TAIBASE = (1 << 62) + 10        # tai_unix(): 2^62 + 10 + unix seconds
FAST_EXIT = True


def status(d):
    """The text after `DIR: ` (cwd is DIR)."""
    normallyup = False
    try:
        os.stat("down")
    except OSError as e:
        if e.errno != errno.ENOENT:
            return "unable to stat down: " + strerr.errstr(e)
        normallyup = True
    try:
        fd = os.open("supervise/ok", os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return "supervise not running"
        return "unable to open supervise/ok: " + strerr.errstr(e)
    os.close(fd)
    try:
        fd = os.open("supervise/status", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return "unable to open supervise/status: " + strerr.errstr(e)
    try:
        st = os.read(fd, 18)            # one read(2), like buffer_unixread
    except OSError as e:
        return "unable to read supervise/status: " + strerr.errstr(e)
    finally:
        os.close(fd)
    if len(st) < 18:
        return "unable to read supervise/status: bad format"
    when, = struct.unpack(">Q", st[:8])
    pid, = struct.unpack("<L", st[12:16])
    paused, want = st[16], st[17]
    now = TAIBASE + int(time.time())
    if now < when:
        when = now
    # tai_approx(): the difference goes through a double before fmt_ulong
    secs = int(float(now - when))
    out = ("up (pid %d) %d seconds" % (pid, secs)) if pid else ("down %d seconds" % secs)
    if pid and not normallyup:
        out += ", normally down"
    if not pid and normallyup:
        out += ", normally up"
    if pid and paused:
        out += ", paused"
    if not pid and want == 0x75:        # 'u'
        out += ", want up"
    if pid and want == 0x64:            # 'd'
        out += ", want down"
    return out


def main(argv):
    try:
        orig = os.open(".", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        strerr.die(111, PROG, "unable to open current directory: ", e)
    out = []
    for d in argv[1:]:
        try:
            os.chdir(d)
        except OSError as e:
            line = "unable to chdir: " + strerr.errstr(e)
        else:
            line = status(d)
        out.append(os.fsencode(d) + b": " + line.encode() + b"\n")
        try:
            os.fchdir(orig)
        except OSError as e:
            flush(out)
            strerr.die(111, PROG, "unable to set directory: ", e)
    flush(out)
    return 0


def flush(out):
    data = b"".join(out)
    del out[:]
    view = memoryview(data)
    while view:
        try:
            n = os.write(1, view)
        except OSError:
            return
        view = view[n:]
