"""vpopmaild - vpopmail's administration daemon (one session per connection).

usage: vpopmaild    (run by tcpserver: commands on fd 0, replies on fd 1)

Protocol (vpopmail 5.4 vpopmaild.c, vpopmaild.msg):
  banner `+OK ` (with the trailing space); replies `+OK `, `+OK+` followed
  by data lines and a line `.`, or `-ERR <major>.<minor:03d> <message>`
  with the message of vpopmaild.msg; lines end in CRLF.  Verbs are
  case-insensitive; tokens are split on space, tab, CR and LF, passwords
  on CR and LF only (they may contain spaces).

  Before login only login, clogin, slogin, help, exit, quit and q are
  known (`-ERR 4.104 Invalid Command`).  The 5th command before a
  successful login gets `-ERR 5.102 Too many invalid login attempts` and
  the connection ends; so does a 4th failed login (`-ERR 5.105 ...`).
  `login user@domain password` answers the user's block (`+OK+`,
  vpopmail_dir, domain_dir, uid, gid, name ... system_admin_privileges,
  `.`), `clogin` the same with one `gidflags N` line for the 18 flag lines,
  `slogin` only `+OK `.  Failures: 6.203 no address, 7.204 no password,
  8.205 bad characters, 8.206 no such user, 8.207 wrong password.
  Rights: SA_ADMIN -> level 3 (system), QA_ADMIN or the name `postmaster`
  -> level 2 (domain; QA_ADMIN is ORed into the session's copy), else 1.
  After login a command needs its level (COMMANDS below), else
  `-ERR 4.107 Invalid Command`; most commands check the rights again
  (`-ERR 9.x Not Authorized`, `-ERR 11.x Not Authorized for domain`).

  Commands: user_info, list_domains, find_domain, domain_count,
  add_alias_domain, add_domain, del_domain, dom_info, get_limits,
  set_limits, del_limits, get_domain_size, add_user, del_user, user_count,
  list_users, list_lists, mod_user, get_lastauth, get_user_size, mk_dir,
  rm_dir, list_dir, rm_file, rename_file, write_file, read_file, stat_file,
  get_ip_map/add_ip_map/del_ip_map/show_ip_map (`-ERR 33.x Not Available`:
  no IP_ALIAS_DOMAINS), add_list/del_list/mod_list (`-ERR 36.x Not
  Implemented yet`), add_alias/remove_alias/delete_alias/list_alias (the
  store's valias), help, exit/quit/q.  Replies and quirks as vpopmaild.c: `+OK ` with a space,
  `-ERR 0,405` from del_user, `-ERR 38xx`/`39xx` without a dot from the
  size commands, get_limits sends its perm_defaultquota line twice, the
  skipped users of a list_users page still get their empty line,
  list_alias of an address without aliases answers `.` alone.
  qtools refuses a mod_user encrypted_password holding ':' (it would shift
  the fields of a vpasswd line) with `-ERR 0.507 bad character`, changing
  nothing.

Limits: a line longer than 2048 bytes (with its CRLF) or holding a NUL is
not a command (`-ERR 4.104`/`4.107 Invalid Command`; before login it counts
as a command); the rest of an overlong line is discarded, never buffered.
Each read waits at most $VPOPMAILD_TIMEOUT seconds (default 60): then
`-ERR 3.103 Read Timeout` (before login) or `-ERR 3.106 Read Timeout`
(after) and the connection ends.  End of file is taken as a timeout, as
vpopmaild's fgets() loop does.  mod_user, set_limits and write_file data
lines are read under the same rules, one line at a time.

Privileges (qtools): started as root, vpopmaild forks a monitor that
keeps root and drops itself to the vpopmail user (else the owner of
$VPOPMAILHOME, admin.vpopmail_ids(); a root-owned $VPOPMAILHOME with no
vpopmail user is refused) before the banner is sent.  add_domain,
del_domain and add_alias_domain are then fixed requests to the monitor
(see qtools.vpopmail.privsep).  Started as another user, everything runs
in one process with that user's rights.

Store: qtools.vpopmail.store (cdb files or MySQL/MariaDB), opened before
the privileges are dropped.  A store that cannot answer (database down)
gets `-ERR 1.101 Can't open authentication database` for that command;
the session goes on.  An unreadable store configuration at start: the same
reply, then exit.

At the end of a session the connection is half-closed and what the client
still sends is read and dropped for up to 2 seconds, so that the last reply
is not lost to a TCP reset.

Exit codes: 0 after quit; 255 after a timeout, end of file, too many
commands or failed logins (vpopmaild's exit(-1)); 111 when the session
cannot be set up.
"""
import errno
import os

from qtools.vpopmail import store as S

PROG = "vpopmaild"
USAGE = "vpopmaild"
FAST_EXIT = True

OK = b"+OK \r\n"
OK_MORE = b"+OK+\r\n"
DOT = b".\r\n"
CRLF = b"\r\n"
TOKENS = " \n\t\r"
PASS_TOKENS = "\n\r"
PARAM_TOKENS = " =:\n\r"
MAXLINE = 2048
LOGIN_FAILURES = 3          # vpopmaild.c LOGIN_FAILURES
LOGIN_ACTIVITY = 4          # vpopmaild.c LOGIN_ACTIVITY
READ_TIMEOUT = 60

# vpopmaild.msg ErrorMessages[], word for word (index = major); 38 is qtools'
ERRMSG = (
    "Dummy entry so it starts with 1", "Can't open authentication database",
    "Too many actions before login", "Read Timeout", "Invalid Command",
    "Too many invalid login attempts", "Email Address Required", "Password Required",
    "Invalid Login", "Not Authorized", "Invalid Email Address", "Not Authorized for domain",
    "User does not exist", "Domain Required", "Alias Name Required",
    "Invalid Alias Name Supplied", "Alias Line Required", "Alias Insertion Failed",
    "Alias Removal Failed", "Alias Deletion Failed",
    "Invalid Directory.  .. not allowed in path", "Invalid Directory.  % not allowed in path",
    "Invalid Directory.  Do you need a trailing '/'?", "Invalid Directory. Found / before @",
    "Invalid Directory. Can't parse email address", "Invalid Directory. Unknown email address",
    "Unauthorized Directory.", "Directory Required.", "Source File Name Required",
    "Destination File Name Required", "Filename Required", "Could not open assign file",
    "IP Required", "Not Available", "Could not get limits", "Could not set limits",
    "Not Implemented yet", "Cannot determine my UID or GID", "Invalid domain name")
