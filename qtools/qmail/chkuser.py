"""chkuser - qmail-smtpd's sender and recipient checks, as chkuser 2.0.9 in
sagredo's qmail (chkuser.c, chkuser_settings.h) does them.

Not a program: qmail-smtpd imports it at the first MAIL of a session when
CHKUSER_START is set (and its preload hook, in tcpserver's parent, when the
parent's environment has CHKUSER_START), so a session without chkuser never
loads it, the vpopmail store or dnspython.

Settings are read once, at the first MAIL (chkuser's first_time_init):
  CHKUSER_START=ALWAYS   check the recipients of every domain;
  CHKUSER_START=DOMAIN   only those of domains whose .qmail-default has
                         `bounce-no-mailbox` in its first 1023 bytes (the
                         others accept any recipient);
  any other value        chkuser is off (below).
  RELAYCLIENT set (or the variable CHKUSER_DISABLE_VARIABLE names, when that
  is set): off.  RELAYCLIENT set (or the variable named by
  CHKUSER_SENDER_NOCHECK_VARIABLE): the sender is not checked.
  CHKUSER_RCPTLIMIT=n    the n-th recipient of the session (counting every
                         checked one) is refused with 550 5.5.3, and so is
                         every later one (intrusion threshold);
  CHKUSER_WRONGRCPTLIMIT=n  after n unknown recipients (or recipients
                         without a domain) every later one gets 550 5.7.1;
  CHKUSER_MBXQUOTA=pct   an existing user's Maildir++ at pct% or more of its
                         quota: 552 5.2.2 (users with NOQUOTA are skipped);
  CHKUSER_SENDER_FORMAT_NOCHECK, CHKUSER_SENDER_MX_NOCHECK,
  CHKUSER_RCPT_FORMAT_NOCHECK, CHKUSER_RCPT_MX_NOCHECK: skip that check;
  CHKUSER_DOUBLEBOUNCE   accept the sender #@[];
  CHKUSER_IDENTIFY       a name for the client in the log lines.
Off means: a recipient in rcpthosts is accepted, any other one is relayed
for a RELAYCLIENT client and refused with 553 5.7.1 for the rest.

Sender (MAIL): the null sender passes; then the address's format (the part
before the last @: letters, digits and $%?*^~&/\\#+_-.= (and the bytes of a
pound sign); the domain: letters, digits, - and ., at least 4 characters,
with a dot, no `..`, `.-` or `-.`, not starting or ending with - or .; after
MAIL ... SMTPUTF8 any UTF-8 but ()<>[]@,;: and controls) -> 553 5.1.7; then
the domain's MX (qmail's dns_mxip: MX records, else A records;
qtools.lib.dns, so $DNSCACHEIP names the resolver): no such domain -> 550
5.1.8, a DNS failure -> 451 4.4.0.

Recipient (RCPT), in this order: lowercase; no domain -> 550 5.1.2; format
-> 553 5.1.3; a domain not in rcpthosts: its MX (550 5.1.2 / 451 4.4.0),
then relayed for a RELAYCLIENT client, else 553 5.7.1; a domain vpopmail
does not know (users/cdb) -> accepted; DOMAIN mode without bounce-no-mailbox
-> accepted; the store cannot be reached -> 451 4.3.0; a virtual alias
(valias) -> accepted; <domdir>/.qmail-<user, . as :> -> accepted;
.qmail-<prefix>-default for each - of the user -> accepted; an existing user
-> accepted unless its BOUNCE_MAIL flag is set (refused) or its mailbox is
over CHKUSER_MBXQUOTA; an ezmlm list (<domdir>/<prefix before a ->/editor)
-> accepted; anything else -> 550 5.1.1.

Every refusal waits first: CHKUSER_ERROR_DELAY milliseconds (default 1000),
then CHKUSER_ERROR_DELAY_INCREASE (default 300) more for each later one
(chkuser's compile-time settings of those names; as environment variables
they are a qtools addition, so tests can set them to 0).

Log lines on descriptor 2, chkuser's format:
  CHKUSER <title>: from <sender|remoteinfo/auth:X|chkuser-identify:Y> remote
  <helo:H|remotehostname:N|remotehostip:I> rcpt <R> : <description>
(control characters from the client become `?`).

qtools differences: a store that cannot answer (an unreadable users/cdb or
vpasswd, MariaDB down) is always 451 4.3.0 (chkuser accepts when vget_assign
fails for any reason); a recipient with `/` in its local part is never
looked up as a file name; only the stores' own lookups are used (no
mailman lists, no users' extensions: chkuser_settings.h leaves them off).
"""
import os
import time

