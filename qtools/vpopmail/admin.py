"""admin - what vpopmail.c does to the file system and to qmail.

vadddomain/vdeldomain/vaddaliasdomain maintain $VPOPMAILHOME/domains/<dom>
(.qmail-default calling vdelivermail), qmail's users/assign and users/cdb
(qmail-newu's format: key `!dom-`, value `dom\\0uid\\0gid\\0dir\\0-\\0`, plus
the wildchars record), control/rcpthosts (morercpthosts + its cdb from the
50th domain on, as qmail-newmrh makes it), control/virtualdomains (`dom:dom`)
and control/locals, then send SIGHUP to the qmail-send of this QMAILHOME.
vadduser/vdeluser/vpasswd/vsetuserquota keep the user directory
(<domdir>/<user>/Maildir/{new,cur,tmp}) and the store in step.

Hashed directories, as vpopmail built with USERS_BIG_DIR (the default)
makes them (qtools.vpopmail.bigdir): the domain's counter puts its 100th
user in <domdir>/0/<user>, the 200th in <domdir>/1/<user>, ... then
<domdir>/0/0/<user>; the owner's `dom_<uid>` counter does the same for the
domains themselves ($VPOPMAILHOME/domains/0/<dom> from the 100th domain of
that uid on).  vdeluser and vdeldomain count down, vdeldomain drops the
domain's own counter.  The counters live where vpopmail keeps them (the
cdb store's .dir-control files, the MySQL store's dir_control table), so
either implementation can add the next user.  Stored paths are used as
stored.

Every file is rewritten as vpopmail does (a temporary file, then rename),
with an fsync before the rename.  Names are checked before any path is made
from them, and nothing is created or removed outside the domain's directory.
Differences from vpopmail: an exact duplicate line is never added to a
control file, users/assign.cdb (s/qmail) is rewritten too when it exists; a
counter is read, incremented and written under an flock of the directory it
hashes, a corrupt counter is an error (never a path), a failed addition
counts down again and no count goes below 0.
"""
import errno
import os
import signal

from qtools.vpopmail import store as S
from qtools.vpopmail.store import StoreError

DIR_MODE = 0o750            # VPOPMAIL_DIR_MODE
QMAIL_MODE = 0o644          # VPOPMAIL_QMAIL_MODE


def vpopmail_ids():
    """(uid, gid) for new domains: the vpopmail user, else the owner of
    $VPOPMAILHOME (so a private installation needs no system user)."""
    import pwd
    try:
        p = pwd.getpwnam("vpopmail")
        return p.pw_uid, p.pw_gid
    except KeyError:
        pass
    try:
        st = os.stat(S.vpopmailhome())
        return st.st_uid, st.st_gid
    except OSError:
        return os.getuid(), os.getgid()


def chown(path, uid, gid):
    try:
        os.lchown(path, uid, gid)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EINVAL):
            raise


def r_chown(path, uid, gid):
    chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            chown(os.path.join(root, n), uid, gid)


def inside(path, top):
    """Whether path resolves to top or below it."""
    rp, rt = os.path.realpath(path), os.path.realpath(top)
    return rp == rt or rp.startswith(rt.rstrip("/") + "/")


