"""argv0 - run a program with a chosen 0th argument.

usage: argv0 realname program [ arg ... ]

argv0 runs the program stored as realname (found through $PATH like
execvp), with program as its argv[0] and the args after it.  Some programs
look at argv[0] (`argv0 /bin/bash -bash` starts a login shell).

qtools: when realname is a qtools launcher it runs without an exec (see
qtools.lib.pathexec); like any #! script it then sees its own path as
argv[0], exactly as after a real exec.  An empty program name cannot be
passed (Python's execv refuses it): that is reported as an error.

Exit codes: 100 usage; 111 unable to run realname; otherwise realname's.
"""
from qtools.lib import pathexec, strerr

PROG = "argv0"
USAGE = "argv0 realname program [ arg ... ]"


def preload(argv):
    """pathexec.preload hook: a parent (tcpserver) loads realname too."""
    if len(argv) > 2:
        pathexec.preload([argv[1]] + argv[3:])


def main(argv):
    if len(argv) < 3:
        strerr.die_usage(PROG, USAGE)
    try:
        pathexec.pathexec_run(argv[2:], file=argv[1])
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", argv[1], ": ", e)
    except ValueError as e:
        strerr.die(111, PROG, "unable to run ", argv[1], ": ", OSError(22, str(e)))