ERR_CANT_OPEN_AUTH, ERR_TOO_MANY_ACTION, ERR_RD_TIMEOUT, ERR_INVALID_COMMAND = 1, 2, 3, 4
ERR_TOO_MANY_LOGIN, ERR_EMAIL_REQD, ERR_PASSWORD_REQD, ERR_INVALID_LOGIN = 5, 6, 7, 8
ERR_NOT_AUTHORIZED, ERR_INVALID_EMAIL, ERR_NOT_AUTH_DOMAIN, ERR_NO_USER = 9, 10, 11, 12
ERR_DOMAIN_REQD, ERR_ALIAS_REQD, ERR_INVALID_ALIAS, ERR_ALIAS_LINE_REQD = 13, 14, 15, 16
ERR_ALIAS_INSERT_FAIL, ERR_ALIAS_REMOVE_FAIL, ERR_ALIAS_DELETE_FAIL = 17, 18, 19
ERR_INVALID_DIR_DOTDOT, ERR_INVALID_DIR_PCT, ERR_INVALID_DIR_SLASH = 20, 21, 22
ERR_INVALID_DIR_AT, ERR_INVALID_DIR_PARSE, ERR_INVALID_DIR_UNK = 23, 24, 25
ERR_UNAUTH_DIR, ERR_DIR_REQD, ERR_SOURCE_REQD, ERR_DEST_REQD, ERR_FNAME_REQD = 26, 27, 28, 29, 30
ERR_NO_OPEN_ASSIGN, ERR_NOT_AVAIL, ERR_NO_GET_LIMITS, ERR_NO_SET_LIMITS = 31, 33, 34, 35
ERR_NOT_IMPLEMENT, ERR_INVALID_DOMAIN = 36, 38


def err(major, minor):
    """show_error(): `-ERR major.minor message`."""
    return b"-ERR %d.%03d %s\r\n" % (major, minor, ERRMSG[major].encode())


def err0(minor, text):
    """A library error: `-ERR 0.<minor> <verror text>`."""
    return b"-ERR 0.%d %s\r\n" % (minor, _b(text))


TEMPFAIL = err(ERR_CANT_OPEN_AUTH, 101)

# send_user_info(): the 18 flag lines, in order
FLAG_LINES = (("no_password_change", S.NO_PASSWD_CHNG), ("no_pop", S.NO_POP),
              ("no_webmail", S.NO_WEBMAIL), ("no_imap", S.NO_IMAP),
              ("bounce_mail", S.BOUNCE_MAIL), ("no_relay", S.NO_RELAY),
              ("no_dialup", S.NO_DIALUP), ("user_flag_0", S.V_USER0),
              ("user_flag_1", S.V_USER1), ("user_flag_2", S.V_USER2),
              ("user_flag_3", S.V_USER3), ("no_smtp", S.NO_SMTP),
              ("domain_admin_privileges", S.QA_ADMIN),
              ("override_domain_limits", S.V_OVERRIDE),
              ("no_spamassassin", S.NO_SPAMASSASSIN), ("delete_spam", S.DELETE_SPAM),
              ("no_maildrop", S.NO_MAILDROP), ("system_admin_privileges", S.SA_ADMIN))

# mod_user keys: who may set them ("any"; "over" = SA, or QA with
# V_OVERRIDE; "sa"; "adm" = SA or QA), vpopmaild.c mod_user()
MOD_FLAGS = {"no_password_change": (S.NO_PASSWD_CHNG, "over"), "no_pop": (S.NO_POP, "over"),
             "no_webmail": (S.NO_WEBMAIL, "over"), "no_imap": (S.NO_IMAP, "over"),
             "bounce_mail": (S.BOUNCE_MAIL, "over"), "no_relay": (S.NO_RELAY, "over"),
             "no_dialup": (S.NO_DIALUP, "over"), "user_flag_0": (S.V_USER0, "over"),
             "user_flag_1": (S.V_USER1, "over"), "user_flag_2": (S.V_USER2, "any"),
             "user_flag_3": (S.V_USER3, "any"), "no_smtp": (S.NO_SMTP, "over"),
             "system_admin_privileges": (S.SA_ADMIN, "sa"),
             "system_expert_privileges": (S.SA_EXPERT, "sa"),
             "domain_admin_privileges": (S.QA_ADMIN, "adm"),
             "override_domain_limits": (S.V_OVERRIDE, "sa"),
             "no_spamassassin": (S.NO_SPAMASSASSIN, "any"),
             "delete_spam": (S.DELETE_SPAM, "any"), "no_maildrop": (S.NO_MAILDROP, "any")}

# get_limits / set_limits names -> store.Limits keys
LIMIT_VALUES = (("max_popaccounts", "maxpopaccounts"), ("max_aliases", "maxaliases"),
                ("max_forwards", "maxforwards"), ("max_autoresponders", "maxautoresponders"),
                ("max_mailinglists", "maxmailinglists"), ("disk_quota", "diskquota"),
                ("max_msgcount", "maxmsgcount"), ("default_quota", "defaultquota"),
                ("default_maxmsgcount", "defaultmaxmsgcount"))
LIMIT_FLAGS = (("disable_pop", "disable_pop"), ("disable_imap", "disable_imap"),
               ("disable_dialup", "disable_dialup"),
               ("disable_password_changing", "disable_passwordchanging"),
               ("disable_webmail", "disable_webmail"),
               ("disable_external_relay", "disable_relay"), ("disable_smtp", "disable_smtp"),
               ("disable_spamassassin", "disable_spamassassin"),
               ("delete_spam", "delete_spam"), ("disable_maildrop", "disable_maildrop"))
LIMIT_PERMS = ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder",
               "perm_maillist", "perm_quota", "perm_defaultquota")


def _b(s):
    return s.encode("utf-8", "surrogateescape")


def atoi(s):
    """C atoi(): optional blanks and sign, then digits."""
    s = s.lstrip(" \t")
    sign = -1 if s[:1] == "-" else 1
    if s[:1] in "+-":
        s = s[1:]
    n = 0
    for c in s[:18]:
        if not "0" <= c <= "9":
            break
        n = n * 10 + ord(c) - 48
    return sign * n


class Tok:
    """strtok(3) over one line: each call skips leading delimiters, takes
    the token up to the next delimiter and consumes that one delimiter."""

    def __init__(self, s):
        self.s, self.i = s, 0

    def next(self, delims):
        s, i, n = self.s, self.i, len(self.s)
        while i < n and s[i] in delims:
            i += 1
        if i >= n:
            self.i = n
            return None
        j = i
        while j < n and s[j] not in delims:
            j += 1
        self.i = j + 1 if j < n else n
        return s[i:j]


class Exit(Exception):
    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


TOOLONG = object()          # an overlong line (discarded) or one with a NUL


