"""store_cdb - vpopmail's default (cdb) user store, file for file.

Per domain directory (from users/cdb): `vpasswd`, one line per user, sorted
by name, `name:crypted:apop:flags:gecos:dir:quota[:clear]`; `vpasswd.cdb`
with key = name and value = the rest of the line (rebuilt from vpasswd after
each change: vpasswd.cdb.tmp, fsync, rename); `vpasswd.lock`, the fcntl
lock writers hold.  Lookups read vpasswd.cdb only (vpasswd when the cdb is
missing).  Last authentication: `<userdir>/lastauth` holds the IP, its mtime
the time (vcdb.c set_lastauth).  Domain limits are the files of
store.file_limits().
Hashed directories (bigdir): `.dir-control` in the domain directory for
its users, `$VPOPMAILHOME/domains/.dir-control` for the `dom_<uid>`
counter of the domains (vcdb.c's text format, bigdir.format_file).

Virtual aliases (vpopmail without --enable-valias, vpalias.c): one file per
alias in the domain directory, `.qmail-<alias>` with '.' stored as ':', one
delivery line per line (`&addr` forwards, `|prog`, `/maildir/`), which
qmail-local reads itself.  Written as a whole under vpasswd.lock (temporary
file, fsync, rename, fsync of the directory), mode 0600, owned by the
domain's uid/gid; an alias left without lines is removed (an empty dot-qmail
file would mean default delivery).  A symbolic link (an ezmlm list) is read
through, listed once by its base name, deleted as a link, never written.
"""
import errno
import os

from qtools.lib.fd import fsync_dir
from qtools.vpopmail import store as S
from qtools.vpopmail.store import TempFail, StoreError, User

VPASSWD = "vpasswd"
VPASSWD_CDB = "vpasswd.cdb"
VPASSWD_CDB_TMP = "vpasswd.cdb.tmp"
VPASSWD_LOCK = "vpasswd.lock"
DIR_CONTROL = ".dir-control"


def parse_line(name, rest):
    """A User from the name and the text after its first ':'."""
    f = rest.split(":", 6)
    f += [""] * (7 - len(f))
    return User(name, f[0], S._atoi(S._encode(f[1])), S._atoi(S._encode(f[2])), f[3], f[4],
                f[5], f[6])


def format_line(pw, clear):
    line = "%s:%s:%d:%d:%s:%s:%s" % (pw.name, pw.passwd, pw.uid, pw.gid, pw.gecos, pw.dir,
                                     pw.shell)
    if clear:
        line += ":" + pw.clear
    return line


def _strip_colons(s):
    return s.replace(":", "")                      # vcdb_strip_char


