"""sig - signal helpers in djb's vocabulary (sig_block, sig_catch, ...)."""
import signal


def block(*sigs):
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)


def unblock(*sigs):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


def catch(sig, handler):
    signal.signal(sig, handler)


def uncatch(sig):
    signal.signal(sig, signal.SIG_DFL)


def pipe_default():
    """Filters die quietly on EPIPE like C programs, instead of a traceback."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def pipe_ignore():
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
