"""vchkpw - vpopmail's checkpassword program.

usage: vchkpw prog [arg ...]

Reads at most 512 bytes from descriptor 3 up to end of file:
`login\\0password\\0[challenge\\0]` (the checkpassword interface; qmail-smtpd
adds the challenge for CRAM-MD5 and an empty one in its +cram modes), then
closes it.  The login is `user@domain`, `user%domain` or `user/domain`
(vpopmail's ATCHARS, tried in that order), lowercased; a bare `user` gets
$VPOPMAIL_DOMAIN or the first line of $VPOPMAILHOME/etc/defaultdomain.
The domain is looked up in qmail's users/cdb (an alias domain means its real
domain), the user in the store (see store(3): vpasswd.cdb or MySQL).

Password: with a challenge and a clear password in the store, CRAM-MD5
(the response is the lowercase hex HMAC-MD5 of the challenge keyed with the
clear password); otherwise crypt(3) of the password compared with the stored
hash ($1$, $5$, $6$, DES; a leading {SCHEME} is ignored).

The protocol is guessed from $TCPLOCALPORT: 25, 465, 587 SMTP; 110, 995 POP;
143, 993 IMAP; any other port: SMTP if prog contains `true`, IMAP if it
contains `imap`, else POP.  POP or IMAP from 127.0.0.1 counts as webmail.
The user's flags (its own bits ORed with the domain's limits) NO_SMTP,
NO_POP, NO_IMAP, NO_WEBMAIL refuse the matching protocol.

On success the login is recorded (lastauth), then USER=<user>,
HOME=<user dir>, SHELL=NOLOGIN and VPOPUSER=<login> are set and prog runs
(through pathexec: exec elision when it is a qtools program; the system's
true(1) without arguments, qmail-smtpd's `vchkpw /bin/true`, is elided too:
exit 0 without an exec, unless QTOOLS_NOELIDE is set).  For POP and
IMAP only, vchkpw first changes to the domain's uid/gid when run as root and
changes to the user's directory (making its Maildir when missing).  No prog:
exit 0.  Failures are logged on descriptor 2 as vpopmail logs them to syslog:
`vchkpw-<service>: password fail user@domain:ip` (the password itself never).

Exit codes (vpopmail's; qmail-smtpd answers 535 to every code but 0 and
111, which it answers with 454):
  0    success (prog's own exit status, as prog replaces vchkpw)
  1    the protocol is not allowed for this user (NO_SMTP etc.)
  3    no such user or domain, or wrong password
  4, 5 setgid / setuid failed;  6 the user's directory cannot be entered
  11   descriptor 3 cannot be read;  12 empty login;  13 empty password
  15   the user has no password;  20 invalid characters in the login
  111  temporary failure: the store cannot answer (database down or hung,
       unreadable users/cdb or vpasswd.cdb), or prog cannot be run
Differences from vpopmail: the temporary failures are 111 (vpopmail reports
a database failure as an unknown user, exit 3); fd 3 is read up to 512
bytes (vpopmail: 155); exec failure of prog is 111 (vpopmail exits 0);
messages go to descriptor 2 instead of syslog; a password that is not
valid UTF-8 never matches a crypt hash (Python's crypt takes str).
"""
import os

PROG = "vchkpw"
USAGE = "vchkpw prog [arg ...]"
FAST_EXIT = True

MAXREAD = 512
SMTP, POP, IMAP = "smtp", "pop", "imap"
SERVICE = {"25": "smtp", "465": "smtps", "587": "submission", "110": "pop3",
           "995": "pop3s", "143": "imap", "993": "imaps"}
PROTO = {"25": SMTP, "465": SMTP, "587": SMTP, "110": POP, "995": POP, "143": IMAP,
         "993": IMAP}


class Exit(Exception):
    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


def _safe(s):
    return "".join(c if " " < c <= "~" else "?" for c in s)[:300]


def protocol(argv):
    port = os.environ.get("TCPLOCALPORT", "")
    proto = PROTO.get(port)
    if proto is None:
        prog = argv[1] if len(argv) > 1 else ""
        proto = SMTP if "true" in prog else IMAP if "imap" in prog else POP
    service = SERVICE.get(port) or port or proto
    return proto, service


def read_fd3():
    data = b""
    while len(data) < MAXREAD:
        try:
            d = os.read(3, MAXREAD - len(data))
        except InterruptedError:
            continue
        except OSError:
            os.write(2, b"vchkpw: fatal: unable to read descriptor 3: vchkpw is only for "
                        b"programs that speak the checkpassword interface\n")
            raise Exit(11)
        if not d:
            break
        data += d
    try:
        os.close(3)
    except OSError:
        pass
    return data


def main(argv):
    ip = os.environ.get("TCPREMOTEIP", "")
    proto, service = protocol(argv)
    tag = "vchkpw-%s: " % _safe(service)

    def log(text):
        os.write(2, (tag + text + "\n").encode("utf-8", "replace"))

    try:
        return run(argv, ip, proto, log)
    except Exit as e:
        return e.code


