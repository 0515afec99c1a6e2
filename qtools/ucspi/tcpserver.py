"""tcpserver - accept TCP connections and run a program for each.

usage: tcpserver [ -1UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ] [ -B banner ]
       [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ]
       host port program [ arg ... ]

ucspi-tcp 0.88 behaviour: the parent binds, drops to -g/-u, and forks one
child per connection (at most -c at once).  The child, in this order: logs
`pid P from IP`, sets socket options and writes the -B banner, finds the local
and remote names (-l/-h/-p), asks ident (-r), applies the -x rules cdb (opened
afresh per connection, so `tcprules` can replace it live), logs `ok`/`deny`,
puts the socket on fds 0 and 1 and runs the program with PROTO, TCPLOCALIP,
TCPLOCALPORT, TCPLOCALHOST, TCPREMOTEIP, TCPREMOTEPORT, TCPREMOTEHOST,
TCPREMOTEINFO and the rule's variables in its environment.

qtools: when the program is itself a qtools program, the parent preloads it
and each child runs it without an exec (see qtools.lib.pathexec); set
QTOOLS_NOELIDE=1 for a real exec.  Children are forked ahead, in batches of
up to six, and wait in accept() (waiting plus busy never exceed -c); as the child
that accepted logs its own `pid P from IP`, the parent's `status: N/L` for
that connection may come just after it instead of just before.  With
QTOOLS_REUSE=N a child that ran a REUSABLE program takes up to N connections
in turn (serve_many, qtools.lib.reuse).  A fork failure is retried, never
drops a connection.  -4 is accepted (IPv4 is the
default).  See man/man1/tcpserver.1.

Exit codes: 100 usage, 111 setup failure, 0 on SIGTERM.  Children exit 100
when a rule denies, 111 when the connection is dropped, else the program's.
"""
import errno
import os
import select

import _signal
import _socket

from qtools.lib import env as _env, fd as fdio, pathexec, proctitle, sig, strerr
from qtools.lib.sgetopt import UsageError, apply, getopt, scan_ulong
from qtools.ucspi import rules

PROG = "tcpserver"
USAGE = ("tcpserver: usage: tcpserver [ -1UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ]"
         " [ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ]"
         " [ -t timeout ] host port program\n")
OPTS = "dDvqQhHrR1UXx:t:u:g:l:b:B:c:pPoO4"
DROP = "tcpserver: warning: dropping connection, "
WAITING = "tcpserver: waiting for a connection"      # a waiting child's title


class Config:
    reuse = 1                   # connections a child serves (QTOOLS_REUSE)
    verbosity = 1
    limit = 40
    rules = None
    allow_norules = False
    banner = b""
    uid = 0
    gid = 0
    backlog = 20
    localhost = None
    ident_timeout = 26
    flag1 = False
    nodelay = False
    kill_options = True
    remotehost = True
    paranoid = False
    remoteinfo = True


# djb's option switch as a table: flags set a value, options with an
# argument store it converted (see sgetopt.apply)
OPTIONS = {
    "b": ("backlog", scan_ulong), "c": ("limit", scan_ulong), "t": ("ident_timeout", scan_ulong),
    "u": ("uid", scan_ulong), "g": ("gid", scan_ulong), "x": ("rules", str),
    "l": ("localhost", str), "B": ("banner", os.fsencode),
    "X": ("allow_norules", True), "1": ("flag1", True), "4": ("ipv4", True),
    "d": ("nodelay", False), "D": ("nodelay", True),
    "v": ("verbosity", 2), "q": ("verbosity", 0), "Q": ("verbosity", 1),
    "p": ("paranoid", True), "P": ("paranoid", False),
    "o": ("kill_options", False), "O": ("kill_options", True),
    "h": ("remotehost", True), "H": ("remotehost", False),
    "r": ("remoteinfo", True), "R": ("remoteinfo", False),
}


