"""vconvert - copy vpopmail domains from one user store to the other.

usage: vconvert -c -m | -m -c | -e -c|-m | -p file -c|-m | -S [-d] [-v] [domain ...]

The first store option names the store to convert FROM, the second the one
to convert TO: -c the cdb files (domains/<dom>/vpasswd + vpasswd.cdb,
.qmail-<alias> files), -m MySQL/MariaDB ($VPOPMAILHOME/etc/vpopmail.mysql).
So `vconvert -c -m` moves a cdb installation into MySQL and `vconvert -m
-c` back.  Without domains, every real domain of users/assign is converted
(an alias domain prints `<alias> is an alias of <real>.`).

For each domain, the destination gets:
  - every user, each field as stored (crypted and clear password, APOP
    field, flag bits, gecos, directory, quota); users the source does not
    have are removed, so the destination mirrors the source (vpopmail does
    vauth_deldomain + vauth_adddomain first);
  - the last authentication (time and IP) of each user that has one;
  - the virtual aliases (valias): into MySQL the domain's rows become the
    .qmail-<alias> files' lines (a mailing list's symlinked .qmail files
    stay files); into cdb each alias file is rewritten from its rows;
  - the domain limits when the source has its own (.qmailadmin-limits into
    a `limits` row, a row into .qmailadmin-limits);
  - into MySQL, the domain's alias domains (`aliasdomains` table);
  - the domain's hashed-directory counter (.dir-control <-> a dir_control
    row, see bigdir), and when every domain is converted, the `dom_<uid>`
    counters of their owners (vpopmail's vconvert copies neither).
Nothing is written to the source.  Users go in one step (a MySQL
transaction; vpasswd and vpasswd.cdb replaced by rename), so a failure
leaves a domain's users as they were, and running vconvert again gives the
same result.  Mail directories are shared and stay where they are.

The other conversions of vconvert.c fill a domain (which must exist) of
the store named second:
  -e -c|-m  the system's accounts (/etc/passwd, hashes from /etc/shadow):
            each one whose hash is longer than 2 characters becomes a user
            with that hash (`skipping <name>` for the others, `user <name>
            domain <dom> did not add` when vadduser refuses it);
  -p FILE -c|-m  a file of `user:crypted` lines (blanks, tabs and colons
            separate the fields): each becomes a user with that hash, and
            its Maildir/sqwebmail-pass gets `<TAB><crypted>` (no newline,
            as vconvert.c writes it); the first failure prints `Error:
            <reason>` and ends that domain;
  -S        (no second option) for every user of the configured store,
            Maildir/sqwebmail-pass = `<TAB><crypted>\n` (vsqwebmail_pass).
Files are written to a temporary name, fsynced and renamed, owned by the
domain's uid/gid; nothing outside a user's own directory is touched.

Output (vconvert.c): `converting <dom> ` then `done` or
`domain conversion failed` for named domains, `converting <dom>...    `
for all of them; -d also prints each user's name; -v the version.
Exit codes: 0 all converted; 100 usage, `unknown conversion` or a domain
that failed for a permanent reason (not found, a name the destination
cannot hold, an unreadable -p file); 111 when a store cannot answer
(database down, file unreadable): `vconvert: fatal: ...` on stderr and
vconvert stops at once.  vpopmail's vconvert always exits 0.
"""
import os
import sys

from qtools.vpopmail import admin, tool, store as S

PROG = "vconvert"
USAGE = "vconvert -c -m | -m -c | -e -c|-m | -p file -c|-m | -S [-d] [-v] [domain ...]"


def open_backend(name):
    if name == "m":
        from qtools.vpopmail import store_mysql
        return store_mysql.MysqlStore()
    from qtools.vpopmail import store_cdb
    return store_cdb.CdbStore()


def source_aliases(src, domain, ad):
    """The domain's (alias, line) rows, without a cdb mailing list's
    symlinked .qmail files."""
    rows = src.valias_select_all(domain)
    if src.name != "cdb":
        return rows
    return [(a, x) for a, x in rows
            if not os.path.islink(os.path.join(ad.dir, S.valias_file(a)))]


