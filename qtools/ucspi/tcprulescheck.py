"""tcprulescheck - show which rule tcpserver would apply to a client.

usage: tcprulescheck rules.cdb
Reads $TCPREMOTEIP (default 0.0.0.0), $TCPREMOTEHOST and $TCPREMOTEINFO.
Exit codes: 0 done, 100 usage, 111 the cdb cannot be read.
"""
import os

from qtools.lib import fd, strerr
from qtools.ucspi import rules

PROG = "tcprulescheck"
USAGE = "tcprulescheck rules.cdb"


def main(argv):
    if len(argv) < 2:
        strerr.die_usage(PROG, USAGE)
    # env_get(): only an unset TCPREMOTEIP means 0.0.0.0 (an empty one stays empty)
    ip = os.environb.get(b"TCPREMOTEIP", b"0.0.0.0")
    host = os.environb.get(b"TCPREMOTEHOST")
    info = os.environb.get(b"TCPREMOTEINFO")
    try:
        key, data = rules.lookup(argv[1], ip, host, info)
    except OSError as e:
        strerr.die(111, PROG, "unable to read ", argv[1], ": ", e)
    if key is None:
        out = [b"default:\n"]
    else:
        out = [b"rule ", key, b":\n"]
        for rec in rules.records(data):
            if rec[:1] == b"D":
                out.append(b"deny connection\n")
                return _print(out)
            if rec[:1] == b"+":
                out.append(b"set environment variable " + rec[1:] + b"\n")
    out.append(b"allow connection\n")
    return _print(out)


def _print(out):
    # tcprulescheck.c does not check buffer_flush(): a closed or full
    # stdout still exits 0
    try:
        fd.writeall(1, b"".join(out))
    except OSError:
        pass
    return 0