# chkuser_settings.h: sagredo's current texts (qmail-inventory 0.1), except the two
# syntax replies, which are the seed's `mailbox syntax not allowed` (the seed is
# the reference; sagredo now says `rcpt syntax` / `sender syntax`)
REPLY = {
    "norcpt": b"550 5.1.1 sorry, no mailbox here by that name (chkuser)\r\n",
    "resource": b"451 4.3.0 system temporary unavailable, try again later (chkuser)\r\n",
    "mbxfull": b"552 5.2.2 sorry, recipient mailbox is full (chkuser)\r\n",
    "maxrcpt": b"550 5.5.3 sorry, reached maximum number of recipients allowed in one "
               b"session (chkuser)\r\n",
    "domainmissing": b"550 5.1.2 sorry, you must specify a domain (chkuser)\r\n",
    "rcptformat": b"553 5.1.3 sorry, mailbox syntax not allowed (chkuser)\r\n",
    "rcptmx": b"550 5.1.2 sorry, can't find a valid MX for rcpt domain (chkuser)\r\n",
    "senderformat": b"553 5.1.7 sorry, mailbox syntax not allowed (chkuser)\r\n",
    "sendermx": b"550 5.1.8 sorry, can't find a valid MX for sender domain (chkuser)\r\n",
    "intrusion": b"550 5.7.1 sorry, you are violating our security policies (chkuser)\r\n",
    "norelay": b"553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts "
               b"(chkuser)\r\n",
    "mxtmp": b"451 4.4.0 DNS temporary failure (chkuser)\r\n",
}

# results: (reply key, qlog detail, qlog code, counts for brtlimit, log title,
# log description, delay); OK and RELAYING have no reply
OK, OK_ANY, OK_DOMAIN, RELAYING = "ok", "okany", "okdomain", "relaying"
NORCPTHOSTS, KO, RESOURCE, MBXFULL, MAXRCPT, INTRUSION = (
    "norcpthosts", "ko", "resource", "mbxfull", "maxrcpt", "intrusion")
DOMAIN_MISSING, RCPT_FORMAT, RCPT_MX, RCPT_MX_TMP = (
    "domainmissing", "rcptformat", "rcptmx", "rcptmxtmp")
SENDER_FORMAT, SENDER_MX, SENDER_MX_TMP = "senderformat", "sendermx", "sendermxtmp"

RCPT = {
    OK: (None, b"chkuser", b"250", False, b"accepted rcpt", b"found existing recipient"),
    OK_ANY: (None, b"chkuser", b"250", False, b"accepted any rcpt",
             b"accepted any recipient for any rcpt domain"),
    OK_DOMAIN: (None, b"chkuser", b"250", False, b"accepted any rcpt",
                b"accepted any recipient for this domain"),
    RELAYING: (None, b"chkuserrelay", b"250", False, b"relaying rcpt", b"client allowed to relay"),
    NORCPTHOSTS: ("norelay", b"notinrcpthosts", b"553", True, b"rejected relaying",
                  b"client not allowed to relay"),
    KO: ("norcpt", b"nomailbox", b"550", True, b"rejected rcpt", b"not existing recipient"),
    RESOURCE: ("resource", b"noauthresource", b"451", False, b"no auth resource",
               b"no auth resource available"),
    MBXFULL: ("mbxfull", b"mailboxfull", b"552", False, b"mbx overquota",
              b"rcpt mailbox is overquota"),
    MAXRCPT: ("maxrcpt", b"maxrcpt", b"550", False, b"rejected rcpt", b"max number of recipients"),
    INTRUSION: ("intrusion", b"instrusionthreshold", b"550", True, b"rejected intrusion",
                b"rcpt ignored, session over intrusion threshold"),
    DOMAIN_MISSING: ("domainmissing", b"domainmissing", b"550", True, None, None),
    RCPT_FORMAT: ("rcptformat", b"rcptformat", b"553", True, b"rejected rcpt",
                  b"invalid rcpt address format"),
    RCPT_MX: ("rcptmx", b"rcptmxinvalid", b"550", True, b"rejected rcpt",
              b"invalid rcpt MX domain"),
    RCPT_MX_TMP: ("mxtmp", b"rcptmxdnstmpfail", b"451", False, b"rejected rcpt",
                  b"temporary DNS problem"),
}
SENDER = {
    SENDER_FORMAT: ("senderformat", b"senderformat", b"553", b"invalid sender address format"),
    SENDER_MX: ("sendermx", b"sendermxinvalid", b"550", b"invalid sender MX domain"),
    SENDER_MX_TMP: ("mxtmp", b"sendermxdnstmpfail", b"451", b"temporary DNS problem"),
}

