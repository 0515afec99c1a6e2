"""setuidgid - run a program under an account's uid and gid.

usage: setuidgid account child

daemontools 0.76 behaviour: looks ACCOUNT up with getpwnam, sets the
supplementary groups to just its gid, then the gid, then the uid, and runs
child (exec elision keeps this cheap: `setuidgid qmaill multilog t ./main`
runs multilog in the same process when both are qtools programs; the child's
module is loaded before the ids change, so it runs even where the account
cannot read the Python installation).

Exit codes: the child's; 100 usage (`setuidgid: usage: setuidgid account
child`); 111 for `setuidgid: fatal: unknown account X`,
`unable to setgid: ERR`, `unable to setuid: ERR`, `unable to run CHILD: ERR`.
"""
import os

from qtools.lib import account, pathexec, strerr

PROG = "setuidgid"
USAGE = "setuidgid account child"


preload = pathexec.chain_preload(2)    # the child's program is preloaded too


def main(argv):
    if len(argv) < 3:
        strerr.die_usage(PROG, USAGE)
    pw = account.lookup(PROG, argv[1])
    # with exec elision the child's module is imported here, while the Python
    # installation is still readable (it may not be for the account)
    pathexec.preload(argv[2:])
    try:
        os.setgroups([pw.pw_gid])                   # prot_gid: groups, then gid
        os.setgid(pw.pw_gid)
    except OSError as e:
        strerr.die(111, PROG, "unable to setgid: ", e)
    try:
        os.setuid(pw.pw_uid)
    except OSError as e:
        strerr.die(111, PROG, "unable to setuid: ", e)
    try:
        pathexec.pathexec_run(argv[2:])
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", argv[2], ": ", e)
