"""account - look an account up the way djb's tools do (getpwnam)."""
from qtools.lib import strerr


def lookup(prog, name):
    """The passwd entry of name, or `prog: fatal: unknown account NAME`, 111."""
    import pwd
    try:
        return pwd.getpwnam(name)
    except (KeyError, ValueError):
        strerr.die(111, prog, "unknown account ", name)