def delete_tree(path, top):
    """vdelfiles(path), refusing anything that is not strictly below top."""
    import shutil
    if not inside(path, top) or os.path.realpath(path) == os.path.realpath(top):
        raise StoreError(S.VA_BAD_DIR, "refusing to delete %s: not inside %s" % (path, top))
    if os.path.islink(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


# -- text files: qmail's control files and users/assign ----------------------
def _read_all_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [S._decode(x) for x in lines]


def write_lines(path, lines, mode=QMAIL_MODE):
    tmp = "%s.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        data = b"".join(S._encode(x) + b"\n" for x in lines)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def extract_domain(line, file_type):
    """update_file's sort key: the domain with its last two labels first
    (mail.example.com -> example.com.mail)."""
    if file_type == 1:
        d = line[1:].split(":", 1)[0]
        d = d[:-1] if d else d
    else:
        d = line.split(":", 1)[0]
    parts = [p for p in d.split(".") if p][:10]
    if len(parts) > 1:
        parts = parts[-2:] + parts[:-2]
    return ".".join(parts)


def update_file(path, line, file_type):
    """Insert line in vpopmail's order (1 = users/assign with its final '.',
    2 = rcpthosts/morercpthosts, 3 = virtualdomains)."""
    lines = _read_all_lines(path)
    if file_type == 1:
        lines = [x for x in lines if x != "."]
    if line in lines:
        out = lines
    else:
        key = extract_domain(line, file_type)
        out, hit = [], False
        for x in lines:
            if not hit and extract_domain(x, file_type) > key:
                out.append(line)
                hit = True
            out.append(x)
        if not hit:
            out.append(line)
    if file_type == 1:
        out.append(".")
    write_lines(path, out)


def remove_lines(path, remove):
    """Drop the exact lines in remove; the number dropped (-1 if missing)."""
    if not os.path.exists(path):
        return 0
    lines = _read_all_lines(path)
    keep = [x for x in lines if x not in remove]
    if len(keep) != len(lines):
        write_lines(path, keep)
    return len(lines) - len(keep)


def update_newu():
    """qmail-newu: users/assign -> users/cdb (and users/assign.cdb if an
    s/qmail installation has one), with qmail-newu's keys and values."""
    from qtools.lib import cdb
    home = S.qmailhome()
    records, wild = [], b""
    for line in _read_all_lines(os.path.join(home, "users", "assign")):
        if line.startswith("."):
            break
        b = S._encode(line)
        i = b.find(b":")
        if i <= 0 or b"\0" in b:
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "bad format in users/assign")
        if b[:1] == b"+":
            key = b"!" + b[1:i].lower()
            if i >= 2 and b[i - 1:i] not in wild:
                wild += b[i - 1:i]
        else:
            key = b"!" + b[1:i].lower() + b"\0"
        f = b[i + 1:].split(b":")
        if len(f) < 7:
            raise StoreError(S.VA_COULD_NOT_UPDATE_FILE, "bad format in users/assign")
        records.append((key, b"\0".join(f[:6])))
    records.append((b"", wild))
    for path, must in ((os.path.join(home, "users", "cdb"), True),
                       (os.path.join(home, "users", "assign.cdb"), False)):
        if not must and not os.path.exists(path):
            continue
        tmp = path + ".tmp"
        old = os.umask(0o033)
        try:
            m = cdb.make(tmp)
        finally:
            os.umask(old)
        for k, v in records:
            m.add(k, v)
        m.finish()
        os.rename(tmp, path)


def compile_morercpthosts():
    """qmail-newmrh: control/morercpthosts -> morercpthosts.cdb (lowercased
    lines as keys, empty values)."""
    from qtools.lib import cdb
    ctl = os.path.join(S.qmailhome(), "control")
    m = cdb.make(os.path.join(ctl, "morercpthosts.tmp"))
    for line in _read_all_lines(os.path.join(ctl, "morercpthosts")):
        line = line.strip()
        if line and not line.startswith("#"):
            m.add(S._encode(line.lower()), b"")
    m.finish()
    os.rename(os.path.join(ctl, "morercpthosts.tmp"), os.path.join(ctl, "morercpthosts.cdb"))


def add_domain_assign(alias, real, dir, uid, gid):
    home = S.qmailhome()
    users = os.path.join(home, "users")
    ctl = os.path.join(home, "control")
    for d in (users, ctl):
        if not os.path.isdir(d):
            # qmail's own mode, whatever vadddomain's umask (077): qmail-smtpd,
            # chkuser and vpopmaild read these as other users
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
    update_file(os.path.join(users, "assign"),
                "+%s-:%s:%d:%d:%s:-::" % (alias, real, uid, gid, dir), 1)
    update_newu()
    if len(_read_all_lines(os.path.join(ctl, "rcpthosts"))) >= 50:
        update_file(os.path.join(ctl, "morercpthosts"), alias, 2)
        compile_morercpthosts()
    else:
        update_file(os.path.join(ctl, "rcpthosts"), alias, 2)
    update_file(os.path.join(ctl, "virtualdomains"), "%s:%s" % (alias, alias), 3)
    if os.path.exists(os.path.join(ctl, "locals")):
        remove_lines(os.path.join(ctl, "locals"), [alias])


