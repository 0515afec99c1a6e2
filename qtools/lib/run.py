"""run - the main guard every program runs under, and the launcher entry.

A stray exception never reaches a client or a log as a traceback: it becomes
`prog: fatal: internal error: ...` and exit 111 (temporary), as a C program
would have died with a clear line.  SystemExit passes through unchanged.
"""
import os
import sys


class Exited(BaseException):
    """A program's end, carried back to the process that started it instead
    of an _exit: how a reusing tcpserver child (qtools.lib.reuse) gets the
    status of a REUSABLE program it ran by exec elision.  Never caught as an
    error: guard() lets it through."""

    def __init__(self, code):
        BaseException.__init__(self, code)
        self.code = code


def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:
            pass


def guard(mod, argv):
    """Run mod.main(argv); return the exit status (0..255)."""
    prog = getattr(mod, "PROG", None) or os.path.basename(argv[0] if argv else "qtools")
    try:
        code = mod.main(argv)
    except SystemExit as e:
        code = e.code
    except Exited:
        raise
    except KeyboardInterrupt:
        code = 130
    except MemoryError:
        _fatal(prog, b"out of memory")
        code = 111
    except BrokenPipeError:
        # a reader that went away (`svstat ... | head`): Python ignores
        # SIGPIPE, a C program dies of it, quietly; so does this one
        _sigpipe()
        code = 111
    except BaseException as e:                      # noqa: BLE001 - the guard's whole job
        _fatal(prog, b"internal error: " + _describe(e))
        code = 111
    _flush()
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    # SystemExit("text"): print it like Python would, but exit the djb way
    try:
        os.write(2, str(code).encode("utf-8", "replace") + b"\n")
    except OSError:
        pass
    return 111


def _sigpipe():
    import _signal
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    os.kill(os.getpid(), _signal.SIGPIPE)


def _describe(e):
    text = "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__
    # one line, printable: this may end up in a multilog file
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:300].encode()


def _fatal(prog, text):
    try:
        os.write(2, prog.encode() + b": fatal: " + text + b"\n")
    except OSError:
        pass


def launch(modname):
    """Entry point of a bin/ launcher: import the program module and run it."""
    __import__(modname)
    mod = sys.modules[modname]
    code = guard(mod, sys.argv)
    if getattr(mod, "FAST_EXIT", False):
        # The program wrote everything through os.write: skip the ~1 ms of
        # interpreter teardown, as a per-connection program should.
        os._exit(code)
    sys.exit(code)
