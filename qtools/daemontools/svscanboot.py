"""svscanboot - start svscan with its errors shown by readproctitle.

usage: svscanboot [ dir ]

What daemontools' svscanboot script does, as one program: set PATH to
`BIN:/command:/usr/local/bin:/usr/local/sbin:/bin:/sbin:/usr/bin:/usr/sbin:/usr/X11R6/bin`
(BIN = the directory svscanboot itself was found in, so qtools' svscan and
readproctitle come first), send stdin, stdout and stderr to /dev/null, run
`svc -dx DIR/* DIR/*/log` to stop what an earlier svscan left behind, then
run

    env - PATH=$PATH svscan DIR 2>&1 | env - PATH=$PATH readproctitle service errors: ....

with 400 dots, and wait for both.  The service directory DIR is the argument,
else $SVSCANDIR, else /service (Debian's script uses /etc/service; qtools may
run unprivileged, so the directory is configurable).

qtools: svscanboot stays the parent of svscan and readproctitle (as the shell
does).  svscan's environment is PATH alone, plus QTOOLS_NOELIDE when it is set.
SIGTERM and SIGHUP sent to svscanboot are passed on to svscan, which stops the
tree cleanly on TERM (see svscan(8)); readproctitle then sees end-of-file and
svscanboot exits.  The process title is `svscanboot DIR`.

Exit codes: readproctitle's (0 after svscan's tree has ended); 111 if the
pipe or a fork fails (nothing is printed: stderr is /dev/null by then).
"""
import os
import signal

from qtools.lib import pathexec, proctitle, sig

PROG, USAGE = "svscanboot", "svscanboot [ dir ]"
DJBPATH = "/command:/usr/local/bin:/usr/local/sbin:/bin:/sbin:/usr/bin:/usr/sbin:/usr/X11R6/bin"
DOTS = "." * 400


def bindir(argv0):
    """The directory of the launcher that runs this program, or None."""
    p = argv0 if "/" in argv0 else pathexec.resolve(argv0)
    return os.path.dirname(os.path.abspath(p)) if p else None


def expand(d):
    """The shell's `D/* D/*/log` (sorted, no dot names; a pattern that
    matches nothing stays as it is)."""
    try:
        names = sorted(n for n in os.listdir(d) if not n.startswith("."))
    except OSError:
        names = []
    stars = [os.path.join(d, n) for n in names]
    logs = [p + "/log" for p in stars if os.path.lexists(p + "/log")]
    return (stars or [d + "/*"]) + (logs or [d + "/*/log"])


def spawn(argv, env, fds=None):
    """fork; in the child: set fds (target -> source), env, exec argv."""
    pid = os.fork()
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            for target, source in (fds or {}).items():
                os.dup2(source, target)
            os.environ.clear()
            os.environ.update(env)
            pathexec.pathexec_run(argv)
        except BaseException:                       # noqa: BLE001 - stderr is /dev/null
            pass
        os._exit(111)
    return pid


def main(argv):
    d = argv[1] if len(argv) > 1 else os.environ.get("SVSCANDIR") or "/service"
    # first: setproctitle finds the argv area through environ, which must not
    # have been edited yet; svscan, a fork of this process, inherits the set-up
    proctitle.set(PROG + " " + d)
    home = bindir(argv[0])
    path = (home + ":" if home else "") + DJBPATH
    os.environ["PATH"] = path
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)

    env = {"PATH": path}
    if os.environ.get("QTOOLS_NOELIDE"):
        env["QTOOLS_NOELIDE"] = os.environ["QTOOLS_NOELIDE"]

    # svc -dx DIR/* DIR/*/log
    try:
        pid = spawn(["svc", "-dx"] + expand(d), dict(os.environ))
        os.waitpid(pid, 0)
    except OSError:
        pass

    children = {}

    def forward(n, f):
        p = children.get("svscan")
        if p:
            try:
                os.kill(p, n)
            except OSError:
                pass

    sig.catch(signal.SIGTERM, forward)
    sig.catch(signal.SIGHUP, forward)
    try:
        r, w = os.pipe()
        children["svscan"] = spawn(["svscan", d], env, {1: w, 2: w})
        # readproctitle needs a long command line of its own: a real exec
        children["readproctitle"] = spawn(
            ["readproctitle", "service", "errors:", DOTS],
            dict(env, QTOOLS_NOELIDE="1"), {0: r})
    except OSError:
        return 111
    os.close(r)
    os.close(w)
    code = 111
    while children:
        try:
            pid, wstat = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        for name, p in list(children.items()):
            if p == pid:
                del children[name]
                if name == "readproctitle":
                    code = os.waitstatus_to_exitcode(wstat)
                    if code < 0:
                        code = 128 - code
    return code