def del_control(aliases):
    ctl = os.path.join(S.qmailhome(), "control")
    if remove_lines(os.path.join(ctl, "rcpthosts"), aliases) == 0:
        mrh = os.path.join(ctl, "morercpthosts")
        if remove_lines(mrh, aliases) > 0:
            if os.path.getsize(mrh) == 0:
                os.unlink(mrh)
                try:
                    os.unlink(mrh + ".cdb")
                except FileNotFoundError:
                    pass
            else:
                compile_morercpthosts()
    remove_lines(os.path.join(ctl, "virtualdomains"), ["%s:%s" % (a, a) for a in aliases])


def del_domain_assign(aliases, real, dir, uid, gid):
    path = os.path.join(S.qmailhome(), "users", "assign")
    remove_lines(path, ["+%s-:%s:%d:%d:%s:-::" % (a, real, uid, gid, dir) for a in aliases])
    update_newu()


def domain_entries(match_real=""):
    """get_domain_entries(): [(domain, realdomain, uid, gid, path)] from
    users/assign, all of them or those of one real domain."""
    out = []
    for line in _read_all_lines(os.path.join(S.qmailhome(), "users", "assign")):
        if not line.startswith("+"):
            continue
        f = line[1:].split(":")
        if len(f) < 5 or "." not in f[0] or not f[0].endswith("-"):
            continue
        dom = f[0][:-1]
        if not match_real or f[1] == match_real:
            out.append((dom, f[1], S._atoi(S._encode(f[2])), S._atoi(S._encode(f[3])), f[4]))
    return out


def signal_qmail_send(sig=signal.SIGHUP):
    """Tell this installation's qmail-send to reread its control files:
    processes named qmail-send (not supervise, multilog, svscan) whose
    working directory is $QMAILHOME or $QMAILHOME/queue.  vpopmail greps
    ps for any qmail-send; this never touches another installation's."""
    home = os.path.realpath(S.qmailhome())
    want = (home, os.path.join(home, "queue"))
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        if pid == me:
            continue
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read(4096).replace(b"\0", b" ")
            if b"qmail-send" not in cmd or any(
                    w in cmd for w in (b"supervise", b"multilog", b"runsv", b"svscan")):
                continue
            if os.readlink("/proc/%d/cwd" % pid) not in want:
                continue
            os.kill(pid, sig)
        except OSError:
            continue


def vdelivermail_path():
    """What .qmail-default runs: $VPOPMAILHOME/bin/vdelivermail when it is
    installed there (vpopmail's layout), else the vdelivermail next to this
    program's launcher."""
    import sys
    p = os.path.join(S.vpopmailhome(), "bin", "vdelivermail")
    if os.path.exists(p):
        return p
    return os.path.join(os.path.dirname(os.path.abspath(sys.argv[0] or sys.executable)),
                        "vdelivermail")


# -- domains -----------------------------------------------------------------
def undo_dir_control(st, key, top, uid, gid):
    """dec_dir_control() after a failed addition; its own failure must not
    hide the first one."""
    from qtools.vpopmail import bigdir
    try:
        bigdir.dec_dir_control(st, key, top, uid, gid)
    except (StoreError, S.TempFail, OSError):
        pass


def check_new_domain(domain):
    """vadddomain()'s checks on a new domain name."""
    if len(domain) < 3:
        raise StoreError(S.VA_INVALID_DOMAIN_NAME)
    if len(domain) > S.MAX_PW_DOMAIN:
        raise StoreError(S.VA_DOMAIN_NAME_TOO_LONG)
    i = domain.rfind(".")
    if i < 0 or not 2 <= len(domain) - 1 - i <= 63:
        raise StoreError(S.VA_INVALID_DOMAIN_NAME)
    if domain[0] == "-" or domain[-1] == "-" or ".." in domain or not S.domain_valid(domain):
        raise StoreError(S.VA_INVALID_DOMAIN_NAME)
    for c in domain:
        if not (c.isascii() and (c.isalnum() or c in "-.")):
            raise StoreError(S.VA_INVALID_DOMAIN_NAME)


