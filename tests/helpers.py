"""Helpers for tests that start real processes.  No sleeps as synchronisation:
wait_until() polls a readiness condition with a hard deadline and fails fast
when the process died."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

QBIN = os.path.dirname(os.path.abspath(sys.executable))
CBIN = "/usr/bin"


# tests that change uids, mount file systems or bind port 53 need root; as a
# normal user (the README's test command works for one) they are skipped
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def sbin(name):
    """A system program that may live in /usr/sbin (not on a user's PATH)."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


def qbin(name):
    return os.path.join(QBIN, name)


def qenv(mode="elide", **extra):
    """Environment for qtools processes: QBIN first on PATH, then the system
    (so /bin/sh, true, cat resolve); elision on or off, or on with
    tcpserver children reused (mode "reuse")."""
    env = dict(os.environ)
    env["PATH"] = QBIN + ":/usr/local/bin:/usr/bin:/bin"
    env.pop("QTOOLS_NOELIDE", None)
    env.pop("QTOOLS_REUSE", None)
    if mode == "noelide":
        env["QTOOLS_NOELIDE"] = "1"
    elif mode == "reuse":
        env["QTOOLS_REUSE"] = "100"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def flock_held(path):
    """True if someone holds an flock on path."""
    import fcntl
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def small_tmpfs(path, size):
    """A tmpfs of size (e.g. "300k") mounted on path, a directory made here,
    for disk-full tests; unmounted afterwards.  Skips the test where no tmpfs
    can be mounted (not root, a container that forbids it)."""
    os.mkdir(path)
    if os.geteuid() != 0:
        pytest.skip("mounting a %s tmpfs needs root" % size)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(path)],
                       capture_output=True, timeout=30)
    if p.returncode != 0:
        pytest.skip("mount -t tmpfs refused: %s" % p.stderr.decode(errors="replace").strip())
    try:
        yield path
    finally:
        # A server child that has not quite exited may still hold it: then
        # detach it lazily, the kernel frees it when the last user goes.
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def wait_until(pred, timeout=10.0, proc=None, what="condition", step=0.01):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s: process exited with %s" % (what, proc.returncode))
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(step)


def stop(proc, timeout=5):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class TcpServer:
    """A tcpserver (qtools or C) on 127.0.0.1 port 0; `-1` prints the port,
    which is the readiness signal.  stderr goes to a file read by .log().
    At the end the server is stopped and its whole process group killed."""

    def __init__(self, args, prog, env=None, binary=None, cwd=None, logpath=None):
        self.binary = binary or qbin("tcpserver")
        self.logpath = logpath
        self.args = args
        self.prog = prog
        self.env = env
        self.cwd = cwd

    def __enter__(self):
        import tempfile
        if self.logpath is None:
            fd, self.logpath = tempfile.mkstemp(prefix="tcpserver.", suffix=".log")
            os.close(fd)
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "-1"] + list(self.args) + ["127.0.0.1", "0"] + list(self.prog),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.logf,
            env=self.env, cwd=self.cwd, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise AssertionError("tcpserver did not start: %r %r" % (line, self.log()))
        self.port = int(line)
        return self

    def __exit__(self, *a):
        stop(self.proc)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)     # children still running
        except ProcessLookupError:
            pass
        self.proc.stdout.close()
        self.logf.close()

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("latin-1")

    def connect(self, timeout=10):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def talk(self, send=b"", timeout=10):
        """Connect, send, half-close, read everything until EOF."""
        s = self.connect(timeout)
        try:
            if send:
                s.sendall(send)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                d = s.recv(65536)
                if not d:
                    return out
                out += d
        finally:
            s.close()

    def wait_log(self, text, timeout=10):
        return wait_until(lambda: text in self.log(), timeout, self.proc, "log %r" % text)
