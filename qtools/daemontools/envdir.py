"""envdir - run a program with environment variables from a directory.

usage: envdir dir child

daemontools 0.76 behaviour.  For each entry of DIR whose name does not start
with a dot (in directory order): an empty file removes variable NAME; else
NAME is set to the file's first line, with trailing spaces and tabs removed
and each NUL turned into a newline (a file holding just a newline sets NAME
to the empty string).  Then envdir runs child.

Quirks kept for compatibility: an entry that cannot be opened because it does
not exist (a dangling symlink) is not an error; it gets the previous entry's
value again, processed once more (so it ends in a newline: the original
reuses its buffer, whose terminating NUL becomes a newline), or is removed if
it comes first or after an empty file.  A name containing `=` sets the
variable named by the part before the `=`.

Exit codes: the child's; 111 for a usage error (`envdir: usage: envdir dir
child`, 111 like the original, not 100) and for
`envdir: fatal: unable to switch to directory DIR: ERR`,
`unable to read DIR/NAME: ERR`, `unable to read directory DIR: ERR`,
`unable to run CHILD: ERR`.
"""
import os

from qtools.lib import pathexec, strerr

PROG = "envdir"
USAGE = "envdir dir child"


def setenv(name, value):
    """pathexec_env(name, value) as applied by djb's pathexec: the entry
    NAME=VALUE replaces the variable named up to its first `=`."""
    if "=" in name or value is not None:
        entry = name if value is None else name + "=" + value
        if "=" in entry:
            key, val = entry.split("=", 1)
            if key:
                pathexec.env(key, val)
            return
    pathexec.env(name, None)


preload = pathexec.chain_preload(2)    # the child's program is preloaded too


def main(argv):
    if len(argv) < 3:
        strerr.die_usage(PROG, USAGE, 111)
    fn = argv[1]
    child = argv[2:]
    try:
        origdir = os.open(".", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        strerr.die(111, PROG, "unable to switch to current directory: ", e)
    try:
        os.chdir(fn)
    except OSError as e:
        strerr.die(111, PROG, "unable to switch to directory ", fn, ": ", e)
    try:
        names = os.listdir(".")
    except OSError as e:
        strerr.die(111, PROG, "unable to read directory ", fn, ": ", e)
    sa = b""                                # djb's stralloc, reused from entry to entry
    for name in names:
        if name.startswith("."):
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != 2:                # ENOENT: openreadclose returns 0, sa kept
                strerr.die(111, PROG, "unable to read ", fn, "/", name, ": ", e)
        else:
            try:
                chunks = []
                while True:
                    b = os.read(fd, 65536)
                    if not b:
                        break
                    chunks.append(b)
            except OSError as e:
                strerr.die(111, PROG, "unable to read ", fn, "/", name, ": ", e)
            finally:
                os.close(fd)
            sa = b"".join(chunks)
        if sa:
            i = sa.find(b"\n")
            if i >= 0:
                sa = sa[:i]
            sa = sa.rstrip(b" \t").replace(b"\0", b"\n")
            setenv(name, os.fsdecode(sa))
            sa += b"\0"                     # stralloc_0
        else:
            setenv(name, None)
    try:
        os.fchdir(origdir)
    except OSError as e:
        strerr.die(111, PROG, "unable to switch to starting directory: ", e)
    os.close(origdir)
    try:
        pathexec.pathexec_run(child)
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", child[0], ": ", e)