def vadddomain(st, domain, dir=None, uid=None, gid=None, bounce=None, hup=True):
    """Create the domain: its directory and .qmail-default, the qmail files,
    the store's tables.  bounce: what .qmail-default passes to vdelivermail
    (default `delete`)."""
    domain = domain.lower()
    check_new_domain(domain)
    if S.get_assign(domain) is not None:
        raise StoreError(S.VA_DOMAIN_ALREADY_EXISTS)
    if uid is None or gid is None:
        du, dg = vpopmail_ids()
        uid = du if uid is None else uid
        gid = dg if gid is None else gid
    top = dir or S.vpopmailhome()
    if not os.path.isdir(top):
        raise StoreError(S.VA_BAD_V_DIR)
    domains = os.path.join(top, "domains")
    old = os.umask(0o077)
    try:
        if not os.path.isdir(domains):
            try:
                os.mkdir(domains, DIR_MODE)
            except OSError:
                raise StoreError(S.VA_CAN_NOT_MAKE_DOMAINS_DIR)
            chown(domains, uid, gid)
        if len(os.path.join(domains, domain)) > S.MAX_PW_DIR:
            raise StoreError(S.VA_DIR_TOO_LONG)     # too long whatever the hash
        # the domain's own hashed directory: the dom_<uid> counter
        from qtools.vpopmail import bigdir
        key = "dom_%d" % uid
        try:
            hashdir = bigdir.next_big_dir(st, key, domains, uid, gid, chown)
        except OSError:
            raise StoreError(S.VA_COULD_NOT_MAKE_DOMAIN_DIR)
        ddir = bigdir.join(domains, hashdir, domain)
        try:
            if len(ddir) > S.MAX_PW_DIR:
                raise StoreError(S.VA_DIR_TOO_LONG)
            if not inside(os.path.dirname(ddir), domains):
                raise StoreError(S.VA_COULD_NOT_MAKE_DOMAIN_DIR,
                                 "refusing %s: not inside %s" % (ddir, domains))
            try:
                os.mkdir(ddir, DIR_MODE)
            except FileExistsError:
                if os.listdir(ddir):
                    raise StoreError(S.VA_COULD_NOT_MAKE_DOMAIN_DIR)
            except OSError:
                raise StoreError(S.VA_COULD_NOT_MAKE_DOMAIN_DIR)
            try:
                write_lines(os.path.join(ddir, ".qmail-default"),
                            ["| %s '' %s" % (vdelivermail_path(), bounce or "delete")],
                            mode=0o600)
            except OSError:
                delete_tree(ddir, domains)
                raise StoreError(S.VA_COULD_NOT_OPEN_QMAIL_DEFAULT)
            try:
                add_domain_assign(domain, domain, ddir, uid, gid)
            except (OSError, StoreError):
                delete_tree(ddir, domains)
                raise StoreError(S.VA_COULD_NOT_UPDATE_FILE)
            r_chown(ddir, uid, gid)
            try:
                st.adddomain(domain)
            except Exception:
                delete_tree(ddir, domains)
                del_domain_assign([domain], domain, ddir, uid, gid)
                del_control([domain])
                raise
        except BaseException:
            undo_dir_control(st, key, domains, uid, gid)
            raise
    finally:
        os.umask(old)
    if hup:
        signal_qmail_send()
    return ddir