class Conn:
    """fd 0 / fd 1: bounded line reads with a timeout, buffered replies."""

    def __init__(self, rfd, wfd, timeout):
        self.rfd, self.wfd, self.timeout = rfd, wfd, timeout
        self.buf = bytearray()
        self.eof = False
        self.out = []
        self.outlen = 0
        for fd in {rfd, wfd}:
            os.set_blocking(fd, False)

    def send(self, data):
        self.out.append(data)
        self.outlen += len(data)
        if self.outlen >= 65536:
            self.flush()

    def flush(self):
        import select
        data = b"".join(self.out)
        self.out, self.outlen = [], 0
        view = memoryview(data)
        p = select.poll()
        p.register(self.wfd, select.POLLOUT)
        while view:
            try:
                view = view[os.write(self.wfd, view):]
                continue
            except BlockingIOError:
                pass
            except InterruptedError:
                continue
            except OSError:
                raise Exit(255)                     # the client is gone
            if not p.poll(self.timeout * 1000):
                raise Exit(255)

    def linger(self, seconds=2.0, most=65536):
        """The end of a session: half-close, then read and drop what the
        client still sends (bounded in time and bytes).  Closing with unread
        input would send a reset, which can destroy the last reply before the
        client reads it (after `-ERR 5.102` the 5th command is unread)."""
        import select
        import socket
        import time
        try:
            s = socket.socket(fileno=os.dup(self.wfd))
        except OSError:
            return                                  # not a socket
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return
        finally:
            s.close()
        deadline = time.monotonic() + seconds
        p = select.poll()
        p.register(self.rfd, select.POLLIN)
        while most > 0:
            left = deadline - time.monotonic()
            if left <= 0 or not p.poll(int(left * 1000) + 1):
                return
            try:
                data = os.read(self.rfd, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data:
                return
            most -= len(data)

    def readline(self, timeout_minor):
        """One line without its LF; TOOLONG; on timeout or end of file the
        Read Timeout reply and Exit (vpopmaild's wait_read())."""
        import select
        import time
        self.flush()
        deadline = time.monotonic() + self.timeout
        discard = False
        p = select.poll()
        p.register(self.rfd, select.POLLIN)
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                if discard or i + 1 > MAXLINE or b"\0" in line:
                    return TOOLONG
                return line
            if len(self.buf) >= MAXLINE:
                discard = True
                self.buf.clear()
            if self.eof:
                if self.buf and not discard:       # fgets() returns a last partial line
                    line = bytes(self.buf)
                    self.buf.clear()
                    return TOOLONG if b"\0" in line else line
                if discard:
                    return TOOLONG
                break
            left = deadline - time.monotonic()
            if left <= 0 or not p.poll(max(1, int(left * 1000))):
                if time.monotonic() >= deadline:
                    break
                continue
            try:
                data = os.read(self.rfd, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self.eof = True
            else:
                self.buf += data
        self.send(err(ERR_RD_TIMEOUT, timeout_minor))
        self.flush()
        raise Exit(255)


def read_text(conn, minor):
    """A data line as text (None for TOOLONG)."""
    line = conn.readline(minor)
    if line is TOOLONG:
        return None
    return line.decode("utf-8", "surrogateescape") + "\n"


class Session:
    def __init__(self, conn, st, priv):
        self.conn, self.st, self.priv = conn, st, priv
        self.level = 0                  # 0 none, 1 user, 2 domain, 3 system
        self.output_type = 0            # 0 full, 1 compact, 2 silent
        self.auth = None                # AuthVpw, the logged-in user (gid with QA ORed in)
        self.user = self.domain = ""    # TheUser, TheDomain
        self.user_dir = self.domain_dir = ""
        self.vpopmail_domains = os.path.join(S.vpopmailhome(), "domains")
        self.path_top = None

    def send(self, data):
        self.conn.send(data)

    def line(self, text):
        self.conn.send(_b(text) + CRLF)

    # -- rights, as vpopmaild.c tests them
    def sa(self):
        return bool(self.auth.gid & S.SA_ADMIN)

    def qa(self):
        return bool(self.auth.gid & S.QA_ADMIN)

    def admin(self):
        return self.sa() or self.qa()

    def other_domain(self, domain):
        """A domain admin (not SA) naming a domain not its own."""
        return not self.sa() and self.qa() and domain != self.domain

    # -- the store
    def assign(self, domain):
        if not domain or len(domain) > S.MAX_PW_DOMAIN or not S.domain_valid(domain):
            return None
        return S.get_assign(domain.lower())

    def getpw(self, user, domain):
        """vauth_getpw(): (pw, assign) or (None, None)."""
        a = self.assign(domain)
        if a is None:
            return None, None
        pw = self.st.getpw(user, a.domain)
        return (pw, a) if pw is not None else (None, None)

    def email(self, text):
        """parse_email(): (user, domain) or None."""
        if len(text) > 2 * S.MAX_PW_DOMAIN:
            return None
        try:
            return S.parse_email(text)
        except S.StoreError:
            return None

    def send_user_info(self, pw):
        out = ["name %s" % pw.name, "comment %s" % pw.gecos, "quota %s" % pw.shell,
               "user_dir %s" % pw.dir, "encrypted_password %s" % pw.passwd,
               "clear_text_password %s" % pw.clear]
        if self.output_type > 0:
            out.append("gidflags %i" % pw.gid)
        else:
            out += ["%s %d" % (k, 1 if pw.gid & bit else 0) for k, bit in FLAG_LINES]
        self.send(b"".join(_b(x) + CRLF for x in out))

    # -- the states
    def before_login(self):
        """Until a successful login; False if the session ended."""
        attempts = failures = 0
        while True:
            attempts += 1
            if attempts > LOGIN_ACTIVITY:
                self.send(err(ERR_TOO_MANY_LOGIN, 102))
                raise Exit(255)
            line = self.conn.readline(103)
            if line is TOOLONG:
                self.send(err(ERR_INVALID_COMMAND, 104))
                continue
            tok = Tok(line.decode("utf-8", "surrogateescape"))
            verb = tok.next(TOKENS)
            if verb is None:
                continue                            # a blank line (still counted)
            entry = LOGIN_COMMANDS.get(verb.lower())
            if entry is None:
                self.send(err(ERR_INVALID_COMMAND, 104))
                continue
            status = self.run(entry, tok)
            if status == -2:
                failures += 1
                if failures > LOGIN_FAILURES:
                    self.send(err(ERR_TOO_MANY_LOGIN, 105))
                    raise Exit(255)
            elif status == 0:
                return

    def logged_in(self):
        while True:
            line = self.conn.readline(106)
            if line is TOOLONG:
                self.send(err(ERR_INVALID_COMMAND, 107))
                continue
            tok = Tok(line.decode("utf-8", "surrogateescape"))
            verb = tok.next(TOKENS)
            if verb is None:
                continue
            entry = COMMANDS.get(verb.lower())
            if entry is None or self.level < entry[0]:
                self.send(err(ERR_INVALID_COMMAND, 107))
                continue
            self.run(entry, tok)

    def run(self, entry, tok):
        """Call a handler; a store that cannot answer is one -ERR reply."""
        try:
            return entry[1](self, tok)
        except Exit:
            raise
        except S.TempFail as e:
            _warn("%s: %s" % (entry[2], e))
            self.send(TEMPFAIL)
        except S.StoreError as e:
            self.send(err0(entry[3], str(e)))
        except OSError as e:
            from qtools.lib import strerr
            self.send(err0(entry[3], strerr.errstr(e)))
        except Exception as e:                      # noqa: BLE001 - a reply, never a dead session
            _warn("%s: internal error: %s: %s" % (entry[2], type(e).__name__, e))
            self.send(TEMPFAIL)
        return -1


def _warn(text):
    try:
        os.write(2, ("vpopmaild: warning: %s\n" % text).encode("utf-8", "replace"))
    except OSError:
        pass


# -- the login phase ----------------------------------------------------------
def login_as(output_type):
    def login(s, tok):
        """0 logged in, -1 missing argument, -2 invalid login."""
        s.output_type = output_type
        email = tok.next(TOKENS)
        if email is None:
            s.send(err(ERR_EMAIL_REQD, 203))
            return -1
        password = tok.next(PASS_TOKENS)
        if password is None:
            s.send(err(ERR_PASSWORD_REQD, 204))
            return -1
        ud = s.email(email)
        if ud is None:
            s.send(err(ERR_INVALID_LOGIN, 205))
            return -2
        pw, a = s.getpw(*ud)
        if pw is None:
            s.send(err(ERR_INVALID_LOGIN, 206))
            return -2
        if not S.check_password(_b(password), pw.passwd):
            s.send(err(ERR_INVALID_LOGIN, 207))
            return -2
        s.auth, (s.user, s.domain) = pw, ud
        s.user_dir, s.domain_dir = pw.dir, a.dir
        if pw.gid & S.SA_ADMIN:
            s.level = 3
        elif pw.gid & S.QA_ADMIN or pw.name == "postmaster":
            pw.gid |= S.QA_ADMIN
            s.level = 2
        else:
            s.level = 1
        if output_type < 2:
            s.send(OK_MORE)
            s.line("vpopmail_dir %s" % S.vpopmailhome())
            s.line("domain_dir %s" % a.dir)
            s.line("uid %d" % a.uid)
            s.line("gid %d" % a.gid)
            s.send_user_info(pw)
            s.send(DOT)
        else:
            s.send(OK)
        return 0
    return login


def quit_(s, tok):
    s.send(OK)
    s.conn.flush()
    raise Exit(0)


def help_rows(s, rows, level):
    s.send(OK_MORE)
    for lvl, name, fn, text in rows:
        if level >= lvl:
            if text is None:
                s.send(CRLF + _b(name) + CRLF)
            else:
                s.line("%s %s" % (name, text))
    s.send(DOT)
    return 1


def login_help(s, tok):
    return help_rows(s, LOGIN_ROWS, 99)


def help_(s, tok):
    return help_rows(s, ROWS, s.level)


# -- users --------------------------------------------------------------------
def email_arg(s, tok, reqd, invalid, other, other_err=ERR_NOT_AUTH_DOMAIN):
    """The common head: rights, address, parse, own domain; (user, domain)."""
    if not s.admin():
        s.send(err(ERR_NOT_AUTHORIZED, reqd - 1))
        return None
    email = tok.next(TOKENS)
    if email is None:
        s.send(err(ERR_EMAIL_REQD, reqd))
        return None
    ud = s.email(email)
    if ud is None:
        s.send(err(ERR_INVALID_EMAIL, invalid))
        return None
    if s.other_domain(ud[1]):
        s.send(err(other_err, other))
        return None
    return ud


def add_user(s, tok):
    ud = email_arg(s, tok, 302, 303, 304)
    if ud is None:
        return -1
    password = tok.next(PASS_TOKENS)
    if password is None:
        s.send(err(ERR_PASSWORD_REQD, 305))
        return -1
    from qtools.vpopmail import admin
    try:
        admin.vadduser(s.st, ud[0], ud[1], password, gecos=ud[0])
    except S.StoreError as e:
        s.send(err0(305, S.verror(e.code)))
        return -1
    s.send(OK)
    return 0


def del_user(s, tok):
    ud = email_arg(s, tok, 402, 403, 404, ERR_NOT_AUTHORIZED)
    if ud is None:
        return -1
    from qtools.vpopmail import admin
    try:
        admin.vdeluser(s.st, ud[0], ud[1])
    except S.StoreError as e:
        s.send(b"-ERR 0,405 %s\r\n" % _b(S.verror(e.code)))    # sic: vpopmaild.c
        return -1
    s.send(OK)
    return 0


def user_info(s, tok):
    ud = email_arg(s, tok, 602, 603, 604)
    if ud is None:
        return -1
    pw, _ = s.getpw(*ud)
    if pw is None:
        s.send(err(ERR_NO_USER, 605))
        return -1
    s.send(OK_MORE)
    s.send_user_info(pw)
    s.send(DOT)
    return 0


def mod_user(s, tok):
    from qtools.vpopmail import admin
    email = tok.next(TOKENS)
    if email is None:
        s.send(err(ERR_EMAIL_REQD, 501))
        return -1
    ud = s.email(email)
    if ud is None:
        s.send(err(ERR_INVALID_EMAIL, 502))
        return -1
    if not s.sa() and s.qa():
        if ud[1] != s.domain:
            s.send(err(ERR_NOT_AUTH_DOMAIN, 503))
            return -1
    elif not s.sa():                                # a user: only itself
        if ud[1] != s.domain or ud[0] != s.user:
            s.send(err(ERR_NOT_AUTH_DOMAIN, 504))
            return -1
    pw, a = s.getpw(*ud)
    if pw is None:
        s.send(err(ERR_NO_USER, 505))
        for _ in param_block(s, PASS_TOKENS):       # skip the client's lines up to "."
            pass
        return -1
    over = s.sa() or (s.qa() and s.auth.gid & S.V_OVERRIDE)
    may = {"any": True, "over": over, "sa": s.sa(), "adm": s.admin()}
    s.send(OK)
    bad = 0
    for param, value in param_block(s, PASS_TOKENS):
        if value is None:
            continue
        if param == "comment":
            pw.gecos = value
        elif param == "quota" and over:
            pw.shell = S.format_maildirquota(value)
            admin.update_maildirsize(a, pw.dir, pw.shell)
        elif param == "encrypted_password":
            # qtools: a ':' would shift the fields of a vpasswd line (a
            # user could write its own flag bits); vpopmaild.c stores it
            if ":" in value or len(value) > S.MAX_PW_PASS:
                bad = bad or (S.VA_BAD_CHAR if ":" in value else S.VA_PASSWD_TOO_LONG)
            else:
                pw.passwd = value
        elif param == "clear_text_password" and not pw.flags & S.NO_PASSWD_CHNG:
            if len(_b(value)) > S.MAX_PW_CLEAR_PASSWD:
                bad = bad or S.VA_CLEAR_PASSWD_TOO_LONG
            else:
                pw.clear = value
                pw.passwd = S.mkpasswd(value)
        elif param == "clear_all_flags" and over:
            pw.gid = 0
        elif param in MOD_FLAGS and may[MOD_FLAGS[param][1]]:
            bit = MOD_FLAGS[param][0]
            v = atoi(value)
            if v == 1:
                pw.gid |= bit
            elif v == 0:
                pw.gid &= ~bit
    try:
        if bad:
            raise S.StoreError(bad)                 # nothing is changed
        if len(pw.gecos) > S.MAX_PW_GECOS:
            raise S.StoreError(S.VA_GECOS_TOO_LONG)
        s.st.setpw(pw, a.domain)
    except S.StoreError as e:
        s.send(err0(507, S.verror(e.code)))
        return 0
    s.send(OK)
    return 0


def param_block(s, value_tokens):
    """The client's `param value` lines up to the one starting with ".", as
    (param, value or None); lines without a param are passed over."""
    while True:
        text = read_text(s.conn, 106)
        if text is None:
            continue
        if text.startswith("."):
            return
        t = Tok(text)
        param = t.next(PARAM_TOKENS)
        if param is not None:
            yield param, t.next(value_tokens)


def get_lastauth(s, tok):
    ud = email_arg(s, tok, 3702, 3703, 3704)
    if ud is None:
        return -1
    pw, a = s.getpw(*ud)
    if pw is None:
        s.send(err(ERR_NO_USER, 3705))
        return -1
    t, ip = s.st.get_lastauth(pw, a.domain)
    s.send(OK_MORE)
    s.line("time %d" % t)
    s.line("ip %s" % (ip or S.NULL_REMOTE_IP))
    s.send(DOT)
    return 0


def size_head(s, tok, base, what):
    """get_user_size / get_domain_size: their own error forms."""
    if not s.admin():
        s.send(b"-ERR %d01 not authorized\r\n" % base)
        return None
    arg = tok.next(TOKENS)
    if arg is None:
        s.send(b"-ERR %d02 %s required\r\n" % (base, what))
        return None
    return arg


def get_user_size(s, tok):
    from qtools.vpopmail import admin
    email = size_head(s, tok, 38, b"email_address")
    if email is None:
        return -1
    ud = s.email(email)
    if ud is None:
        s.send(b"-ERR 3803 invalid email address\r\n")
        return -1
    if s.other_domain(ud[1]):
        s.send(b"-ERR 3804 not authorized for domain\r\n")
        return -1
    pw, _ = s.getpw(*ud)
    if pw is None:
        s.send(b"-ERR 3805 user does not exist\r\n")
        return -1
    size, count = admin.maildir_usage(os.path.join(pw.dir, "Maildir"))
    s.send(OK_MORE)
    s.line("size %d" % size)
    s.line("count %d" % count)
    s.send(DOT)
    return 0


def get_domain_size(s, tok):
    from qtools.vpopmail import admin
    domain = size_head(s, tok, 39, b"domain")
    if domain is None:
        return -1
    if s.other_domain(domain):
        s.send(b"-ERR 3903 not authorized for domain\r\n")
        return -1
    users = domain_users(s, domain)
    s.send(OK_MORE)
    total = tcount = 0
    for pw in users:
        size, count = admin.maildir_usage(os.path.join(pw.dir, "Maildir"))
        s.line("user %s@%s" % (pw.name, domain))
        s.line("size %d" % size)
        s.line("count %d" % count)
        total += size
        tcount += count
    s.line("domain %s" % domain)
    s.line("size %d" % total)
    s.line("count %d" % tcount)
    s.send(DOT)
    return 0


def domain_users(s, domain):
    """vauth_getall(domain): every user of the (real) domain."""
    a = s.assign(domain)
    return s.st.getall(a.domain) if a is not None else []


def domain_head(s, tok, minor_reqd, minor_other, reqd=ERR_DOMAIN_REQD):
    if not s.admin():
        s.send(err(ERR_NOT_AUTHORIZED, minor_reqd - 1))
        return None
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(reqd, minor_reqd))
        return None
    if s.other_domain(domain):
        s.send(err(ERR_NOT_AUTH_DOMAIN, minor_other))
        return None
    return domain


def page_args(tok):
    """[page per_page] -> (start, end); end 0 means everything."""
    page = per = 0
    t = tok.next(TOKENS)
    if t is not None:
        page = max(0, atoi(t))
        t = tok.next(TOKENS)
        if t is not None:
            per = max(0, atoi(t))
    if page > 0 and per > 0:
        return (page - 1) * per, page * per
    return 0, 0


def user_count(s, tok):
    domain = domain_head(s, tok, 2602, 2603)
    if domain is None:
        return -1
    n = len(domain_users(s, domain))
    s.send(OK_MORE)
    s.line("count %i" % n)
    s.send(DOT)
    return 0


def list_users(s, tok):
    domain = domain_head(s, tok, 2702, 2703, ERR_EMAIL_REQD)
    if domain is None:
        return -1
    start, end = page_args(tok)
    users = domain_users(s, domain)
    s.send(OK_MORE)
    for count, pw in enumerate(users):
        if end > 0:
            if count >= end:
                break
            if count >= start:
                s.send_user_info(pw)
        else:
            s.send_user_info(pw)
        s.send(CRLF)                    # sic: skipped users still get their empty line
    s.send(DOT)
    return 0


def list_lists(s, tok):
    domain = domain_head(s, tok, 2902, 2903, ERR_EMAIL_REQD)
    if domain is None:
        return -1
    a = s.assign(domain)
    if a is None:
        s.send(err(ERR_NOT_AUTH_DOMAIN, 2904))
        return -1
    start, end = page_args(tok)
    try:
        names = sorted(os.listdir(a.dir), key=lambda n: n.lower())
    except OSError as e:
        from qtools.lib import strerr
        s.send(err0(2905, strerr.errstr(e)))
        return -1
    s.send(OK_MORE)
    count = 0
    for n in names:
        if not n.startswith(".qmail-"):
            continue
        try:
            with open(os.path.join(a.dir, n), "rb") as f:
                first = f.readline(1024)
        except OSError:
            continue
        if b"ezmlm-reject" not in first:
            continue
        if end > 0:
            if count >= end:
                break
            if count >= start:
                s.line(n)
        else:
            s.line(n)
        count += 1
    s.send(DOT)
    return 0


# -- domains ------------------------------------------------------------------
def sa_head(s, minor):
    if not s.sa():
        s.send(err(ERR_NOT_AUTHORIZED, minor))
        return False
    return True


def entries(s, minor, real=""):
    """get_domain_entries(); None (and the reply) when there are none."""
    from qtools.vpopmail import admin
    e = admin.domain_entries(real)
    if not e and not real:
        s.send(err(ERR_NO_OPEN_ASSIGN, minor))
        return None
    return e


def list_domains(s, tok):
    if not sa_head(s, 2301):
        return -1
    start, end = page_args(tok)
    e = entries(s, 2302)
    if e is None:
        return -1
    s.send(OK_MORE)
    for count, (dom, real, _, _, _) in enumerate(e):
        if end > 0 and count >= end:
            break
        if end == 0 or count >= start:
            s.line("%s %s" % (real, dom))
    s.send(DOT)
    return 0


def find_domain(s, tok):
    if not sa_head(s, 2401):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 2402))
        return -1
    t = tok.next(TOKENS)
    per = atoi(t) if t is not None else 0
    e = entries(s, 2403)
    if e is None:
        return -1
    s.send(OK_MORE)
    for count, entry in enumerate(e):
        if entry[0] == domain:
            s.line("page %i" % ((count // per) + 1 if per > 0 else count + 1))
            break
    s.send(DOT)
    return 0


def domain_count(s, tok):
    if not sa_head(s, 2501):
        return -1
    e = entries(s, 2502)
    if e is None:
        return -1
    s.send(OK_MORE)
    s.line("count %i" % len(e))
    s.send(DOT)
    return 0


def monitor_answer(s, answer, minor):
    """The privileged helper's answer as a reply."""
    if answer == b"ok":
        s.send(OK)
        return 0
    if answer.startswith(b"err "):
        f = answer.split()
        code = atoi(f[2].decode()) if len(f) > 2 else S.VA_COULD_NOT_UPDATE_FILE
        s.send(err0(atoi(f[1].decode()), S.verror(code)))
    elif answer == b"refused":
        s.send(err0(minor, S.verror(S.VA_INVALID_DOMAIN_NAME)))
    else:
        s.send(TEMPFAIL)
    return -1


def domain_syntax(domain):
    return (0 < len(domain) <= S.MAX_PW_DOMAIN and S.domain_valid(domain)
            and domain[0] not in ".-" and ".." not in domain)


def add_domain(s, tok):
    from qtools.vpopmail import admin
    if not sa_head(s, 801):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 802))
        return -1
    password = tok.next(PASS_TOKENS)
    if password is None:
        s.send(err(ERR_PASSWORD_REQD, 803))
        return -1
    try:
        admin.check_new_domain(domain.lower())
        if len(_b(password)) > S.MAX_PW_CLEAR_PASSWD:
            raise S.StoreError(S.VA_PASSWD_TOO_LONG)
    except S.StoreError as e:
        s.send(err0(804 if e.code != S.VA_PASSWD_TOO_LONG else 805, S.verror(e.code)))
        return -1
    return monitor_answer(s, s.priv.call("adddomain", domain.lower(), password), 804)


def del_domain(s, tok):
    if not sa_head(s, 1301):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 1302))
        return -1
    if not domain_syntax(domain):
        s.send(err0(1303, S.verror(S.VA_INVALID_DOMAIN_NAME
                                   if len(domain) <= S.MAX_PW_DOMAIN
                                   else S.VA_DOMAIN_NAME_TOO_LONG)))
        return -1
    return monitor_answer(s, s.priv.call("deldomain", domain.lower()), 1303)