def parse(argv):
    c = Config()
    opts, rest = getopt(argv, OPTS, PROG)
    for o, a in apply(opts, c, OPTIONS):
        if o == "U":                            # -U: $UID and $GID, from envuidgid
            if "UID" in os.environ:
                c.uid = scan_ulong(os.environ["UID"])
            if "GID" in os.environ:
                c.gid = scan_ulong(os.environ["GID"])
    if len(rest) < 3:
        raise UsageError
    c.host, c.port, c.argv = rest[0], rest[1], rest[2:]
    return c


_SAFE = bytes(c if 33 <= c <= 126 and c not in (37, 58) else 63 for c in range(256))


def safe(s):
    """ucspi-tcp safecats: at most 100 bytes, then '...'; unsafe bytes -> '?'."""
    b = os.fsencode(s).split(b"\0")[0]
    out = b[:100].translate(_SAFE)
    return out + b"..." if len(b) >= 100 else out


class Server:
    def __init__(self, cfg):
        self.cfg = cfg
        self.children = {}

    def log(self, data, level=2):
        if self.cfg.verbosity >= level:
            try:
                os.write(2, data)
            except OSError:
                pass

    def status(self, n=None):
        n = len(self.children) if n is None else n
        self.log(b"tcpserver: status: %d/%d\n" % (n, self.cfg.limit))

    def fatal(self, *parts):
        if self.cfg.verbosity >= 1:
            strerr.write(PROG, ": fatal: ", *parts, "\n")
        raise SystemExit(111)

    # -- setup -------------------------------------------------------------
    def listen(self):
        cfg = self.cfg
        host = cfg.host
        if host in ("", "0"):
            host = "0.0.0.0"
        localip = host if _is_ip4(host) else self.lookup_host(host)
        p = cfg.port
        if not p.strip("0123456789"):           # scan_ulong took it all ("" is 0)
            port = scan_ulong(p)
        else:
            try:
                port = _socket.getservbyname(p, "tcp")
            except OSError:
                self.fatal("unable to figure out port number for ", p)
        try:
            s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        except OSError as e:
            self.fatal("unable to create socket: ", e)
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        try:
            s.bind((localip, port & 0xFFFF))
        except OSError as e:
            self.fatal("unable to bind: ", e)
        try:
            s.listen(cfg.backlog)
        except OSError as e:
            self.fatal("unable to listen: ", e)
        return s

    def lookup_host(self, host):
        from qtools.lib import dns
        try:
            ips = dns.a(host)
        except dns.PermFail:
            ips = []
        except dns.TempFail:
            self.fatal("temporarily unable to figure out IP address for ", host,
                       ": ", OSError(errno.EAGAIN, ""))
        if not ips:
            self.fatal("no IP address for ", host)
        return ips[0]

    def drop_privileges(self):
        cfg = self.cfg
        if cfg.gid:
            try:
                os.setgroups([cfg.gid])
                os.setgid(cfg.gid)
            except OSError as e:
                self.fatal("unable to set gid: ", e)
        if cfg.uid:
            try:
                os.setuid(cfg.uid)
            except OSError as e:
                self.fatal("unable to set uid: ", e)

    # -- the accept loop ---------------------------------------------------
    # qtools forks ahead: children wait in accept() while the parent sleeps,
    # so a connection costs no fork on its critical path.  When fewer than
    # SPARES_LOW wait, the parent forks up to SPARES_HIGH in a row: a fork
    # makes every page of the parent copy-on-write again, so its own writes
    # between forks are page faults, and a batch shares them.  Busy children
    # plus waiting ones never exceed -c, so at most -c connections are served
    # at once, and at the limit nobody accepts, as with the C tcpserver.  A
    # child that accepted tells the parent (its pid on the notify pipe); the
    # parent then logs `status: N/L`.  Waiting children also watch the
    # "death" pipe and exit when the parent is gone; they wait with
    # EPOLLEXCLUSIVE, so a connection wakes one of them, not all.
    SPARES_LOW = 2
    SPARES_HIGH = 6

    def run(self, s):
        cfg = self.cfg
        self.sock = s
        s.setblocking(False)
        self.wake_r, wake_w = _pipe()
        self.notify_r, self.notify_w = _pipe()
        self.death_r, self.death_w = _pipe()
        os.set_blocking(self.notify_w, True)
        sig.catch(_signal.SIGCHLD, _noop)
        _signal.set_wakeup_fd(wake_w)
        sig.catch(_signal.SIGTERM, _exit0)
        self.spares = set()
        # made once, here: a child dup2()s its connection onto this socket
        # object's descriptor instead of making one (a socket object's
        # set-up is ~80 page faults in a fresh fork)
        self.csock = _socket.socket(fileno=os.dup(s.fileno()))
        cfg.localaddr = None
        if s.getsockname()[0] != "0.0.0.0":
            # bound to one address: every connection's local end is this one
            cfg.localaddr = s.getsockname()[:2]
        pathexec.freeze()        # children share the parent's pages
        # what a child closes before it runs the program: the listener, its
        # ends of the pipes, the connection's descriptor (moved to 0 and 1)
        pathexec.snapshot(signals=True, closed=(
            s.fileno(), self.wake_r, self.death_r, self.notify_r, self.death_w,
            self.csock.fileno()))
        self.status()               # "status: 0/N": ready, the set-up is done
        while True:
            if len(self.spares) < self.SPARES_LOW:
                pathexec.refresh()
                while (len(self.spares) < self.SPARES_HIGH
                       and len(self.spares) + len(self.children) < cfg.limit):
                    if not self.fork_spare():
                        break
            ready = select.select([self.notify_r, self.wake_r], [], [], None if self.spares or
                                  len(self.children) >= cfg.limit else 1.0)[0]
            if self.notify_r in ready:
                self.notified()
            if self.wake_r in ready:
                fdio.drain(self.wake_r)
                self.notified()          # a child's notice is written before it can die
                self.reap()

    # A child tells the parent about itself on the notify pipe in records of
    # 8 bytes (written whole: a pipe never splits them): its pid, then
    # ACCEPTED, or the wait status of a connection it served and is done with
    # (QTOOLS_REUSE: it waits for the next one).
    ACCEPTED = 0xFFFFFFFF

    def tell(self, what):
        os.write(self.notify_w, os.getpid().to_bytes(4, "little") + what.to_bytes(4, "little"))

    def notified(self):
        try:
            data = os.read(self.notify_r, 4096)
        except BlockingIOError:
            return
        for k in range(0, len(data) - 7, 8):
            pid = int.from_bytes(data[k:k + 4], "little")
            what = int.from_bytes(data[k + 4:k + 8], "little")
            if what == self.ACCEPTED:
                if pid in self.spares:
                    self.spares.discard(pid)
                    self.children[pid] = True
                    self.status()
            elif self.children.pop(pid, None):
                self.log(b"tcpserver: end %d status %d\n" % (pid, what))
                self.spares.add(pid)
                self.status()

    def fork_spare(self):
        try:
            pid = os.fork()
        except OSError as e:
            if self.cfg.verbosity >= 1:
                strerr.write(PROG, ": warning: unable to fork: ", e, "\n")
            return False
        if pid == 0:
            code = 111
            try:
                # only the parent may hold the death pipe's write end, or a
                # waiting child never sees EOF and keeps accepting after the
                # parent is gone
                os.close(self.death_w)
                code = self.serve()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 111
            except BaseException as e:                  # noqa: BLE001
                try:
                    strerr.write(DROP, "internal error: ", type(e).__name__, "\n")
                except BaseException:
                    pass
            os._exit(code)
        self.spares.add(pid)
        return True

    def serve(self):
        """In a forked child: wait for a connection and serve it (the C
        tcpserver's child); with QTOOLS_REUSE, serve_many()."""
        # ps shows the waiting children apart from the server itself
        proctitle.set(WAITING)
        # a nearly idle server (as the parent saw it at the fork) lets its
        # waiting children rehearse the connection's path (the program's
        # rehearse hook: control files, replies) so that its page faults
        # come before a client waits; a busy one saves the CPU
        if len(self.children) < 2:
            pathexec.rehearse(self.cfg.argv)
        if self.cfg.reuse > 1:
            return self.serve_many()
        csock, addr = self.wait_accept()
        for fd in (self.sock.fileno(), self.wake_r, self.death_r, self.notify_r):
            os.close(fd)
        # the socket object the parent made takes over the connection
        os.dup2(csock, self.csock.fileno(), inheritable=False)
        os.close(csock)
        self.tell(self.ACCEPTED)
        Child(self.cfg, self.csock, addr).run()
        return 111

    # a child that served a connection and waits for the next exits after
    # this many seconds without one (Postfix's max_idle)
    IDLE = 100

    def serve_many(self):
        """QTOOLS_REUSE=N: serve up to N connections one after another, the
        process put back as it was between them (qtools.lib.reuse); the
        first program that is not REUSABLE, or any doubt, ends the child
        as a C one ends.  Returns the exit code of the last connection."""
        from qtools.lib import reuse, run
        os.close(self.wake_r)
        os.close(self.notify_r)
        sig.no_wakeup()
        self.csock.close()          # each connection gets its own socket object
        own = (self.sock.fileno(), self.death_r, self.notify_w)
        # what the first program would close (the parent's close-on-exec
        # descriptors), closed now: what is open from here on is kept
        pathexec.close_cloexec(but=own)
        base = reuse.Baseline()
        pathexec.reusing(os.getpid(), own + base.fds)
        code = 0
        for n in range(self.cfg.reuse):
            fd, addr = self.wait_accept(self.IDLE if n else None)
            if fd is None:
                return 0                    # idle: the parent makes new ones as needed
            self.tell(self.ACCEPTED)
            child = Child(self.cfg, _socket.socket(fileno=fd), addr)
            try:
                child.run()
            except run.Exited as e:             # a REUSABLE program's end
                code = e.code
            except SystemExit as e:             # denied, or dropped
                code = e.code if isinstance(e.code, int) else 111
            finally:
                child.close()
            if n + 1 == self.cfg.reuse or not _restored(base):
                return code
            self.tell((code & 0xFF) << 8)
            proctitle.set(WAITING)
        return code

    def wait_accept(self, idle=None):
        """In a waiting child: (fd, address) of a connection, or (None, None)
        after idle seconds without one; exits with the parent."""
        lfd = self.sock.fileno()
        death_r = self.death_r
        try:
            ep = select.epoll(2)
            ep.register(lfd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            ep.register(death_r, select.EPOLLIN)
            poll = ep.poll
        except (AttributeError, OSError):               # no epoll: select()
            ep = None
        try:
            while True:
                if ep is not None:
                    ready = [fd for fd, _ in poll(-1 if idle is None else idle)]
                else:
                    ready = select.select([lfd, death_r], [], [], idle)[0]
                if death_r in ready:
                    os._exit(0)
                if not ready:
                    return None, None
                try:
                    return self.sock._accept()
                except (BlockingIOError, InterruptedError):
                    continue                            # another child took it
                except OSError:
                    continue
        finally:
            if ep is not None:
                ep.close()

    def reap(self):
        while True:
            try:
                pid, wstat = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid <= 0:
                return
            if pid in self.spares:
                # its notice may have arrived after the last read: a child
                # writes it before it can die, so it is in the pipe by now
                self.notified()
            if pid in self.spares:
                self.spares.discard(pid)                # died before accepting
                continue
            self.log(b"tcpserver: end %d status %d\n" % (pid, wstat))
            self.children.pop(pid, None)
            self.status()


def _pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


def _noop(signum, frame):
    pass


def _exit0(signum, frame):
    os._exit(0)


class Child:
    """One connection, in the forked child: ucspi-tcp's doit()."""

    def __init__(self, cfg, sock, addr):
        self.cfg = cfg
        self.sock = sock
        self.fd = sock.fileno()
        self.remoteip, self.remoteport = addr[0], addr[1]

    def close(self):
        """The connection, if run() ended (deny, drop) before it became fds
        0 and 1 (a C child's exit closes it; a reusing one must)."""
        if self.sock.fileno() >= 0:
            self.sock.close()           # not detached yet: it owns the descriptor
        elif self.fd > 1:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1

    def drop(self, *parts):
        if self.cfg.verbosity >= 1:
            strerr.write(DROP, *parts, "\n")
        raise SystemExit(111)

    def run(self):
        cfg = self.cfg
        fd = self.fd
        pid = os.getpid()
        if cfg.verbosity >= 2:
            os.write(2, b"tcpserver: pid %d from %s\n" % (pid, self.remoteip.encode()))
        sock = self.sock
        if cfg.kill_options:
            try:
                sock.setsockopt(_socket.IPPROTO_IP, _socket.IP_OPTIONS, b"")
            except OSError:
                pass
        if cfg.nodelay:
            try:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if cfg.banner:
            try:
                fdio.writeall(fd, cfg.banner)
            except OSError as e:
                self.drop("unable to print banner: ", e)
        localaddr = cfg.localaddr
        if localaddr is None:
            try:
                localaddr = sock.getsockname()
            except OSError as e:
                self.drop("unable to get local address: ", e)
        localip, localport = localaddr[0], localaddr[1]
        sock.detach()                           # fd stays open: it becomes 0 and 1
        localhost = cfg.localhost
        if localhost is None:
            localhost = _ptr(localip)
        # bytes straight into the environment (qtools.lib.env): this is
        # the per-connection path, where every object touched costs
        setenv = _env.setb
        fsencode = os.fsencode
        setenv(b"PROTO", b"TCP")
        setenv(b"TCPLOCALIP", localip.encode())
        setenv(b"TCPLOCALPORT", b"%d" % localport)
        setenv(b"TCPLOCALHOST", None if localhost is None else fsencode(localhost))
        remotehost = None
        if cfg.remotehost:
            remotehost = _ptr(self.remoteip)
            if remotehost and cfg.paranoid and not _forward_ok(remotehost, self.remoteip):
                remotehost = None
        setenv(b"TCPREMOTEHOST", None if remotehost is None else fsencode(remotehost))
        setenv(b"TCPREMOTEIP", self.remoteip.encode())
        setenv(b"TCPREMOTEPORT", b"%d" % self.remoteport)
        remoteinfo = None
        if cfg.remoteinfo:
            remoteinfo = ident(localip, self.remoteip, localport, self.remoteport,
                               cfg.ident_timeout)
        setenv(b"TCPREMOTEINFO", None if remoteinfo is None else fsencode(remoteinfo))
        deny = False
        if cfg.rules:
            try:
                key, data = rules.lookup(cfg.rules, self.remoteip, remotehost, remoteinfo)
            except OSError as e:
                if not (cfg.allow_norules and e.errno == errno.ENOENT):
                    self.drop("unable to read ", cfg.rules, ": ", e)
                data = None
            if data:
                deny, ruleenv = rules.parse_bytes(data)
                for name, value in ruleenv:
                    if name:                    # "+=x": C exports "=x"; Python cannot
                        setenv(name, value)
        if cfg.verbosity >= 2:
            line = b"".join((
                b"tcpserver: ", b"deny" if deny else b"ok", b" %d " % pid,
                safe(localhost) if localhost is not None else b"", b":", safe(localip),
                b":", safe(str(localport)), b" ",
                safe(remotehost) if remotehost is not None else b"", b":",
                safe(self.remoteip), b":",
                safe(remoteinfo) if remoteinfo is not None else b"", b":",
                safe(str(self.remoteport)), b"\n"))
            os.write(2, line)
        if deny:
            raise SystemExit(100)
        try:
            if fd != 0:
                os.dup2(fd, 0)
                if fd != 1:
                    os.close(fd)
            self.fd = 0
            os.set_inheritable(0, True)
            os.dup2(0, 1)
        except OSError as e:
            self.drop("unable to set up descriptors: ", e)
        # tcpserver.c sig_uncatch()es SIGPIPE for the program: pathexec_run
        # puts SIGPIPE and SIGXFSZ (which Python ignores) back to SIG_DFL
        # before a real exec, and an elided qtools program gets the
        # fresh-Python dispositions.
        try:
            pathexec.pathexec_run(cfg.argv)
        except OSError as e:
            self.drop("unable to run ", cfg.argv[0], ": ", e)


def _restored(base):
    """base.restore(), any trouble with it a reason to exit (the connection
    was served)."""
    try:
        return base.restore()
    except Exception:                               # noqa: BLE001 - exit as a C child
        return False


def _is_ip4(s):
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _ptr(ip):
    from qtools.lib import dns
    try:
        return dns.ptr(ip)
    except Exception:                       # any DNS trouble: no name, as dns_name4
        return None


def _forward_ok(name, ip):
    from qtools.lib import dns
    try:
        return ip in dns.a(name)
    except Exception:
        return False


def ident(localip, remoteip, localport, remoteport, timeout):
    """RFC 1413 lookup (ucspi-tcp remoteinfo.c): the text after the third ':'
    of the reply up to the newline, blanks and CR removed (257 bytes end it
    early); None on failure."""
    import time
    deadline = time.monotonic() + timeout
    try:
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        s.bind((localip, 0))
        s.settimeout(max(0.001, deadline - time.monotonic()))
        s.connect((remoteip, 113))
        s.sendall(b"%d , %d\r\n" % (remoteport, localport))
        colons = 0
        out = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            data = s.recv(128)
            if not data:
                return None
            for ch in data:
                if ch in (32, 9, 13):
                    continue
                if ch == 10:
                    return os.fsdecode(bytes(out))
                if colons < 3:
                    if ch == 58:
                        colons += 1
                else:
                    out.append(ch)
                    if len(out) > 256:          # remoteinfo.c stops at 257 bytes
                        return os.fsdecode(bytes(out))
    except OSError:
        return None
    finally:
        s.close()


def main(argv):
    try:
        cfg = parse(argv)
    except UsageError:
        os.write(2, USAGE.encode())
        return 100
    x = _env.getb(b"QTOOLS_REUSE")
    if x:
        cfg.reuse = max(1, scan_ulong(x.decode("latin-1")))
    srv = Server(cfg)
    s = srv.listen()
    # Load what every child will need once, here, so a connection costs a
    # fork; and before -g/-u, so that nothing has to be read from disk
    # afterwards (the uid may not be able to read the Python installation).
    if cfg.remotehost or cfg.localhost is None:
        from qtools.lib import dns
        try:
            dns.warm()
        except Exception:
            pass
    pathexec.preload(cfg.argv)
    if cfg.reuse > 1:
        from qtools.lib import reuse
        reuse.warm()
    from qtools.lib import proctitle
    proctitle.from_argv(argv)
    srv.drop_privileges()
    if cfg.flag1:                               # after -g/-u, as tcpserver.c
        os.write(1, b"%d\n" % s.getsockname()[1])
    # fds 0 and 1 are not used by the parent (the C one closes them); keep
    # them open on /dev/null so no pipe or socket of ours lands there
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    srv.run(s)