def convert(src, dst, domain, debug, out):
    """Copy one real domain; StoreError for a permanent failure."""
    ad = S.get_assign(domain)
    if ad is None or ad.domain != domain:
        raise S.StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    users = src.getall(domain)
    if debug:
        for pw in users:
            out("%s\n" % pw.name)
    for pw in users:
        if not S.username_valid(pw.name) or len(pw.name) > S.MAX_PW_NAME:
            raise S.StoreError(S.VA_ILLEGAL_USERNAME, "illegal user name %r" % pw.name)
    dst.adddomain(domain)
    dst.replace_users(domain, users)
    for pw in users:
        t, ip = src.get_lastauth(pw, domain)
        if not t and ip is None:
            continue
        if dst.name == "cdb" and not (pw.dir and os.path.isdir(pw.dir)
                                      and admin.inside(pw.dir, ad.dir)):
            continue                                # no user directory to hold it
        dst.put_lastauth(pw, domain, t, ip if ip is not None else S.NULL_REMOTE_IP)
    dst.valias_load(domain, source_aliases(src, domain, ad))
    lim = src.explicit_limits(domain)
    if lim is not None:
        dst.set_limits(domain, lim)
    for e in admin.domain_entries(domain):
        if e[0] != domain:
            dst.aliasdomain_add(e[0], domain)
    # the hashed-directory counter, so the next user goes where vpopmail
    # (or qtools) on the destination store would put it
    dst.write_dir_control(domain, src.read_dir_control(domain, ad.uid, ad.gid), ad.uid,
                          ad.gid)


def convert_domain_counters(src, dst, entries):
    """The dom_<uid> counters of the owners of the converted domains."""
    for uid, gid in sorted(set((e[2], e[3]) for e in entries if e[0] == e[1])):
        key = "dom_%d" % uid
        dst.write_dir_control(key, src.read_dir_control(key, uid, gid), uid, gid)


def write_sqwebmail_pass(udir, crypted, uid, gid, newline=True):
    """vsqwebmail_pass(): <udir>/Maildir/sqwebmail-pass = TAB crypted (and a
    newline), written whole (tmp, fsync, rename) and owned by uid/gid."""
    maildir = os.path.join(udir, "Maildir")
    if not os.path.isdir(maildir):
        raise S.StoreError(S.VA_BAD_U_DIR, "no Maildir in %s" % udir)
    S.replace_file(os.path.join(maildir, "sqwebmail-pass"),
                   b"\t" + S._encode(crypted) + (b"\n" if newline else b""), uid, gid)


def user_dir(ad, pw):
    """The user's directory, if it is inside its domain's."""
    if pw.dir and os.path.isdir(pw.dir) and admin.inside(pw.dir, ad.dir):
        return pw.dir
    return None


def sqwebmail_domain(st, domain, debug, out):
    """-S: every user's sqwebmail-pass from the store (set_sqwebmail_pass)."""
    ad = S.get_assign(domain)
    if ad is None or ad.domain != domain:
        raise S.StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    if debug:
        out("Setting sqwebmail passwords for %s\n" % domain)
    for pw in st.getall(domain):
        if debug:
            out("%s\n" % pw.name)
        udir = user_dir(ad, pw)
        if udir:
            write_sqwebmail_pass(udir, pw.passwd, ad.uid, ad.gid)


def system_accounts():
    """(name, hash, gecos) of /etc/passwd, the hash from /etc/shadow where
    the passwd field points there (HAS_SHADOW)."""
    import pwd
    shadow = {}
    try:
        with open("/etc/shadow", "rb") as f:
            for line in f.read().split(b"\n"):
                fields = line.split(b":")
                if len(fields) > 1:
                    shadow[S._decode(fields[0])] = S._decode(fields[1])
    except OSError as e:
        raise S.TempFail("unable to read /etc/shadow: %s" % e)
    for p in pwd.getpwall():
        yield p.pw_name, shadow.get(p.pw_name, ""), p.pw_gecos


def etc_domain(st, domain, debug, out):
    """-e: the system's accounts into the domain (etc_to_default)."""
    if S.get_assign(domain) is None:
        raise S.StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    for name, crypted, gecos in system_accounts():
        if len(crypted) <= 2:
            out("skipping %s\n" % name)
            continue
        try:
            admin.vadduser(st, name, domain, "", gecos, crypted=crypted)
        except S.StoreError:
            out("user %s domain %s did not add\n" % (name, domain))


