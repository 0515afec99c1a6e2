"""fixcrio - insert missing CRs at the ends of lines, in both directions.

usage: fixcrio program [ arg ... ]

fixcrio runs program.  It inserts a CR before every LF of the program's
input and of its output that is not already preceded by a CR (the previous
byte is remembered across packets).  As in ucspi-tcp 0.88, the process that
started fixcrio becomes the program; a forked child does the copying and
exits when it sees the end of the program's output.

Exit codes: 100 usage; 111 unable to create pipes, fork or run the program;
otherwise the program's.
"""
from qtools.lib import pathexec, relay, strerr

PROG = "fixcrio"
USAGE = "fixcrio program [ arg ... ]"


def fixcr(data, flagcr):
    """(data with CR inserted before each bare LF, new flagcr).  flagcr says
    whether the byte before data was a CR."""
    out = bytearray()
    start = 0
    while True:
        i = data.find(b"\n", start)
        if i < 0:
            break
        prevcr = data[i - 1] == 13 if i > 0 else flagcr
        out += data[start:i]
        out += b"\n" if prevcr else b"\r\n"
        start = i + 1
    out += data[start:]
    return bytes(out), (data[-1] == 13 if data else flagcr)


class Fixer:
    def __init__(self):
        self.leftcr = False
        self.rightcr = False

    def left(self, data):
        out, self.leftcr = fixcr(data, self.leftcr)
        return out

    def right(self, data):
        out, self.rightcr = fixcr(data, self.rightcr)
        return out

    def left_eof(self):
        pass

    def right_eof(self):
        pass


# a parent (tcpserver) preloads and rehearses the program this one runs, too
preload = pathexec.chain_preload(1)
rehearse = pathexec.chain_rehearse(1)


def main(argv):
    if len(argv) < 2:
        strerr.die_usage(PROG, USAGE)
    relay.spawn(PROG, argv[1:], Fixer())
