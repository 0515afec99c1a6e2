"""store - vpopmail's user store behind one small interface.

open_store() returns the backend an existing vpopmail installation uses:
the MySQL/MariaDB schema (store_mysql) when $VPOPMAILHOME/etc/vpopmail.mysql
exists, else vpopmail's default file layout (store_cdb: domains/<dom>/vpasswd
+ vpasswd.cdb).  $VPOPMAIL_AUTH=cdb or mysql overrides the guess (vpopmail
chooses at build time with --enable-auth-module).

Every backend method raises TempFail when the answer cannot be known (the
database is down, a file cannot be read): callers must never take that for
"no such user".  StoreError carries a vpopmail VA_* code (verror() text).

Also here, shared by every vpopmail program: the flag bits (vpopmail.h),
field limits, parse_email() with vpopmail's character rules, the domain
lookup through qmail's users/cdb (vget_assign), crypt(3) checks and
vpopmail's maildir quota spec.  Module top imports only os: vchkpw runs per
AUTH and loads the rest lazily (or through its preload hook).
"""
import errno
import os

# -- vpopmail.h --------------------------------------------------------------
NO_PASSWD_CHNG = 0x01
NO_POP = 0x02
NO_WEBMAIL = 0x04
NO_IMAP = 0x08
BOUNCE_MAIL = 0x10
NO_RELAY = 0x20
NO_DIALUP = 0x40
V_USER0 = 0x80
V_USER1 = 0x100
V_USER2 = 0x200
V_USER3 = 0x400
NO_SMTP = 0x800
QA_ADMIN = 0x1000
V_OVERRIDE = 0x2000
NO_SPAMASSASSIN = 0x4000
DELETE_SPAM = 0x8000
SA_ADMIN = 0x10000
SA_EXPERT = 0x20000
NO_MAILDROP = 0x40000

MAX_PW_NAME = 64
MAX_PW_DOMAIN = 96
MAX_PW_PASS = 128
MAX_PW_GECOS = 64
MAX_PW_CLEAR_PASSWD = 128
MAX_PW_DIR = 160
MAX_PW_QUOTA = 20
MAX_ALIAS_LINE = 160        # vpopmail.h; valias_insert refuses strlen >= MAX_ALIAS_LINE
ATCHARS = "@%/"
NULL_REMOTE_IP = "0.0.0.0"
USE_POP, USE_APOP = 0, 1

VA_SUCCESS = 0
VA_ILLEGAL_USERNAME = -1
VA_USERNAME_EXISTS = -2
VA_BAD_DIR = -3
VA_BAD_U_DIR = -4
VA_BAD_D_DIR = -5
VA_BAD_V_DIR = -6
VA_EXIST_U_DIR = -7
VA_USER_DOES_NOT_EXIST = -10
VA_DOMAIN_DOES_NOT_EXIST = -11
VA_INVALID_DOMAIN_NAME = -12
VA_DOMAIN_ALREADY_EXISTS = -13
VA_COULD_NOT_MAKE_DOMAIN_DIR = -14
VA_COULD_NOT_OPEN_QMAIL_DEFAULT = -15
VA_CAN_NOT_MAKE_DOMAINS_DIR = -16
VA_COULD_NOT_UPDATE_FILE = -17
VA_CRYPT_FAILED = -18
VA_COULD_NOT_OPEN_DOT_QMAIL = -19
VA_BAD_CHAR = -20
VA_BAD_UID = -22
VA_NO_AUTH_CONNECTION = -23
VA_USER_NAME_TOO_LONG = -25
VA_DOMAIN_NAME_TOO_LONG = -26
VA_PASSWD_TOO_LONG = -27
VA_GECOS_TOO_LONG = -28
VA_QUOTA_TOO_LONG = -29
VA_DIR_TOO_LONG = -30
VA_CLEAR_PASSWD_TOO_LONG = -31
VA_ALIAS_LINE_TOO_LONG = -32
VA_INVALID_EMAIL_CHAR = -34
VA_PARSE_ERROR = -35
VA_CANNOT_READ_LIMITS = -36
VA_CANNOT_READ_ASSIGN = -37
VA_CANNOT_DELETE_CATCHALL = -55