def passwd_file_domain(st, path, domain, debug, out):
    """-p FILE: user:crypted lines into the domain (passwd_to_vpopmail)."""
    ad = S.get_assign(domain)
    if ad is None:
        raise S.StoreError(S.VA_DOMAIN_DOES_NOT_EXIST)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        out("Could not open passwd file %s\n" % path)
        raise S.StoreError(S.VA_BAD_DIR, "unable to read %s: %s" % (path, e))
    import re
    for line in data.split(b"\n"):
        fields = [x for x in re.split(rb"[ :\t]+", line) if x]
        if len(fields) < 2:
            continue
        user, crypted = S._decode(fields[0]).lower(), S._decode(fields[1])
        try:
            admin.vadduser(st, user, domain, "", user, crypted=crypted)
        except S.StoreError as e:
            out("Error: %s\n" % S.verror(e.code))
            raise
        pw = st.getpw(user, ad.domain)
        udir = user_dir(ad, pw) if pw else None
        if udir:
            write_sqwebmail_pass(udir, crypted, ad.uid, ad.gid, newline=False)


def main(argv):
    from qtools.lib import sgetopt, strerr
    try:
        opts, args = sgetopt.getopt(argv, "mcep:Svd", PROG)
    except sgetopt.UsageError:
        strerr.die_usage(PROG, USAGE)
    # vconvert.c: the first of -m -c -e -p names the store to convert FROM,
    # the next the one to convert TO; -S sets both
    fmt_from = fmt_to = None
    passwd_file, debug = None, False
    for o, v in opts:
        if o == "v":
            print("version: %s" % tool.version())
        elif o == "d":
            debug = True
        elif o == "S":
            fmt_from = fmt_to = "S"
        else:
            if o == "p":
                passwd_file = v
            if fmt_from is None:
                fmt_from = o
            else:
                fmt_to = o
    if fmt_from is None or fmt_to is None:
        strerr.die_usage(PROG, USAGE)
    # the conversions there are: -c -m, -m -c, -e|-p to -c|-m, and -S
    if fmt_from != "S" and (fmt_to not in "mc" or fmt_to == fmt_from):
        print("unknown conversion")
        return 100

    def out(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        if fmt_from == "S":
            src = dst = S.open_store()
        elif fmt_from in "mc":
            src, dst = open_backend(fmt_from), open_backend(fmt_to)
        else:
            src = dst = open_backend(fmt_to)
    except (S.TempFail, S.StoreError) as e:
        strerr.die(111, PROG, "unable to open the MySQL store: ", str(e))
    failed = 0
    try:
        if args:
            todo = [(d.lower(), d.lower(), "converting %s " % d) for d in args]
        else:
            todo = []
            for e in admin.domain_entries():
                if e[0] != e[1]:
                    todo.append((e[0], None, "%s is an alias of %s.\n" % (e[0], e[1])))
                else:
                    todo.append((e[0], e[0], "converting %s...    " % e[0]))
        for name, domain, head in todo:
            out(head)
            if domain is None:
                continue
            try:
                if fmt_from == "S":
                    sqwebmail_domain(dst, domain, debug, out)
                elif fmt_from == "e":
                    etc_domain(dst, domain, debug, out)
                elif fmt_from == "p":
                    passwd_file_domain(dst, passwd_file, domain, debug, out)
                else:
                    convert(src, dst, domain, debug, out)
            except S.StoreError as e:
                out("domain conversion failed\n")
                strerr.warn(PROG, domain, ": ", str(e))
                failed += 1
                continue
            except S.TempFail as e:
                out("domain conversion failed\n")
                strerr.die(111, PROG, "unable to convert ", domain, ": ", str(e))
            out("done\n")
        if not args and fmt_from in "mc":
            try:
                convert_domain_counters(src, dst, admin.domain_entries())
            except S.StoreError as e:
                strerr.warn(PROG, "domain counters: ", str(e))
                failed += 1
            except S.TempFail as e:
                strerr.die(111, PROG, "unable to convert the domain counters: ", str(e))
    finally:
        src.close()
        if dst is not src:
            dst.close()
    return 100 if failed else 0