def run(argv, ip, proto, log):
    from qtools.vpopmail import store as S
    data = read_fd3()
    parts = data.split(b"\0")
    name = parts[0]
    password = parts[1] if len(parts) > 1 else b""
    challenge = parts[2] if len(parts) > 2 else b""
    if not name:
        log("null user name given :%s" % _safe(ip))
        raise Exit(12)
    if not password:
        log("null password given %s:%s" % (_safe(S._decode(name)), _safe(ip)))
        raise Exit(13)
    login = S._decode(name).lower()
    who = _safe(login)
    user, domain = S.split_email(login)
    if not S.username_valid(user) or not S.domain_valid(domain) or not login.isascii():
        log("invalid user/domain characters %s:%s" % (who, _safe(ip)))
        raise Exit(20)
    st = None
    try:
        if not domain:
            domain = S.parse_email(login)[1]
        where = "%s@%s:%s" % (_safe(user), _safe(domain), _safe(ip))
        a = None
        if len(user) <= S.MAX_PW_NAME and 0 < len(domain) <= S.MAX_PW_DOMAIN:
            a = S.get_assign(domain)
        if a is None:
            log("vpopmail user not found %s" % where)
            raise Exit(3)
        st = S.open_store()
        pw = st.getpw(user, a.domain)
        if pw is None:
            log("vpopmail user not found %s" % where)
            raise Exit(3)
        if not pw.passwd:
            log("user has no password %s" % where)
            raise Exit(15)
        ok = False
        if challenge and pw.clear:
            ok = S.cram_md5_ok(pw.clear, challenge, password)
            if ok:
                log("(CRAM-MD5) login success %s" % where)
        if not ok and not S.check_password(password, pw.passwd):
            log("password fail %s" % where)
            raise Exit(3)
        denied = {SMTP: S.NO_SMTP, POP: S.NO_POP, IMAP: S.NO_IMAP}[proto]
        if proto != SMTP and ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            denied |= S.NO_WEBMAIL
        if pw.flags & denied:
            log("%s access denied %s" % (proto, where))
            raise Exit(1)
        try:
            st.set_lastauth(pw, a.domain, ip)
        except S.TempFail as e:
            log("warning: unable to record the login: %s" % _safe(str(e)))
    except S.TempFail as e:
        log("temporary failure %s: %s" % (who, _safe(str(e))))
        raise Exit(111)
    except S.StoreError as e:
        log("temporary failure %s: %s" % (who, _safe(str(e))))
        raise Exit(111)
    finally:
        if st is not None:
            st.close()

    if proto != SMTP:
        if os.geteuid() == 0:
            try:
                os.setgid(a.gid)
            except OSError:
                log("setgid %d failed %s" % (a.gid, where))
                raise Exit(4)
            try:
                os.setuid(a.uid)
            except OSError:
                log("setuid %d failed %s" % (a.uid, where))
                raise Exit(5)
        try:
            os.chdir(pw.dir)
        except OSError:
            try:
                from qtools.vpopmail import admin
                if admin.inside(pw.dir, a.dir):
                    os.makedirs(pw.dir, 0o750, exist_ok=True)
                    admin.make_maildir(pw.dir, a.uid, a.gid)
                os.chdir(pw.dir)
            except (OSError, S.StoreError):
                log("autocreate dir failed %s %s" % (_safe(pw.dir), where))
                raise Exit(6)
    os.environ["USER"] = user
    os.environ["HOME"] = pw.dir
    os.environ["SHELL"] = "NOLOGIN"
    os.environ["VPOPUSER"] = login
    if len(argv) < 2:
        return 0
    from qtools.lib import pathexec
    if len(argv) == 2 and pathexec.elision_enabled() and _is_true(argv[1]):
        return 0                # qmail-smtpd's `vchkpw /bin/true`: the exec is elided too
    try:
        pathexec.pathexec_run(argv[1:])
    except OSError as e:
        from qtools.lib import strerr
        strerr.write(PROG, ": fatal: unable to run ", argv[1], ": ", e, "\n")
    return 111


def _is_true(name):
    from qtools.lib import pathexec
    p = pathexec.resolve(name)
    return p is not None and os.path.realpath(p) in ("/usr/bin/true", "/bin/true")


def preload(argv):
    """In tcpserver's (or qmail-smtpd's) parent: load the store backend,
    crypt, hmac and the database driver once, so each AUTH is a fork."""
    import hmac  # noqa: F401
    from qtools.lib import cdb, pathexec  # noqa: F401
    from qtools.vpopmail import admin, store as S  # noqa: F401
    try:
        S.crypt_function()
        if S.backend_name() == "mysql":
            from qtools.vpopmail import store_mysql
            store_mysql.driver()
        else:
            from qtools.vpopmail import store_cdb  # noqa: F401
    except Exception:                               # noqa: BLE001 - the child will say
        pass
    if len(argv) > 1:
        try:
            pathexec.preload(argv[1:])
        except Exception:                           # noqa: BLE001
            pass
