"""tcpclient - make a TCP connection and run a program on it.

usage: tcpclient [ -hHrRdDqQv ] [ -i localip ] [ -p localport ] [ -T timeoutconn ]
       [ -l localname ] [ -t timeoutinfo ] host port program [ arg ... ]

tcpclient connects to port on host and runs program with descriptor 6
reading from the network and descriptor 7 writing to it (fds 0, 1 and 2 are
left alone).  The environment gets, as from tcpserver: PROTO=TCP,
TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST, TCPREMOTEIP, TCPREMOTEPORT,
TCPREMOTEHOST, TCPREMOTEINFO.

host is "0" or "" (127.0.0.1), a dotted quad, or a name looked up through
qtools.lib.dns (DNSCACHEIP=ip[:port] names the server).  port is a number or
a name from /etc/services.  With several addresses each is tried in turn.

Options (ucspi-tcp 0.88):
  -q / -Q / -v  print nothing / errors (default) / errors and
                `tcpclient: connected to IP port N`
  -T x+y        connect timeout: x seconds per address, then y seconds for
                each address that timed out; default 2+58 (one address: x+y)
  -i localip    bind this local address          -p localport  and port
  -d / -D       Nagle on (default) / TCP_NODELAY
  -h / -H       look up (default) / don't look up TCPREMOTEHOST (unset with -H;
                set but empty when the address has no name)
  -l name       TCPLOCALHOST=name, no lookup (`-l0` is common)
  -r / -R       ask (default) / don't ask the remote ident server for
                TCPREMOTEINFO;  -t n  give up on that after n seconds (26)

Messages: `tcpclient: unable to connect to IP port N: ERR` for each failed
address (the exit is 111 when none worked), `tcpclient: fatal: ...` for
others (no IP address for X, unable to bind socket, unable to run X).

Exit codes: 100 usage; 111 no connection or another failure; otherwise the
program's.
"""
import errno
import os
import socket

from qtools.lib import fd, pathexec, strerr
from qtools.lib.sgetopt import UsageError, apply, getopt, scan_ulong

PROG = "tcpclient"
USAGE = ("tcpclient [ -hHrRdDqQv ] [ -i localip ] [ -p localport ] [ -T timeoutconn ]"
         " [ -l localname ] [ -t timeoutinfo ] host port program")
OPTS = "dDvqQhHrRi:p:t:T:l:"


class Config:
    verbosity = 1
    delay = True
    remoteinfo = True
    remotehost = True
    itimeout = 26
    localip = "0.0.0.0"
    localport = 0
    forcelocal = None

    def __init__(self):
        self.ctimeout = [2, 58]


def ip4_scan(s):
    """djb ip4_scan: four decimal numbers with dots; trailing text ignored.
    Returns the dotted quad (each number mod 256) or None."""
    parts = []
    pos = 0
    for k in range(4):
        if k:
            if s[pos:pos + 1] != ".":
                return None
            pos += 1
        j = pos
        while j < len(s) and "0" <= s[j] <= "9":
            j += 1
        if j == pos:
            return None
        parts.append(str(scan_ulong(s[pos:j]) & 255))
        pos = j
    return ".".join(parts)


def literal_ip4(name):
    """djbdns dns_ip4 on a name made of digits, dots and brackets: the numbers
    themselves, four at a time (so "1.2.3" has no address).  None: a real name."""
    if any(c not in "0123456789.[]" for c in name):
        return None
    octets = []
    code = 0
    for c in name + ".":
        if c in "[]":
            continue
        if c == ".":
            octets.append(code & 255)
            code = 0
        else:
            code = code * 10 + ord(c) - 48
    return [".".join(map(str, octets[i:i + 4])) for i in range(0, len(octets) - 3, 4)]


# djb's option switch as a table (see sgetopt.apply); -T and -i below
OPTIONS = {
    "v": ("verbosity", 2), "q": ("verbosity", 0), "Q": ("verbosity", 1),
    "h": ("remotehost", True), "H": ("remotehost", False),
    "r": ("remoteinfo", True), "R": ("remoteinfo", False),
    "d": ("delay", True), "D": ("delay", False),
    "l": ("forcelocal", str), "t": ("itimeout", scan_ulong),
    "p": ("localport", lambda a: scan_ulong(a) & 0xFFFF),
}


def parse(argv):
    c = Config()
    opts, rest = getopt(argv, OPTS, PROG)
    for o, a in apply(opts, c, OPTIONS):
        if o == "T":
            # "x+y", "x" (then y = 0), "x+" ...: scan_ulong semantics
            j = 0
            while j < len(a) and "0" <= a[j] <= "9":
                j += 1
            c.ctimeout[0] = scan_ulong(a)
            if a[j:j + 1] == "+":
                j += 1
            c.ctimeout[1] = scan_ulong(a[j:])
        elif o == "i":
            ip = ip4_scan(a)
            if ip is None:
                raise UsageError("i")
            c.localip = ip
    return c, rest


