"""pgrphack - run a program in a new session and process group.

usage: pgrphack child

daemontools 0.76 behaviour: setsid() (a failure is ignored, as in the
original), then runs child.

Exit codes: the child's; 100 usage (`pgrphack: usage: pgrphack child`); 111
for `pgrphack: fatal: unable to run CHILD: ERR`.
"""
import os

from qtools.lib import pathexec, strerr

PROG = "pgrphack"
USAGE = "pgrphack child"


preload = pathexec.chain_preload(1)    # the child's program is preloaded too


def main(argv):
    if len(argv) < 2:
        strerr.die_usage(PROG, USAGE)
    try:
        os.setsid()
    except OSError:
        pass
    try:
        pathexec.pathexec_run(argv[1:])
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", argv[1], ": ", e)
