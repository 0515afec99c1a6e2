"""vdeluser - delete a user from a virtual domain.

usage: vdeluser [options] email_address

Removes the user from the store, counts the domain's hashed-directory
counter down (.dir-control or the dir_control table, as vpopmail's
dec_dir_control), then its directory (only when it lies
inside the domain's directory; anything else is refused with
`Error: could not remove <dir>`).  The domain's catch-all user (named in
.qmail-default) is not deleted: `Error: can't delete catchall account`.
-v prints the version.
Exit codes: 0 ok, 100 usage, vpopmail's code modulo 256 after
`Error: <text>` (246 `Error: User does not exist`, 245 `Error: Domain does
not exist`), 111 store down.
"""
from qtools.vpopmail import admin, tool

PROG = "vdeluser"
USAGE = "vdeluser [options] email_address"
DOC = """
Usage:
  vdeluser [-v] [--] <email>

Options:
  -v  version
"""


def main(argv):
    a = tool.parse(DOC, argv, PROG, USAGE)
    def work(st):
        user, domain = tool.user_domain(a["<email>"])
        admin.vdeluser(st, user, domain)
        return 0
    return tool.with_store(PROG, work)
