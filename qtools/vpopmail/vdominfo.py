"""vdominfo - show virtual domains.

usage: vdominfo [options] [domain]

For one domain, or every domain of users/assign (each followed by an empty
line):
  domain: <domain>                    (an alias: `domain: a (alias of r)`)
  uid:    <uid>
  gid:    <gid>
  dir:    <dir>
  users:  <number of users>
  alias: <alias domain>               (one line per alias of a real domain)
Options select single fields, one per line: -n name, -u uid, -g gid,
-d dir, -t total users; -a all (default); -r (accepted); -v version.
Exit codes: 0 ok, 100 usage, 255 after `domain <d> does not exist`, 111
store down.
"""
from qtools.vpopmail import admin, tool, store as S

PROG = "vdominfo"
USAGE = "vdominfo [options] [domain]"
DOC = """
Usage:
  vdominfo [options] [<domain>]

Options:
  -v  version
  -a  all
  -n  name
  -u  uid
  -g  gid
  -d  dir
  -t  total users
  -r  real
"""


def display(st, a, domain, ad):
    out = []
    users = len(st.getall(ad.domain))
    if a["all"]:
        if domain != ad.domain:
            out.append("domain: %s (alias of %s)" % (domain, ad.domain))
        else:
            out.append("domain: %s" % domain)
        out += ["uid:    %d" % ad.uid, "gid:    %d" % ad.gid, "dir:    %s" % ad.dir,
                "users:  %d" % users]
        if domain == ad.domain:
            for e in admin.domain_entries(ad.domain):
                if e[0] != ad.domain:
                    out.append("alias: %s" % e[0])
    else:
        for opt, val in (("-n", domain), ("-u", ad.uid), ("-g", ad.gid), ("-d", ad.dir),
                         ("-t", users)):
            if a[opt]:
                out.append(str(val))
    print("\n".join(out))


def main(argv):
    a = tool.parse(DOC, argv, PROG, USAGE, help=False)
    a["all"] = a["-a"] or not any(a[o] for o in ("-n", "-u", "-g", "-d", "-t"))
    def work(st):
        if a["<domain>"]:
            domain = a["<domain>"].lower()
            ad = S.get_assign(domain)
            if ad is None:
                print("domain %s does not exist" % domain)
                return 255
            display(st, a, domain, ad)
        else:
            for e in admin.domain_entries():
                if e[0] != e[1]:
                    continue                        # shown under its real domain
                ad = S.get_assign(e[0])
                if ad is not None:
                    display(st, a, e[0], ad)
                    print()
        return 0
    return tool.with_store(PROG, work)
