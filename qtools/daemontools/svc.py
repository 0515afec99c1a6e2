"""svc - control services monitored by supervise.

usage: svc [ -udopchaitkx ] dir ...

The option letters are collected once each, in the order they first appear
(at most 20), and written one byte at a time to DIR/supervise/control for
every DIR, exactly as daemontools' svc does: `svc -uuddk s` sends `udk`.
supervise (qtools' or the C one) reads them:

  -u  up: start the service if it is down; restart it whenever it stops
  -d  down: send TERM then CONT if it is running; do not restart it
  -o  once: start it if it is down; do not restart it when it stops
  -p  pause: send STOP          -c  continue: send CONT
  -h  send HUP                  -a  send ALRM
  -i  send INT                  -t  send TERM
  -k  send KILL
  -x  exit: supervise exits as soon as the service is down

Problems with one DIR are warnings (`svc: warning: unable to chdir to DIR: ERR`,
`svc: warning: unable to control DIR: supervise not running`,
`svc: warning: unable to control DIR: ERR`); svc goes on with the next.

Exit codes: 0 (also after warnings), 100 bad option, 111 if the current
directory cannot be opened or returned to.
"""
import errno
import os
import signal

from qtools.lib import strerr
from qtools.lib.sgetopt import UsageError, getopt

PROG = "svc"
USAGE = ("svc options: u up, d down, o once, x exit, p pause, c continue,"
         " h hup, a alarm, i interrupt, t term, k kill")
OPTS = "udopchaitkx"
MAXDATA = 20                    # svc.c: char data[20]
FAST_EXIT = True


def main(argv):
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        opts, dirs = getopt(argv, OPTS, PROG)
    except UsageError:
        strerr.write(USAGE, "\n")
        return 100
    data = bytearray()
    for o, _ in opts:
        c = ord(o)
        if len(data) < MAXDATA and c not in data:
            data.append(c)
    try:
        orig = os.open(".", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        strerr.die(111, PROG, "unable to open current directory: ", e)
    for d in dirs:
        control(d, bytes(data))
        try:
            os.fchdir(orig)
        except OSError as e:
            strerr.die(111, PROG, "unable to set directory: ", e)
    return 0


def control(d, data):
    try:
        os.chdir(d)
    except OSError as e:
        strerr.warn(PROG, "unable to chdir to ", d, ": ", e)
        return
    try:
        fd = os.open("supervise/control", os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            strerr.warn(PROG, "unable to control ", d, ": supervise not running")
        else:
            strerr.warn(PROG, "unable to control ", d, ": ", e)
        return
    try:
        os.set_blocking(fd, True)
        # svc.c writes through a 1-byte buffer: one write(2) per command byte
        for i in range(len(data)):
            os.write(fd, data[i:i + 1])
    except OSError as e:
        strerr.warn(PROG, "error writing commands to ", d, ": ", e)
    finally:
        os.close(fd)