class Client:
    def __init__(self, cfg):
        self.cfg = cfg

    def say(self, *parts):
        if self.cfg.verbosity:
            strerr.write(*parts)

    def fatal(self, *parts):
        self.say(PROG, ": fatal: ", *parts, "\n")
        raise SystemExit(111)

    def usage(self):
        self.say(PROG, ": usage: ", USAGE, "\n")
        raise SystemExit(100)

    def port(self, x):
        if all("0" <= ch <= "9" for ch in x):
            return scan_ulong(x) & 0xFFFF
        try:
            return socket.getservbyname(x, "tcp")
        except OSError:
            self.fatal("unable to figure out port number for ", x)

    def addresses(self, host):
        ips = literal_ip4(host)
        if ips is None:
            from qtools.lib import dns
            try:
                ips = dns.a(host)
            except dns.PermFail:
                ips = []
            except Exception:                   # TempFail, or a name DNS can't carry
                self.fatal("temporarily unable to figure out IP address for ", host, ": ",
                           OSError(errno.EAGAIN, ""))
            import random
            random.shuffle(ips)                 # djbdns dns_sortip
        if not ips:
            self.fatal("no IP address for ", host)
        return ips

    def connect(self, ips, port):
        """The two rounds of tcpclient.c: every address with timeout x; those
        that timed out again with timeout y."""
        cfg = self.cfg
        ctimeout = list(cfg.ctimeout)
        if len(ips) == 1:
            ctimeout = [ctimeout[0] + ctimeout[1], 0]
        for cloop in (0, 1):
            retry = []
            for ip in ips:
                try:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                except OSError as e:
                    self.fatal("unable to create socket: ", e)
                try:
                    s.bind((cfg.localip, cfg.localport))
                except OSError as e:
                    self.fatal("unable to bind socket: ", e)
                err = timeoutconn(s, ip, port, ctimeout[cloop])
                if err is None:
                    return s
                s.close()
                if not cloop and ctimeout[1] and err.errno == errno.ETIMEDOUT:
                    retry.append(ip)
                else:
                    self.say("tcpclient: unable to connect to ", ip, " port ", str(port),
                             ": ", err, "\n")
            ips = retry
        raise SystemExit(111)


def timeoutconn(s, ip, port, timeout):
    """Connect s within timeout seconds; None on success, else the OSError."""
    import select
    s.setblocking(False)
    err = s.connect_ex((ip, port))
    if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
        return OSError(err, os.strerror(err))
    if err:
        p = select.poll()
        p.register(s.fileno(), select.POLLOUT)
        if not p.poll(min(timeout * 1000, 2 ** 31 - 1)):
            return OSError(errno.ETIMEDOUT, "timed out")
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return OSError(err, os.strerror(err))
    s.setblocking(True)
    return None


def _name(ip):
    """dns_name4: the name, "" when the address has none, None when the
    lookup failed (tcpclient then removes the variable)."""
    from qtools.lib import dns
    try:
        return dns.ptr(ip) or ""
    except Exception:
        return None


def main(argv):
    for f in (6, 7):
        try:
            os.close(f)
        except OSError:
            pass
    try:
        cfg, rest = parse(argv)
    except UsageError:
        strerr.write(PROG, ": usage: ", USAGE, "\n")
        return 100
    cl = Client(cfg)
    # tcpclient.c: with -q nothing at all reaches descriptor 2, not even usage
    if len(rest) < 2:
        cl.usage()
    host = rest[0]
    if host in ("", "0"):
        host = "127.0.0.1"
    port = cl.port(rest[1])
    prog = rest[2:]
    if not prog:
        cl.usage()
    s = cl.connect(cl.addresses(host), port)

    if not cfg.delay:
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    env = pathexec.env
    env("PROTO", "TCP")
    try:
        localip, localport = s.getsockname()[:2]
    except OSError as e:
        cl.fatal("unable to get local address: ", e)
    env("TCPLOCALPORT", str(localport))
    env("TCPLOCALIP", localip)
    env("TCPLOCALHOST", cfg.forcelocal if cfg.forcelocal is not None else _name(localip))
    try:
        remoteip, remoteport = s.getpeername()[:2]
    except OSError as e:
        cl.fatal("unable to get remote address: ", e)
    env("TCPREMOTEPORT", str(remoteport))
    env("TCPREMOTEIP", remoteip)
    if cfg.verbosity >= 2:
        strerr.write("tcpclient: connected to ", remoteip, " port ", str(remoteport), "\n")
    env("TCPREMOTEHOST", _name(remoteip) if cfg.remotehost else None)
    info = None
    if cfg.remoteinfo:
        # the same RFC 1413 client as tcpserver's (ucspi-tcp's remoteinfo.c)
        from qtools.ucspi.tcpserver import ident
        info = ident(localip, remoteip, localport, remoteport, cfg.itimeout)
    env("TCPREMOTEINFO", info)

    try:
        fd.move(s.detach(), 6)
    except OSError as e:
        cl.fatal("unable to set up descriptor 6: ", e)
    try:
        fd.copy(6, 7)
    except OSError as e:
        cl.fatal("unable to set up descriptor 7: ", e)
    try:
        pathexec.pathexec_run(prog)
    except OSError as e:
        cl.fatal("unable to run ", prog[0], ": ", e)