BOUNCE_STRING = b"bounce-no-mailbox"
MIN_DOMAIN_LEN = 4
# CHKUSER_ALLOWED_CHARS (sagredo, Nov 2024); the pound sign is two bytes in UTF-8
ALLOWED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                    b"$%?*^~&/\\#+_-.=" + "\u00a3".encode("utf-8"))
DOMAIN_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
INVALID_UTF8 = frozenset(b"(),:;<>@[]")      # CHKUSER_INVALID_UTF8_CHARS
NAME_CHARS = DOMAIN_CHARS | frozenset(b"_")
DNS_OK, DNS_HARD, DNS_SOFT = 0, -2, -1


def _safe(s):
    return bytes(c if 32 <= c < 127 else 63 for c in s)


def _env(name):
    return os.environb.get(name)


def _int(s):
    """atoi(): optional sign and leading digits; below 1 means off."""
    s = s.strip()
    neg = s[:1] == b"-"
    s = s.lstrip(b"+-")
    k = 0
    while k < len(s) and 48 <= s[k] <= 57:
        k += 1
    n = int(s[:k]) if k else 0
    return 0 if neg or n < 1 else n


def _ms(name, default):
    x = _env(name)
    if x is None:
        return default
    try:
        return max(0, int(x.strip()))
    except ValueError:
        return default


def _utf8_part(s):
    if any(c < 33 or c == 127 or c in INVALID_UTF8 for c in s):
        return False
    try:
        s.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def address_ok(user, domain, utf8):
    """make_mav's rules: the local part's and the domain's characters, then
    the domain's shape."""
    if utf8:
        if not _utf8_part(user) or not _utf8_part(domain):
            return False
    else:
        if any(c not in ALLOWED for c in user) or any(c not in DOMAIN_CHARS for c in domain):
            return False
    if len(domain) < MIN_DOMAIN_LEN:
        return False
    if domain[:1] in (b"-", b".") or domain[-1:] in (b"-", b"."):
        return False
    if b".." in domain or b".-" in domain or b"-." in domain or b"." not in domain:
        return False
    if domain[:4].lower() == b"xn--" and b"--" in domain[4:]:
        return False
    return True


def mx_lookup(domain):
    """qmail's dns_mxip() reduced to its status: DNS_OK, DNS_HARD (no such
    domain, or no MX and no A), DNS_SOFT (try later)."""
    from qtools.lib import dns
    if not domain:
        return DNS_HARD
    if _ipliteral(domain):
        return DNS_OK
    if any(c < 128 and c not in NAME_CHARS for c in domain):
        return DNS_HARD                     # no name server knows such a name
    name = domain.decode("utf-8", "replace")
    if not _name_ok(name):
        return DNS_HARD
    try:
        mxs = dns.mx(name)
    except dns.PermFail:
        mxs = []
    except dns.TempFail:
        return DNS_SOFT
    if not mxs:
        return _a_lookup(name)
    soft = False
    for _, host in sorted(mxs):
        r = _a_lookup(host)
        if r == DNS_OK:
            return DNS_OK
        soft = soft or r == DNS_SOFT
    return DNS_SOFT if soft else DNS_OK


def _name_ok(name):
    """A name that can be asked at all (label lengths, IDNA)."""
    try:
        import dns.name
        dns.name.from_text(name)
    except Exception:                               # noqa: BLE001 - dnspython's IDNA errors
        return False
    return True


def _a_lookup(name):
    from qtools.lib import dns
    try:
        return DNS_OK if dns.a(name) else DNS_HARD
    except dns.PermFail:
        return DNS_HARD
    except dns.TempFail:
        return DNS_SOFT