def add_alias_domain(s, tok):
    if not sa_head(s, 1201):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 1202))
        return -1
    alias = tok.next(TOKENS)
    if alias is None:
        s.send(err(ERR_ALIAS_REQD, 1203))
        return -1
    if not domain_syntax(domain) or not domain_syntax(alias):
        s.send(err0(1204, S.verror(S.VA_INVALID_DOMAIN_NAME)))
        return -1
    return monitor_answer(s, s.priv.call("addaliasdomain", alias.lower(), domain.lower()),
                          1204)


def dom_info(s, tok):
    if not sa_head(s, 1401):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 1402))
        return -1
    from qtools.vpopmail import admin
    e = admin.domain_entries(domain)
    if not e:
        s.send(err0(1404, S.verror(S.VA_DOMAIN_DOES_NOT_EXIST)))
        return 0
    s.send(OK_MORE)
    aliases = []
    for dom, real, uid, gid, path in e:
        if dom != real:
            aliases.append(dom)
        else:
            s.line("domain %s" % dom)
            s.line("path %s" % path)
            s.line("uid %i" % uid)
            s.line("gid %i" % gid)
    for x in aliases:
        s.line("alias %s" % x)
    s.send(DOT)
    return 0


# -- limits -------------------------------------------------------------------
def get_limits(s, tok):
    if not sa_head(s, 3401):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 3402))
        return -1
    a = s.assign(domain)
    lim = s.st.get_limits(a.domain if a else domain.lower())
    v = lim.values
    s.send(OK_MORE)
    for name, key in LIMIT_VALUES:
        s.line("%s %d" % (name, v.get(key, 0)))
    for name, key in LIMIT_FLAGS:
        s.line("%s %d" % (name, 1 if v.get(key) else 0))
    for name in LIMIT_PERMS:
        s.line("%s %d" % (name, lim.quota_perms() if name == "perm_quota" else v.get(name, 0)))
    s.line("perm_defaultquota %d" % v.get("perm_defaultquota", 0))   # sic: sent twice
    s.send(DOT)
    return 0


