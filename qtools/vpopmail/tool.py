"""tool - what the vpopmail operator tools share: docopt parsing the djb way,
vpopmail's `Error: ...` lines and exit codes, password prompts.

Exit codes: 0 ok; 100 usage (`prog: usage: ...` on stderr, qtools'
convention; vpopmail prints its usage on stdout and exits 255); a failing
vpopmail call exits with its VA_* code modulo 256 (e.g. -2 -> 254), as
vexit() does; 111 when the store cannot answer (database down), printed as
`Error: no authentication database connection` plus the reason on stderr.
"""
import os
import sys

from qtools.vpopmail import store as S


def version():
    from qtools import __version__
    return __version__


def parse(doc, argv, prog, usage, help=True):
    """docopt(doc) on argv[1:]; a usage error is `prog: usage: usage`, 100.
    A -v in doc prints the version first, as vpopmail's tools do, and the
    tool goes on."""
    from docopt import DocoptExit, docopt
    from qtools.lib import strerr
    try:
        a = docopt(doc, argv[1:], default_help=help)
    except DocoptExit:
        strerr.die_usage(prog, usage)
    if a.get("-v"):
        print("version: %s" % version())
    return a


def random_len(argv, letter="r"):
    """vpopmail's optional-argument option -r[len]: returns (argv without
    it, len or None)."""
    out, n = [argv[0]], None
    for a in argv[1:]:
        if a.startswith("-" + letter) and (len(a) == 2 or a[2:].isdigit()):
            n = int(a[2:]) if len(a) > 2 else 12
            continue
        out.append(a)
    return out, n


def random_pass(n):
    """vrandom_pass(): n characters from vpopmail's gen_chars."""
    import secrets
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@!#%*"
    return "".join(secrets.choice(chars) for _ in range(n))


def ask_password(who):
    """vgetpasswd(): twice on the terminal; without one, the first line of
    standard input (qtools)."""
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass
        while True:
            p1 = getpass.getpass("Please enter password for %s: " % who)
            p2 = getpass.getpass("enter password again: ")
            if p1 == p2:
                return p1
            print("Passwords do not match, try again")
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line.rstrip("\r\n")


def fail(code, text=None):
    """`Error: <verror>` on stdout, exit with the code as vexit() does."""
    print("Error: %s" % (text or S.verror(code)))
    sys.stdout.flush()
    raise SystemExit(code & 0xFF)


def user_domain(email):
    """(user, domain) of an address; a missing domain fails as vpopmail's
    tools do (`Error: domain does not exist`)."""
    user, domain = S.parse_email(email)
    if not domain:
        fail(S.VA_DOMAIN_DOES_NOT_EXIST)
    return user, domain


def run(prog, fn):
    """Call fn(); StoreError -> `Error: text`, TempFail -> 111."""
    try:
        return fn()
    except S.StoreError as e:
        fail(e.code, str(e))
    except S.TempFail as e:
        print("Error: %s" % S.verror(S.VA_NO_AUTH_CONNECTION))
        sys.stdout.flush()
        os.write(2, ("%s: fatal: %s\n" % (prog, e)).encode("utf-8", "replace"))
        raise SystemExit(111)


def store():
    return S.open_store()


def with_store(prog, work):
    """work(store) under run(), the store closed afterwards."""
    st = store()
    try:
        return run(prog, lambda: work(st))
    finally:
        st.close()