# verror() in vpopmail.c, word for word
VERROR = {
    VA_SUCCESS: "Success",
    VA_ILLEGAL_USERNAME: "Illegal username",
    VA_USERNAME_EXISTS: "Username exists",
    VA_BAD_DIR: "Unable to chdir to vpopmail directory",
    VA_BAD_U_DIR: "Unable to chdir to vpopmail/users directory",
    VA_BAD_D_DIR: "Unable to chdir to vpopmail/domains directory",
    VA_BAD_V_DIR: "Unable to chdir to vpopmail/domains/domain directory",
    VA_EXIST_U_DIR: "User's directory already exists",
    VA_USER_DOES_NOT_EXIST: "User does not exist",
    VA_DOMAIN_DOES_NOT_EXIST: "Domain does not exist",
    VA_INVALID_DOMAIN_NAME: "Invalid domain name",
    VA_DOMAIN_ALREADY_EXISTS: "Domain already exists",
    VA_COULD_NOT_MAKE_DOMAIN_DIR: "Could not make domain dir",
    VA_COULD_NOT_OPEN_QMAIL_DEFAULT: "Could not open qmail default",
    VA_CAN_NOT_MAKE_DOMAINS_DIR: "Can not make domains directory",
    VA_COULD_NOT_UPDATE_FILE: "Could not update file",
    VA_CRYPT_FAILED: "Crypt failed",
    VA_COULD_NOT_OPEN_DOT_QMAIL: "Could not open dot qmail file",
    VA_BAD_CHAR: "bad character",
    VA_BAD_UID: "running as invalid uid",
    VA_NO_AUTH_CONNECTION: "no authentication database connection",
    VA_USER_NAME_TOO_LONG: "user name too long (max=64)",
    VA_DOMAIN_NAME_TOO_LONG: "domain name too long (max=96)",
    VA_PASSWD_TOO_LONG: "password too long (max=128)",
    VA_GECOS_TOO_LONG: "gecos too long (max=64)",
    VA_QUOTA_TOO_LONG: "quota too long (max=20)",
    VA_DIR_TOO_LONG: "dir too long (max=160)",
    VA_CLEAR_PASSWD_TOO_LONG: "clear password too long (max=128)",
    VA_ALIAS_LINE_TOO_LONG: "alias line too long (max=160)",
    VA_INVALID_EMAIL_CHAR: "invalid email character",
    VA_PARSE_ERROR: "parsing database configuration file",
    VA_CANNOT_READ_LIMITS: "can't read domain limits",
    VA_CANNOT_READ_ASSIGN: "can't read users/assign file",
    VA_CANNOT_DELETE_CATCHALL: "can't delete catchall account",
}


def verror(code):
    return VERROR.get(code, "Unknown error")


class StoreError(Exception):
    """A permanent vpopmail error with its VA_* code."""

    def __init__(self, code, detail=None):
        Exception.__init__(self, verror(code) if detail is None else detail)
        self.code = code


class TempFail(Exception):
    """The store cannot answer now (database down, file unreadable)."""


class User:
    """struct vqpasswd: uid is the APOP field, gid the flag bits, shell the
    quota; flags = gid ORed with the domain limits (vlimits_setflags)."""
    __slots__ = ("name", "passwd", "uid", "gid", "gecos", "dir", "shell", "clear", "flags")

    def __init__(self, name, passwd="", uid=0, gid=0, gecos="", dir="", shell="NOQUOTA",
                 clear=""):
        self.name, self.passwd, self.uid, self.gid = name, passwd, uid, gid
        self.gecos, self.dir, self.shell, self.clear = gecos, dir, shell, clear
        self.flags = gid

    def __repr__(self):
        return "User(%r, dir=%r, gid=%#x)" % (self.name, self.dir, self.gid)


