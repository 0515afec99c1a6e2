"""tai64n - put a precise timestamp on each line.

usage: tai64n

daemontools 0.76 behaviour: a filter from stdin to stdout.  Each line gets
`@`, a TAI64N label (24 lowercase hex digits: TAI64 seconds = 2^62 + 10 +
unix seconds, then nanoseconds), and a space in front of it, stamped when its
first byte is read.  A partial last line is copied without adding a newline.
Output is written whenever input would block.

qtools: input is read in 64 KiB chunks and the lines that arrive in one read
share one label (the original stamps each line separately, nanoseconds apart).

Exit codes: 0 at end of input, 111 on a read or write error (silently);
killed by SIGPIPE if the reader goes away, like the original.
"""
import os

from qtools.lib import sig, tai64

PROG = "tai64n"
USAGE = "tai64n"
FAST_EXIT = True
NL = b"\n"


def main(argv):
    sig.pipe_default()
    label = tai64.label
    read = os.read
    write = os.write
    at_start = True
    while True:
        try:
            data = read(0, 65536)
        except OSError:
            return 111
        if not data:
            return 0
        ts = label() + b" "
        if data[-1] == 10:
            out = data[:-1].replace(NL, NL + ts) + NL
        else:
            out = data.replace(NL, NL + ts)
        if at_start:
            out = ts + out
        at_start = data[-1] == 10
        view = memoryview(out)
        try:
            while view:
                view = view[write(1, view):]
        except OSError:
            return 111
