"""store_mysql - vpopmail's MySQL/MariaDB schema, as vmysql.c uses it.

Configuration: $VPOPMAILHOME/etc/vpopmail.mysql, `#` comments allowed,
first line `host|port|user|password|database` for reading, an optional
second line of the same form for updates.  Port 0 means 3306; host
`localhost` means the server's Unix socket ($MYSQL_UNIX_PORT, default
/run/mysqld/mysqld.sock) as libmysqlclient does; a host starting with `/` is
a socket path (qtools).

Tables: the default build (MANY_DOMAINS) keeps every user in `vpopmail`
(pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell,
pw_clear_passwd); with $VPOPMAIL_MANY_DOMAINS=0 each domain has its own
table, named after the domain with '.' and '-' as '_'.  `lastauth` (user,
domain, remote_ip, timestamp) records logins; `limits` (ENABLE_MYSQL_LIMITS)
holds domain limits, and when it is missing or has no row for the domain
the limit files of store.file_limits() are read.  `valias` (vpopmail's
DEFAULT_DELIVERY layout: id, valias_type, alias, domain, valias_line, copy)
holds virtual aliases, one row per delivery line, read in id order;
`aliasdomains` (alias, domain) the alias domains (sagredo's
sql-aliasdomains); `dir_control` (domain, cur_users, level_cur, level_max,
level_start0-2, level_end0-2, level_mod0-2, level_index0-2, the_dir) the
hashed-directory counters (bigdir) of each domain and of `dom_<uid>`.
These three are created on first use.  A missing pw_clear_passwd
column (a build without CLEAR_PASS) is tolerated.

Driver: MySQLdb (mysqlclient) if importable, else PyMySQL, always with
connect/read/write timeouts ($QTOOLS_MYSQL_TIMEOUT seconds, default 5), so a
hung server is a TempFail, never a hang.  Any server or connection error is
TempFail, except "table does not exist" on reads, which means no such user.
"""
import os
import time

from qtools.vpopmail import store as S
from qtools.vpopmail.store import TempFail, StoreError, User

ER_NO_SUCH_TABLE = 1146
ER_BAD_FIELD = 1054
ER_DUP_ENTRY = 1062

TABLE_LAYOUT = (
    "pw_name VARCHAR(64) NOT NULL, pw_domain VARCHAR(96) NOT NULL, "
    "pw_passwd VARCHAR(128), pw_uid INT, pw_gid INT, pw_gecos VARCHAR(64), "
    "pw_dir VARCHAR(160), pw_shell VARCHAR(20), pw_clear_passwd VARCHAR(128), "
    "PRIMARY KEY (pw_name, pw_domain)")
TABLE_LAYOUT_SMALL = (
    "pw_name VARCHAR(64) NOT NULL, pw_passwd VARCHAR(128), pw_uid INT, pw_gid INT, "
    "pw_gecos VARCHAR(64), pw_dir VARCHAR(160), pw_shell VARCHAR(20), "
    "pw_clear_passwd VARCHAR(128), PRIMARY KEY (pw_name)")
LASTAUTH_LAYOUT = (
    "user VARCHAR(32) NOT NULL, domain VARCHAR(96) NOT NULL, "
    "remote_ip VARCHAR(39) NOT NULL, timestamp INT DEFAULT 0 NOT NULL, "
    "PRIMARY KEY (user, domain)")
VALIAS_LAYOUT = (
    "id INT(11) PRIMARY KEY AUTO_INCREMENT, "
    "valias_type TINYINT(1) NOT NULL DEFAULT 1 COMMENT '1=forwarder 0=lda', "
    "alias VARCHAR(32) NOT NULL, domain VARCHAR(96) NOT NULL, valias_line TEXT NOT NULL, "
    "copy TINYINT(1) NOT NULL DEFAULT 0 COMMENT '0=redirect 1=copy&redirect', "
    "INDEX (alias, domain, valias_type), INDEX (alias, domain)")
VALIAS_ALIAS_MAX = 32       # the alias column
ALIASDOMAINS_LAYOUT = (
    "alias VARCHAR(100) NOT NULL, domain VARCHAR(100) NOT NULL, PRIMARY KEY (alias)")
