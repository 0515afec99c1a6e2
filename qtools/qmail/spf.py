"""spf - qmail-smtpd's SPF policy, as qmail-spf rc5 (sagredo's spf.c) does it.

Not a program: qmail-smtpd imports it at the first MAIL of a session with
spfbehavior > 0 (and its preload hook, in tcpserver's parent, when
control/spfbehavior or SPFBEHAVIOR turn SPF on), so a session without SPF
never loads it, pyspf or dnspython.

check() gives the verdict for one MAIL: the identity is the domain of MAIL
FROM (after the last @); for a sender without @ (the null sender) it is the
HELO name (after its last @, if any).  A client at 127.0.0.1 or at one of our
own addresses passes (`local policy`).  Otherwise pyspf evaluates the record
(RFC 7208, strict) with its DNS lookups sent through qtools.lib.dns, so
$DNSCACHEIP names the resolver.  The texts are qmail-spf's, rendered here
with its own macro expander (expand(), a transcription of spfexpand and
spfsubst, quirks included: %{xr} is the local host name, %{xs} is `SPF
record at <domain>` or `local policy`, %{xe} the error text, a delimiter
other than `.` turns every such character of the expansion so far into a
dot).  Results and their Received-SPF texts:

  pass      pass (%{xr}: %{xs} designates %{i} as permitted sender)
  fail      fail (%{xr}: %{xs} does not designate %{i} as permitted sender)
  softfail  softfail (%{xr}: transitioning %{xs} does not designate %{i} as
            permitted sender)
  neutral   neutral (%{xr}: %{i} is neither permitted nor denied by %{xs})
  none      none (%{xr}: domain at %{d} does not designate permitted sender
            hosts)
  unknown   permerror (%{xr}: Multiple SPF records returned) and the other
            permerror texts (parse error in %{xs}, %{xs} uses mechanism not
            recognized by this client, domain at %{d} does not designate...)
  error     temperror (%{xr}: error in processing during lookup of %{d}: DNS
            problem)

followed by ` client-ip=%{i}; envelope-from=%{s};` (or ` helo=%{h};` for the
HELO identity).  SPFRESULT gets the result's name; QMAILAUTHENTICATED gets
`spf=<text> smtp.mailfrom=<sender>` (or smtp.helo=), after its value at the
start of the session and `;\\n\\t` when it had one.

%{xs} names the domain whose record was looked up last, as qmail-spf's
expdomain does: after an include: it is the included domain (a gmail.com
sender passes with `SPF record at _netblocks.google.com`), on a fall-through
the domain being evaluated.

control/spfexp: the explanation for rejections, expanded like the header.
Its default here is qmail-spf's original one,
`See http://spf.pobox.com/why.html?sender=%{S}&ip=%{I}&receiver=%{xR}`, the
one the seed's transcript shows (sagredo's spf.h now has an mxtoolbox text);
an exp= modifier of the record (its TXT records, joined by newlines) wins.
control/spfrules: local rules, inserted into the record (the first one and
any redirect= target) before the run of -/~/? mechanisms that ends in -all,
~all or ?all (not when that run starts the record); a match there is `local
policy`.  Also tried, after control/spfguess, for a domain without a record.
control/spfguess: rules tried for a domain without a record; a match is
`local policy`, a DNS error in them gives none, no match gives none.
SPF_BLOCK_PLUS_ALL (set and not 0): a record with +all fails (`fail (%{xr}:
%{xs} has an improper SPF record)`).

Differences from qmail-spf (pyspf follows RFC 7208): every term of a record is
checked before evaluation, so a syntax error or an unknown mechanism is a
permerror even after a matching term; the 10-lookup and 2-void-lookup limits
apply (permerror with pyspf's text); default= is ignored; a redirect= to a
domain without a record is unknown (C: none with a permerror text); ip6:
matches IPv6 clients.  Control characters from DNS or the client in the
header and the reply become `?`; a macro's digit count is capped (the C
loops forever on eight digits).
"""
import os
import time

# spf.h: SPF_DEFEXP before sagredo replaced it; the seed shows this one
DEFEXP = b"See http://spf.pobox.com/why.html?sender=%{S}&ip=%{I}&receiver=%{xR}"

PASS, NONE, UNKNOWN, NEUTRAL, SOFTFAIL, FAIL, ERROR = (
    b"pass", b"none", b"unknown", b"neutral", b"softfail", b"fail", b"error")

# the spfbehavior from which a result is refused at RCPT (error: 451 at MAIL from 2)
REFUSE_FROM = {FAIL: 3, SOFTFAIL: 4, NEUTRAL: 5, NONE: 6, UNKNOWN: 6}

