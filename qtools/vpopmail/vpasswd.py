"""vpasswd - change a virtual user's password.

usage: vpasswd [options] email_address [passwd]

Stores a new SHA-512 crypt hash (and the clear password when
$VPOPMAILHOME/etc/clear-passwd exists).  Without a password one is asked
for (on the terminal, else the first line of standard input).  -r[len]: a
random password of len (12) characters, printed as `Random password: ...`;
-v prints the version.  A user with the NO_PASSWD_CHNG flag (vmoduser -d)
cannot be changed.
Exit codes: 0 ok, 100 usage, 255 after `Error: User does not exist` (or a
refused change), vpopmail's code modulo 256 after other errors, 111 store
down.  (vpopmail prints `Error: Illegal username` for a missing user.)
"""
from qtools.vpopmail import admin, tool, store as S

PROG = "vpasswd"
USAGE = "vpasswd [options] email_address [passwd]"
DOC = """
Usage:
  vpasswd [-v] [--] <email> [<passwd>]

Options:
  -v  version
"""


def main(argv):
    argv, rlen = tool.random_len(argv)
    a = tool.parse(DOC, argv, PROG, USAGE)
    def work(st):
        user, domain = S.parse_email(a["<email>"])
        ad = S.get_assign(domain) if domain else None
        pw = st.getpw(user, ad.domain) if ad else None
        if pw is None:
            tool.fail(-1, "User does not exist")
        password = a["<passwd>"]
        if password is None:
            password = tool.random_pass(rlen) if rlen is not None else tool.ask_password(
                a["<email>"])
        if not password:
            tool.fail(-1, "No password entered")
        admin.vpasswd(st, user, ad.domain, password)
        if rlen is not None and a["<passwd>"] is None:
            print("Random password: %s" % password)
        return 0
    return tool.with_store(PROG, work)