def set_limits(s, tok):
    """`+OK `, then `key value` lines up to `.` applied to the domain's
    limits (vget_limits), then stored (vset_limits)."""
    if not sa_head(s, 3501):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 3502))
        return -1
    a = s.assign(domain)
    if a is None:
        s.send(err(ERR_NO_GET_LIMITS, 3505))
        return -1
    lim = s.st.get_limits(a.domain)
    keys = dict(LIMIT_VALUES)
    keys.update(LIMIT_FLAGS)
    keys.update((k, k) for k in S.Limits.PERMS)
    s.send(OK)
    for param, value in param_block(s, PARAM_TOKENS):
        if value is None:
            s.send(b"  Warning: missing value\r\n")
        elif param in keys:
            lim.values[keys[param]] = atoi(value)
        else:
            s.send(b"  Warning: invalid option\r\n")
    try:
        s.st.set_limits(a.domain, lim)
    except (S.StoreError, OSError):
        s.send(err(ERR_NO_SET_LIMITS, 3504))
        return 0
    s.send(OK)
    return 0


def del_limits(s, tok):
    if not sa_head(s, 3601):
        return -1
    domain = tok.next(TOKENS)
    if domain is None:
        s.send(err(ERR_DOMAIN_REQD, 3602))
        return -1
    if not domain_syntax(domain):
        s.send(b"-ERR 0.3603 %s.\r\n" % _b(S.verror(S.VA_INVALID_DOMAIN_NAME)))
        return -1
    s.st.del_limits(domain.lower())
    s.send(OK)
    return 0


