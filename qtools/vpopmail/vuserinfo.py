"""vuserinfo - show a virtual user's entry.

usage: vuserinfo [options] email_address

Without options (or with -a) prints vuserinfo.c's block:
  name:   <name>
  passwd: <crypted>
  clear passwd: <clear>
  comment/gecos: <gecos>
  uid:    <apop field>
  gid:    <flag bits>
  flags:  <flag bits | domain limits>
  gecos: <gecos>
  limits: No user limits set.        (or `limits:` and one line per flag)
  dir:       <dir>
  quota:     <quota>
  usage:     <n>%                    (NOQUOTA: `usage:     NOQUOTA`)
  account created: <asctime>          (only before the first login)
  last auth: Never logged in          (or `last auth: <asctime>`,
                                       `last auth ip: <ip>`)
Options select single fields, one per line in this order: -n name,
-p crypted password, -C clear password, -u uid, -g gid, -c comment,
-d dir, -q quota, -Q usage, -l last authentication; -D domain shows every
user of the domain, each after a line of 42 dashes; -v version.
Exit codes: 0 ok, 100 usage, 255 after `no such user u@d`, 111 store down.
"""
import time

from qtools.vpopmail import admin, tool, store as S

PROG = "vuserinfo"
USAGE = "vuserinfo [options] email_address"
DOC = """
Usage:
  vuserinfo [options] [<email>]

Options:
  -v         version
  -a         all
  -n         name
  -p         passwd
  -u         uid
  -g         gid
  -c         comment
  -d         dir
  -q         quota
  -Q         usage
  -l         lastauth
  -C         clear
  -D DOMAIN  domain
"""
LIMITS = ((S.NO_PASSWD_CHNG, "password can not be changed by user"),
          (S.NO_POP, "pop access closed"), (S.NO_WEBMAIL, "webmail access closed"),
          (S.NO_IMAP, "imap access closed"), (S.NO_SMTP, "smtp access is closed"),
          (S.NO_RELAY, "user not allowed to relay mail"),
          (S.NO_SPAMASSASSIN, "spamassassin processing disabled"),
          (S.DELETE_SPAM, "delete spam"), (S.NO_MAILDROP, "maildrop processing disabled"),
          (S.NO_DIALUP, "no dialup flag has been set"),
          (S.BOUNCE_MAIL, "mail will be bounced back to sender"),
          (S.QA_ADMIN, "has qmailadmin administrator access"),
          (S.SA_ADMIN, "has system administrator access"),
          (S.SA_EXPERT, "has expert access"), (S.V_USER0, "user flag 0 is set"),
          (S.V_USER1, "user flag 1 is set"), (S.V_USER2, "user flag 2 is set"),
          (S.V_USER3, "user flag 3 is set"),
          (S.V_OVERRIDE, "user is not subject to domain limits"))


def asctime(t):
    return time.asctime(time.localtime(t))


def lastlogin(st, pw, domain, out):
    t, ip = st.get_lastauth(pw, domain)
    if t == 0 or ip is None or ip == S.NULL_REMOTE_IP:
        if t != 0:
            out.append("account created: %s" % asctime(t))
        out.append("last auth: Never logged in")
    else:
        out.append("last auth: %s" % asctime(t))
        out.append("last auth ip: %s" % ip)


def usage_text(pw, sep=""):
    if pw.shell != "NOQUOTA":
        return "%d%%" % admin.quota_percent(pw.dir, pw.shell)
    return pw.shell


def display(st, a, pw, domain):
    out = []
    if a["all"]:
        out += ["name:   %s" % pw.name, "passwd: %s" % pw.passwd,
                "clear passwd: %s" % pw.clear, "comment/gecos: %s" % pw.gecos,
                "uid:    %d" % pw.uid, "gid:    %d" % pw.gid, "flags:  %d" % pw.flags,
                "gecos: %s" % pw.gecos]
        if pw.flags == 0:
            out.append("limits: No user limits set.")
        else:
            out.append("limits:")
            for bit, text in LIMITS:
                if pw.flags & bit:
                    out.append("        %s%s" % (text, "" if pw.gid & bit else " (*)"))
            if pw.gid != pw.flags:
                out.append("        * = set by domain-wide limits")
        out.append("dir:       %s" % pw.dir)
        out.append("quota:     %s" % pw.shell)
        out.append("usage:     %s" % usage_text(pw))
        lastlogin(st, pw, domain, out)
    else:
        for opt, val in (("-n", pw.name), ("-p", pw.passwd), ("-C", pw.clear),
                         ("-u", pw.uid), ("-g", pw.gid), ("-c", pw.gecos), ("-d", pw.dir),
                         ("-q", pw.shell)):
            if a[opt]:
                out.append(str(val))
        if a["-Q"]:
            out.append(usage_text(pw))
        if a["-l"]:
            lastlogin(st, pw, domain, out)
    print("\n".join(out))


def main(argv):
    a = tool.parse(DOC, argv, PROG, USAGE, help=False)
    if not a["<email>"] and not a["-D"]:
        from qtools.lib import strerr
        strerr.die_usage(PROG, USAGE)
    a["all"] = a["-a"] or not any(a[o] for o in ("-n", "-p", "-u", "-g", "-c", "-d", "-q",
                                                  "-Q", "-l", "-C"))
    def work(st):
        if not a["-D"]:
            user, domain = S.parse_email(a["<email>"])
            ad = S.get_assign(domain) if domain else None
            pw = st.getpw(user, ad.domain) if ad else None
            if pw is None:
                print("no such user %s@%s" % (user, domain) if domain else
                      "no such user %s" % user)
                return 255
            display(st, a, pw, ad.domain)
        else:
            ad = S.get_assign(a["-D"].lower())
            if ad is None:
                return 0
            for pw in st.getall(ad.domain):
                print("-" * 42)
                display(st, a, pw, ad.domain)
        return 0
    return tool.with_store(PROG, work)