def _ipliteral(domain):
    """ip_scan / ip_scanbracket: d.d.d.d or [d.d.d.d], the whole name."""
    d = domain[1:-1] if domain[:1] == b"[" and domain[-1:] == b"]" else domain
    parts = d.split(b".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts)


def _exists(path):
    """open_read() succeeds."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


class Chkuser:
    """One session's chkuser: first_time_init() at construction (the first
    MAIL), then sender() per MAIL and rcpt() per RCPT."""

    def __init__(self, session):
        self.s = session
        start = _env(b"CHKUSER_START")
        if start is None:
            self.starting = -1
        elif start.lower() == b"always":
            self.starting = 1
        elif start.lower() == b"domain":
            self.starting = 0
        else:
            self.starting = -1              # sagredo: any other value turns it off
        var = _env(b"CHKUSER_DISABLE_VARIABLE")
        if var is not None:
            if _env(var) is not None:
                self.starting = -1
        elif _env(b"RELAYCLIENT") is not None:
            self.starting = -1
        self.maxrcpt = _int(_env(b"CHKUSER_RCPTLIMIT") or b"")
        self.maxwrong = _int(_env(b"CHKUSER_WRONGRCPTLIMIT") or b"")
        self.mbxquota = _int(_env(b"CHKUSER_MBXQUOTA") or b"")
        var = _env(b"CHKUSER_SENDER_NOCHECK_VARIABLE")
        self.sender_nocheck = (_env(var) is not None) if var is not None \
            else _env(b"RELAYCLIENT") is not None
        self.identify = _env(b"CHKUSER_IDENTIFY")
        self.doublebounce = _env(b"CHKUSER_DOUBLEBOUNCE") is not None
        self.delay_ms = _ms(b"CHKUSER_ERROR_DELAY", 1000)
        self.delay_inc = _ms(b"CHKUSER_ERROR_DELAY_INCREASE", 300)
        self.intrusion = False
        self.recipients = 0
        self.wrong = 0
        self.store = None

    # -- chkuser_commonlog, chkuser_delay
    def log(self, sender, rcpt, title, description):
        s = self.s
        parts = [b"CHKUSER ", title, b": from <", _safe(sender), b"|remoteinfo/auth:",
                 _safe(s.remoteinfo or b""), b"|chkuser-identify:", _safe(self.identify or b""),
                 b"> remote <helo:", _safe(s.fakehelo or b""), b"|remotehostname:",
                 _safe(s.remotehost or b""), b"|remotehostip:", _safe(s.remoteip or b""),
                 b"> rcpt <", _safe(rcpt), b"> : ", description, b"\n"]
        try:
            os.write(2, b"".join(parts))
        except OSError:
            pass

    def delay(self):
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000.0)
        self.delay_ms += self.delay_inc

    # -- MAIL
    def sender(self, addr, utf8):
        """chkuser_sender(): (None, None) to accept, else (detail, code) for
        qmail-smtpd's log line and the reply to send."""
        if not addr:
            self.log(addr, b"", b"accepted sender", b"accepted null sender always")
            return None, None
        if self.starting == -1 or self.sender_nocheck:
            self.log(addr, b"", b"accepted sender", b"accepted any sender always")
            return None, None
        if self.doublebounce and addr == b"#@[]":
            self.log(addr, b"", b"accepted doublebounce", b"accepted qmail doublebounce #@[]")
            return None, None
        i = addr.rfind(b"@")
        user, domain = (addr[:i], addr[i + 1:]) if i >= 0 else (addr, b"")
        status = None
        if _env(b"CHKUSER_SENDER_FORMAT_NOCHECK") is None and not address_ok(user, domain, utf8):
            status = SENDER_FORMAT
        elif _env(b"CHKUSER_SENDER_MX_NOCHECK") is None:
            r = mx_lookup(domain)
            if r == DNS_HARD:
                status = SENDER_MX
            elif r == DNS_SOFT:
                status = SENDER_MX_TMP
        if status is None:
            self.log(addr, b"", b"accepted sender", b"sender accepted")
            return None, None
        key, detail, code, description = SENDER[status]
        self.log(addr, b"", b"rejected sender", description)
        self.delay()
        return (detail, code), REPLY[key]

    # -- RCPT
    def rcpt(self, addr, sender):
        """chkuser_realrcpt(): (status, reply or None); qmail-smtpd logs
        through RCPT[status] and appends RELAYCLIENT for RELAYING."""
        status = self.realrcpt(addr, sender)
        key, _, _, _, title, description = RCPT[status]
        if title is not None:
            self.log(sender, addr, title, description)
        reply = None
        if key is not None:
            self.delay()
            reply = REPLY[key]
        if status in (KO, DOMAIN_MISSING):
            self.wrong += 1
            if not self.intrusion and self.maxwrong and self.wrong >= self.maxwrong:
                self.log(sender, addr, b"intrusion threshold", b"max number of allowed invalid rcpt")
                self.intrusion = True
        return status, reply

    def realrcpt(self, addr, sender):
        s = self.s
        if self.starting == -1:
            if s.inrcpthosts:
                return OK_ANY
            return RELAYING if s.relayclient is not None else NORCPTHOSTS
        if self.intrusion:
            return INTRUSION
        self.recipients += 1
        if self.maxrcpt and self.recipients >= self.maxrcpt:
            self.log(sender, addr, b"intrusion threshold", b"max number of allowed rcpt")
            self.intrusion = True
            return MAXRCPT
        # 1. lowercase (case_lowers: ASCII only)
        i = addr.rfind(b"@")
        user, domain = (addr[:i], addr[i + 1:]) if i >= 0 else (addr, b"")
        user, domain = user.lower(), domain.lower()
        # 2. CHKUSER_DOMAIN_WANTED
        if not domain:
            return DOMAIN_MISSING
        # 3. format
        if _env(b"CHKUSER_RCPT_FORMAT_NOCHECK") is None and \
                not address_ok(user, domain, s.smtputf8):
            return RCPT_FORMAT
        # 4. not ours: MX, then relaying or not
        if not s.inrcpthosts:
            if _env(b"CHKUSER_RCPT_MX_NOCHECK") is None:
                r = mx_lookup(domain)
                if r == DNS_HARD:
                    return RCPT_MX
                if r == DNS_SOFT:
                    return RCPT_MX_TMP
            return RELAYING if s.relayclient is not None else NORCPTHOSTS
        from qtools.vpopmail import store as S
        try:
            return self.vpopmail(S, user, domain)
        except (S.TempFail, S.StoreError):
            return RESOURCE

    def vpopmail(self, S, user, domain):
        """Steps 5 to 13: the domain, then what vpopmail knows of the user."""
        # 5. vget_assign: not a vpopmail domain -> accepted
        a = S.get_assign(domain.decode("utf-8", "surrogateescape"))
        if a is None:
            return OK
        domdir = os.fsencode(a.dir)
        # 6. DOMAIN mode: bounce-no-mailbox in .qmail-default, or anything goes
        if self.starting == 0:
            try:
                with open(domdir + b"/.qmail-default", "rb") as f:
                    head = f.read(1023)
            except OSError:
                head = b""
            if BOUNCE_STRING not in head.split(b"\0", 1)[0]:
                return OK_DOMAIN
        # 7. vauth_open_update(): the store must answer (TempFail -> 451)
        st = self.open_store(S)
        name = user.decode("utf-8", "surrogateescape")
        real = a.domain
        # 8. valias
        select = getattr(st, "valias_select", None)
        if select is not None:
            try:
                if select(name, real):
                    return OK
            except NotImplementedError:
                pass
        files = b"/" not in user           # qtools: never a path outside the domain
        # 9. .qmail-<user> (dots as colons)
        if files and _exists(domdir + b"/.qmail-" + user.replace(b".", b":")):
            return OK
        # 10. .qmail-<prefix>-default, from the last dash to the first
        if files:
            for off in range(len(user) - 1, 0, -1):
                if user[off] == 45 and _exists(domdir + b"/.qmail-" + user[:off] + b"-default"):
                    return OK
        # 11. the user
        pw = st.getpw(name, real)
        if pw is not None:
            if pw.gid & S.BOUNCE_MAIL:
                return KO
            if self.mbxquota and pw.shell.upper() != "NOQUOTA" and self.overquota(S, pw):
                return MBXFULL
            return OK
        # 12. an ezmlm list: <domdir>/<prefix>/editor
        if files:
            for off in range(len(user) - 2, 0, -1):
                if user[off] == 45 and _exists(domdir + b"/" + user[:off] + b"/editor"):
                    return OK
        # 13.
        return KO

    def open_store(self, S):
        """vauth_open_update(): the store, connected (MySQL) once per session."""
        if self.store is None:
            self.store = S.open_store()
        conn = getattr(self.store, "_conn", None)   # store_mysql: connect to the update server
        if conn is not None:
            conn(True)
        return self.store

    def overquota(self, S, pw):
        """vmaildir_readquota(<dir>/Maildir, format_maildirquota(quota)) >=
        CHKUSER_MBXQUOTA percent."""
        try:
            from qtools.vpopmail import maildirquota
        except ImportError:
            return False
        spec = S.format_maildirquota(pw.shell)
        if not spec:
            return False
        try:
            used = maildirquota.percent_used(os.path.join(pw.dir, "Maildir"), spec)
        except OSError:
            return False
        return used >= self.mbxquota

    def close(self):
        if self.store is not None:
            try:
                self.store.close()
            except Exception:                       # noqa: BLE001 - the session ends anyway
                pass
