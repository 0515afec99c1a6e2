"""rules - tcpserver's rule lookup in a tcprules cdb (ucspi-tcp rules.c).

Keys are tried in this order, the first present wins: INFO@IP, INFO@=HOST,
IP, =HOST, the IP's prefixes ending in '.' (longest first), =.suffixes of
HOST (from the left), '=' (if HOST), and finally the empty key.

Keys and rule data are bytes, as in the C: a host name or ident reply with
bytes outside ASCII is looked up, printed and exported exactly as received
(str arguments are converted with os.fsencode, the environment's encoding).
"""
import os

from qtools.lib import cdb


def keys(ip, host=None, info=None):
    """The candidate keys, as bytes, in rules.c's order (a list: built in
    tcpserver's per-connection child, where a generator costs more)."""
    ip, host, info = _b(ip), _b(host), _b(info)
    ks = []
    if info is not None:
        ks.append(info + b"@" + ip)
        if host is not None:
            ks.append(info + b"@=" + host)
    ks.append(ip)
    if host is not None:
        ks.append(b"=" + host)
    for i in range(len(ip), 0, -1):
        if ip[i - 1] == 0x2E:                           # '.'
            ks.append(ip[:i])
    if host is not None:
        for i in range(len(host)):
            if host[i] == 0x2E:
                ks.append(b"=" + host[i:])
        ks.append(b"=")
    ks.append(b"")
    return ks


def _b(s):
    return s if s is None or isinstance(s, bytes) else os.fsencode(s)


def lookup(path, ip, host=None, info=None):
    """(key, data) of the first matching rule, both bytes, or (None, None) if
    none.  Raises OSError when the cdb cannot be read."""
    return cdb.first(path, keys(ip, host, info))


def records(data):
    """The NUL-terminated records of rule data (an unterminated tail is ignored)."""
    recs = data.split(b"\0")
    return recs[:-1]


def parse_bytes(data):
    """(deny, [(name, value), ...]) as tcpserver's found() applies rule data:
    every +NAME=VALUE is set, a D anywhere denies.  Names and values as bytes,
    for the environment as is."""
    deny = False
    env = []
    for rec in records(data):
        if rec[:1] == b"D":
            deny = True
        elif rec[:1] == b"+" and b"=" in rec:
            name, _, value = rec[1:].partition(b"=")
            env.append((name, value))
    return deny, env


def parse(data):
    """parse_bytes() with names and values decoded with os.fsdecode, so
    os.environ gives the child the exact bytes."""
    deny, env = parse_bytes(data)
    return deny, [(os.fsdecode(n), os.fsdecode(v)) for n, v in env]
