"""setlock - run a program with a file locked.

usage: setlock [ -nNxX ] file program [ arg ... ]

daemontools 0.76 behaviour: opens FILE for appending (created mode 0600,
never truncated), takes an exclusive flock on it (waiting for it unless -n)
and runs program with the locked descriptor open, so the lock is held until
program and its children exit.  The lock interoperates with C setlock,
multilog and supervise.

  -n  no delay: fail if FILE is already locked
  -N  delay (default)
  -x  exit 0 silently if FILE cannot be opened or locked
  -X  fail with a message (default)

Exit codes: program's; 100 usage (`setlock: usage: setlock [ -nNxX ] file
program [ arg ... ]`); 111 for `setlock: fatal: unable to open FILE: ERR`,
`unable to lock FILE: ERR` (with -n: `temporary failure`),
`unable to run PROGRAM: ERR`.
"""
import os

from qtools.lib import pathexec, strerr
from qtools.lib.sgetopt import UsageError, getopt

PROG = "setlock"
USAGE = "setlock [ -nNxX ] file program [ arg ... ]"


def preload(argv):
    """pathexec.preload hook: load fcntl and the program setlock will run."""
    import fcntl  # noqa: F401
    ind = 1
    while ind < len(argv) and argv[ind][:1] == "-" and argv[ind] != "-":
        ind += 1
        if argv[ind - 1][:2] == "--":
            break
    if len(argv) > ind + 1:
        pathexec.preload(argv[ind + 1:])


def main(argv):
    try:
        opts, args = getopt(argv, "nNxX", PROG)
    except UsageError:
        strerr.die_usage(PROG, USAGE)
    ndelay = flagx = False
    for o, _ in opts:
        if o == "n":
            ndelay = True
        elif o == "N":
            ndelay = False
        elif o == "x":
            flagx = True
        elif o == "X":
            flagx = False
    if len(args) < 2:
        strerr.die_usage(PROG, USAGE)
    import fcntl
    file = args[0]
    try:
        fd = os.open(file, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as e:
        if flagx:
            return 0
        strerr.die(111, PROG, "unable to open ", file, ": ", e)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if ndelay else 0))
    except OSError as e:
        if flagx:
            return 0
        strerr.die(111, PROG, "unable to lock ", file, ": ", e)
    os.set_inheritable(fd, True)
    try:
        pathexec.pathexec_run(args[1:])
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", args[1], ": ", e)
