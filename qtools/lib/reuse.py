"""reuse - a forked child that serves connection after connection.

tcpserver with QTOOLS_REUSE=N (N > 1) lets a child that ran a REUSABLE
program by exec elision (qmail-smtpd, rblsmtpd: their module says
`REUSABLE = True`) take the next connection instead of exiting, up to N
connections, as Postfix's max_use does.  Between two connections the child
puts itself back into the state it had before the first one, and where it
cannot be sure of that, it exits as a C child would:

  - fds 0 and 1 (the connection) are closed at once, so the client sees the
    end, then put back on /dev/null; fd 2 is put back to the log;
  - the environment is exactly the one tcpserver forked it with (so a
    RELAYCLIENT that AUTH or a rule set never reaches the next client);
    queued pathexec env() edits are dropped;
  - the working directory, the umask, every signal disposition, the signal
    mask and the timers (alarm, itimers) are put back; sys.argv too;
  - it exits instead of going on when any descriptor beyond its own is still
    open after a garbage collection, a child process is still running, a
    thread was started, its uid, gids, process group or resource limits
    changed, or it grew by more than RSS_GROWTH.

What it cannot check is module state: a REUSABLE program keeps nothing of a
connection in module globals (caches keyed by file identity, such as
qmail-smtpd's TLS contexts, are fine).
"""
import os
import sys

import _signal

from qtools.lib import env as _env, fd as fdio, pathexec, sig

RSS_GROWTH = 16 << 20       # bytes a child may grow by over its first connection
_PAGE = os.sysconf("SC_PAGE_SIZE")
_ITIMERS = tuple(getattr(_signal, n) for n in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF")
                 if hasattr(_signal, n))
_UNCATCHABLE = (_signal.SIGKILL, _signal.SIGSTOP)


def _ids():
    return (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), tuple(os.getgroups()),
            os.getpgrp(), os.getsid(0))


def _limits():
    import resource
    return tuple(resource.getrlimit(getattr(resource, n)) for n in (
        "RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_NOFILE", "RLIMIT_FSIZE",
        "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_NPROC") if hasattr(resource, n))


def _rss():
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def warm():
    """In the parent, before it forks: load what a child's Baseline uses."""
    import resource  # noqa: F401
    import gc  # noqa: F401


class Baseline:
    """The state of a child before its first connection; restore() puts it
    back after each one and says whether the child may serve another.
    The descriptors open now (the child's own: listener, pipes; and what
    tcpserver was started with, which a C child inherits too) stay open
    across connections; any other one open after a connection is that
    connection's."""

    def __init__(self):
        get = _signal.getsignal
        self.env = dict(_env.items())
        self.cwd = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
        self.err = os.dup(2)                    # close-on-exec, as os.dup makes it
        self.fds = (self.cwd, self.err)
        self.keep = frozenset(fdio.open_fds()) | {0, 1, 2}
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.ids = _ids()
        self.limits = _limits()
        self.signals = {}
        for s in _signal.valid_signals():
            if s not in _UNCATCHABLE:
                h = get(s)
                if h is not None:
                    self.signals[s] = h
        self.caught = set(sig.caught)
        self.mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, [])
        self.argv = list(sys.argv)
        self.rss = _rss()

    def restore(self):
        """After a connection: True when this child is as it was and may take
        another; False when it must exit (the reason is not logged: exiting
        is what a C child does after every connection)."""
        self.hangup()
        ok = self.descriptors()
        self.environment()
        pathexec.discard_env()
        os.fchdir(self.cwd)
        os.umask(self.umask)
        ok = self.signals_back() and ok
        sys.argv = list(self.argv)
        return (ok and self.no_children() and _ids() == self.ids and _limits() == self.limits
                and not _threads() and _rss() <= self.rss + RSS_GROWTH)

    def hangup(self):
        """The connection ends now: fds 0 and 1 to /dev/null, 2 to the log."""
        for fd in (0, 1):
            try:
                os.close(fd)
            except OSError:
                pass
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1):
            if null != fd:
                os.dup2(null, fd)
        if null > 1:
            os.close(null)
        os.dup2(self.err, 2)

    def strays(self):
        return [fd for fd in fdio.open_fds() if fd not in self.keep]

    def descriptors(self):
        """No descriptor of the last connection is left (a garbage cycle that
        still holds one is collected first): True."""
        if not self.strays():
            return True
        import gc
        gc.collect()
        return not self.strays()

    def environment(self):
        now = dict(_env.items())
        if now == self.env:
            return
        for name in now:
            if name not in self.env:
                _env.setb(name, None)
        for name, value in self.env.items():
            if now.get(name) != value:
                _env.setb(name, value)

    def signals_back(self):
        ok = True
        get = _signal.getsignal
        for s, h in self.signals.items():
            if get(s) != h:
                try:
                    _signal.signal(s, h)
                except (OSError, ValueError, TypeError):
                    ok = False
        sig.caught.clear()
        sig.caught.update(self.caught)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self.mask)
        _signal.alarm(0)
        for t in _ITIMERS:
            _signal.setitimer(t, 0)
        sig.no_wakeup()
        return ok

    def no_children(self):
        """Reap what the connection left; False if a child still runs."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False


def _threads():
    th = sys.modules.get("threading")
    return th is not None and th.active_count() > 1