HDR = {
    "pass": b"pass (%{xr}: %{xs} designates %{i} as permitted sender)",
    "softfail": b"softfail (%{xr}: transitioning %{xs} does not designate %{i} as permitted sender)",
    "fail": b"fail (%{xr}: %{xs} does not designate %{i} as permitted sender)",
    "plusall": b"fail (%{xr}: %{xs} has an improper SPF record)",
    "unknown": b"permerror (%{xr}: domain at %{d} does not designate permitted sender hosts)",
    "neutral": b"neutral (%{xr}: %{i} is neither permitted nor denied by %{xs})",
    "none": b"none (%{xr}: domain at %{d} does not designate permitted sender hosts)",
    "unknown_msg": b"permerror (%{xr}: %{xe})",
    "ext": b"permerror %{xe} (%{xr}: %{xs} uses mechanism not recognized by this client)",
    "syntax": b"permerror (%{xr}: parse error in %{xs})",
    "error": b"temperror (%{xr}: error in processing during lookup of %{d}: %{xe})",
}
ID_MAILFROM = (b" client-ip=%{i}; envelope-from=%{s};", b" smtp.mailfrom=%{s}")
ID_HELO = (b" client-ip=%{i}; helo=%{h};", b" smtp.helo=%{h}")

# pyspf's permerror texts -> qmail-spf's header
_SYNTAX = ("Invalid", "Dual CIDR", "CIDR not allowed", "implicit exists", "empty domain",
           "include mechanism missing", "Missing IP4", "syntax error", "Unknown Macro",
           "Do not separate", "redirect= MUST", "exp has empty", "redirect has empty",
           "Use the ip4 mechanism", "Empty domain-spec")

# spf.c's urlchr_table: the bytes %{S} and the like leave as they are
_URLSAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$'()*,-._")
_HEX = b"0123456789abcdef"
_DIGITS_MAX = 1000000


class Context:
    """What the macros of one check see (spf.c's globals)."""

    def __init__(self, mailfrom, helohost, local, ip):
        self.mailfrom = mailfrom
        self.helohost = helohost
        self.local = local
        self.ip = ip
        self.expdomain = None           # None: `local policy`
        self.errormsg = b""
        self.query = None               # the pyspf query, for %{p}
        self._fqdn = None

    def fqdn(self):
        if self._fqdn is None:
            p = None
            if self.query is not None:
                try:
                    p = self.query.getp()
                except Exception:                   # noqa: BLE001 - DNS trouble: unknown
                    p = None
            self._fqdn = p.encode("latin-1", "replace") if p else b"unknown"
        return self._fqdn


def _cspn(s, start, split):
    """Bytes from start before the first delimiter (byte_cspn)."""
    i = start
    while i < len(s) and s[i] not in split:
        i += 1
    return i - start


def _rcspn(s, n, split):
    """Index of the last delimiter in s[:n], or n (spf.c's byte_rcspn)."""
    for i in range(n - 1, -1, -1):
        if s[i] in split:
            return i
    return n


def _value(ch, domain, ctx):
    mf = ctx.mailfrom
    at = mf.rfind(b"@")
    if ch == 108:                                   # l
        return mf[:at] if at >= 0 else b"postmaster"
    if ch == 115:                                   # s
        return mf
    if ch == 111:                                   # o
        return mf[at + 1:] if at >= 0 else b""
    if ch == 100:                                   # d
        return domain or b""
    if ch == 105:                                   # i
        return ctx.ip
    if ch == 116:                                   # t
        return b"%d" % int(time.time())
    if ch == 112:                                   # p
        return ctx.fqdn()
    if ch == 118:                                   # v
        return b"in-addr"
    if ch == 104:                                   # h
        h = ctx.helohost
        return h[h.rfind(b"@") + 1:]
    if ch == 69:                                    # E (xe)
        return ctx.errormsg
    if ch == 82:                                    # R (xr)
        return ctx.local
    if ch == 83:                                    # S (xs)
        if ctx.expdomain:
            return b"SPF record at " + ctx.expdomain
        return b"local policy"
    return b""


