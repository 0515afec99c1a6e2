"""A probe program for the exec-elision tests: reports the process state an
exec'd program would see (argv, environment, open fds, signal dispositions,
signal mask, cwd) as JSON on fd 1, then exits with the status in argv[1]."""
import json
import os
import signal

PROG = "probe"

SIGNALS = ("SIGTERM", "SIGHUP", "SIGCHLD", "SIGPIPE", "SIGINT", "SIGUSR1", "SIGALRM")


def _disp(h):
    if h is signal.SIG_DFL:
        return "DFL"
    if h is signal.SIG_IGN:
        return "IGN"
    if h is signal.default_int_handler:
        return "python-int"
    return "handler"


def main(argv):
    fds = {}
    for f in sorted(os.listdir("/proc/self/fd"), key=int):
        fd = int(f)
        try:
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            continue
        if target.startswith("/proc/") and target.endswith("/fd"):
            continue                        # the listdir fd itself
        fds[fd] = {"inheritable": os.get_inheritable(fd),
                   "kind": target.split(":")[0] if ":" in target else "file"}
    state = {
        "argv": argv,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("PROBE", "TCP", "PROTO"))},
        "fds": fds,
        "signals": {s: _disp(signal.getsignal(getattr(signal, s))) for s in SIGNALS},
        "mask": sorted(signal.Signals(s).name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "cwd": os.getcwd(),
        "uid": os.getuid(),
    }
    os.write(1, json.dumps(state, sort_keys=True).encode() + b"\n")
    return int(argv[1]) if len(argv) > 1 else 0
