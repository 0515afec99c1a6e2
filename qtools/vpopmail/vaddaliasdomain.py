"""vaddaliasdomain - make a domain an alias of an existing virtual domain.

usage: vaddaliasdomain [-v] real_domain alias_domain

Adds `+alias-:real:uid:gid:dir:-::` to users/assign (the real domain's
uid, gid and directory) and rebuilds users/cdb, adds the alias to
control/rcpthosts (or morercpthosts) and control/virtualdomains, removes it
from control/locals, tells qmail-send to reread them (SIGHUP), and with the
MySQL store records it in the `aliasdomains` table (sagredo's
sql-aliasdomains).  Mail to user@alias then reaches user@real; vdominfo
shows `alias: <alias>` under the real domain.

As vpopmail: for backward compatibility the two names may be swapped (the
one that exists is the real domain); an alias of an alias domain becomes an
alias of its real domain.  qtools also applies vadddomain's name checks to
the new alias (length, a dot, no `..`, no leading or trailing '-').

Messages and exit codes (vaddaliasdomain.c): `Error: real domain and alias
domain are the same!`, `Error: Both domains already exist, unable to create
alias.`, `Error: Neither 'a' or 'b'  exist, unable to create alias.` (on
stdout, exit 255); a failing vaddaliasdomain() `Error: <verror>` with the
VA_* code modulo 256 (e.g. 244 `Error: Invalid domain name`); 100 usage
(`vaddaliasdomain: usage: ...` on stderr; vpopmail prints its usage on
stdout and exits 255); 111 when the store cannot answer.
"""
from qtools.vpopmail import admin, tool, store as S

PROG = "vaddaliasdomain"
USAGE = "vaddaliasdomain [-v] real_domain alias_domain"


def main(argv):
    from qtools.lib import sgetopt, strerr
    try:
        opts, args = sgetopt.getopt(argv, "v", PROG)
    except sgetopt.UsageError:
        strerr.die_usage(PROG, USAGE)
    for o, _ in opts:
        if o == "v":
            print("version: %s" % tool.version())
    if len(args) < 2 or not args[0] or not args[1]:
        strerr.die_usage(PROG, USAGE)
    dom_a, dom_b = args[0], args[1]
    if dom_a == dom_b:
        print("Error: real domain and alias domain are the same!")
        strerr.die_usage(PROG, USAGE, 255)
    def work(st):
        a = S.get_assign(dom_a.lower()) if S.domain_valid(dom_a) else None
        b = S.get_assign(dom_b.lower()) if S.domain_valid(dom_b) else None
        if a is not None and b is not None:
            print("Error: Both domains already exist, unable to create alias.")
            return 255
        if a is None and b is None:
            print("Error: Neither '%s' or '%s'  exist, unable to create alias." % (dom_a, dom_b))
            return 255
        real, alias = (dom_a, dom_b) if a is not None else (dom_b, dom_a)
        alias = alias.lower()
        admin.check_new_domain(alias)
        admin.vaddaliasdomain(alias, real)
        st.aliasdomain_add(alias, (a or b).domain)
        return 0
    return tool.with_store(PROG, work)