def vdeldomain(st, domain):
    """Delete a domain (with its aliases) or one alias domain."""
    domain = domain.lower()
    if len(domain) > S.MAX_PW_DOMAIN:
        raise StoreError(S.VA_DOMAIN_NAME_TOO_LONG)
    if not S.domain_valid(domain):
        raise StoreError(S.VA_INVALID_DOMAIN_NAME)
    a = S.get_assign(domain)
    if a is None:
        raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    warnings = []
    if a.domain != domain:
        aliases = [domain]
    else:
        aliases = [e[0] for e in domain_entries(a.domain)] or [domain]
        st.deldomain(a.domain)
        st.del_dir_control(a.domain)
        # rows of the store outside the domain's tree (mysql): a domain
        # added again later under the name must not get them back
        drop = getattr(st, "valias_delete_domain", None)
        if drop is not None:
            drop(a.domain)
    for alias in aliases:
        if alias != a.domain:
            st.aliasdomain_del(alias)
        top = os.path.join(S.vpopmailhome(), "domains")
        if os.path.islink(a.dir):
            os.unlink(a.dir)
        elif os.path.isdir(a.dir):
            if inside(a.dir, top):
                delete_tree(a.dir, top)
            else:
                warnings.append("Warning: Failed to delete directory tree: %s" % domain)
        else:
            warnings.append("Warning: Could not access (%s)" % a.dir)
    del_control(aliases)
    del_domain_assign(aliases, a.domain, a.dir, a.uid, a.gid)
    if a.domain == domain:
        # the owner's domain counter (vpopmail: dec_dir_control("dom_<uid>"))
        from qtools.vpopmail import bigdir
        domains = os.path.dirname(a.dir)
        for _ in range(bigdir.MAX_DIR_LEVELS):      # above the hash
            if os.path.basename(domains) == "domains":
                break
            domains = os.path.dirname(domains)
        if os.path.basename(domains) != "domains" or not os.path.isdir(domains):
            domains = os.path.join(S.vpopmailhome(), "domains")
        if os.path.isdir(domains):
            bigdir.dec_dir_control(st, "dom_%d" % a.uid, domains, a.uid, a.gid)
    signal_qmail_send()
    return warnings


def vaddaliasdomain(alias, real):
    alias, real = alias.lower(), real.lower()
    if not S.domain_valid(real) or not S.domain_valid(alias):
        raise StoreError(S.VA_INVALID_DOMAIN_NAME)
    if len(alias) > S.MAX_PW_DOMAIN:
        raise StoreError(S.VA_DOMAIN_NAME_TOO_LONG)
    if S.get_assign(alias) is not None:
        raise StoreError(S.VA_DOMAIN_ALREADY_EXISTS)
    a = S.get_assign(real)
    if a is None:
        raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    if alias == a.domain:
        raise StoreError(S.VA_DOMAIN_ALREADY_EXISTS)
    add_domain_assign(alias, a.domain, a.dir, a.uid, a.gid)
    signal_qmail_send()


# -- users -------------------------------------------------------------------
def check_user(user, domain, adding=False):
    if len(user) > S.MAX_PW_NAME:
        raise StoreError(S.VA_USER_NAME_TOO_LONG)
    if adding and len(user) == 1:                   # USERS_BIG_DIR builds refuse these
        raise StoreError(S.VA_ILLEGAL_USERNAME)
    if len(domain) > S.MAX_PW_DOMAIN:
        raise StoreError(S.VA_DOMAIN_NAME_TOO_LONG)
    if len(domain) < 3 and adding:
        raise StoreError(S.VA_INVALID_DOMAIN_NAME)
    if not S.username_valid(user):
        raise StoreError(S.VA_ILLEGAL_USERNAME)
    if not S.domain_valid(domain):
        raise StoreError(S.VA_INVALID_DOMAIN_NAME)


