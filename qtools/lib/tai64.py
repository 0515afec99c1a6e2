"""tai64 - TAI64/TAI64N labels as daemontools writes them.

TAI64 = 2^62 + 10 + unix seconds (no leap-second table, like djb's tai_unix);
nanoseconds as taia_now() gives them: 1000*usec + 500.
"""
import struct
import time

BASE = (1 << 62) + 10
_pack = struct.Struct(">QL").pack


def now():
    """(tai64 seconds, nanoseconds) for the current time."""
    ns = time.time_ns()
    sec, rest = divmod(ns, 1_000_000_000)
    return BASE + sec, (rest // 1000) * 1000 + 500


def pack(sec, nano):
    """12 bytes: seconds BE + nanoseconds BE."""
    return _pack(sec, nano)


def label(t=None):
    """`@` + 24 lowercase hex digits, as tai64n and multilog t write."""
    sec, nano = t or now()
    return b"@%016x%08x" % (sec, nano)


def parse_label(b):
    """Inverse of label(): (unix seconds, nanoseconds) or None if malformed."""
    if len(b) < 25 or b[:1] != b"@":
        return None
    try:
        sec = int(b[1:17], 16)
        nano = int(b[17:25], 16)
    except ValueError:
        return None
    return sec - BASE, nano
