"""recordio - record the input and output of a program.

usage: recordio program [ arg ... ]

recordio runs program.  It prints lines to descriptor 2 showing every packet
of the program's input and output as it passes, prefixed with the program's
process ID and `<` (input) or `>` (output):

    PID < text \\n      a piece ending in a newline (note the space)
    PID > text+\\n      a piece without a newline (packet boundary)
    PID < [EOF]\\n      end of input; `PID > [EOF]` end of output

Packets are at most 256 bytes and never combined, so each line is written
with a single write() and lines from several recordio processes sharing a
log never interleave.  recordio only copies: the bytes reaching the program
and the client are exactly the bytes sent (binary data, TLS after STARTTLS).

As in ucspi-tcp 0.88 the process that started recordio becomes the program
(so the logged PID is the program's, and tcpserver waits for it); a forked
child does the copying and exits when the program's output ends.

Exit codes: 100 usage; 111 unable to create pipes, fork or run the program;
otherwise the program's.
"""
import os

from qtools.lib import pathexec, relay, strerr

PROG = "recordio"
USAGE = "recordio program [ arg ... ]"


class Recorder:
    def __init__(self, pid):
        self.pid = pid

    def record(self, data, direction):
        """One atomic line per newline-terminated piece (recordio.c record())."""
        head = self.pid + direction
        start = 0
        n = len(data)
        while start < n:
            i = data.find(b"\n", start)
            if i < 0:
                line = head + data[start:] + b"+\n"
                start = n
            else:
                line = head + data[start:i] + b" \n"
                start = i + 1
            try:
                os.write(2, line)
            except OSError:
                pass

    def eof(self, direction):
        try:
            os.write(2, self.pid + direction + b"[EOF]\n")
        except OSError:
            pass

    def left(self, data):
        self.record(data, b" < ")
        return data

    def right(self, data):
        self.record(data, b" > ")
        return data

    def left_eof(self):
        self.eof(b" < ")

    def right_eof(self):
        self.eof(b" > ")


# a parent (tcpserver) preloads and rehearses the program this one runs, too
preload = pathexec.chain_preload(1)
rehearse = pathexec.chain_rehearse(1)


def main(argv):
    if len(argv) < 2:
        strerr.die_usage(PROG, USAGE)
    # the parent becomes the program: its pid is the one to log
    relay.spawn(PROG, argv[1:], Recorder(b"%d" % os.getpid()))
