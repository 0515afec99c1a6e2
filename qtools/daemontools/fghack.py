"""fghack - keep a program that puts itself in the background in the foreground.

usage: fghack child

daemontools 0.76 behaviour: fghack creates a pipe and runs child with 30
extra copies of the pipe's write end (plus the end itself) open, so a daemon
that forks into the background still holds one.  fghack reads and discards
the pipe until every copy is closed, then waits for child.

Exit codes: child's exit code; 100 usage (`fghack: usage: fghack child`); 111
for `fghack: fatal: child crashed` (killed by a signal),
`unable to create pipe: ERR`, `unable to fork: ERR`, `wait failed: ERR`, and
(from the child) `unable to run CHILD: ERR`.
"""
import os

from qtools.lib import pathexec, strerr

PROG = "fghack"
USAGE = "fghack child"


preload = pathexec.chain_preload(1)    # the child's program is preloaded too


def main(argv):
    if len(argv) < 2:
        strerr.die_usage(PROG, USAGE)
    try:
        r, w = os.pipe()
    except OSError as e:
        strerr.die(111, PROG, "unable to create pipe: ", e)
    try:
        pid = os.fork()
    except OSError as e:
        strerr.die(111, PROG, "unable to fork: ", e)
    if pid == 0:
        code = 111
        try:
            os.close(r)
            os.set_inheritable(w, True)
            for _ in range(30):
                os.set_inheritable(os.dup(w), True)
            pathexec.pathexec_run(argv[1:])
        except OSError as e:
            strerr.write(PROG, ": fatal: unable to run ", argv[1], ": ", e, "\n")
        finally:
            os._exit(code)
    os.close(w)
    while True:
        try:
            if not os.read(r, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    try:
        _, wstat = os.waitpid(pid, 0)
    except OSError as e:
        strerr.die(111, PROG, "wait failed: ", e)
    if wstat & 0x7f:
        strerr.die(111, PROG, "child crashed")
    return (wstat >> 8) & 0xff