def _subst(out, spec, domain, ctx):
    """spfsubst(): one %{...} (spec without the braces) appended to out."""
    x = spec[:1] == b"x"
    if x:
        spec = spec[1:]
    if not spec:
        return
    start = len(out)
    ch = spec[0]
    k = 1
    urlencode = False
    if 65 <= ch <= 90:
        ch += 32
        urlencode = True
    if x:
        ch -= 32
    digits = -1
    while k < len(spec) and 48 <= spec[k] <= 57:
        digits = max(digits, 0)
        digits = min(digits * 10 + spec[k] - 48, _DIGITS_MAX)
        k += 1
    reverse = False
    while k < len(spec) and (65 <= spec[k] <= 90 or 97 <= spec[k] <= 122):
        if spec[k] == 114:                          # r
            reverse = True
        k += 1
    split = spec[k:] or b"."
    sa = _value(ch, domain, ctx)
    if reverse:
        pos = 0
        while digits:
            pos += _cspn(sa, pos, split)
            if pos >= len(sa):
                break
            digits -= 1
            if not digits:
                break
            pos += 1
        while pos > 0:
            i = _rcspn(sa, pos, split) + 1
            if i > pos:
                i = 0
            out += sa[i:pos]
            if i > 0:
                out += b"."
            pos = i - 1
    else:
        pos = len(sa)
        while digits:
            i = _rcspn(sa, pos, split) + 1
            if i > pos:
                pos = 0
                break
            pos = i
            digits -= 1
            if not digits:
                break
            pos -= 1
        out += sa[pos:]
        if split != b".":
            for j in range(len(out)):               # sic: all of it, not just this macro
                if out[j] in split:
                    out[j] = 46
    if urlencode:
        raw = bytes(out[start:])
        del out[start:]
        for c in raw:
            if c in _URLSAFE:
                out.append(c)
            else:
                out += b"%" + _HEX[c >> 4:(c >> 4) + 1] + _HEX[c & 15:(c & 15) + 1]


def expand(spec, domain, ctx):
    """spfexpand(): %% %_ %- and %{...} macros of spec (bytes)."""
    out = bytearray()
    i = 0
    n = len(spec)
    while i < n:
        c = spec[i]
        if c == 37 and i + 1 < n:                   # '%'
            nxt = spec[i + 1]
            if nxt == 37:
                out += b"%"
                i += 2
                continue
            if nxt == 95:                           # '_'
                out += b" "
                i += 2
                continue
            if nxt == 45:                           # '-'
                out += b"%20"
                i += 2
                continue
            if nxt == 123:                          # '{'
                j = spec.find(b"}", i + 2)
                if j >= 0:
                    _subst(out, spec[i + 2:j], domain, ctx)
                    i = j + 1
                    continue
        out.append(c)
        i += 1
    return bytes(out)


def _printable(b, keep=b""):
    return bytes(c if (32 <= c < 127 or c >= 128 or c in keep) else 63 for c in b)


def local_rules(record, local):
    """spf.c: the local rules inserted before the run of -/~/? terms that ends
    in an `all`, unless that run starts the record.  (new record text,
    (terms before, local terms)) or (record, None)."""
    terms = record.split()
    if len(terms) < 2 or not local:
        return record, None
    body = terms[1:]                                # after v=spf1
    p = None
    for k, t in enumerate(body):
        if p is not None and t[:1] != body[p][:1]:
            p = None
        if p is None and t[:1] in ("-", "~", "?"):
            p = k
        if p is not None and p > 0 and t[1:] == "all":
            new = terms[:1] + body[:p] + local.split() + body[p:]
            return " ".join(new), (frozenset(body[:p]), frozenset(local.split()))
    return record, None


_Q = []


def _spfmod():
    """pyspf, its DNS pointed at qtools.lib.dns (so at $DNSCACHEIP), and the
    query class that keeps what qmail-spf's texts need."""
    if _Q:
        return _Q[0]
    import spf
    spf.DNSLookup = _lookup

    class Query(spf.query):
        def __init__(self, *a, **k):
            spf.query.__init__(self, *a, **k)
            self.expdomain = None       # the domain whose record was looked up last
            self.local_rules = None     # text of control/spfrules for level-0 records
            self.localinfo = None
            self.final = None           # the domain of the record that decided
            self.qexp = None            # an exp= text of a level-0 record (raw)
            self.blockplusall = False
            self.plusall = False

        def run(self, record=None):
            self.final = None
            self.localinfo = None
            return self.check(record)

        def dns_spf(self, domain):
            self.expdomain = domain
            return spf.query.dns_spf(self, domain)

        def check1(self, record, domain, recursion):
            if recursion == 0 and record:           # the record and redirect targets
                if self.blockplusall and "+all" in record:
                    self.plusall = True
                    self.final = domain
                    return ("fail", 550, "")
                self.localinfo = None
                if self.local_rules:
                    record, self.localinfo = local_rules(record, self.local_rules)
            return spf.query.check1(self, record, domain, recursion)

        def check0(self, record, recursion):
            r = spf.query.check0(self, record, recursion)
            if recursion == 0 and self.final is None:
                self.final = self.d
                if self.mechanism is None:          # fell through: the domain evaluated
                    self.expdomain = self.d
            return r

        def get_explanation(self, spec):
            try:
                txt = self.dns_txt(spec, ignore_void=True)
            except (spf.TempError, spf.PermError):
                return None
            if not txt:
                return None
            return b"\n".join(txt).decode("latin-1")

        def set_explanation(self, exp):
            self.qexp = exp                         # redirects keep it, as in qmail-spf
            spf.query.set_explanation(self, exp)

    _Q.append((spf, Query))
    return _Q[0]


