"""envuidgid - run a program with an account's uid and gid in the environment.

usage: envuidgid account child

daemontools 0.76 behaviour: looks ACCOUNT up with getpwnam, sets $GID then
$UID to its numeric group and user id (decimal) and runs child.  It does not
change its own ids (see setuidgid).

Exit codes: the child's; 100 usage (`envuidgid: usage: envuidgid account
child`); 111 for `envuidgid: fatal: unknown account X` and
`unable to run CHILD: ERR`.
"""
from qtools.lib import account, pathexec, strerr

PROG = "envuidgid"
USAGE = "envuidgid account child"


preload = pathexec.chain_preload(2)    # the child's program is preloaded too


def main(argv):
    if len(argv) < 3:
        strerr.die_usage(PROG, USAGE)
    pw = account.lookup(PROG, argv[1])
    pathexec.env("GID", str(pw.pw_gid))
    pathexec.env("UID", str(pw.pw_uid))
    try:
        pathexec.pathexec_run(argv[2:])
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", argv[2], ": ", e)