class Assign:
    """A users/cdb entry for a domain (vget_assign)."""
    __slots__ = ("domain", "uid", "gid", "dir")

    def __init__(self, domain, uid, gid, dir):
        self.domain, self.uid, self.gid, self.dir = domain, uid, gid, dir


# -- paths -------------------------------------------------------------------
def vpopmailhome():
    return os.environ.get("VPOPMAILHOME") or "/home/vpopmail"


def qmailhome():
    return os.environ.get("QMAILHOME") or "/var/qmail"


def _decode(b):
    return b.decode("utf-8", "surrogateescape")


def _encode(s):
    return s.encode("utf-8", "surrogateescape")


# -- names -------------------------------------------------------------------
def username_valid(user):
    """vpopmail's is_username_valid() (no '%', ':' or spaces), plus what
    qtools refuses so a name can never leave the domain's directory: '/',
    '.', '..' and a leading '-' or '.'."""
    if not user or user in (".", "..") or user[0] in ".-":
        return False
    for c in user:
        o = ord(c)
        if not (o in (33, 35, 36, 38, 39, 42, 43, 61, 63) or 45 <= o <= 57
                or 65 <= o <= 90 or 94 <= o <= 126) or c == "/":
            return False
    return True


def domain_valid(domain):
    """is_domain_valid(): letters, digits, '-' and '.' only."""
    for c in domain:
        if not (c in "-." or "0" <= c <= "9" or "a" <= c <= "z" or "A" <= c <= "Z"):
            return False
    return True


def valias_name_ok(alias):
    """Whether alias can name a virtual alias: vpopmail's username rules
    (username_valid: no '/', ':', spaces, leading '.' or '-'), at most
    MAX_PW_NAME characters, and not `default` (.qmail-default is the
    domain's catch-all, never an alias file)."""
    return (isinstance(alias, str) and 0 < len(alias) <= MAX_PW_NAME and alias != "default"
            and username_valid(alias))


def check_valias(alias, domain, line=None):
    """StoreError unless alias, domain and line (when given) are fit to
    store: the checks valias_insert() makes, plus qtools' own (no newline,
    CR or NUL inside a line: one line must stay one delivery
    instruction)."""
    if not isinstance(alias, str) or len(alias) > MAX_PW_NAME:
        raise StoreError(VA_USER_NAME_TOO_LONG)
    if not valias_name_ok(alias):
        raise StoreError(VA_ILLEGAL_USERNAME)
    if not domain or len(domain) > MAX_PW_DOMAIN:
        raise StoreError(VA_DOMAIN_NAME_TOO_LONG if domain else VA_INVALID_DOMAIN_NAME)
    if not domain_valid(domain):
        raise StoreError(VA_INVALID_DOMAIN_NAME)
    if line is not None:
        if len(line) >= MAX_ALIAS_LINE:
            raise StoreError(VA_ALIAS_LINE_TOO_LONG)
        if not line.strip(" ") or any(c in line for c in "\n\r\0"):
            raise StoreError(VA_BAD_CHAR)


def valias_line(line):
    """The line as stored: leading spaces dropped (vmysql.c valias_insert),
    trailing blanks too (qmail-local ignores them)."""
    return line.lstrip(" ").rstrip(" \t")


def valias_file(alias):
    """`.qmail-<alias>` with '.' stored as ':' (vpalias.c, as qmail-local
    looks extensions up)."""
    return ".qmail-" + alias.replace(".", ":")


def default_domain():
    """$VPOPMAILHOME/etc/defaultdomain, first line ("" if missing)."""
    try:
        with open(os.path.join(vpopmailhome(), "etc", "defaultdomain"), "rb") as f:
            line = f.read(MAX_PW_DOMAIN + 2).split(b"\n", 1)[0].strip()
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise TempFail("unable to read etc/defaultdomain: %s" % e)
    return _decode(line).lower()


def split_email(email):
    """Split at the first of vpopmail's ATCHARS ('@', then '%', then '/'),
    lowercased (parse_email); (user, "") when there is none."""
    email = email.lower()
    for ch in ATCHARS:
        i = email.find(ch)
        if i >= 0:
            return email[:i], email[i + 1:]
    return email, ""


