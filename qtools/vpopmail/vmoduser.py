"""vmoduser - change a virtual user's fields and flags.

usage: vmoduser [options] email_addr or domain (for each user in domain)

Options: -c comment; -q quota; -e crypted password; -C clear password
(hashed with $6$); -D dir (the user's directory field); -x clear all flags
first; then these set flag bits (vpopmail.h, the gid field):
-d NO_PASSWD_CHNG, -p NO_POP, -s NO_SMTP, -w NO_WEBMAIL, -i NO_IMAP,
-b BOUNCE_MAIL, -o V_OVERRIDE, -r NO_RELAY, -u NO_DIALUP, -0..-3 V_USER0-3,
-a QA_ADMIN, -S SA_ADMIN and -E SA_EXPERT (only as root), -f NO_SPAMASSASSIN,
-F DELETE_SPAM, -m NO_MAILDROP; -n (accepted); -v version; -h help (exit 0).
A domain instead of an address changes every user of the domain.
Exit codes: 0 ok, 100 usage, 255 after `no such user u@d`, vpopmail's code
modulo 256 after `Error: <text>`, 111 store down.
"""
import os

from qtools.vpopmail import admin, tool, store as S

PROG = "vmoduser"
USAGE = "vmoduser [options] email_addr or domain (for each user in domain)"
DOC = """
Usage:
  vmoduser [options] [--] <email>

Options:
  -v          version
  -n          no index
  -x          clear flags
  -h          help
  -a          qa admin
  -u          no dialup
  -d          no passwd change
  -p          no pop
  -s          no smtp
  -w          no webmail
  -i          no imap
  -b          bounce
  -r          no relay
  -o          override
  -0          user0
  -1          user1
  -2          user2
  -3          user3
  -f          no spamassassin
  -F          delete spam
  -S          sa admin
  -E          sa expert
  -m          no maildrop
  -c COMMENT  gecos
  -q QUOTA    quota
  -e CRYPTED  crypted
  -C CLEAR    clear
  -D DIR      dir
"""
FLAGS = (("-d", S.NO_PASSWD_CHNG), ("-p", S.NO_POP), ("-s", S.NO_SMTP),
         ("-w", S.NO_WEBMAIL), ("-i", S.NO_IMAP), ("-b", S.BOUNCE_MAIL),
         ("-o", S.V_OVERRIDE), ("-r", S.NO_RELAY), ("-u", S.NO_DIALUP), ("-0", S.V_USER0),
         ("-1", S.V_USER1), ("-2", S.V_USER2), ("-3", S.V_USER3), ("-a", S.QA_ADMIN),
         ("-f", S.NO_SPAMASSASSIN), ("-F", S.DELETE_SPAM), ("-m", S.NO_MAILDROP))


def main(argv):
    if "-h" in argv[1:]:
        print(__doc__.split("\n\n", 1)[1].rstrip())
        return 0
    a = tool.parse(DOC, argv, PROG, USAGE, help=False)
    flags = 0
    for opt, bit in FLAGS:
        if a[opt]:
            flags |= bit
    if os.getuid() == 0:
        flags |= (S.SA_ADMIN if a["-S"] else 0) | (S.SA_EXPERT if a["-E"] else 0)
    quota = S.format_maildirquota(a["-q"]) if a["-q"] is not None else None
    st = tool.store()

    def modify(pw, ad):
        if a["-c"]:
            pw.gecos = a["-c"]
        if a["-D"]:
            pw.dir = a["-D"]
        if a["-C"]:
            pw.passwd = S.mkpasswd(a["-C"])
            pw.clear = a["-C"]
        elif a["-e"]:
            pw.passwd = a["-e"]
        if a["-x"]:
            pw.gid = 0
        pw.gid |= flags
        if quota is not None:
            pw.shell = quota
            admin.update_maildirsize(ad, pw.dir, quota)
        st.setpw(pw, ad.domain)

    def work():
        target = a["<email>"]
        if "@" in target:
            user, domain = S.parse_email(target)
            ad = S.get_assign(domain)
            pw = st.getpw(user, ad.domain) if ad else None
            if pw is None:
                print("no such user %s@%s" % (user, domain))
                return 255
            modify(pw, ad)
        else:
            ad = S.get_assign(target.lower())
            if ad is not None:
                for pw in st.getall(ad.domain):
                    modify(pw, ad)
        return 0
    try:
        return tool.run(PROG, work)
    finally:
        st.close()
