"""addcr - insert a CR before each LF.

usage: addcr

addcr copies its input to its output, inserting a CR (\\015) before every
LF (\\012).  It does not add a CR to a partial final line.  Arguments are
ignored, as in ucspi-tcp 0.88.

Exit codes: 0 at the end of input; 111 (silently) on a read or write error.
"""
import os

from qtools.lib import sig
from qtools.lib.fd import writeall

PROG = "addcr"
USAGE = "addcr"
FAST_EXIT = True


def main(argv):
    sig.pipe_default()
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            return 111
        if not data:
            return 0
        try:
            writeall(1, data.replace(b"\n", b"\r\n"))
        except OSError:
            return 111

