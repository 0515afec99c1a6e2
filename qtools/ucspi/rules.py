"""rules - tcpserver's rule lookup in a tcprules cdb (ucspi-tcp rules.c).

Keys are tried in this order, the first present wins: INFO@IP, INFO@=HOST,
IP, =HOST, the IP's prefixes ending in '.' (longest first), =.suffixes of
HOST (from the left), '=' (if HOST), and finally the empty key.
"""
from qtools.lib import cdb


def keys(ip, host=None, info=None):
    if info is not None:
        yield info + "@" + ip
        if host is not None:
            yield info + "@=" + host
    yield ip
    if host is not None:
        yield "=" + host
    i = len(ip)
    while i > 0:
        i -= 1
        if ip[i] == ".":
            yield ip[:i + 1]
    if host is not None:
        for i, ch in enumerate(host):
            if ch == ".":
                yield "=" + host[i:]
        yield "="
    yield ""


def lookup(path, ip, host=None, info=None):
    """(key, data) of the first matching rule, or (None, None) if none.
    Raises OSError when the cdb cannot be read."""
    db = cdb.reader(path)
    try:
        for k in keys(ip, host, info):
            kb = k.encode("latin-1", "replace")
            v = db.get(kb)
            if v is not None:
                return k, v
        return None, None
    finally:
        db.close()


def records(data):
    """The NUL-terminated records of rule data (an unterminated tail is ignored)."""
    recs = data.split(b"\0")
    return recs[:-1]


def parse(data):
    """(deny, [(name, value), ...]) as tcpserver's found() applies rule data:
    every +NAME=VALUE is set, a D anywhere denies."""
    deny = False
    env = []
    for rec in records(data):
        if rec[:1] == b"D":
            deny = True
        elif rec[:1] == b"+" and b"=" in rec:
            name, _, value = rec[1:].partition(b"=")
            env.append((name.decode("latin-1"), value.decode("latin-1")))
    return deny, env