def make_maildir(udir, uid, gid):
    for sub in ("Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
        os.mkdir(os.path.join(udir, sub), DIR_MODE)
    r_chown(udir, uid, gid)


def default_quota(st, domain):
    lim = st.get_limits(domain)
    q, c = lim.values["defaultquota"], lim.values["defaultmaxmsgcount"]
    if q > 0:
        return "%dS,%dC" % (q, c) if c > 0 else "%dS" % q
    return "%dC" % c if c > 0 else "NOQUOTA"


def vadduser(st, user, domain, password, gecos="", apop=S.USE_POP, crypted=None):
    """Add user@domain: its directory with Maildir/{new,cur,tmp}, the store
    entry (crypted given: stored as is, no clear password), the domain's
    default quota, a first lastauth entry (0.0.0.0)."""
    user, domain = user.lower(), domain.lower()
    if ":" in gecos:
        raise StoreError(S.VA_BAD_CHAR)
    check_user(user, domain, adding=True)
    if len(password) > S.MAX_PW_CLEAR_PASSWD:
        raise StoreError(S.VA_PASSWD_TOO_LONG)
    if len(gecos) > S.MAX_PW_GECOS:
        raise StoreError(S.VA_GECOS_TOO_LONG)
    a = S.get_assign(domain)
    if a is None:
        raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    domain = a.domain
    if st.getpw(user, domain) is not None:
        raise StoreError(S.VA_USERNAME_EXISTS)
    if not os.path.isdir(a.dir):
        raise StoreError(S.VA_BAD_D_DIR)
    if len(a.dir) + len(user) >= S.MAX_PW_DIR:
        raise StoreError(S.VA_DIR_TOO_LONG)         # too long whatever the hash
    if not inside(os.path.join(a.dir, user), a.dir):
        raise StoreError(S.VA_ILLEGAL_USERNAME)
    old = os.umask(0o077)
    try:
        # make_user_dir(): the next hashed directory, then the length check
        from qtools.vpopmail import bigdir
        try:
            hashdir = bigdir.next_big_dir(st, domain, a.dir, a.uid, a.gid, chown)
        except OSError as e:
            raise StoreError(S.VA_BAD_U_DIR, "unable to make the hashed directory in %s: %s"
                             % (a.dir, e))
        made = False
        try:
            udir = bigdir.join(a.dir, hashdir, user)
            if len(a.dir) + len(hashdir) + len(user) >= S.MAX_PW_DIR:
                raise StoreError(S.VA_DIR_TOO_LONG)
            if not inside(udir, a.dir) or not inside(os.path.dirname(udir), a.dir):
                raise StoreError(S.VA_BAD_U_DIR, "refusing %s: not inside %s" % (udir, a.dir))
            try:
                os.mkdir(udir, DIR_MODE)
            except FileExistsError:
                raise StoreError(S.VA_EXIST_U_DIR)
            except OSError:
                raise StoreError(S.VA_BAD_U_DIR)
            made = True
            make_maildir(udir, a.uid, a.gid)
            if crypted is None:
                crypted, clear = S.mkpasswd(password), password
            else:
                clear = ""
            st.adduser(user, domain, crypted, clear, gecos or user, udir, apop)
        except BaseException:
            try:
                if made:
                    delete_tree(udir, a.dir)
            finally:
                # the count stays the number of users (vpopmail leaves it
                # one up after a failure)
                undo_dir_control(st, domain, a.dir, a.uid, a.gid)
            raise
        q = default_quota(st, domain)
        if q != "NOQUOTA":
            vsetuserquota(st, user, domain, q)
        pw = st.getpw(user, domain)
        if pw is not None:
            st.set_lastauth(pw, domain, S.NULL_REMOTE_IP)
    finally:
        os.umask(old)
    return udir


def is_catchall(user, domain, ddir):
    """Whether .qmail-default delivers the unknown addresses to this user."""
    try:
        with open(os.path.join(ddir, ".qmail-default"), "rb") as f:
            line = S._decode(f.read(1024).split(b"\n")[0])
    except OSError:
        return False
    i = line.find("vdelivermail")
    j = line.find("''", i) if i >= 0 else -1
    if j < 0:
        return False
    target = line[j + 2:].strip()
    if target.startswith("/"):
        return target.rstrip("/").rsplit("/", 1)[-1] == user and ddir in target
    if "@" in target:
        return target == "%s@%s" % (user, domain)
    return False


def vdeluser(st, user, domain):
    user, domain = user.lower(), domain.lower()
    if not user:
        raise StoreError(S.VA_ILLEGAL_USERNAME)
    check_user(user, domain)
    a = S.get_assign(domain)
    if a is None:
        raise StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    pw = st.getpw(user, a.domain)
    if pw is None:
        raise StoreError(S.VA_USER_DOES_NOT_EXIST)
    if is_catchall(user, a.domain, a.dir):
        raise StoreError(S.VA_CANNOT_DELETE_CATCHALL)
    st.deluser(user, a.domain)
    if os.path.isdir(a.dir):
        from qtools.vpopmail import bigdir
        bigdir.dec_dir_control(st, a.domain, a.dir, a.uid, a.gid)
    if pw.dir and os.path.lexists(pw.dir):
        if not inside(pw.dir, a.dir) or os.path.realpath(pw.dir) == os.path.realpath(a.dir):
            raise StoreError(S.VA_BAD_DIR, "could not remove %s" % pw.dir)
        delete_tree(pw.dir, a.dir)


def vpasswd(st, user, domain, password):
    """Set a new password; -1 when the user does not exist or may not change
    it (NO_PASSWD_CHNG), as vpasswd() returns."""
    user, domain = user.lower(), domain.lower()
    check_user(user, domain)
    if len(password) > S.MAX_PW_CLEAR_PASSWD:
        raise StoreError(S.VA_PASSWD_TOO_LONG)
    a = S.get_assign(domain)
    pw = st.getpw(user, a.domain) if a else None
    if pw is None or pw.flags & S.NO_PASSWD_CHNG:
        raise StoreError(-1, "Unknown error")
    pw.passwd = S.mkpasswd(password)
    pw.clear = password
    st.setpw(pw, a.domain)


def vsetuserquota(st, user, domain, quota):
    user, domain = user.lower(), domain.lower()
    check_user(user, domain)
    if len(quota) > S.MAX_PW_QUOTA:
        raise StoreError(S.VA_QUOTA_TOO_LONG)
    a = S.get_assign(domain)
    pw = st.getpw(user, a.domain) if a else None
    if pw is None:
        raise StoreError(S.VA_USER_DOES_NOT_EXIST)
    pw.shell = S.format_maildirquota(quota)
    st.setpw(pw, a.domain)
    update_maildirsize(a, pw.dir, pw.shell)


# -- Maildir++ quota -----------------------------------------------------------
def maildir_usage(maildir):
    """(bytes, messages) in new/ and cur/ of the Maildir and its folders, as
    vpopmail's maildirquota.c counts (qtools.vpopmail.maildirquota: .Trash,
    dot-files and messages marked deleted do not count)."""
    from qtools.vpopmail import maildirquota
    return maildirquota.count(maildir)


def update_maildirsize(a, udir, quota):
    """update_maildirsize(): drop maildirsize, and for a real quota write a
    new one (the spec, then the current usage)."""
    path = os.path.join(udir, "Maildir", "maildirsize")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    if quota in ("NOQUOTA", "") or not os.path.isdir(os.path.join(udir, "Maildir")):
        return
    size, count = maildir_usage(os.path.join(udir, "Maildir"))
    write_lines(path, [quota, "%d %d" % (size, count)], mode=0o600)
    chown(path, a.uid, a.gid)


def quota_percent(udir, quota):
    """vmaildir_readquota(): percentage of the quota in use."""
    qsize, qcount = S.parse_quota(S.format_maildirquota(quota))
    path = os.path.join(udir, "Maildir", "maildirsize")
    size = count = None
    try:
        with open(path, "rb") as f:
            lines = f.read(5120).split(b"\n")[1:]
        size = count = 0
        for line in lines:
            p = line.split()
            if len(p) >= 2:
                size += int(p[0])
                count += int(p[1])
    except (OSError, ValueError):
        size, count = maildir_usage(os.path.join(udir, "Maildir"))
    pct = 0
    if qsize > 0:
        pct = max(pct, size * 100 // qsize)
    if qcount > 0:
        pct = max(pct, count * 100 // qcount)
    return pct
