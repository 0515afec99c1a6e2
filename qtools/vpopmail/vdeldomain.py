"""vdeldomain - delete a virtual domain.

usage: vdeldomain [-f] domain_name

Reverses vadddomain: removes the domain's users from the store, its
directory tree (only below $VPOPMAILHOME/domains), its lines in
control/rcpthosts (or morercpthosts and its cdb), control/virtualdomains
and users/assign (users/cdb rebuilt), its hashed-directory counter, counts
the owner's `dom_<uid>` counter down, and sends SIGHUP to qmail-send.  A
real domain takes its alias domains with it; an alias domain goes alone.
-f is accepted (vpopmail's "force"); -v prints the version.
Exit codes: 0 ok, 100 usage, 245 `Error: Domain does not exist` (and the
other vpopmail codes modulo 256), 111 store down.
"""
from qtools.vpopmail import admin, tool

PROG = "vdeldomain"
USAGE = "vdeldomain [-f] domain_name"
DOC = """
Usage:
  vdeldomain [-v] [-f] [--] <domain>

Options:
  -v  version
  -f  force
"""


def main(argv):
    a = tool.parse(DOC, argv, PROG, USAGE)
    def work(st):
        for w in admin.vdeldomain(st, a["<domain>"]):
            print(w)
        return 0
    return tool.with_store(PROG, work)