LIMITS_LAYOUT = (
    "domain VARCHAR(96) PRIMARY KEY, maxpopaccounts INT(10) NOT NULL DEFAULT -1, "
    "maxaliases INT(10) NOT NULL DEFAULT -1, maxforwards INT(10) NOT NULL DEFAULT -1, "
    "maxautoresponders INT(10) NOT NULL DEFAULT -1, "
    "maxmailinglists INT(10) NOT NULL DEFAULT -1, "
    "diskquota BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "maxmsgcount BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "defaultquota BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "defaultmaxmsgcount BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "disable_pop TINYINT(1) NOT NULL DEFAULT 0, disable_imap TINYINT(1) NOT NULL DEFAULT 0, "
    "disable_dialup TINYINT(1) NOT NULL DEFAULT 0, "
    "disable_passwordchanging TINYINT(1) NOT NULL DEFAULT 0, "
    "disable_webmail TINYINT(1) NOT NULL DEFAULT 0, "
    "disable_relay TINYINT(1) NOT NULL DEFAULT 0, disable_smtp TINYINT(1) NOT NULL DEFAULT 0, "
    "disable_spamassassin TINYINT(1) NOT NULL DEFAULT 0, "
    "delete_spam TINYINT(1) NOT NULL DEFAULT 0, disable_maildrop TINYINT(1) NOT NULL DEFAULT 0, "
    "perm_account TINYINT(2) NOT NULL DEFAULT 0, perm_alias TINYINT(2) NOT NULL DEFAULT 0, "
    "perm_forward TINYINT(2) NOT NULL DEFAULT 0, "
    "perm_autoresponder TINYINT(2) NOT NULL DEFAULT 0, "
    "perm_maillist SMALLINT(4) NOT NULL DEFAULT 0, perm_quota TINYINT(2) NOT NULL DEFAULT 0, "
    "perm_defaultquota TINYINT(2) NOT NULL DEFAULT 0")
# vpopmail declares perm_maillist TINYINT(4), too small for the moderators'
# bits it stores there (up to 511): tables made here have a SMALLINT
LIMIT_COLUMNS = (
    "maxpopaccounts", "maxaliases", "maxforwards", "maxautoresponders", "maxmailinglists",
    "diskquota", "maxmsgcount", "defaultquota", "defaultmaxmsgcount", "disable_pop",
    "disable_imap", "disable_dialup", "disable_passwordchanging", "disable_webmail",
    "disable_relay", "disable_smtp", "disable_spamassassin", "delete_spam",
    "disable_maildrop", "perm_account", "perm_alias", "perm_forward", "perm_autoresponder",
    "perm_maillist", "perm_quota", "perm_defaultquota")


def _limits(row):
    """A `limits` row as Limits: perm_maillist holds the mailing list's,
    its users' and its moderators' permissions (vmysql.c vget_limits)."""
    lim = S.Limits()
    for k, v in zip(LIMIT_COLUMNS, row):
        if k == "perm_maillist":
            lim.set_maillist_perms(_int(v))
        else:
            lim.values[k] = _int(v)
    return lim

_driver = None


def driver():
    """The DB-API module: MySQLdb if installed, else PyMySQL."""
    global _driver
    if _driver is None:
        try:
            import MySQLdb as db
        except ImportError:
            try:
                import pymysql as db
            except ImportError as e:
                raise TempFail("no MySQL driver (install PyMySQL): %s" % e)
        # PyMySQL's connection errors keep traceback.format_exc(), which from
        # Python 3.13 on imports tokenize and ast lazily (and the socket
        # code encodings.idna): load them now, while the Python installation
        # is still readable, not in a server that has dropped to vpopmail's
        # uid when the database goes away
        for name in ("tokenize", "ast", "encodings.idna"):
            try:
                __import__(name)
            except ImportError:
                pass
        _driver = db
    return _driver


def config_path():
    return os.path.join(S.vpopmailhome(), "etc", "vpopmail.mysql")


def read_config():
    """[(host, port, user, password, database)] for reading and updating."""
    path = config_path()
    try:
        with open(path, "rb") as f:
            data = f.read(65536)
    except OSError as e:
        raise TempFail("unable to read %s: %s" % (path, e))
    out = []
    for line in data.split(b"\n"):
        line = S._decode(line).strip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        f = line.split("|")
        if len(f) < 5:
            raise StoreError(S.VA_PARSE_ERROR)
        out.append((f[0].strip(), S._atoi(S._encode(f[1])), f[2].strip(), f[3],
                    f[4].strip()))
        if len(out) == 2:
            break
    if not out:
        raise StoreError(S.VA_PARSE_ERROR)
    return out


