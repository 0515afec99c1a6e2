"""privsep - vpopmaild's privilege separation (OpenSSH's monitor, in small).

vpopmaild runs under tcpserver as root (the seed's `-u 0 -g 0`) because
adding or deleting a domain rewrites qmail's control/rcpthosts,
control/virtualdomains, users/assign + users/cdb and signals qmail-send.
Nothing else it does needs root, and nothing it reads from the network
should be parsed as root.  So, before the first byte is read:

  start(uid, gid)  forks the monitor, which keeps root, then drops the
                   calling (session) process to uid/gid for good
                   (setgroups, setgid, setuid; checked).

The two talk over a SOCK_SEQPACKET socketpair, one datagram per request
and one per answer.  The monitor understands exactly three requests, each
one line of at most MAXREQ bytes, fields separated by one space:

  adddomain <domain> <password>   vadddomain, then vadduser postmaster
  deldomain <domain>              vdeldomain
  addaliasdomain <alias> <real>   vaddaliasdomain (+ the store's record)

It checks them again itself (verb, field count, domain syntax and length,
password length and bytes) and runs the qtools.vpopmail.admin function;
anything else is refused without being looked at further.  Answers:
`ok`, `err <stage> <VA code>` (stage 804/805/1303/1204: which vpopmaild
reply it becomes), `temp` (the store cannot answer), `refused`.  The
monitor closes the client socket (fds 0 and 1) first, and exits when the
session closes its end (end of file).

Started as non-root, vpopmaild uses Direct: the same checks and the same
admin calls in its own process, with its own rights.
"""
import os

MAXREQ = 512
VERBS = {b"adddomain": 2, b"deldomain": 1, b"addaliasdomain": 2}


def domain_ok(d):
    """Letters, digits, '-' and '.', 1..96 bytes, no leading '-' or '.',
    no '..': nothing that can name a path outside domains/."""
    if not 1 <= len(d) <= 96 or d[:1] in (b"-", b".") or b".." in d:
        return False
    for c in d:
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in (45, 46)):
            return False
    return True


def password_ok(p):
    return 1 <= len(p) <= 128 and not any(c in (0, 10, 13) for c in p)


def parse(req):
    """(verb, [fields]) of a valid request, else None."""
    if not 0 < len(req) <= MAXREQ or b"\0" in req or b"\n" in req or b"\r" in req:
        return None
    verb, _, rest = req.partition(b" ")
    n = VERBS.get(verb)
    if n is None:
        return None
    fields = rest.split(b" ", n - 1) if n > 1 else [rest]
    if len(fields) != n or not domain_ok(fields[0]):
        return None
    if verb == b"adddomain" and not password_ok(fields[1]):
        return None
    if verb == b"addaliasdomain" and not domain_ok(fields[1]):
        return None
    return verb, fields


def request(*fields):
    return b" ".join(f.encode("utf-8", "surrogateescape") if isinstance(f, str) else f
                     for f in fields)


def perform(req):
    """Check and run one request; the answer (bytes)."""
    from qtools.vpopmail import admin, store as S
    p = parse(req)
    if p is None:
        return b"refused"
    verb, f = p
    f = [x.decode("ascii", "surrogateescape") if i == 0 or verb != b"adddomain"
         else x.decode("utf-8", "surrogateescape") for i, x in enumerate(f)]
    stage = b"0"
    st = None
    try:
        st = S.open_store()
        if verb == b"addaliasdomain":
            stage = b"1204"
            admin.check_new_domain(f[0])
            admin.vaddaliasdomain(f[0], f[1])
            st.aliasdomain_add(f[0], S.get_assign(f[0]).domain)    # as vaddaliasdomain(8)
            return b"ok"
        if verb == b"deldomain":
            stage = b"1303"
            admin.vdeldomain(st, f[0])
            return b"ok"
        stage = b"804"
        admin.vadddomain(st, f[0])
        stage = b"805"
        try:
            admin.vadduser(st, "postmaster", f[0], f[1], gecos="postmaster")
        except BaseException:
            try:
                admin.vdeldomain(st, f[0])          # vpopmaild.c add_domain() does the same
            except Exception:                       # noqa: BLE001 - the first error is the news
                pass
            raise
        return b"ok"
    except S.StoreError as e:
        return b"err %s %d" % (stage, e.code)
    except S.TempFail as e:
        _warn("temporary failure: %s" % e)
        return b"temp"
    except OSError as e:
        _warn("%s failed: %s" % (verb.decode(), e))
        return b"err %s %d" % (stage, S.VA_COULD_NOT_UPDATE_FILE)
    finally:
        if st is not None:
            st.close()


def _warn(text):
    try:
        os.write(2, ("vpopmaild: warning: %s\n" % text).encode("utf-8", "replace"))
    except OSError:
        pass


class Direct:
    """No separation (not started as root): perform in this process."""
    pid = None

    def call(self, *fields):
        return perform(request(*fields))

    def close(self):
        pass


class Monitor:
    """The session's end of the socketpair."""

    def __init__(self, sock, pid):
        self.sock, self.pid = sock, pid

    def call(self, *fields):
        try:
            self.sock.send(request(*fields))
            answer = self.sock.recv(MAXREQ)
        except OSError:
            answer = b""
        return answer or b"temp"                    # the monitor is gone

    def close(self):
        self.sock.close()


def monitor_loop(sock):
    """The monitor: requests until the session closes its end."""
    while True:
        try:
            req = sock.recv(MAXREQ + 1)
        except InterruptedError:
            continue
        except OSError:
            return 0
        if not req:
            return 0
        try:
            answer = perform(req)
        except Exception as e:                      # noqa: BLE001 - never die holding root
            _warn("internal error: %s: %s" % (type(e).__name__, e))
            answer = b"temp"
        try:
            sock.send(answer)
        except OSError:
            return 0


def start(uid, gid):
    """Fork the monitor (root), drop this process to uid/gid; the Monitor."""
    import signal
    import socket
    if uid == 0:
        raise PermissionError("refusing to run the session as root")
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 111
        try:
            mine.close()
            # the network is the session's: closing fds 0 and 1 here also
            # lets the connection end when the session ends
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            if null > 2:
                os.close(null)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            theirs.send(b"ready")           # the network is no longer ours
            code = monitor_loop(theirs)
        finally:
            os._exit(code)
    theirs.close()
    # not a byte to the client before the monitor (root) has let go of it
    if mine.recv(16) != b"ready":
        raise OSError("the privileged monitor did not start")
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0 or os.getegid() != gid:
        raise PermissionError("privileges were not dropped")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PermissionError("privileges can be regained")
    os.chdir("/")
    return Monitor(mine, pid)