def parse_email(email, need_domain=False):
    """(user, domain) as parse_email() gives them: lowercased, checked, the
    default domain ($VPOPMAIL_DOMAIN, then etc/defaultdomain) filled in.
    Raises StoreError(VA_ILLEGAL_USERNAME / VA_INVALID_DOMAIN_NAME)."""
    user, domain = split_email(email)
    if not username_valid(user):
        raise StoreError(VA_ILLEGAL_USERNAME)
    if not domain_valid(domain):
        raise StoreError(VA_INVALID_DOMAIN_NAME)
    if not domain:
        env = os.environ.get("VPOPMAIL_DOMAIN")
        if env is not None:
            domain = "".join(c if c.isalnum() and c.isascii() or c in "_-.@" else "_"
                             for c in env)[:MAX_PW_DOMAIN]
        else:
            domain = default_domain()
    return user, domain


# -- qmail's users/cdb (vget_assign) -----------------------------------------
def users_cdb_paths():
    home = os.path.join(qmailhome(), "users")
    # users/cdb is netqmail's; s/qmail (and sagredo's --enable-sqmail-cdb)
    # read users/assign.cdb
    return os.path.join(home, "cdb"), os.path.join(home, "assign.cdb")


def get_assign(domain):
    """The Assign for domain (an alias domain gives its real domain), or None.
    Looks up `!<domain>-` in users/cdb as vget_assign() does."""
    from qtools.lib import cdb
    if not domain or len(domain) > MAX_PW_DOMAIN:
        return None
    key = b"!" + _encode(domain.lower()) + b"-"
    for path in users_cdb_paths():
        try:
            r = cdb.reader(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise TempFail("unable to read %s: %s" % (path, e))
        try:
            data = r.get(key)
        except OSError as e:
            raise TempFail("unable to read %s: %s" % (path, e))
        finally:
            r.close()
        if data is None:
            return None
        f = data.split(b"\0")
        if len(f) < 4:
            return None
        return Assign(_decode(f[0]), _atoi(f[1]), _atoi(f[2]), _decode(f[3]))
    return None


def _atoi(b):
    digits = b""
    for c in b.strip()[:20]:
        if not 48 <= c <= 57:
            break
        digits += bytes((c,))
    return int(digits) if digits else 0


# -- backends ----------------------------------------------------------------
def backend_name():
    name = os.environ.get("VPOPMAIL_AUTH")
    if name in ("cdb", "mysql"):
        return name
    if os.path.exists(os.path.join(vpopmailhome(), "etc", "vpopmail.mysql")):
        return "mysql"
    return "cdb"


def open_store(name=None):
    """The configured backend (see the module docstring)."""
    name = name or backend_name()
    if name == "mysql":
        from qtools.vpopmail import store_mysql
        return store_mysql.MysqlStore()
    from qtools.vpopmail import store_cdb
    return store_cdb.CdbStore()


def clear_passwords():
    """Whether new passwords are also stored in clear (vpopmail's
    --enable-clear-passwd, needed for CRAM-MD5): $VPOPMAILHOME/etc/clear-passwd
    exists."""
    return os.path.exists(os.path.join(vpopmailhome(), "etc", "clear-passwd"))


class Store:
    """The interface.  Domains are real domains (not aliases); names are
    lowercased and checked by the caller."""
    name = "?"

    def getpw(self, user, domain):
        """User or None; TempFail if the store cannot answer."""
        raise NotImplementedError

    def getall(self, domain):
        raise NotImplementedError

    def adduser(self, user, domain, crypted, clear, gecos, dir, apop=USE_POP):
        raise NotImplementedError

    def setpw(self, pw, domain):
        raise NotImplementedError

    def deluser(self, user, domain):
        raise NotImplementedError

    def adddomain(self, domain):
        pass

    def deldomain(self, domain):
        pass

    def set_lastauth(self, pw, domain, ip):
        raise NotImplementedError

    def get_lastauth(self, pw, domain):
        """(time, ip): time 0 when unknown, ip None when unknown."""
        raise NotImplementedError

    def get_limits(self, domain):
        return file_limits(domain)

    def del_limits(self, domain):
        a = get_assign(domain)
        if a:
            try:
                os.unlink(os.path.join(a.dir, ".qmailadmin-limits"))
            except FileNotFoundError:
                pass

    # -- virtual aliases (vpopmail's valias_* calls).  alias is the local
    # part, domain the real domain; lines keep their order.  Writes raise
    # StoreError for a bad name or line (check_valias), TempFail when the
    # store cannot be reached.
    def valias_select(self, alias, domain):
        """The delivery lines of alias@domain, in order; [] when none (or
        when the name could never be an alias)."""
        raise NotImplementedError

    def valias_insert(self, alias, domain, line):
        """Append one line."""
        raise NotImplementedError

    def valias_remove(self, alias, domain, line):
        """Drop the lines equal to line; the alias goes when none is left."""
        raise NotImplementedError

    def valias_delete(self, alias, domain):
        """Drop the alias and all its lines."""
        raise NotImplementedError

    def valias_select_all(self, domain):
        """[(alias, line)] of the domain: aliases sorted by name
        (valias_select_names' order), lines in their order."""
        raise NotImplementedError

    def aliasdomain_add(self, alias, domain):
        """Record an alias domain where the store keeps them (sagredo's
        sql-aliasdomains: the MySQL `aliasdomains` table); files: nothing."""

    def aliasdomain_del(self, alias):
        pass

    # -- bulk loads for vconvert: records stored exactly as given
    def replace_users(self, domain, users):
        """Make the domain's users exactly users (every field as given,
        the clear password included), in one step where the store allows."""
        raise NotImplementedError

    def put_lastauth(self, pw, domain, t, ip):
        """A lastauth record with its own time (set_lastauth uses now)."""
        raise NotImplementedError

    def valias_load(self, domain, rows):
        """Each alias named in rows [(alias, line)] gets exactly those
        lines (see the backends for the aliases rows do not name)."""
        raise NotImplementedError

    def explicit_limits(self, domain):
        """The domain's own limits (a row, a .qmailadmin-limits file), or
        None when it has none and the defaults apply."""
        a = get_assign(domain)
        lim = Limits()
        if a and read_limits_file(os.path.join(a.dir, ".qmailadmin-limits"), lim):
            return lim
        return None

    def set_limits(self, domain, lim):
        """Store the domain's limits: .qmailadmin-limits as
        vlimits_write_limits_file() writes it."""
        a = get_assign(domain)
        if a is None:
            raise StoreError(VA_DOMAIN_DOES_NOT_EXIST)
        write_limits_file(os.path.join(a.dir, ".qmailadmin-limits"), lim, a.uid, a.gid)

    # -- hashed directories (bigdir.c): the dir control state of a domain
    # (its users) or of `dom_<uid>` (the domains of that owner), as a
    # bigdir.VDir.  A missing state reads as the defaults; a corrupt one is
    # StoreError(VA_BAD_DIR).  See qtools.vpopmail.bigdir.
    def read_dir_control(self, key, uid, gid):
        raise NotImplementedError

    def write_dir_control(self, key, vdir, uid, gid):
        raise NotImplementedError

    def del_dir_control(self, key):
        raise NotImplementedError

    def setflags(self, pw, domain):
        """vlimits_setflags: pw.flags = pw.gid | the domain's limit flags,
        unless the user has V_OVERRIDE."""
        pw.flags = pw.gid
        if not pw.gid & V_OVERRIDE:
            pw.flags |= self.get_limits(domain).flag_mask()
        return pw

    def close(self):
        pass


DISABLE_ALL, DISABLE_BITS = 7, 3     # VLIMIT_DISABLE_ALL, VLIMIT_DISABLE_BITS


class Limits:
    """struct vlimits."""
    FLAGS = (("disable_pop", NO_POP), ("disable_smtp", NO_SMTP), ("disable_imap", NO_IMAP),
             ("disable_relay", NO_RELAY), ("disable_webmail", NO_WEBMAIL),
             ("disable_passwordchanging", NO_PASSWD_CHNG), ("disable_dialup", NO_DIALUP),
             ("disable_spamassassin", NO_SPAMASSASSIN), ("delete_spam", DELETE_SPAM),
             ("disable_maildrop", NO_MAILDROP))

    # the permissions of domain admins other than postmaster (qmailadmin):
    # VLIMIT_DISABLE_CREATE 1 | _MODIFY 2 | _DELETE 4 each
    PERMS = ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder",
             "perm_maillist", "perm_maillist_users", "perm_maillist_moderators",
             "perm_quota", "perm_defaultquota")

    def __init__(self):
        self.values = {"maxpopaccounts": -1, "maxaliases": -1, "maxforwards": -1,
                       "maxautoresponders": -1, "maxmailinglists": -1, "diskquota": 0,
                       "maxmsgcount": 0, "defaultquota": 0, "defaultmaxmsgcount": 0}
        for k, _ in self.FLAGS:
            self.values[k] = 0
        for k in self.PERMS:
            self.values[k] = 0

    def maillist_perms(self):
        """perm_maillist with its users and moderators bits above it, as
        vpopmail stores it in one number (VLIMIT_DISABLE_BITS = 3)."""
        v = self.values
        return (v["perm_maillist"] | v["perm_maillist_users"] << DISABLE_BITS
                | v["perm_maillist_moderators"] << 2 * DISABLE_BITS)

    def quota_perms(self):
        """perm_quota as vpopmail writes and sends it: with the mailing
        list users' and moderators' bits above it (readers mask them off)."""
        return self.values["perm_quota"] | self.maillist_perms() & ~DISABLE_ALL

    def set_maillist_perms(self, perm):
        perm %= 1 << 64                             # C's unsigned long
        for k in ("perm_maillist", "perm_maillist_users", "perm_maillist_moderators"):
            self.values[k] = perm & DISABLE_ALL
            perm >>= DISABLE_BITS

    def flag_mask(self):
        m = 0
        for k, bit in self.FLAGS:
            if self.values.get(k):
                m |= bit
        return m


