"""tcprules - compile tcpserver rules into a cdb.

usage: tcprules rules.cdb rules.tmp
Reads rules from stdin, writes rules.tmp, fsyncs it and renames it to
rules.cdb, so tcpserver (which opens the cdb per connection) sees either the
old or the new rules.  A parse error leaves rules.cdb untouched.
Exit codes: 0 ok, 100 usage or a line that does not parse, 111 system error.
"""
import os
import sys

from qtools.lib import cdb, strerr

PROG = "tcprules"
USAGE = "tcprules rules.cdb rules.tmp"


class ParseError(Exception):
    pass


def parse_line(line):
    """One stripped rules line -> list of (key, data); [] if ignored."""
    colon = line.find(b":")
    if colon < 0:
        return []                                   # no colon: silently ignored
    address, rest = line[:colon], line[colon + 1:]
    if rest.startswith(b"deny"):
        data = b"D\0"
        rest = rest[4:]
    elif rest.startswith(b"allow"):
        data = b""
        rest = rest[5:]
    else:
        raise ParseError
    # ,NAME=<q>VALUE<q> where <q> is whatever single character follows '='
    while rest:
        if rest[:1] != b",":
            raise ParseError
        eq = rest.find(b"=", 1)
        if eq < 0 or eq + 1 >= len(rest):
            raise ParseError
        name = rest[1:eq]
        q = rest[eq + 1:eq + 2]
        end = rest.find(q, eq + 2)
        if end < 0:
            raise ParseError
        data += b"+" + name + b"=" + rest[eq + 2:end] + b"\0"
        rest = rest[end + 1:]
    return [(k, data) for k in expand(address)]


def expand(address):
    """Address ranges like 1.2.3.10-20 or 10.2-3. become one key per value."""
    if b"=" in address or b"@" in address or b"-" not in address:
        return [address]
    dash = address.find(b"-")
    dot = address.rfind(b".", 0, dash)
    prefix = address[:dot + 1]
    lo = address[dot + 1:dash]
    after = address[dash + 1:]
    dot2 = after.find(b".")
    hi, suffix = (after, b"") if dot2 < 0 else (after[:dot2], after[dot2:])
    bot, top = getnum(lo), min(getnum(hi), 255)
    return [prefix + b"%d" % n + suffix for n in range(bot, top + 1)]


def getnum(digits):
    """tcprules.c getnum(): the whole field must scan as a number, as djb's
    scan_ulong reads it (an empty field is 0; an unsigned long wraps)."""
    if digits.strip(b"0123456789"):
        raise ParseError
    return int(digits or b"0") & 0xFFFFFFFFFFFFFFFF


def main(argv):
    if len(argv) < 3:
        strerr.die_usage(PROG, USAGE)
    fncdb, fntmp = argv[1], argv[2]
    try:
        maker = cdb.make(fntmp)
    except OSError as e:
        strerr.die(111, PROG, "unable to create ", fntmp, ": ", e)
    try:
        data = sys.stdin.buffer.read()
    except OSError as e:
        strerr.die(111, PROG, "unable to read input: ", e)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    try:
        for raw in lines:
            line = raw.rstrip(b" \t")
            if not line or line.startswith(b"#"):
                continue
            try:
                records = parse_line(line)
            except ParseError:
                # tcprules.c prints the line as a C string: up to a NUL
                strerr.die(100, PROG, "unable to parse this line: ", line.split(b"\0")[0])
            for k, v in records:
                maker.add(k, v)
        maker.finish()
    except OSError as e:
        strerr.die(111, PROG, "unable to write to ", fntmp, ": ", e)
    try:
        os.rename(fntmp, fncdb)
    except OSError as e:
        strerr.die(111, PROG, "unable to move ", fntmp, " to ", fncdb, ": ", e)
    return 0