# -- the file system ------------------------------------------------------------
def validate_path(s, path):
    """validate_path(): the path, a domain or an address mapped to its
    directory; None after the error reply.  qtools also requires the
    resolved path (symbolic links followed) to stay inside the caller's
    tree: domains/ (SA), its domain's directory (QA), its own (user)."""
    from qtools.vpopmail import admin
    if ".." in path:
        s.send(err(ERR_INVALID_DIR_DOTDOT, 1501))
        return None
    if "%" in path:
        s.send(err(ERR_INVALID_DIR_PCT, 1502))
        return None
    if path.startswith("/"):
        newpath = path
    else:
        slash = path.find("/")
        if slash < 0:
            s.send(err(ERR_INVALID_DIR_SLASH, 1503))
            return None
        at = path.find("@")
        head, rest = path[:slash], path[slash:]
        if at >= 0:
            if at > slash:
                s.send(err(ERR_INVALID_DIR_AT, 1504))
                return None
            ud = s.email(head)
            if ud is None:
                s.send(err(ERR_INVALID_DIR_PARSE, 1505))
                return None
            pw, _ = s.getpw(*ud)
            if pw is None:
                s.send(err(ERR_INVALID_DIR_UNK, 1506))
                return None
            if s.qa():
                if not ud[1].startswith(s.domain):
                    s.send(err(ERR_NOT_AUTH_DOMAIN, 1507))
                    return None
            elif not s.sa():
                if ud != (s.user, s.domain):
                    s.send(err(ERR_NO_USER, 1508))
                    return None
            newpath = pw.dir + rest
        else:
            a = s.assign(head)
            if a is None:
                s.send(err(ERR_NOT_AUTH_DOMAIN, 1509))
                return None
            newpath = a.dir + rest
    if s.sa():
        top, minor = s.vpopmail_domains, 1510
    elif s.qa():
        top, minor = s.domain_dir, 1511
    else:
        top, minor = s.user_dir, 1512
    if not top or not newpath.startswith(top) or not admin.inside(newpath, top):
        s.send(err(ERR_UNAUTH_DIR, minor))
        return None
    s.path_top = top
    return newpath


