"""vconvert - copy vpopmail domains from one user store to the other.

usage: vconvert -c -m | -m -c [-d] [-v] [domain ...]

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

Output (vconvert.c): `converting <dom> ` then `done` or
`domain conversion failed` for named domains, `converting <dom>...    `
for all of them; -d also prints each user's name; -v the version.
Exit codes: 0 all converted; 100 usage, an unsupported conversion (-e, -p,
-S: /etc/passwd, passwd files and sqwebmail passwords are not supported;
`unknown conversion`) or a domain that failed for a permanent reason (not
found, a name the destination cannot hold); 111 when a store cannot answer
(database down, file unreadable): `vconvert: fatal: ...` on stderr and
vconvert stops at once.  vpopmail's vconvert always exits 0.
"""
import os
import sys

from qtools.vpopmail import admin, tool, store as S

PROG = "vconvert"
USAGE = "vconvert -c -m | -m -c [-d] [-v] [domain ...]"


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


def main(argv):
    from qtools.lib import sgetopt, strerr
    try:
        opts, args = sgetopt.getopt(argv, "mcep:Svd", PROG)
    except sgetopt.UsageError:
        strerr.die_usage(PROG, USAGE)
    order, debug, other = [], False, False
    for o, _ in opts:
        if o == "v":
            print("version: %s" % tool.version())
        elif o == "d":
            debug = True
        elif o in "mc":
            order.append(o)
        else:
            other = True
    if other:
        strerr.die(100, PROG, "conversion from /etc/passwd, passwd files and sqwebmail "
                   "passwords (-e, -p, -S) is not supported")
    if len(order) < 2:
        strerr.die_usage(PROG, USAGE)
    if order[0] == order[1]:
        print("unknown conversion")
        return 100

    def out(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        src, dst = open_backend(order[0]), open_backend(order[1])
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
        if not args:
            try:
                convert_domain_counters(src, dst, admin.domain_entries())
            except S.StoreError as e:
                strerr.warn(PROG, "domain counters: ", str(e))
                failed += 1
            except S.TempFail as e:
                strerr.die(111, PROG, "unable to convert the domain counters: ", str(e))
    finally:
        src.close()
        dst.close()
    return 100 if failed else 0
