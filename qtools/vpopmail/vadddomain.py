"""vadddomain - add a virtual domain.

usage: vadddomain [options] virtual_domain [postmaster password]

Creates $VPOPMAILHOME/domains/<domain>/ (from the owner's 100th domain on
in vpopmail's hashed directories, domains/0/<domain>, domains/1/, ...,
counted as `dom_<uid>` in domains/.dir-control or the dir_control table)
with a .qmail-default that runs
vdelivermail (`| .../vdelivermail '' delete`), adds `+domain-:domain:uid:gid:dir:-::`
to users/assign and rebuilds users/cdb, adds the domain to control/rcpthosts
(control/morercpthosts and its cdb from the 50th domain on) and to
control/virtualdomains, removes it from control/locals, tells qmail-send to
reread them (SIGHUP; not with -O), creates the store's tables, then the
postmaster account (gecos "Postmaster").  Without a password one is asked
for (on the terminal, else the first line of standard input).

Options (vpopmail's): -q quota for postmaster; -b bounce unknown users
(accepted, the default .qmail-default deletes); -e address|mailbox: unknown
users go there instead; -u user: uid, gid and directory of a system user;
-d dir: the directory to hold domains/; -i uid, -g gid; -O no SIGHUP (bulk
adds); -r[len]: a random postmaster password of len (12) characters,
printed as `Random password: ...`; -v print the version.
Exit codes: 0 ok, 100 usage, vpopmail's error code modulo 256 after
`Error: <text>` (e.g. 243 `Error: Domain already exists`), 111 store down.
"""
import os

from qtools.vpopmail import admin, tool, store as S

PROG = "vadddomain"
USAGE = "vadddomain [options] virtual_domain [postmaster password]"
DOC = """
Usage:
  vadddomain [options] [--] <domain> [<password>]

Options:
  -v         version
  -q QUOTA   quota
  -b         bounce
  -e EMAIL   catchall
  -u USER    system user
  -d DIR     directory
  -i UID     uid
  -g GID     gid
  -O         optimize
"""


def main(argv):
    argv, rlen = tool.random_len(argv)
    a = tool.parse(DOC, argv, PROG, USAGE, help=False)
    uid = gid = None
    d = a["-d"]
    if a["-u"]:
        import pwd
        try:
            p = pwd.getpwnam(a["-u"])
        except KeyError:
            print("Error: user %s not found in /etc/passwd" % a["-u"])
            return 255
        uid, gid, d = p.pw_uid, p.pw_gid, d or p.pw_dir
    if a["-i"] is not None:
        uid = S._atoi(a["-i"].encode())
    if a["-g"] is not None:
        gid = S._atoi(a["-g"].encode())
    domain = a["<domain>"].lower()
    def work(st):
        if S.get_assign(domain) is not None:
            tool.fail(S.VA_DOMAIN_ALREADY_EXISTS)
        password = a["<password>"]
        if password is None:
            password = tool.random_pass(rlen) if rlen is not None else tool.ask_password(
                "postmaster")
        bounce = None
        email = a["-e"]
        admin.vadddomain(st, domain, d, uid, gid, hup=False)
        try:
            admin.vadduser(st, "postmaster", domain, password, "Postmaster")
        except S.StoreError as e:
            tool.fail(e.code, "(vadduser) %s" % e)
        if a["-q"]:
            admin.vsetuserquota(st, "postmaster", domain, a["-q"])
        if email:
            ad = S.get_assign(domain)
            bounce = email if "@" in email else os.path.join(ad.dir, email)
            admin.write_lines(os.path.join(ad.dir, ".qmail-default"),
                              ["| %s '' %s" % (admin.vdelivermail_path(), bounce)], mode=0o600)
            admin.chown(os.path.join(ad.dir, ".qmail-default"), ad.uid, ad.gid)
        if not a["-O"]:
            admin.signal_qmail_send()
        if rlen is not None and a["<password>"] is None:
            print("Random password: %s" % password)
        return 0
    return tool.with_store(PROG, work)