def path_arg(s, tok, reqd_err, minor):
    p = tok.next(TOKENS)
    if p is None:
        s.send(err(reqd_err, minor))
        return None
    return validate_path(s, p)


def _oserr(s, minor, e):
    s.send(b"-ERR 0.%d %s\r\n" % (minor, _b(os.strerror(e.errno or errno.EIO))))
    return -1


def mk_dir(s, tok):
    d = path_arg(s, tok, ERR_DIR_REQD, 1601)
    if d is None:
        return -1
    try:
        os.mkdir(d, 0o700)
    except OSError as e:
        return _oserr(s, 1602, e)
    s.send(OK)
    return 0


def rm_dir(s, tok):
    from qtools.vpopmail import admin
    d = path_arg(s, tok, ERR_DIR_REQD, 1701)
    if d is None:
        return -1
    try:
        if not os.path.isdir(d) or os.path.islink(d):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        admin.delete_tree(d, s.path_top)           # never the caller's top itself
    except S.StoreError:
        return _oserr(s, 1702, PermissionError(errno.EACCES, "refused"))
    except OSError as e:
        return _oserr(s, 1702, e)
    s.send(OK)
    return 0


FILE_TYPES = (("S_ISREG", "file"), ("S_ISDIR", "dir"), ("S_ISCHR", "chardev"),
              ("S_ISBLK", "blkdev"), ("S_ISFIFO", "fifo"), ("S_ISLNK", "link"),
              ("S_ISSOCK", "sock"))


def list_dir(s, tok):
    import stat
    d = path_arg(s, tok, ERR_DIR_REQD, 1801)
    if d is None:
        return -1
    try:
        names = os.listdir(d)
    except OSError as e:
        return _oserr(s, 1802, e)
    s.send(OK_MORE)
    for n in names:
        try:
            mode = os.lstat(os.path.join(d, n)).st_mode
        except OSError:
            continue
        kind = next((k for f, k in FILE_TYPES if getattr(stat, f)(mode)), "unknown")
        s.line("%s %s" % (n, kind))
    s.send(DOT)
    return 0


def rm_file(s, tok):
    f = path_arg(s, tok, ERR_FNAME_REQD, 1901)
    if f is None:
        return -1
    try:
        os.unlink(f)
    except OSError as e:
        return _oserr(s, 1902, e)
    s.send(OK)
    return 0


def rename_file(s, tok):
    src = tok.next(TOKENS)
    if src is None:
        s.send(err(ERR_SOURCE_REQD, 3801))
        return -1
    dst = tok.next(TOKENS)
    if dst is None:
        s.send(err(ERR_DEST_REQD, 3801))
        return -1
    src = validate_path(s, src)
    if src is None:
        return -1
    dst = validate_path(s, dst)
    if dst is None:
        return -1
    try:
        os.rename(src, dst)
    except OSError as e:
        return _oserr(s, 3803, e)
    s.send(OK)
    return 0


def write_file(s, tok):
    f = path_arg(s, tok, ERR_FNAME_REQD, 2001)
    if f is None:
        return -1
    try:
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        return _oserr(s, 2002, e)
    try:
        while True:
            line = s.conn.readline(106)
            if line is TOOLONG:
                continue
            if line in (b".", b".\r"):
                break
            os.write(fd, line + b"\n")
    finally:
        os.close(fd)
    s.send(OK)
    return 0


def read_file(s, tok):
    f = path_arg(s, tok, ERR_FNAME_REQD, 2101)
    if f is None:
        return -1
    try:
        fh = open(f, "rb")
    except OSError as e:
        return _oserr(s, 2102, e)
    last = b""
    with fh:
        s.send(OK_MORE)
        for line in iter(lambda: fh.readline(1023), b""):
            if line in (b".\r\n", b".\n"):
                line = b"." + line
            s.send(line)
            last = line
    s.send(CRLF + DOT if last and not last.endswith(b"\n") else DOT)
    return 0


def stat_file(s, tok):
    f = path_arg(s, tok, ERR_FNAME_REQD, 2201)
    if f is None:
        return -1
    try:
        st = os.stat(f)
    except OSError as e:
        return _oserr(s, 2202, e)
    s.send(OK_MORE)
    s.send(b"uid: %d\n" % st.st_uid)                # sic: LF only
    s.send(DOT)
    return 0


# -- not available in this build ------------------------------------------------
def not_avail(minor):
    def h(s, tok):
        s.send(err(ERR_NOT_AVAIL, minor))
        return 0
    return h


def not_impl(minor):
    def h(s, tok):
        s.send(err(ERR_NOT_IMPLEMENT, minor))
        return -1
    return h


def alias_head(s, tok, base):
    """The checks add_alias, remove_alias and delete_alias share:
    (alias, domain, assign) or None after the reply."""
    if not s.admin():
        s.send(err(ERR_NOT_AUTHORIZED, base + 1))
        return None
    alias = tok.next(TOKENS)
    if alias is None:
        s.send(err(ERR_ALIAS_REQD, base + 2))
        return None
    ud = s.email(alias)
    if ud is None:
        s.send(err(ERR_INVALID_ALIAS, base + 3))
        return None
    if s.other_domain(ud[1]):
        s.send(err(ERR_NOT_AUTH_DOMAIN, base + 4))
        return None
    return ud[0], ud[1], s.assign(ud[1])


def alias_change(base, fail, method):
    def h(s, tok):
        head = alias_head(s, tok, base)
        if head is None:
            return -1
        alias, domain, a = head
        line = None
        if method != "valias_delete":
            line = tok.next(TOKENS)
            if line is None:
                s.send(err(ERR_ALIAS_LINE_REQD, base + 6))
                return -1
        try:
            if a is None:
                raise S.StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
            fn = getattr(s.st, method)
            fn(alias, a.domain) if line is None else fn(alias, a.domain, line)
        except S.StoreError:
            s.send(err(fail, base + (6 if line is None else 7)))
            return -1
        s.send(OK)
        return 0
    return h


def list_alias(s, tok):
    """All aliases of a domain (`alias@domain line`), or one address's
    lines.  vpopmaild.c compares a domain administrator's domain with the
    whole argument, and answers an address without aliases with `.` alone
    (its `+OK ` is overwritten); both kept."""
    if not s.admin():
        s.send(err(ERR_NOT_AUTHORIZED, 2801))
        return -1
    arg = tok.next(TOKENS)
    if arg is None:
        s.send(err(ERR_DOMAIN_REQD, 2802))
        return -1
    ud = s.email(arg)
    if ud is None:
        s.send(err(ERR_INVALID_EMAIL, 2803))
        return -1
    if s.other_domain(arg):
        s.send(err(ERR_NOT_AUTH_DOMAIN, 2804))
        return -1
    if "@" not in arg:
        a = s.assign(arg)
        rows = s.st.valias_select_all(a.domain) if a is not None else []
        s.send(OK_MORE)
        for alias, line in rows:
            s.line("%s@%s %s" % (alias, arg, line))
    else:
        a = s.assign(ud[1])
        lines = s.st.valias_select(ud[0], a.domain) if a is not None else []
        if lines:
            s.send(OK_MORE)
        for line in lines:
            s.line("%s@%s %s" % (ud[0], ud[1], line))
    s.send(DOT)
    return 0


