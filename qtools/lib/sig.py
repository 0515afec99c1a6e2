"""sig - signal helpers in djb's vocabulary (sig_block, sig_catch, ...).

Handlers installed through catch() are remembered, so that pathexec's exec
elision can put them back to SIG_DFL, as an execve would, without walking
every signal number in the forked child (each first touch of interpreter
memory there is a copy-on-write page fault).

Built on _signal, the C module under `signal`: `signal` imports enum (and
with it functools and collections, ~15 ms and ~1 MB that every program
importing this would carry, and every fork of a long-lived parent copy).
"""
import _signal as signal

caught = set()


def no_wakeup():
    """No signal wakeup descriptor (a parent's self-pipe) in this process."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass


def block(*sigs):
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)


def unblock(*sigs):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


def catch(sig, handler):
    caught.add(int(sig))
    signal.signal(sig, handler)


def uncatch(sig):
    signal.signal(sig, signal.SIG_DFL)


def ignore(sig):
    caught.add(int(sig))
    signal.signal(sig, signal.SIG_IGN)


def pipe_default():
    """Filters die quietly on EPIPE like C programs, instead of a traceback."""
    caught.add(int(signal.SIGPIPE))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def pipe_ignore():
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
