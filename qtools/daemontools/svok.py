"""svok - check whether supervise is running in a service directory.

usage: svok dir

svok opens DIR/supervise/ok for writing without blocking.  That succeeds only
while a supervise process holds the fifo open for reading, so svok exits 0 if
supervise (qtools' or daemontools' C one) is running in DIR and 100 if it is
not (no fifo, or nobody reading it).  It prints nothing in either case.

Exit codes: 0 supervised, 100 not supervised or usage, 111 system error
(`svok: fatal: unable to chdir to DIR: ERR`,
`svok: fatal: unable to open DIR/supervise/ok: ERR`).
"""
import errno
import os

from qtools.lib import strerr

PROG, USAGE = "svok", "svok dir"
FAST_EXIT = True


def main(argv):
    if len(argv) < 2:
        strerr.die_usage(PROG, USAGE)
    d = argv[1]
    try:
        os.chdir(d)
    except OSError as e:
        strerr.die(111, PROG, "unable to chdir to ", d, ": ", e)
    try:
        fd = os.open("supervise/ok", os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENXIO):      # no fifo, or nobody reading it
            return 100
        strerr.die(111, PROG, "unable to open ", d, "/supervise/ok: ", e)
    os.close(fd)
    return 0