# -- the tables -------------------------------------------------------------------
# LoginFunctions[] and Functions[]: (level, name, handler, help); a row
# without a handler is a help section title.  In the login table the
# "level" is the output type (login, clogin, slogin).
LOGIN_ROWS = (
    (0, "Login", None, None),
    (0, "login", login_as(0), "login user@domain password - expanded bitmaps"),
    (1, "clogin", login_as(1), "login user@domain password - compact bitmapts"),
    (2, "slogin", login_as(2), "login user@domain password - silent results"),
    (0, "Utility", None, None),
    (0, "help", login_help, "help"),
    (0, "exit", quit_, "quit"),
    (0, "quit", quit_, "quit"),
    (0, "q", quit_, "quit"))

ROWS = (
    (2, "Domain", None, None),
    (2, "user_info", user_info, "user_domain<crlf>"),
    (3, "list_domains", list_domains, "[page per_page]<crlf>"),
    (3, "find_domain", find_domain, "domain [per-page]<crlf>"),
    (3, "domain_count", domain_count, "<crlf>"),
    (3, "add_alias_domain", add_alias_domain, "domain alias<crlf>"),
    (3, "add_domain", add_domain, "domain postmaster-password<crlf>"),
    (3, "del_domain", del_domain, "domain<crlf>"),
    (3, "dom_info", dom_info, "domain<crlf>"),
    (2, "get_limits", get_limits, "domain<crlf>"),
    (3, "set_limits", set_limits, "domain (option lines)<crlf>.<crlf>"),
    (3, "del_limits", del_limits, "domain<crlf>"),
    (2, "get_domain_size", get_domain_size, "domain<crlf>"),
    (1, "User", None, None),
    (2, "add_user", add_user, "user@domain password<crlf>"),
    (2, "del_user", del_user, "user@domain<crlf>"),
    (2, "user_count", user_count, "domain <crlf>"),
    (2, "list_users", list_users, "domain [page per_page]<crlf>"),
    (2, "list_users", list_users, "domain<crlf>"),
    (2, "list_lists", list_lists, "domain<crlf>"),
    (1, "mod_user", mod_user, "user@domain (option lines)<crlf>.<crlf>"),
    (1, "get_lastauth", get_lastauth, "user@domain<crlf>"),
    (1, "get_user_size", get_user_size, "user@domain<crlf>"),
    (2, "Alias", None, None),
    (2, "add_alias", alias_change(900, ERR_ALIAS_INSERT_FAIL, "valias_insert"),
     "user@domain user@otherdomain<crlf>"),
    (2, "delete_alias", alias_change(1100, ERR_ALIAS_DELETE_FAIL, "valias_delete"),
     "user@domain<crlf>"),
    (2, "list_alias", list_alias, "domain<crlf>"),
    (2, "remove_alias", alias_change(1000, ERR_ALIAS_REMOVE_FAIL, "valias_remove"),
     "user@domain user@otherdomain<crlf>"),
    (1, "File System", None, None),
    (1, "mk_dir", mk_dir, "/full/path/to/dir<crlf>"),
    (1, "rm_dir", rm_dir, "/full/path/to/dir<crlf>"),
    (1, "list_dir", list_dir, "/full/path/to/dir<crlf>"),
    (1, "rm_file", rm_file, "/full/path/to/file<crlf>"),
    (1, "rename_file", rename_file, "/full/path/to/file<crlf>"),
    (1, "write_file", write_file, "/full/path (data lines)<crlf>.<crlf>"),
    (1, "read_file", read_file, "/full/path<crlf>"),
    (1, "stat_file", stat_file, "/full/path<crlf>"),
    (1, "IP Map", None, None),
    (1, "get_ip_map", not_avail(3004), "domain<crlf>"),
    (3, "add_ip_map", not_avail(3106), "ip domain<crlf>"),
    (3, "del_ip_map", not_avail(3205), "ip domain<crlf>"),
    (3, "show_ip_map", not_avail(3302), "domain<crlf>"),
    (2, "Mailing List", None, None),
    (2, "add_list", not_impl(4001), "domain listname (command line options)<crlf>"),
    (2, "del_list", not_impl(4101), "domain listname<crlf>"),
    (2, "mod_list", not_impl(4201), "domain listname (command line options)<crlf>"),
    (0, "Utility", None, None),
    (0, "exit", quit_, "quit"),
    (0, "quit", quit_, "quit"),
    (0, "q", quit_, "quit"),
    (0, "help", help_, "help"))


def _table(rows):
    """verb -> (level, handler, name, minor for unexpected library errors)."""
    t = {}
    for i, (level, name, fn, _) in enumerate(rows):
        if fn is not None and name not in t:
            t[name] = (level, fn, name, 100 * (i + 1))
    return t


LOGIN_COMMANDS = _table(LOGIN_ROWS)
COMMANDS = _table(ROWS)


def preload(argv=None):
    """Import now, as root, what a session may import later: once the
    session runs as the vpopmail user it may not be able to read the Python
    installation.  tcpserver calls this in its parent; main() calls it before
    dropping privileges."""
    import fcntl, hmac, secrets, select, shutil, signal, socket, stat, time  # noqa: F401,E401
    from qtools.lib import cdb, strerr  # noqa: F401
    from qtools.vpopmail import admin, privsep, store_cdb  # noqa: F401
    try:
        S.crypt_function()
        if S.backend_name() == "mysql":
            from qtools.vpopmail import store_mysql
            store_mysql.driver()
    except Exception:                               # noqa: BLE001 - the session will say
        pass


def timeout_setting():
    try:
        t = float(os.environ.get("VPOPMAILD_TIMEOUT", READ_TIMEOUT))
    except ValueError:
        t = READ_TIMEOUT
    return t if 0 < t <= 86400 else READ_TIMEOUT


def main(argv):
    import signal
    from qtools.lib import strerr
    from qtools.vpopmail import privsep
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    preload()
    try:
        conn = Conn(0, 1, timeout_setting())
    except OSError as e:
        strerr.die(111, PROG, "unable to use descriptors 0 and 1: ", e)
    # vauth_open(): before anything else, as root (the configuration may be
    # readable by root only); a MySQL connection is made on first use
    try:
        st = S.open_store()
    except (S.TempFail, S.StoreError) as e:
        _warn("unable to open the store: %s" % e)
        conn.send(TEMPFAIL)
        try:
            conn.flush()
        except Exit:
            pass
        return 255
    if os.geteuid() == 0:
        from qtools.vpopmail import admin
        uid, gid = admin.vpopmail_ids()
        if uid == 0:
            strerr.die(111, PROG, "no user to run the session as: $VPOPMAILHOME is owned by "
                       "root and there is no vpopmail user")
        try:
            priv = privsep.start(uid, gid)
        except OSError as e:
            strerr.die(111, PROG, "unable to drop privileges: ", e)
    else:
        priv = privsep.Direct()
    s = Session(conn, st, priv)
    code = 0
    try:
        conn.send(OK)
        s.before_login()
        s.logged_in()
    except Exit as e:
        code = e.code
        try:
            conn.flush()
            conn.linger()
        except Exit:
            pass
    finally:
        priv.close()
        st.close()
    return code
