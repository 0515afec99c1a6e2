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
    """The candidate keys, as bytes, in rules.c's order."""
    ip, host, info = _b(ip), _b(host), _b(info)
    if info is not None:
        yield info + b"@" + ip
        if host is not None:
            yield info + b"@=" + host
    yield ip
    if host is not None:
        yield b"=" + host
    for i in range(len(ip), 0, -1):
        if ip[i - 1] == 0x2E:                           # '.'
            yield ip[:i]
    if host is not None:
        for i in range(len(host)):
            if host[i] == 0x2E:
                yield b"=" + host[i:]
        yield b"="
    yield b""


def _b(s):
    return s if s is None or isinstance(s, bytes) else os.fsencode(s)


def lookup(path, ip, host=None, info=None):
    """(key, data) of the first matching rule, both bytes, or (None, None) if
    none.  Raises OSError when the cdb cannot be read."""
    if host is None and info is None:
        # tcpserver's usual case (-H -R), without the generator
        ip = _b(ip)
        ks = [ip]
        for i in range(len(ip), 0, -1):
            if ip[i - 1] == 0x2E:                       # '.'
                ks.append(ip[:i])
        ks.append(b"")
        return cdb.first(path, ks)
    return cdb.first(path, keys(ip, host, info))


def records(data):
    """The NUL-terminated records of rule data (an unterminated tail is ignored)."""
    recs = data.split(b"\0")
    return recs[:-1]


def parse_bytes(data):
    """parse() with names and values as bytes, for the environment as is."""
    deny = False
    env = []
    for rec in data.split(b"\0")[:-1]:
        if rec[:1] == b"D":
            deny = True
        elif rec[:1] == b"+" and b"=" in rec:
            name, _, value = rec[1:].partition(b"=")
            env.append((name, value))
    return deny, env


def parse(data):
    """(deny, [(name, value), ...]) as tcpserver's found() applies rule data:
    every +NAME=VALUE is set, a D anywhere denies.  Names and values are str
    decoded with os.fsdecode, so os.environ gives the child the exact bytes."""
    deny = False
    env = []
    for rec in records(data):
        if rec[:1] == b"D":
            deny = True
        elif rec[:1] == b"+" and b"=" in rec:
            name, _, value = rec[1:].partition(b"=")
            env.append((os.fsdecode(name), os.fsdecode(value)))
    return deny, env