class CdbStore(S.Store):
    name = "cdb"

    def _domdir(self, domain):
        a = S.get_assign(domain)
        return a.dir if a else None

    # -- reads
    def getpw(self, user, domain):
        from qtools.lib import cdb
        d = self._domdir(domain)
        if d is None:
            return None
        key = S._encode(user)
        try:
            r = cdb.reader(os.path.join(d, VPASSWD_CDB))
        except FileNotFoundError:
            for pw in self._lines(d):              # no index yet: the text file
                if pw.name == user:
                    return self.setflags(pw, domain)
            return None
        except OSError as e:
            raise TempFail("unable to read %s/%s: %s" % (d, VPASSWD_CDB, e))
        try:
            v = r.get(key)
        except OSError as e:
            raise TempFail("unable to read %s/%s: %s" % (d, VPASSWD_CDB, e))
        finally:
            r.close()
        if v is None:
            return None
        return self.setflags(parse_line(user, S._decode(v)), domain)

    def _lines(self, d):
        try:
            with open(os.path.join(d, VPASSWD), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise TempFail("unable to read %s/%s: %s" % (d, VPASSWD, e))
        out = []
        for line in data.split(b"\n"):
            if line.count(b":") < 6:
                continue                            # vgetent skips short lines
            name, rest = S._decode(line).split(":", 1)
            out.append(parse_line(name, rest))
        return out

    def getall(self, domain):
        d = self._domdir(domain)
        if d is None:
            return []
        lim = self.get_limits(domain)
        out = self._lines(d)
        for pw in out:
            pw.flags = pw.gid if pw.gid & S.V_OVERRIDE else pw.gid | lim.flag_mask()
        return out

    # -- writes: lock, rewrite vpasswd, rebuild vpasswd.cdb
    def _rewrite(self, domain, edit):
        """edit(list of raw lines) -> new list; then vpasswd and its cdb are
        replaced atomically under vpasswd.lock."""
        import fcntl
        a = S.get_assign(domain)
        if a is None:
            raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
        d = a.dir
        old = os.umask(0o077)
        try:
            lock = os.open(os.path.join(d, VPASSWD_LOCK), os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as e:
            os.umask(old)
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "unable to open %s/%s: %s"
                             % (d, VPASSWD_LOCK, e))
        try:
            fcntl.lockf(lock, fcntl.LOCK_EX)
            try:
                with open(os.path.join(d, VPASSWD), "rb") as f:
                    lines = [x for x in f.read().split(b"\n") if x]
            except FileNotFoundError:
                lines = []
            lines = edit(lines)
            tmp = os.path.join(d, "vpasswd.bak.%d" % os.getpid())
            _write_file(tmp, b"".join(x + b"\n" for x in lines))
            os.rename(tmp, os.path.join(d, VPASSWD))
            make_vpasswd_cdb(d, lines)
            fsync_dir(d)
            for n in (VPASSWD, VPASSWD_CDB, VPASSWD_LOCK):
                _chown(os.path.join(d, n), a.uid, a.gid)
        except OSError as e:
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "unable to update %s/%s: %s"
                             % (d, VPASSWD, e))
        finally:
            os.close(lock)
            os.umask(old)

    def adduser(self, user, domain, crypted, clear, gecos, dir, apop=S.USE_POP):
        if user == "vpasswd":                       # do not trod on the vpasswd file
            raise StoreError(S.VA_ILLEGAL_USERNAME)
        pw = User(user, crypted, 1 if apop == S.USE_POP else 2, 0,
                  _strip_colons(gecos or user), dir, "NOQUOTA", clear)
        line = S._encode(format_line(pw, S.clear_passwords()))
        key = S._encode(user)

        def edit(lines):
            out, added = [], False
            for x in lines:
                name = x.split(b":", 1)[0]
                if name == key:
                    raise StoreError(S.VA_USERNAME_EXISTS)
                if not added and key < name:
                    out.append(line)
                    added = True
                out.append(x)
            if not added:
                out.append(line)
            return out
        self._rewrite(domain, edit)

    def setpw(self, pw, domain):
        pw.gecos = _strip_colons(pw.gecos)
        keep_clear = S.clear_passwords()
        line = S._encode(format_line(pw, keep_clear))
        key = S._encode(pw.name)
        found = []

        def edit(lines):
            out = []
            for x in lines:
                if x.split(b":", 1)[0] == key:
                    out.append(line)
                    found.append(1)
                else:
                    out.append(x)
            return out
        self._rewrite(domain, edit)
        if not found:
            raise StoreError(S.VA_USER_DOES_NOT_EXIST)
        S.noquota_maildirsize(pw)

    def deluser(self, user, domain):
        key = S._encode(user)
        self._rewrite(domain, lambda lines: [x for x in lines if x.split(b":", 1)[0] != key])

    # -- lastauth: a file in the user's directory
    def set_lastauth(self, pw, domain, ip):
        if not pw.dir:
            return
        path = os.path.join(pw.dir, "lastauth")
        try:
            _write_file(path, S._encode(ip), sync=False)
            a = S.get_assign(domain)
            if a:
                _chown(path, a.uid, a.gid)
        except OSError as e:
            raise TempFail("unable to write %s: %s" % (path, e))

    def get_lastauth(self, pw, domain):
        path = os.path.join(pw.dir, "lastauth")
        try:
            with open(path, "rb") as f:
                ip = S._decode(f.read(300).split(b"\n")[0])
                t = int(os.fstat(f.fileno()).st_mtime)
        except OSError:
            return 0, None
        return t, ip


    # -- bulk loads (vconvert)
    def replace_users(self, domain, users):
        """vpasswd and vpasswd.cdb rewritten at once (sql_to_cdb wrote
        vpasswd alone and left the cdb stale)."""
        keep_clear = S.clear_passwords()
        lines = sorted((S._encode(format_line(pw, keep_clear or bool(pw.clear)))
                        for pw in users), key=lambda x: x.split(b":", 1)[0])
        self._rewrite(domain, lambda old: lines)

    def put_lastauth(self, pw, domain, t, ip):
        self.set_lastauth(pw, domain, ip)
        if pw.dir and t:
            try:
                os.utime(os.path.join(pw.dir, "lastauth"), (t, t))
            except OSError as e:
                raise TempFail("unable to set the time of %s/lastauth: %s" % (pw.dir, e))

    def valias_load(self, domain, rows):
        """Each named alias file is replaced as a whole; other .qmail-*
        files (mailing lists, hand-made dot-qmail files) are left alone."""
        by = {}
        for alias, line in rows:
            by.setdefault(alias, []).append(S.valias_line(line))
        for alias, lines in by.items():
            for x in lines:
                S.check_valias(alias, domain, x)
            self._alias_rewrite(alias, domain, lambda old, lines=lines: lines)

    # -- virtual aliases: .qmail-<alias> files (vpalias.c)
    MAX_ALIAS_FILE = 1 << 20

    def _alias_path(self, alias, domain, write):
        """(Assign, path) of the alias file; writes need a valid name and an
        existing domain (StoreError), reads get (None, None) for either."""
        if write:
            S.check_valias(alias, domain)
        elif not S.valias_name_ok(alias) or not domain or not S.domain_valid(domain):
            return None, None
        a = S.get_assign(domain)
        if a is None:
            if write:
                raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
            return None, None
        return a, os.path.join(a.dir, S.valias_file(alias))

    def _alias_lines(self, path):
        try:
            with open(path, "rb") as f:
                data = f.read(self.MAX_ALIAS_FILE + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # no such alias, unless the domain directory itself is missing
            # (an unmounted file system): then nobody knows
            d = os.path.dirname(path)
            if not os.path.isdir(d):
                raise TempFail("unable to read %s: domain directory missing" % d)
            return []
        except OSError as e:
            raise TempFail("unable to read %s: %s" % (path, e))
        if len(data) > self.MAX_ALIAS_FILE:
            raise TempFail("unable to read %s: file too large" % path)
        return [S._decode(x) for x in data.split(b"\n") if x]

    def valias_select(self, alias, domain):
        a, path = self._alias_path(alias, domain, False)
        return self._alias_lines(path) if path else []

    def _alias_rewrite(self, alias, domain, edit):
        """edit(lines) -> new lines, under vpasswd.lock; the file is
        replaced atomically, or removed when no line is left."""
        import fcntl
        a, path = self._alias_path(alias, domain, True)
        d = a.dir
        if os.path.islink(path):
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE,
                             "%s is a symbolic link (a mailing list?): not changed" % path)
        old = os.umask(0o077)
        try:
            try:
                lock = os.open(os.path.join(d, VPASSWD_LOCK), os.O_WRONLY | os.O_CREAT, 0o600)
            except FileNotFoundError:
                raise StoreError(S.VA_BAD_V_DIR)
            except OSError as e:
                raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "unable to open %s/%s: %s"
                                 % (d, VPASSWD_LOCK, e))
            try:
                _chown(os.path.join(d, VPASSWD_LOCK), a.uid, a.gid)   # as _rewrite leaves it
                fcntl.lockf(lock, fcntl.LOCK_EX)
                lines = edit(self._alias_lines(path))
                if lines:
                    # the temporary name is none a user or an alias can have
                    S.replace_file(path, b"".join(S._encode(x) + b"\n" for x in lines),
                                   a.uid, a.gid, tmp=os.path.join(
                                       d, ".valias.tmp.%d" % os.getpid()))
                else:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        return
                fsync_dir(d)
            except OSError as e:
                raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "unable to update %s: %s"
                                 % (path, e))
            finally:
                os.close(lock)
        finally:
            os.umask(old)

    def valias_insert(self, alias, domain, line):
        line = S.valias_line(line)
        S.check_valias(alias, domain, line)
        self._alias_rewrite(alias, domain, lambda lines: lines + [line])

    def valias_remove(self, alias, domain, line):
        line = S.valias_line(line)
        S.check_valias(alias, domain, line)
        self._alias_rewrite(alias, domain, lambda lines: [x for x in lines if x != line])

    def valias_delete(self, alias, domain):
        a, path = self._alias_path(alias, domain, True)
        try:
            os.unlink(path)                         # a list's symlink goes as a link
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "%s is a directory" % path)
        except OSError as e:
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "unable to remove %s: %s" % (path, e))
        try:
            fsync_dir(a.dir)
        except OSError:
            pass

    def valias_names(self, domain):
        """valias_select_names(): the alias names of the domain's .qmail-*
        files (not .qmail-default; of a symlinked list only the base name),
        ':' read as '.', sorted case-insensitively."""
        a = S.get_assign(domain) if domain and S.domain_valid(domain) else None
        if a is None:
            return []
        try:
            names = os.listdir(a.dir)
        except OSError as e:
            raise TempFail("unable to read %s: %s" % (a.dir, e))
        out = []
        for n in names:
            if not n.startswith(".qmail-") or n == ".qmail-default":
                continue
            if os.path.islink(os.path.join(a.dir, n)) and ("-default" in n or "-owner" in n):
                continue
            alias = n[7:].replace(":", ".")
            if S.valias_name_ok(alias):
                out.append(alias)
        out.sort(key=lambda x: (x.lower(), x))
        return out

    def valias_select_all(self, domain):
        a = S.get_assign(domain) if domain and S.domain_valid(domain) else None
        if a is None:
            return []
        out = []
        for alias in self.valias_names(domain):
            for line in self._alias_lines(os.path.join(a.dir, S.valias_file(alias))):
                out.append((alias, line))
        return out

    # -- hashed directories: .dir-control files (vcdb.c dc_filename)
    def dir_control_path(self, key, uid):
        """<domaindir>/.dir-control for a domain of users/assign; for
        `dom_<uid>`, $VPOPMAILHOME/domains/.dir-control when uid is the
        vpopmail user's or owns $VPOPMAILHOME, else <uid's home>/domains/."""
        a = S.get_assign(key) if S.domain_valid(key) else None
        if a is not None:
            return os.path.join(a.dir, DIR_CONTROL)
        if not key.startswith("dom_"):
            raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
        import pwd
        home = S.vpopmailhome()
        mine = set()
        try:
            mine.add(pwd.getpwnam("vpopmail").pw_uid)
        except KeyError:
            pass
        try:
            mine.add(os.stat(home).st_uid)
        except OSError:
            pass
        if uid not in mine:
            try:
                home = pwd.getpwuid(uid).pw_dir
            except KeyError:
                raise StoreError(S.VA_BAD_UID, "no home directory for uid %d" % uid)
        return os.path.join(home, "domains", DIR_CONTROL)

    def read_dir_control(self, key, uid, gid):
        from qtools.vpopmail import bigdir
        path = self.dir_control_path(key, uid)
        try:
            with open(path, "rb") as f:
                data = f.read(64 * 1024)
        except FileNotFoundError:
            return bigdir.VDir()
        except OSError as e:
            raise TempFail("unable to read %s: %s" % (path, e))
        try:
            return bigdir.parse_file(data)
        except bigdir.Corrupt as e:
            raise StoreError(S.VA_BAD_DIR, "corrupt %s: %s" % (path, e))

    def write_dir_control(self, key, vdir, uid, gid):
        """vwrite_dir_control(): <file>.<pid>, fsync, rename, owned by
        uid/gid."""
        from qtools.vpopmail import bigdir
        path = self.dir_control_path(key, uid)
        if key.startswith("dom_") and not os.path.isdir(os.path.dirname(path)):
            # vadddomain -d elsewhere, with no domains/ in that home: vpopmail's
            # fopen fails and the count is not kept; so here
            return
        try:
            S.replace_file(path, bigdir.format_file(vdir), uid, gid,
                           tmp="%s.%d" % (path, os.getpid()))
            fsync_dir(os.path.dirname(path))
        except OSError as e:
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "unable to write %s: %s" % (path, e))

    def del_dir_control(self, key):
        a = S.get_assign(key) if S.domain_valid(key) else None
        if a is None:
            return
        try:
            os.unlink(os.path.join(a.dir, DIR_CONTROL))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "unable to remove %s/%s: %s"
                             % (a.dir, DIR_CONTROL, e))


def make_vpasswd_cdb(d, lines=None):
    """vpasswd.cdb from vpasswd's lines: key name, value the rest of the
    line, in file order (make_vpasswd_cdb in vcdb.c); tmp, fsync, rename."""
    from qtools.lib import cdb
    if lines is None:
        with open(os.path.join(d, VPASSWD), "rb") as f:
            lines = [x for x in f.read().split(b"\n") if x]
    tmp = os.path.join(d, VPASSWD_CDB_TMP)
    m = cdb.make(tmp)
    for x in lines:
        i = x.find(b":")
        if i < 0:
            continue
        m.add(x[:i], x[i + 1:])
    m.finish()
    os.chmod(tmp, 0o600)
    os.rename(tmp, os.path.join(d, VPASSWD_CDB))


def _write_file(path, data, sync=True, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _chown(path, uid, gid):
    try:
        os.chown(path, uid, gid)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EINVAL):
            raise
