"""delcr - remove the CR at the end of each line.

usage: delcr

delcr copies its input to its output, removing a CR (\\015) that comes
right before an LF (\\012).  Only one CR per line goes (CR CR LF becomes
CR LF), and a CR at the end of a partial final line is kept, as in
ucspi-tcp 0.88 (checked against Debian's binary: the man page says so too).

Exit codes: 0 at the end of input; 111 (silently) on a read or write error.
"""
import os

from qtools.lib import sig
from qtools.lib.fd import writeall

PROG = "delcr"
USAGE = "delcr"
FAST_EXIT = True


def main(argv):
    sig.pipe_default()
    pending = b""              # a CR at the end of the last chunk: decided later
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            return 111
        try:
            if not data:
                writeall(1, pending)
                return 0
            data = pending + data
            pending = b""
            if data.endswith(b"\r"):
                data, pending = data[:-1], b"\r"
            writeall(1, data.replace(b"\r\n", b"\n"))
        except OSError:
            return 111

