"""softlimit - run a program with lower soft resource limits.

usage: softlimit [-a allbytes] [-c corebytes] [-d databytes] [-f filebytes]
       [-l lockbytes] [-m membytes] [-o openfiles] [-p processes]
       [-r residentbytes] [-s stackbytes] [-t cpusecs] child

daemontools 0.76 behaviour.  Each option sets a soft limit (Linux resource in
brackets): -a [AS], -c [CORE], -d [DATA], -f [FSIZE], -l [MEMLOCK],
-m [DATA, STACK, MEMLOCK and AS], -o [NOFILE], -p [NPROC], -r [RSS],
-s [STACK], -t [CPU].  The value is a decimal number, lowered to the hard limit
if above it, or `=` for the hard limit itself.  Options are applied in order as
they are parsed, so a bad value stops at the first bad option.

Exit codes: the child's; 100 usage (also for a value with trailing junk);
111 for `softlimit: fatal: getrlimit failed: ERR`, `setrlimit failed: ERR`,
`unable to run CHILD: ERR`.
"""
import errno
import os

from qtools.lib import pathexec, strerr

PROG = "softlimit"
USAGE = ("softlimit [-a allbytes] [-c corebytes] [-d databytes] [-f filebytes] [-l lockbytes]"
         " [-m membytes] [-o openfiles] [-p processes] [-r residentbytes] [-s stackbytes]"
         " [-t cpusecs] child")
OPTS = "a:c:d:f:l:m:o:p:r:s:t:"
MASK64 = (1 << 64) - 1


def usage():
    strerr.die_usage(PROG, USAGE)


def subgetopt(argv, opts):
    """djb's subgetopt/sgetopt as a generator, so that options take effect in
    order (a bad value is reported before a later illegal option).  Yields
    (letter, arg); on an error prints djb's message and yields ("?", None).
    The index of the first operand is in the final StopIteration value."""
    prog = os.path.basename(argv[0]) if argv else ""
    n = len(argv)
    ind, pos = 1, 0
    while True:
        if ind >= n:
            return ind
        if pos and pos >= len(argv[ind]):
            ind += 1
            pos = 0
            if ind >= n:
                return ind
        if not pos:
            a = argv[ind]
            if a[:1] != "-":
                return ind
            pos = 1
            if a[1:2] in ("-", ""):                 # "--..." ends options; "-" is an operand
                if a[1:2]:
                    ind += 1
                return ind
        c = argv[ind][pos]
        pos += 1
        k = opts.find(c)
        if c != ":" and k >= 0:
            if opts[k + 1:k + 2] == ":":
                arg = argv[ind][pos:]
                ind += 1
                pos = 0
                if not arg:
                    if ind >= n:
                        strerr.write(prog, ": option requires an argument -- ", c, "\n")
                        yield "?", None
                        return ind
                    arg = argv[ind]
                    ind += 1
                yield c, arg
            else:
                yield c, None
            continue
        strerr.write(prog, ": illegal option -- ", c, "\n")
        yield "?", None


def doit(resource, res, arg):
    try:
        soft, hard = resource.getrlimit(res)
    except (OSError, ValueError) as e:
        strerr.die(111, PROG, "getrlimit failed: ", _err(e))
    if arg == "=":
        soft = hard
    else:
        u = 0
        i = 0
        while i < len(arg) and "0" <= arg[i] <= "9":
            u = (u * 10 + ord(arg[i]) - 48) & MASK64
            i += 1
        if i < len(arg):
            usage()
        if u > (hard & MASK64):
            u = hard & MASK64
        soft = u - (1 << 64) if u >> 63 else u      # rlim_t as Python's signed value
    try:
        resource.setrlimit(res, (soft, hard))
    except (OSError, ValueError) as e:
        strerr.die(111, PROG, "setrlimit failed: ", _err(e))


def _err(e):
    """Python turns setrlimit's EINVAL/EPERM into ValueError: back to djb's text."""
    if isinstance(e, OSError):
        return e
    if "not allowed" in str(e):
        return strerr.errstr(errno.EPERM)
    return strerr.errstr(errno.EINVAL)


def preload(argv):
    """pathexec.preload hook: load resource and the program softlimit will run."""
    import resource  # noqa: F401
    ind = 1
    while ind < len(argv) and argv[ind][:1] == "-" and argv[ind] != "-":
        if argv[ind][:2] == "--":
            ind += 1
            break
        a = argv[ind]
        ind += 1
        if len(a) == 2 and a[1] in OPTS.replace(":", ""):
            ind += 1                                # -X value
    if ind < len(argv):
        pathexec.preload(argv[ind:])


def main(argv):
    import resource as R
    table = {
        "a": (R.RLIMIT_AS,),
        "c": (R.RLIMIT_CORE,),
        "d": (R.RLIMIT_DATA,),
        "f": (R.RLIMIT_FSIZE,),
        "l": (R.RLIMIT_MEMLOCK,),
        "m": (R.RLIMIT_DATA, R.RLIMIT_STACK, R.RLIMIT_MEMLOCK, R.RLIMIT_AS),
        "o": (R.RLIMIT_NOFILE,),
        "p": (R.RLIMIT_NPROC,),
        "r": (R.RLIMIT_RSS,),
        "s": (R.RLIMIT_STACK,),
        "t": (R.RLIMIT_CPU,),
    }
    it = subgetopt(argv, OPTS)
    while True:
        try:
            c, arg = next(it)
        except StopIteration as stop:
            ind = stop.value
            break
        if c == "?":
            usage()
        for res in table[c]:
            doit(R, res, arg)
    child = argv[ind:]
    if not child:
        usage()
    try:
        pathexec.pathexec_run(child)
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", child[0], ": ", e)