def _lookup(name, qtype, strict=True, timeout=20):
    """pyspf's DNSLookup through qtools.lib.dns's resolver: a list of
    ((name, type), value); NXDOMAIN and no data are []."""
    import dns.exception
    import dns.resolver
    import spf
    from qtools.lib import dns as qdns
    r = qdns.resolver()
    try:
        ans = r.resolve(name, qtype, search=False, raise_on_no_answer=False,
                        lifetime=min(float(timeout), r.lifetime))
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
        raise spf.TempError("DNS " + str(e))
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return []                                   # a name DNS cannot carry: none there
    out = []
    for rd in ans:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rd.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rd.preference, rd.exchange.to_text(omit_final_dot=True))))
        elif qtype == "PTR":
            out.append(((name, qtype), rd.target.to_text(omit_final_dot=True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), list(rd.strings)))
    return out


def warm():
    """In a parent before it forks: import pyspf and the DNS record types."""
    _spfmod()
    import dns.rdtypes.ANY.TXT  # noqa: F401
    import dns.rdtypes.ANY.MX  # noqa: F401
    import dns.rdtypes.ANY.PTR  # noqa: F401
    import dns.rdtypes.ANY.CNAME  # noqa: F401
    import dns.rdtypes.IN.A  # noqa: F401
    import dns.rdtypes.IN.AAAA  # noqa: F401
    import qtools.lib.dns  # noqa: F401


class Result:
    """One MAIL's verdict and what qmail-smtpd writes from it."""

    def __init__(self, code, hdr, ident, ctx, explanation):
        self.code = code                # SPFRESULT's value
        self.hdr = hdr
        self.ident = ident
        self.ctx = ctx
        self.explanation = explanation

    def _info(self, part):
        c = self.ctx
        return _printable(expand(self.hdr + part, c.expdomain, c))

    def header(self):
        """The Received-SPF line (spfreceived)."""
        return b"Received-SPF: " + self._info(self.ident[0]) + b"\n"

    def authinfo(self):
        """For QMAILAUTHENTICATED (spfinfo(sa, 1))."""
        return self._info(self.ident[1])

    def reply(self):
        """err_spf(): 550 lines from the explanation, split at newlines."""
        c = self.ctx
        text = expand(self.explanation, c.expdomain, c)
        lines = [_printable(x) for x in text.split(b"\n")]
        return b"".join(b"550-" + x + b"\r\n" for x in lines[:-1]) + \
            b"550 " + lines[-1] + b" (#5.7.1)\r\n"


def _ip(remoteip):
    import ipaddress
    try:
        a = ipaddress.ip_address(remoteip.decode("ascii"))
    except (ValueError, UnicodeError):
        return None
    if a.version == 6 and a.ipv4_mapped:
        a = a.ipv4_mapped                           # qmail-spf's IPv4-mapped fix
    return a