# .qmailadmin-limits keywords (vlimits_read_limits_file) -> Limits keys
_FILE_KEYS = {"maxpopaccounts": "maxpopaccounts", "maxaliases": "maxaliases",
              "maxforwards": "maxforwards", "maxautoresponders": "maxautoresponders",
              "maxmailinglists": "maxmailinglists", "quota": "diskquota",
              "maxmsgcount": "maxmsgcount", "default_quota": "defaultquota",
              "default_maxmsgcount": "defaultmaxmsgcount"}
_FILE_FLAGS = {"disable_pop": "disable_pop", "disable_imap": "disable_imap",
               "disable_dialup": "disable_dialup",
               "disable_password_changing": "disable_passwordchanging",
               "disable_webmail": "disable_webmail",
               "disable_external_relay": "disable_relay", "disable_smtp": "disable_smtp",
               "disable_spamassassin": "disable_spamassassin", "delete_spam": "delete_spam",
               "disable_maildrop": "disable_maildrop"}      # in the order vlimits.c writes
_FILE_PERMS = ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder",
               "perm_quota", "perm_defaultquota")


def read_limits_file(path, lim):
    """Parse a .qmailadmin-limits / vlimits.default file into lim; False if
    it does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read(65536)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise TempFail("unable to read %s: %s" % (path, e))
    for line in data.replace(b"\r", b"\n").split(b"\n"):
        line = _decode(line)
        if not line or line.startswith("#"):
            continue
        i = 0
        while i < len(line) and line[i] not in " \t:":
            i += 1
        key, val = line[:i], line[i:].lstrip(" \t:")
        if key in _FILE_KEYS:
            if val:
                lim.values[_FILE_KEYS[key]] = _atoi_signed(val)
        elif key in _FILE_FLAGS:
            lim.values[_FILE_FLAGS[key]] = 1
        elif key in _FILE_PERMS:
            if val:
                lim.values[key] = _atoi_signed(val) & DISABLE_ALL
        elif key == "perm_maillist":
            if val:
                lim.set_maillist_perms(_atoi_signed(val))
    return True


def write_limits_file(path, lim, uid=-1, gid=-1):
    """vlimits_write_limits_file(): `key: value` lines, then the flag
    keywords that are set; temporary file, fsync, rename, mode 0600."""
    v = lim.values
    lines = ["%s: %d" % (k, v[key]) for k, key in _FILE_KEYS.items()]
    lines += [k for k, key in _FILE_FLAGS.items() if v.get(key)]
    # vlimits.c writes perm_maillist without its users and moderators bits
    # (which its reader expects there) and ORs them into perm_quota (where
    # its reader masks them off): qtools writes them in both places, so
    # either reader keeps them
    lines += ["perm_account: %d" % v["perm_account"], "perm_alias: %d" % v["perm_alias"],
              "perm_forward: %d" % v["perm_forward"],
              "perm_autoresponder: %d" % v["perm_autoresponder"],
              "perm_maillist: %d" % lim.maillist_perms(),
              "perm_quota: %d" % lim.quota_perms(),
              "perm_defaultquota: %d" % v["perm_defaultquota"]]
    replace_file(path, _encode("".join(x + "\n" for x in lines)), uid, gid)


def replace_file(path, data, uid=-1, gid=-1, tmp=None):
    """data as path, atomically: a temporary file beside it (tmp, by default
    <path>.tmp.<pid>), mode 0600, owned by uid/gid where that is allowed,
    fsync, rename; a failure removes the temporary file.  The caller fsyncs
    the directory where the rename must be durable."""
    if tmp is None:
        tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o600)
        try:
            os.fchown(fd, uid, gid)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EINVAL):
                raise
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.rename(tmp, path)


def _atoi_signed(s):
    s = s.strip()
    neg = s.startswith("-")
    v = _atoi(s.lstrip("+-").encode())
    return -v if neg else v


def file_limits(domain):
    """vget_limits for file limits: <domaindir>/.qmailadmin-limits, else
    $VPOPMAILHOME/etc/vlimits.default, else the built-in defaults (vpopmail
    fails there; qtools does not require vlimits.default)."""
    lim = Limits()
    a = get_assign(domain)
    if a and read_limits_file(os.path.join(a.dir, ".qmailadmin-limits"), lim):
        return lim
    read_limits_file(os.path.join(vpopmailhome(), "etc", "vlimits.default"), lim)
    return lim


# -- passwords ---------------------------------------------------------------
_crypt = None


def crypt_function():
    """crypt(3) of the system's libcrypt: crypt_r (the removed module, kept
    by the Fedora Python team; the `crypt` extra) if installed, else the
    standard library's crypt module (to 3.12) with its DeprecationWarning
    silenced, else libcrypt called through ctypes (3.13 without crypt_r,
    which has no wheels: a fresh Debian 13 needs no compiler for qtools)."""
    global _crypt
    if _crypt is None:
        try:
            from crypt_r import crypt as c
        except ImportError:
            import warnings
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from crypt import crypt as c
            except ImportError:
                c = libcrypt_crypt()
        _crypt = c
    return _crypt


def libcrypt_crypt():
    """crypt(word, salt) -> str through ctypes: libcrypt's crypt_r() with a
    zeroed struct crypt_data of its own per call, as the crypt module calls
    it (so a bad salt gives libxcrypt's "*0", and a NULL an OSError)."""
    import ctypes
    try:
        lib = ctypes.CDLL("libcrypt.so.1", use_errno=True)
    except OSError:
        import ctypes.util
        name = ctypes.util.find_library("crypt")
        if not name:
            raise TempFail("no crypt(3): install libcrypt1 (or the crypt-r package)")
        lib = ctypes.CDLL(name, use_errno=True)
    crypt_r = lib.crypt_r
    crypt_r.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
    crypt_r.restype = ctypes.c_char_p
    # sizeof(struct crypt_data): 32768 in libxcrypt, 131232 in glibc's old
    # libcrypt; room for either
    size = 1 << 18

    def crypt(word, salt):
        w, s = word.encode("utf-8"), salt.encode("utf-8")
        if b"\0" in w or b"\0" in s:
            raise ValueError("embedded null character")
        r = crypt_r(w, s, ctypes.create_string_buffer(size))
        if r is None:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return r.decode("utf-8", "surrogateescape")
    return crypt


def check_password(clear, hashed):
    """True if clear (bytes) crypts to hashed (str), vpopmail's
    strcmp(crypt(pass, pw_passwd), pw_passwd) with a leading {SCHEME}
    stripped, compared in constant time."""
    import hmac
    if hashed.startswith("{"):
        i = hashed.find("}")
        if i > 0:
            hashed = hashed[i + 1:]
    if not hashed:
        return False
    try:
        word = clear.decode("utf-8")
    except UnicodeDecodeError:
        return False                # the crypt module takes str; see vchkpw(8)
    try:
        got = crypt_function()(word, hashed)
    except (OSError, ValueError):
        return False
    if not got:
        return False
    return hmac.compare_digest(_encode(got), _encode(hashed))


SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def mkpasswd(clear):
    """A new SHA-512 crypt hash: $6$ + 16 salt characters from secrets."""
    import secrets
    salt = "$6$" + "".join(secrets.choice(SALT_CHARS) for _ in range(16))
    try:
        got = crypt_function()(clear, salt)
    except (OSError, ValueError):
        got = None
    if not got or not got.startswith("$6$"):
        raise StoreError(VA_CRYPT_FAILED)
    return got


def cram_md5_ok(clear, challenge, response):
    """CRAM-MD5 (RFC 2195): response is the lowercase hex HMAC-MD5 of the
    challenge keyed with the clear password."""
    import hmac
    want = hmac.new(_encode(clear), challenge, "md5").hexdigest().encode()
    return hmac.compare_digest(want, response.lower())


# -- quota ---------------------------------------------------------------------
def format_maildirquota(q):
    """vpopmail's format_maildirquota(): "50M", "10240K", "1000000",
    "1000C", "50MB,1000C" -> "52428800S" etc.; NOQUOTA stays; nonsense
    gives ""."""
    if q == "NOQUOTA":
        return q
    size = count = 0
    for p in q.split(","):
        if not p:
            continue
        if p.endswith("C"):
            count = _strtoll(p)
            continue
        if p[-1:] in "Ss":
            p = p[:-1]
        if p[-1:] in "Bb":
            p = p[:-1]
        size = _strtoll(p)
        if p[-1:] in "Mm":
            size *= 1024 * 1024
        elif p[-1:] in "Kk":
            size *= 1024
    if count == 0:
        return "%dS" % size if size else ""
    if size == 0:
        return "%dC" % count
    return "%dS,%dC" % (size, count)


def _strtoll(s):
    s = s.lstrip(" \t")
    neg = s.startswith("-")
    v = _atoi(s.lstrip("+-").encode())
    return -v if neg else v


def noquota_maildirsize(pw):
    """vauth_setpw(): a user without a quota keeps no maildirsize."""
    if pw.shell.upper() == "NOQUOTA":
        try:
            os.unlink(os.path.join(pw.dir, "Maildir", "maildirsize"))
        except OSError:
            pass


def parse_quota(spec):
    """(bytes, count) limits of a Maildir++ spec; 0 means no limit."""
    size = count = 0
    for p in spec.split(","):
        p = p.strip()
        if p.endswith("S"):
            size = _atoi(p[:-1].encode())
        elif p.endswith("C"):
            count = _atoi(p[:-1].encode())
        elif p and p != "NOQUOTA":
            size = _atoi(p.encode())
    return size, count
