"""vsetuserquota - set a virtual user's quota.

usage: vsetuserquota [options] email_address quota

quota: NOQUOTA, bytes (1048576, 1M, 1024K, 1MB), a message count (1000C)
or both (50M,1000C); stored normalized (52428800S,1000C) as vpopmail's
format_maildirquota() does, and Maildir/maildirsize is rewritten with the
new limit and the current usage.  -v prints the version.
Exit codes: 0 ok, 100 usage, vpopmail's code modulo 256 after
`Error: <text>`, 111 store down.
"""
from qtools.vpopmail import admin, tool

PROG = "vsetuserquota"
USAGE = "vsetuserquota [options] email_address quota"
DOC = """
Usage:
  vsetuserquota [-v] [--] <email> <quota>

Options:
  -v  version
"""


def main(argv):
    a = tool.parse(DOC, argv, PROG, USAGE)
    def work(st):
        user, domain = tool.user_domain(a["<email>"])
        admin.vsetuserquota(st, user, domain, a["<quota>"])
        return 0
    return tool.with_store(PROG, work)