def timeout():
    try:
        t = float(os.environ.get("QTOOLS_MYSQL_TIMEOUT", "5"))
    except ValueError:
        t = 5.0
    return max(1, int(t + 0.999))


def munch_domain(domain):
    return "".join("_" if c in ".-" else c for c in domain)


class MysqlStore(S.Store):
    name = "mysql"

    def __init__(self, config=None):
        self.config = config or read_config()
        self.many = os.environ.get("VPOPMAIL_MANY_DOMAINS", "1") != "0"
        self.conns = [None, None]
        self.has_clear = True
        self.has_limits = True

    # -- connection
    def _connect(self, cfg):
        db = driver()
        host, port, user, password, database = cfg
        t = timeout()
        kw = dict(user=user, connect_timeout=t, read_timeout=t, write_timeout=t,
                  charset="utf8mb4", autocommit=True)
        if host.startswith("/"):
            kw["unix_socket"] = host
        elif host in ("", "localhost"):
            kw["unix_socket"] = os.environ.get("MYSQL_UNIX_PORT") or "/run/mysqld/mysqld.sock"
        else:
            kw["host"] = host
            kw["port"] = port or 3306
        if db.__name__ == "MySQLdb":
            kw.update(passwd=password, db=database)
        else:
            kw.update(password=password, database=database)
            if "unix_socket" in kw or host.startswith("127.") or host == "::1":
                # PyMySQL >= 1.2 prefers TLS and builds a verifying context
                # for every connection (~25 ms, most of a vchkpw run); on the
                # machine itself TLS protects nothing
                kw["ssl_disabled"] = True
        try:
            return db.connect(**kw)
        except db.Error as e:
            raise TempFail("unable to connect to MySQL: %s" % _errtext(e))

    def _conn(self, update):
        i = 1 if update and len(self.config) > 1 else 0
        if self.conns[i] is None:
            self.conns[i] = self._connect(self.config[i])
        return self.conns[i]

    def _run(self, sql, args=(), update=False, fetch=True):
        """Run one statement; TempFail on any failure but a missing table
        or column, which comes back as SchemaError for the caller."""
        db = driver()
        conn = self._conn(update)
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, args)
                return cur.fetchall() if fetch else cur.rowcount
            finally:
                cur.close()
        except db.Error as e:
            c = _code(e)
            if c in (ER_NO_SUCH_TABLE, ER_BAD_FIELD):
                raise SchemaError(c, _errtext(e))
            if c == ER_DUP_ENTRY:
                raise StoreError(S.VA_USERNAME_EXISTS)
            if not isinstance(e, (db.ProgrammingError, db.IntegrityError)):
                self._drop(conn)                # a connection error: reconnect next time
            raise TempFail("MySQL: %s" % _errtext(e))

    def _drop(self, conn):
        for i, c in enumerate(self.conns):
            if c is conn:
                self.conns[i] = None
        try:
            conn.close()
        except Exception:                           # noqa: BLE001 - already dead
            pass

    def close(self):
        for c in set(x for x in self.conns if x is not None):
            self._drop(c)

    # -- tables
    def _table(self, domain):
        return "vpopmail" if self.many else munch_domain(domain)

    def _where(self, domain):
        return ("pw_name = %s AND pw_domain = %s", (domain,)) if self.many \
            else ("pw_name = %s", ())

    def create_tables(self, domain):
        t = self._table(domain)
        layout = TABLE_LAYOUT if self.many else TABLE_LAYOUT_SMALL
        self._run("CREATE TABLE IF NOT EXISTS `%s` ( %s )" % (t, layout), update=True,
                  fetch=False)
        self._run("CREATE TABLE IF NOT EXISTS `lastauth` ( %s )" % LASTAUTH_LAYOUT,
                  update=True, fetch=False)

    def _select_cols(self):
        cols = "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell"
        return cols + (", pw_clear_passwd" if self.has_clear else "")

    def _select(self, sql_tail, args, update=False):
        while True:
            try:
                return self._run("SELECT %s FROM %s" % (self._select_cols(), sql_tail), args,
                                 update=update)
            except SchemaError as e:
                if _code(e) == ER_BAD_FIELD and self.has_clear:
                    self.has_clear = False          # built without CLEAR_PASS
                    continue
                if _code(e) == ER_NO_SUCH_TABLE:
                    return []
                raise TempFail("MySQL: %s" % _errtext(e))

    @staticmethod
    def _user(row):
        r = ["" if v is None else v for v in row]
        return User(_s(r[0]), _s(r[1]), _int(r[2]), _int(r[3]), _s(r[4]), _s(r[5]),
                    _s(r[6]) or "NOQUOTA", _s(r[7]) if len(r) > 7 else "")

    # -- the interface
    def getpw(self, user, domain):
        cond, extra = self._where(domain)
        rows = self._select("`%s` WHERE %s" % (self._table(domain), cond), (user,) + extra)
        if not rows:
            return None
        return self.setflags(self._user(rows[0]), domain)

    def getall(self, domain):
        tail = "`%s`" % self._table(domain)
        args = ()
        if self.many:
            tail += " WHERE pw_domain = %s"
            args = (domain,)
        rows = self._select(tail + " ORDER BY pw_name", args)
        lim = self.get_limits(domain)
        out = []
        for row in rows:
            pw = self._user(row)
            pw.flags = pw.gid if pw.gid & S.V_OVERRIDE else pw.gid | lim.flag_mask()
            out.append(pw)
        return out

    def _write(self, sql, args, domain):
        """An update; a missing table is created once (vmysql.c does the
        same on its first insert)."""
        try:
            return self._run(sql, args, update=True, fetch=False)
        except SchemaError as e:
            if _code(e) == ER_NO_SUCH_TABLE:
                self.create_tables(domain)
                return self._run(sql, args, update=True, fetch=False)
            if _code(e) == ER_BAD_FIELD and self.has_clear:
                self.has_clear = False
                raise _Retry()
            raise TempFail("MySQL: %s" % _errtext(e))

    def adduser(self, user, domain, crypted, clear, gecos, dir, apop=S.USE_POP):
        if not S.clear_passwords():
            clear = ""
        while True:
            cols = ["pw_name"] + (["pw_domain"] if self.many else []) + [
                "pw_passwd", "pw_uid", "pw_gid", "pw_gecos", "pw_dir", "pw_shell"]
            vals = [user] + ([domain] if self.many else []) + [
                crypted, apop, 0, gecos or user, dir, "NOQUOTA"]
            if self.has_clear:
                cols.append("pw_clear_passwd")
                vals.append(clear)
            sql = "INSERT INTO `%s` (%s) VALUES (%s)" % (
                self._table(domain), ", ".join(cols), ", ".join(["%s"] * len(vals)))
            try:
                self._write(sql, tuple(vals), domain)
                return
            except _Retry:
                continue

    def setpw(self, pw, domain):
        cond, extra = self._where(domain)
        while True:
            sets = "pw_passwd = %s, pw_uid = %s, pw_gid = %s, pw_gecos = %s, pw_dir = %s, " \
                   "pw_shell = %s"
            vals = [pw.passwd, pw.uid, pw.gid, pw.gecos, pw.dir, pw.shell]
            if self.has_clear:
                sets += ", pw_clear_passwd = %s"
                vals.append(pw.clear if S.clear_passwords() else "")
            sql = "UPDATE `%s` SET %s WHERE %s" % (self._table(domain), sets, cond)
            try:
                self._write(sql, tuple(vals) + (pw.name,) + extra, domain)
                break
            except _Retry:
                continue
        S.noquota_maildirsize(pw)

    def deluser(self, user, domain):
        cond, extra = self._where(domain)
        self._write("DELETE FROM `%s` WHERE %s" % (self._table(domain), cond),
                    (user,) + extra, domain)
        self._quiet("DELETE FROM `lastauth` WHERE user = %s AND domain = %s", (user, domain))

    def _quiet(self, sql, args):
        """A write to an optional table: a missing table is fine."""
        try:
            self._run(sql, args, update=True, fetch=False)
        except SchemaError as e:
            if _code(e) != ER_NO_SUCH_TABLE:
                raise TempFail("MySQL: %s" % _errtext(e))

    def adddomain(self, domain):
        self.create_tables(domain)

    def deldomain(self, domain):
        if self.many:
            self._quiet("DELETE FROM `vpopmail` WHERE pw_domain = %s", (domain,))
        else:
            self._run("DROP TABLE IF EXISTS `%s`" % self._table(domain), update=True,
                      fetch=False)
        self._quiet("DELETE FROM `lastauth` WHERE domain = %s", (domain,))
        self.del_limits(domain)

    def set_lastauth(self, pw, domain, ip):
        self._write("REPLACE INTO `lastauth` (user, domain, remote_ip, timestamp) "
                    "VALUES (%s, %s, %s, %s)", (pw.name, domain, ip, int(time.time())), domain)

    def get_lastauth(self, pw, domain):
        try:
            rows = self._run("SELECT timestamp, remote_ip FROM `lastauth` WHERE user = %s "
                             "AND domain = %s", (pw.name, domain))
        except SchemaError:
            return 0, None
        if not rows:
            return 0, None
        return _int(rows[0][0]), _s(rows[0][1])

    def get_limits(self, domain):
        if self.has_limits:
            try:
                rows = self._run("SELECT %s FROM `limits` WHERE domain = %s"
                                 % (", ".join(LIMIT_COLUMNS), "%s"), (domain,))
            except SchemaError as e:
                if _code(e) not in (ER_NO_SUCH_TABLE, ER_BAD_FIELD):
                    raise TempFail("MySQL: %s" % _errtext(e))
                self.has_limits = False
                rows = []
            if rows:
                return _limits(rows[0])
        return S.file_limits(domain)

    def del_limits(self, domain):
        self._quiet("DELETE FROM `limits` WHERE domain = %s", (domain,))
        S.Store.del_limits(self, domain)

    # -- virtual aliases: the valias table (vmysql.c, VALIAS builds)
    def _valias_run(self, sql, args, update=False):
        """A valias statement; the table is created when missing, as
        vmysql.c's vcreate_valias_table() retry does."""
        try:
            return self._run(sql, args, update=update, fetch=not update)
        except SchemaError as e:
            if _code(e) != ER_NO_SUCH_TABLE:
                raise TempFail("MySQL: %s" % _errtext(e))
        self._run("CREATE TABLE IF NOT EXISTS `valias` ( %s )" % VALIAS_LAYOUT, update=True,
                  fetch=False)
        try:
            return self._run(sql, args, update=update, fetch=not update)
        except SchemaError as e:
            raise TempFail("MySQL: %s" % _errtext(e))

    def _valias_check(self, alias, domain, line=None):
        S.check_valias(alias, domain, line)
        if len(alias) > VALIAS_ALIAS_MAX:
            raise StoreError(S.VA_USER_NAME_TOO_LONG,
                             "alias name too long (max=%d)" % VALIAS_ALIAS_MAX)
        if S.get_assign(domain) is None:            # as the file store: no domain, no alias
            raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)

    def valias_select(self, alias, domain):
        if not S.valias_name_ok(alias) or len(alias) > VALIAS_ALIAS_MAX or not domain:
            return []
        rows = self._valias_run("SELECT valias_line FROM `valias` WHERE alias = %s AND "
                                "domain = %s ORDER BY id", (alias, domain))
        return [_s(r[0]) for r in rows]

    def valias_insert(self, alias, domain, line):
        line = S.valias_line(line)
        self._valias_check(alias, domain, line)
        self._valias_run("INSERT INTO `valias` (alias, domain, valias_line) VALUES "
                         "(%s, %s, %s)", (alias, domain, line), update=True)

    def valias_remove(self, alias, domain, line):
        line = S.valias_line(line)
        self._valias_check(alias, domain, line)
        self._valias_run("DELETE FROM `valias` WHERE alias = %s AND valias_line = %s AND "
                         "domain = %s", (alias, line, domain), update=True)

    def valias_delete(self, alias, domain):
        self._valias_check(alias, domain)
        self._valias_run("DELETE FROM `valias` WHERE alias = %s AND domain = %s",
                         (alias, domain), update=True)

    def valias_names(self, domain):
        rows = self._valias_run("SELECT DISTINCT alias FROM `valias` WHERE domain = %s",
                                (domain,))
        return sorted((_s(r[0]) for r in rows), key=lambda x: (x.lower(), x))

    def valias_select_all(self, domain):
        rows = self._valias_run("SELECT alias, valias_line FROM `valias` WHERE domain = %s "
                                "ORDER BY id", (domain,))
        by = {}
        for alias, line in rows:
            by.setdefault(_s(alias), []).append(_s(line))
        return [(a, x) for a in sorted(by, key=lambda x: (x.lower(), x)) for x in by[a]]

    def valias_delete_domain(self, domain):
        """valias_delete_domain(): every alias of the domain."""
        self._valias_run("DELETE FROM `valias` WHERE domain = %s", (domain,), update=True)

    # -- bulk loads (vconvert): one transaction each, so a server that goes
    # away half-way leaves the tables as they were
    def _transaction(self, statements):
        """Run [(sql, args)] in one transaction on the update server;
        TempFail (after a rollback) on any error."""
        db = driver()
        conn = self._conn(True)
        try:
            cur = conn.cursor()
            try:
                cur.execute("START TRANSACTION")
                for sql, args in statements:
                    cur.execute(sql, args)
            finally:
                cur.close()
            conn.commit()
        except db.Error as e:
            try:
                conn.rollback()
            except db.Error:
                pass
            if _code(e) in (ER_NO_SUCH_TABLE, ER_BAD_FIELD):
                raise SchemaError(*e.args)
            self._drop(conn)
            raise TempFail("MySQL: %s" % _errtext(e))

    def replace_users(self, domain, users):
        self.create_tables(domain)
        while True:
            cols = ["pw_name"] + (["pw_domain"] if self.many else []) + [
                "pw_passwd", "pw_uid", "pw_gid", "pw_gecos", "pw_dir", "pw_shell"]
            if self.has_clear:
                cols.append("pw_clear_passwd")
            sql = "REPLACE INTO `%s` (%s) VALUES (%s)" % (
                self._table(domain), ", ".join(cols), ", ".join(["%s"] * len(cols)))
            stmts = []
            for pw in users:
                vals = [pw.name] + ([domain] if self.many else []) + [
                    pw.passwd, pw.uid, pw.gid, pw.gecos, pw.dir, pw.shell]
                if self.has_clear:
                    vals.append(pw.clear)
                stmts.append((sql, tuple(vals)))
            names = [pw.name for pw in users]
            where = "pw_domain = %s" if self.many else "1 = 1"
            args = (domain,) if self.many else ()
            if names:
                where += " AND pw_name NOT IN (%s)" % ", ".join(["%s"] * len(names))
                args += tuple(names)
            stmts.append(("DELETE FROM `%s` WHERE %s" % (self._table(domain), where), args))
            try:
                self._transaction(stmts)
                return
            except SchemaError as e:
                if _code(e) == ER_BAD_FIELD and self.has_clear:
                    self.has_clear = False          # built without CLEAR_PASS
                    continue
                raise TempFail("MySQL: %s" % _errtext(e))

    def put_lastauth(self, pw, domain, t, ip):
        self._write("REPLACE INTO `lastauth` (user, domain, remote_ip, timestamp) "
                    "VALUES (%s, %s, %s, %s)", (pw.name, domain, ip, int(t)), domain)

    def valias_load(self, domain, rows):
        """The domain's rows become exactly rows (the table holds the
        domain's whole alias set)."""
        rows = [(a, S.valias_line(x)) for a, x in rows]
        for a, x in rows:
            self._valias_check(a, domain, x)
        stmts = [("DELETE FROM `valias` WHERE domain = %s", (domain,))]
        stmts += [("INSERT INTO `valias` (alias, domain, valias_line) VALUES (%s, %s, %s)",
                   (a, domain, x)) for a, x in rows]
        for attempt in (0, 1):
            try:
                self._transaction(stmts)
                return
            except SchemaError as e:
                if attempt or _code(e) != ER_NO_SUCH_TABLE:
                    raise TempFail("MySQL: %s" % _errtext(e))
                self._run("CREATE TABLE IF NOT EXISTS `valias` ( %s )" % VALIAS_LAYOUT,
                          update=True, fetch=False)

    def explicit_limits(self, domain):
        """The domain's row in `limits` (None without one)."""
        try:
            rows = self._run("SELECT %s FROM `limits` WHERE domain = %s"
                             % (", ".join(LIMIT_COLUMNS), "%s"), (domain,))
        except SchemaError:
            return None
        if not rows:
            return None
        return _limits(rows[0])

    def set_limits(self, domain, lim):
        """A `limits` row (vmysql.c vset_limits; the table is created with
        vpopmail's layout when missing)."""
        sql = "REPLACE INTO `limits` (domain, %s) VALUES (%s)" % (
            ", ".join(LIMIT_COLUMNS), ", ".join(["%s"] * (len(LIMIT_COLUMNS) + 1)))
        args = (domain,) + tuple(lim.maillist_perms() if k == "perm_maillist"
                                 else lim.values.get(k, 0) for k in LIMIT_COLUMNS)
        try:
            self._run(sql, args, update=True, fetch=False)
        except SchemaError as e:
            if _code(e) != ER_NO_SUCH_TABLE:
                raise TempFail("MySQL: %s" % _errtext(e))
            self._run("CREATE TABLE IF NOT EXISTS `limits` ( %s )" % LIMITS_LAYOUT,
                      update=True, fetch=False)
            self._run(sql, args, update=True, fetch=False)
        self.has_limits = True

    # -- alias domains: sagredo's sql-aliasdomains table
    def aliasdomain_add(self, alias, domain):
        sql = "REPLACE INTO `aliasdomains` (alias, domain) VALUES (%s, %s)"
        try:
            self._run(sql, (alias, domain), update=True, fetch=False)
        except SchemaError as e:
            if _code(e) != ER_NO_SUCH_TABLE:
                raise TempFail("MySQL: %s" % _errtext(e))
            self._run("CREATE TABLE IF NOT EXISTS `aliasdomains` ( %s )" % ALIASDOMAINS_LAYOUT,
                      update=True, fetch=False)
            self._run(sql, (alias, domain), update=True, fetch=False)

    def aliasdomain_del(self, alias):
        self._quiet("DELETE FROM `aliasdomains` WHERE alias = %s", (alias,))

    # -- hashed directories: the dir_control table (vmysql.c)
    def _dc_run(self, sql, args, update):
        try:
            return self._run(sql, args, update=update, fetch=not update)
        except SchemaError as e:
            if _code(e) != ER_NO_SUCH_TABLE:
                raise TempFail("MySQL: %s" % _errtext(e))
        self._run("CREATE TABLE IF NOT EXISTS `dir_control` ( %s )" % DIR_CONTROL_LAYOUT,
                  update=True, fetch=False)
        try:
            return self._run(sql, args, update=update, fetch=not update)
        except SchemaError as e:
            raise TempFail("MySQL: %s" % _errtext(e))

    def read_dir_control(self, key, uid, gid):
        from qtools.vpopmail import bigdir
        rows = self._dc_run("SELECT %s FROM `dir_control` WHERE domain = %%s"
                            % ", ".join(DIR_CONTROL_COLUMNS), (key,), False)
        if not rows:
            return bigdir.VDir()
        try:
            return bigdir.from_row(rows[0])
        except (bigdir.Corrupt, ValueError, TypeError) as e:
            raise StoreError(S.VA_BAD_DIR, "corrupt dir_control row %s: %s" % (key, e))

    def write_dir_control(self, key, vdir, uid, gid):
        sql = "REPLACE INTO `dir_control` (domain, %s) VALUES (%s)" % (
            ", ".join(DIR_CONTROL_COLUMNS), ", ".join(["%s"] * (len(DIR_CONTROL_COLUMNS) + 1)))
        self._dc_run(sql, (key,) + vdir.fields(), True)

    def del_dir_control(self, key):
        self._quiet("DELETE FROM `dir_control` WHERE domain = %s", (key,))


DIR_CONTROL_LAYOUT = (
    "domain CHAR(96) NOT NULL, cur_users INT, level_cur INT, level_max INT, "
    "level_start0 INT, level_start1 INT, level_start2 INT, level_end0 INT, level_end1 INT, "
    "level_end2 INT, level_mod0 INT, level_mod1 INT, level_mod2 INT, level_index0 INT, "
    "level_index1 INT, level_index2 INT, the_dir CHAR(160), PRIMARY KEY (domain)")
DIR_CONTROL_COLUMNS = (
    "cur_users", "level_cur", "level_max", "level_start0", "level_start1", "level_start2",
    "level_end0", "level_end1", "level_end2", "level_mod0", "level_mod1", "level_mod2",
    "level_index0", "level_index1", "level_index2", "the_dir")


class _Retry(Exception):
    pass


class SchemaError(Exception):
    """A missing table or column (the drivers differ in the class)."""


def _code(e):
    try:
        return int(e.args[0])
    except (IndexError, TypeError, ValueError):
        return 0


def _errtext(e):
    text = " ".join(str(a) for a in e.args) or type(e).__name__
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200]


def _s(v):
    if isinstance(v, bytes):
        return S._decode(v)
    return "" if v is None else str(v)


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0
