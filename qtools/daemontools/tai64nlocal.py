"""tai64nlocal - convert TAI64N labels to local time.

usage: tai64nlocal

daemontools 0.76 behaviour: a filter from stdin to stdout.  A line starting
with `@` has its label (the run of hex digits 0-9a-f after the `@`) replaced by
the local time `YYYY-MM-DD HH:MM:SS.NNNNNNNNN`; the byte that ended the label
and the rest of the line are copied verbatim.  Other lines are copied
unchanged.  Like the original, the last 8 digits are the nanoseconds and the
digits before them the TAI64 seconds (2^62 + 10 + unix time, no leap-second
table), and the local time zone is $TZ.  A label cut off by the end of input
prints nothing.

qtools differs where the original crashes: a label whose time cannot be
converted (`@zz`, `@4000000065`, ...; the C binary segfaults and loses its
buffered output) is passed through unchanged.  A label run longer than 64 KiB
is shortened to its last 24 digits, the only ones the conversion uses.

Exit codes: 0 at end of input, 111 on a read or write error; killed by SIGPIPE
if the reader goes away.
"""
import os
import time

from qtools.lib import sig

PROG = "tai64nlocal"
USAGE = "tai64nlocal"
FAST_EXIT = True
NL = b"\n"
MASK64 = (1 << 64) - 1
OFFSET = 4611686018427387914            # 2^62 + 10
HEX = frozenset(b"0123456789abcdef")
CARRY_MAX = 65536


def converter():
    """digits -> replacement bytes (None if not convertible), and a line
    converter for whole lines with a cache of recent 24-digit labels."""
    import re
    heads = {}
    labels = {}
    localtime = time.localtime
    label24 = re.compile(rb"@[0-9a-f]{24}(?![0-9a-f])").match
    anylabel = re.compile(rb"@([0-9a-f]*)")

    def head(secs):
        h = heads.get(secs)
        if h is None:
            try:
                t = localtime(secs)
            except (OverflowError, OSError, ValueError):
                return None
            year = t.tm_year
            if year < 0:                            # fmt_ulong of a negative int
                year += 1 << 64
            h = b"%d-%02d-%02d %02d:%02d:%02d." % (
                year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
            if len(heads) > 4096:
                heads.clear()
            heads[secs] = h
        return h

    def convert(digits):
        val = int(digits, 16) if digits else 0
        secs = ((val >> 32) - OFFSET) & MASK64      # time_t arithmetic wraps
        if secs >> 63:
            secs -= 1 << 64
        h = head(secs)
        return None if h is None else h + b"%09d" % (val & 0xffffffff)

    def line(ln):
        """One line starting with `@` (maybe without its newline)."""
        key = ln[:25]
        r = labels.get(key)
        if r is not None and (len(ln) == 25 or ln[25] not in HEX):
            return r + ln[25:]
        if label24(ln):
            r = convert(ln[1:25])
            if r is not None:
                if len(labels) > 4096:
                    labels.clear()
                labels[key] = r
                return r + ln[25:]
            return ln
        m = anylabel.match(ln)
        r = convert(m.group(1))
        return ln if r is None else r + ln[m.end():]
    return convert, line


def convert_lines(data, line):
    """Complete lines: those starting with `@` converted, others copied."""
    if not data.startswith(b"@") and b"\n@" not in data:
        return data
    return b"\n".join([line(x) if x[:1] == b"@" else x for x in data.split(b"\n")])

def preload(argv):
    """pathexec.preload hook: re, imported lazily otherwise."""
    import re  # noqa: F401


def main(argv):
    sig.pipe_default()
    time.tzset()                                    # $TZ may have changed since start-up
    convert, line = converter()

    def out(b):
        view = memoryview(b)
        while view:
            view = view[os.write(1, view):]

    carry = b""             # `@` + hex digits at the end of the input so far
    midline = False         # the input so far ends inside a line already written
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                return 0
            if carry:
                data = carry + data
                carry = b""
            if midline:
                nl = data.find(NL)
                if nl < 0:
                    out(data)
                    continue
                out(data[:nl + 1])
                data = data[nl + 1:]
                midline = False
            k = data.rfind(NL)
            done, rest = data[:k + 1], data[k + 1:]
            if done:
                out(convert_lines(done, line))
            if rest:
                if rest[0] == 64:
                    j = 1
                    while j < len(rest) and rest[j] in HEX:
                        j += 1
                    if j == len(rest):                  # the label goes on in the next read
                        carry = rest if len(rest) <= CARRY_MAX else b"@" + rest[-24:]
                        continue
                    out(line(rest))
                else:
                    out(rest)
                midline = True
    except OSError:
        return 111
