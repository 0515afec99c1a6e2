"""readproctitle - maintain an automatically rotated log in memory for ps.

usage: readproctitle label ... dots

readproctitle reads its stdin and shows what it read in its own command line,
so `ps` (or /proc/PID/cmdline) displays the latest error messages of, say,
svscan's tree:  `readproctitle service errors: ...<the last bytes read>`.
The last argument, DOTS, is the window: it is first overwritten with dots;
then each byte read (NUL bytes are skipped) shifts the window left by one and
is put at its end.  The first three dots never move, so the window shows the
last len(DOTS)-3 bytes of input, newlines included.  This is daemontools'
behaviour byte for byte.

qtools: the bytes are written into the process's own argv area (found from
/proc/self/stat), laid out as the C program's argv is: `readproctitle`, the
labels and the window, separated by NULs; the rest of the area is cleared.
If the area is too small (readproctitle elided into the fork of a program
with a short command line), readproctitle re-executes itself for real.

Exit codes: 0 at end of input, 100 if there is no argument or DOTS is
shorter than 5 bytes (nothing is printed), 111 on a read error.
"""
import errno
import os

from qtools.lib import pathexec

PROG, USAGE = "readproctitle", "readproctitle label ... dots"


class ArgvArea:
    """The argv strings' memory of this process (what /proc/PID/cmdline shows)."""

    def __init__(self):
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # proc(5): (48) arg_start (49) arg_end; fields[0] is (3) state
        self.start, self.end = int(fields[45]), int(fields[46])
        self.size = self.end - self.start
        import ctypes
        self.memmove = ctypes.memmove
        self.memset = ctypes.memset

    def write(self, data, offset=0):
        n = min(len(data), self.size - 1 - offset)     # the last byte stays NUL
        if n > 0:
            self.memmove(self.start + offset, bytes(data[:n]), n)

    def clear(self, offset):
        if offset < self.size:
            self.memset(self.start + offset, 0, self.size - offset)


def main(argv):
    if len(argv) < 2:
        return 100
    dots = os.fsencode(argv[-1])
    n = len(dots)
    if n < 5:
        return 100
    head = b"\0".join([PROG.encode()] + [os.fsencode(a) for a in argv[1:-1]] + [b""])
    try:
        area = ArgvArea()
    except (OSError, ValueError, IndexError, ImportError):
        area = None
    if area is not None and area.size < len(head) + n + 1 and pathexec.elision_enabled():
        # a fork of a parent with a short command line: become a real process
        os.environ["QTOOLS_NOELIDE"] = "1"
        try:
            pathexec.pathexec_run(list(argv))     # argv[0]: the launcher that was found
        except OSError:
            pass
    window = bytearray(b"." * n)
    at = len(head)
    if area is not None:
        area.clear(0)
        area.write(head)
        area.write(window, at)
    keep = n - 3                # window[0:3] stays "..."
    while True:
        try:
            data = os.read(0, 4096)
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            return 111
        if not data:
            return 0
        data = data.replace(b"\0", b"")
        if not data:
            continue
        tail = (bytes(window[3:]) + data)[-keep:]
        window[3:] = tail
        if area is not None:
            area.write(window, at)