def check(mailfrom, helohost, remoteip, local, ipme, rules=None, guess=None,
          explanation=DEFEXP, blockplusall=False):
    """spfcheck(): the Result for MAIL FROM mailfrom from remoteip.  ipme()
    gives our IPv4 addresses as 4-tuples."""
    ctx = Context(mailfrom, helohost, local, b"0.0.0.0")      # spf.c's ipmx, unset
    if b"@" in mailfrom:
        domain = mailfrom[mailfrom.rfind(b"@") + 1:]
        ident = ID_MAILFROM
    else:
        domain = helohost[helohost.rfind(b"@") + 1:]
        ident = ID_HELO
    addr = _ip(remoteip)
    if addr is None:
        ctx.errormsg = b"No IP address in conversation"
        return Result(UNKNOWN, HDR["unknown_msg"], ident, ctx, explanation)
    ctx.ip = str(addr).encode()
    if addr.is_loopback and addr.version == 6 or \
            addr.version == 4 and (str(addr) == "127.0.0.1" or tuple(addr.packed) in ipme()):
        return Result(PASS, HDR["pass"], ident, ctx, explanation)
    spf, Query = _spfmod()
    q = Query(i=str(addr), s=mailfrom.decode("latin-1") if ident is ID_MAILFROM else "",
              h=domain.decode("latin-1"))
    if ident is ID_MAILFROM:
        q.o = q.d = domain.decode("latin-1")        # after the last @, as spf.c
    ctx.query = q
    q.blockplusall = blockplusall
    rules = rules.decode("latin-1") if rules else None
    q.local_rules = rules
    try:
        res = q.run()[0]
    except Exception as e:                          # noqa: BLE001 - a pyspf surprise
        why = ("%s: %s" % (type(e).__name__, e)).encode("utf-8", "replace")[:200]
        try:
            os.write(2, b"qmail-smtpd: warning: SPF check failed: " + _printable(why) + b"\n")
        except OSError:
            pass
        ctx.errormsg = b"DNS problem"
        ctx.expdomain = domain
        return Result(ERROR, HDR["error"], ident, ctx, explanation)
    if q.qexp is not None:
        explanation = q.qexp.encode("latin-1", "replace")
    ctx.expdomain = (q.expdomain or domain.decode("latin-1")).encode("latin-1", "replace")
    if res == "none":
        ctx.expdomain = domain
        return _guess(q, ctx, ident, explanation, rules, guess)
    if res == "temperror":
        ctx.errormsg = b"DNS problem"
        return Result(ERROR, HDR["error"], ident, ctx, explanation)
    if res == "permerror":
        return _permerror(q, ctx, ident, explanation)
    if q.plusall:
        return Result(FAIL, HDR["plusall"], ident, ctx, explanation)
    if q.mechanism is not None and q.localinfo is not None:
        before, mine = q.localinfo
        if q.mechanism not in before:
            if q.mechanism in mine:
                ctx.expdomain = None                # a local rule decided
            else:
                ctx.expdomain = (q.final or "").encode("latin-1", "replace")
    code = {"pass": PASS, "fail": FAIL, "softfail": SOFTFAIL}.get(res, NEUTRAL)
    return Result(code, HDR[code.decode()], ident, ctx, explanation)


def _permerror(q, ctx, ident, explanation):
    prob = str(getattr(q, "prob", "") or "")
    mech = q.mech[-1] if getattr(q, "mech", None) else ""
    if prob.startswith("Two or more"):
        ctx.errormsg = b"Multiple SPF records returned"
        return Result(UNKNOWN, HDR["unknown_msg"], ident, ctx, explanation)
    if prob.startswith("Unknown mechanism") or prob.startswith("Unknown qualifier"):
        ctx.errormsg = str(mech).encode("latin-1", "replace")
        return Result(UNKNOWN, HDR["ext"], ident, ctx, explanation)
    if prob.startswith("No valid SPF record for included") or \
            prob.startswith("redirect domain has no SPF"):
        return Result(UNKNOWN, HDR["unknown"], ident, ctx, explanation)
    if prob.startswith("include has trivial recursion") or prob.startswith("Too many levels"):
        ctx.errormsg = b"Maximum nesting level exceeded, possible loop"
        return Result(UNKNOWN, HDR["unknown_msg"], ident, ctx, explanation)
    if prob.startswith(_SYNTAX):
        return Result(UNKNOWN, HDR["syntax"], ident, ctx, explanation)
    ctx.errormsg = prob.encode("latin-1", "replace")
    return Result(UNKNOWN, HDR["unknown_msg"], ident, ctx, explanation)


def _guess(q, ctx, ident, explanation, rules, guess):
    """No record: control/spfguess, then control/spfrules, as terms of a
    record of our own (spflookup's SPF_NONE branch)."""
    none = Result(NONE, HDR["none"], ident, ctx, explanation)
    q.local_rules = None
    for text, is_guess in ((guess, True), (rules, False)):
        if not text:
            continue
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        q.expdomain = None
        res = q.run("v=spf1 " + text)[0]
        if res == "temperror":
            if is_guess:
                return none
            ctx.expdomain = (q.expdomain or "").encode("latin-1", "replace") or None
            ctx.errormsg = b"DNS problem"
            return Result(ERROR, HDR["error"], ident, ctx, explanation)
        if res == "permerror":
            ctx.expdomain = (q.expdomain or "").encode("latin-1", "replace") or None
            return _permerror(q, ctx, ident, explanation)
        if q.mechanism is None:
            continue                                # no term matched
        # `local policy`, unless an include looked a record up
        ctx.expdomain = (q.expdomain or "").encode("latin-1", "replace") or None
        code = {"pass": PASS, "fail": FAIL, "softfail": SOFTFAIL}.get(res, NEUTRAL)
        return Result(code, HDR[code.decode()], ident, ctx, explanation)
    return none
