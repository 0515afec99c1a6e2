"""vadduser - add a user to a virtual domain.

usage: vadduser [options] email_address [passwd]

Creates the user's directory <domaindir>/<user> with Maildir/{new,cur,tmp}
(mode 0750, owned by the domain's uid/gid; from the domain's 100th user on
in vpopmail's hashed directories, <domaindir>/0/<user>, /1/, ... /z/,
/0/0/ ..., counted in .dir-control or the dir_control table), stores the user with a new
SHA-512 crypt hash ($6$, 16 salt characters) and the domain's default
quota, and records a first lastauth entry (0.0.0.0: "account created").
Without a password one is asked for (on the terminal, else the first line
of standard input).

Options: -q quota (NOQUOTA, 50M, 1000C, 50M,1000C ...); -c comment (gecos,
default the user name); -e hash: store this crypt hash as the password
($1$, $5$, $6$ or DES); -r[len]: a random password of len (12) characters,
printed as `Random password: ...`; -s (accepted, ignored, as vpopmail);
-v print the version.
Errors as vpopmail prints them: `Error: Domain does not exist`,
`Error: User already exists`, `Error: Illegal username` (a name with
characters vpopmail refuses, or '/', '..', a leading '.' or '-', which
qtools refuses too), `You did not use a full email address ...`.
Exit codes: 0 ok, 100 usage, 255 or vpopmail's code modulo 256 after an
error line, 111 store down.
"""
from qtools.vpopmail import admin, tool, store as S

PROG = "vadduser"
USAGE = "vadduser [options] email_address [passwd]"
DOC = """
Usage:
  vadduser [options] [--] <email> [<passwd>]

Options:
  -v          version
  -s          ignored
  -n          no password
  -q QUOTA    quota
  -c COMMENT  gecos
  -e CRYPTED  crypted password
"""


def main(argv):
    argv, rlen = tool.random_len(argv)
    a = tool.parse(DOC, argv, PROG, USAGE, help=False)
    if rlen is not None and a["<passwd>"] is not None:
        print("Error: don't use -r option when giving password on command line")
        return 255
    if rlen is not None and rlen > 128:
        tool.fail(S.VA_PASSWD_TOO_LONG)
    def work(st):
        try:
            user, domain = S.parse_email(a["<email>"])
        except S.StoreError as e:
            tool.fail(e.code)
        if not domain:
            print("You did not use a full email address for the user name")
            print("Only full email addresses should be used")
            return 255
        ad = S.get_assign(domain)
        if ad is None:
            print("Error: Domain does not exist")
            return 255
        if st.getpw(user, ad.domain) is not None:
            print("Error: User already exists")
            return 255
        crypted = a["-e"]
        password = a["<passwd>"]
        if crypted:
            password = tool.random_pass(12)
        elif rlen is not None:
            password = tool.random_pass(rlen)
        elif password is None:
            password = tool.ask_password(a["<email>"])
        if not password:
            print("Error: No password entered")
            return 255
        admin.vadduser(st, user, domain, password, a["-c"] or "", crypted=crypted or None)
        if a["-q"]:
            try:
                admin.vsetuserquota(st, user, domain, a["-q"])
            except S.StoreError:
                print("Error in vsetuserquota()")
                return 255
        if rlen is not None:
            print("Random password: %s" % password)
        return 0
    return tool.with_store(PROG, work)
