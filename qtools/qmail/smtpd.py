"""qmail-smtpd - receive mail via SMTP.

usage: qmail-smtpd [ checkprogram subprogram ... ]

qmail-smtpd speaks SMTP on descriptors 0 (input) and 1 (output), as run by
tcpserver (or behind recordio: pipes work as well as sockets, STARTTLS
included), and hands each accepted message to qmail-queue.  It answers like
sagredo's patched qmail-smtpd (netqmail + auth 0.8.3 + qmail-tls + force-tls;
replies in REPLY below, byte for byte); the differences are listed at the end.

Session.  `220 <smtpgreeting> ESMTP` (control/smtpgreeting, default
control/me; neither: `421 unable to read controls (#4.3.0)`).  A command line
ends at LF, one trailing CR is dropped, the verb is the text before the
first space (any case), the argument what follows the spaces; a NUL ends the
line.  HELO/EHLO/MAIL/RCPT/DATA/RSET/NOOP/VRFY/HELP/QUIT/AUTH/STARTTLS; any
other verb gets `500 unrecognised (#5.5.2)`.  Replies are buffered and
written when more input is needed (PIPELINING).  EHLO advertises, in this
order: STARTTLS (when control/servercert.pem exists, TLS is not on and
DISABLETLS is not 1), PIPELINING, SMTPUTF8, 8BITMIME, `SIZE <databytes>`, and
last the AUTH line (only when SMTPAUTH enables it and, under FORCETLS, TLS is
on): the order of the seed transcript, sagredo's current lines.

MAIL/RCPT: addresses are parsed like qmail's addrparse (text in <...>, or a
bare address after `:`; source routes and quotes stripped; 900 bytes or
more: `555 syntax error (#5.5.4)`).  MAIL parameters SIZE= (over databytes:
552), AUTH= (xtext, sets TCPREMOTEINFO when unset) and SMTPUTF8.  RCPT
domains must be in control/rcpthosts or control/morercpthosts.cdb (exact, or
a `.suffix` line; case-insensitive; no rcpthosts file allows every domain;
an address without @ is always allowed) unless RELAYCLIENT is set, whose
value is then appended to each recipient.  box@[d.d.d.d] for a local IP is
rewritten to box@<control/localiphost, default me>.  control/badmailfrom
(addresses or @domains) rejects every RCPT of a listed sender.

DATA: the message is read through qmail's blast() state machine: CR LF
becomes LF, a leading dot is removed, CR LF . CR LF ends the data, a lone CR
is kept, and any bare LF gets `451 See https://cr.yp.to/docs/smtplf.html.`
and the connection is closed (ALLOW_BARELF set: bare LF accepted).  A
Received line (received.c: safe characters only) goes first; 100 or more
Received/Delivered-To header lines: 554.  The message streams into
qmail-queue ($QMAILQUEUE, else $QMAILHOME/bin/qmail-queue if executable, else
qmail-queue on $PATH; run through pathexec), its envelope follows on its
descriptor 1; `250 ok <time> qp <pid>` only after it exited 0; its other exit
codes become 451/554 texts (qmail.c's qmail_close table).  Where pathexec
would elide it into the qtools qmail-queue, its code runs in this process
instead (qtools.qmail.queue.Inline: the same files, syncs and exit codes, no
fork; qp is then this process's pid).  databytes is counted while
streaming; over it the rest is read and discarded and the reply is 552.

AUTH (SMTPAUTH set: "" LOGIN PLAIN; "!" required; "cram", "+cram", "!cram",
"!+cram"; "-" or "0" off): LOGIN, PLAIN and CRAM-MD5 through the
checkpassword interface: checkprogram runs with descriptor 3 reading
`user\\0password\\0` (`challenge\\0` too in the cram modes).  Exit 0: `235 ok,
go ahead (#2.0.0)`, RELAYCLIENT="" and TCPREMOTEINFO, SMTPAUTHUSER,
SMTP_AUTH_USER set; exit 111: `454 4.7.0 temporary authentication failure`;
other exits: a pause of $QTOOLS_AUTHSLEEP seconds (default 5), then `535
authentication failed (#5.7.1)`.  FORCETLS (default on, FORCETLS=0 turns it
off): AUTH is neither advertised nor accepted before STARTTLS (`538 auth not
available without TLS (#5.3.3)`).  FORCEAUTHMAILFROM=1: MAIL FROM must be
the authenticated user.

STARTTLS: `220 ready for tls`, then the handshake on descriptors 0/1 through
memory BIOs (so it works on pipes) with control/servercert.pem (certificate
and key in one file; control/servercerts/<SNI name>/servercert.pem is used
when the client names one).  Input pipelined after STARTTLS is discarded
(CVE-2011-0411); afterwards the session starts afresh (HELO, transaction and
authentication forgotten).  SMTPS set: TLS starts before the greeting.
TLSCIPHERS or control/tlsserverciphers: TLS 1.2 cipher list.

SPF (qmail-spf rc5; qtools.qmail.spf has the details): control/spfbehavior
0..6, SPFBEHAVIOR overriding it; off for RELAYCLIENT sessions.  Checked at
MAIL (the sender's domain, or the HELO name for the null sender; 127.0.0.1
and our own addresses pass): 1 adds a `Received-SPF:` line after the Received
line and sets SPFRESULT (pass none unknown neutral softfail fail error) and
QMAILAUTHENTICATED for qmail-queue; 2 also answers a DNS failure with `451
SPF lookup failure (#4.3.0)` at MAIL; 3 refuses fail at each RCPT with `550
<control/spfexp or exp=, expanded> (#5.7.1)` (550- lines for a multi-line
explanation); 4 also softfail; 5 also neutral; 6 also none and permerror.
control/spfrules and control/spfguess: local rules.  pyspf decides, through
qtools.lib.dns ($DNSCACHEIP); it is loaded only when SPF is on.

chkuser 2.0.9 (qtools.qmail.chkuser has the details), when CHKUSER_START is
set (settings read at the first MAIL): ALWAYS checks every domain's
recipients, DOMAIN those of domains whose .qmail-default says
bounce-no-mailbox, any other value (or RELAYCLIENT, or AUTH before that MAIL)
turns it off.  At MAIL, after SIZE and before badmailfrom: the sender's
syntax (`553 5.1.7 sorry, mailbox syntax not allowed (chkuser)`) and MX (`550
5.1.8 ...`, `451 4.4.0 DNS temporary failure (chkuser)`).  At RCPT, in place
of the rcpthosts test: `550 5.1.2 sorry, you must specify a domain
(chkuser)`, `553 5.1.3 sorry, mailbox syntax not allowed (chkuser)`, a foreign
domain's MX, `553 5.7.1 sorry, that domain isn't in my list of allowed
rcpthosts (chkuser)`, then what vpopmail knows (valias, .qmail-<user>,
.qmail-<prefix>-default, the user and its BOUNCE_MAIL flag, ezmlm lists):
`550 5.1.1 sorry, no mailbox here by that name (chkuser)`; the store down:
`451 4.3.0 system temporary unavailable, try again later (chkuser)`.
CHKUSER_RCPTLIMIT, CHKUSER_WRONGRCPTLIMIT (then `550 5.7.1 sorry, you are
violating our security policies (chkuser)`), CHKUSER_MBXQUOTA (`552 5.2.2`);
each refusal first waits CHKUSER_ERROR_DELAY ms (1000) plus
CHKUSER_ERROR_DELAY_INCREASE (300) per earlier one.  `CHKUSER ...` log lines.
Without CHKUSER_START the RCPT test is qmail's: rcpthosts, RELAYCLIENT
appended to every recipient, `553 sorry, that domain isn't in my list of
allowed rcpthosts (#5.7.1)`.  brtlimit (control/brtlimit, BRTLIMIT): after
that many refused recipients (chkuser's permanent refusals, rcpthosts) the
next RCPT gets `421 too many invalid addresses, goodbye (#4.3.0)` and the
connection is closed.

Control files ($QMAILHOME/control): me, smtpgreeting, localiphost,
rcpthosts, morercpthosts.cdb, badmailfrom, databytes, maxrcpt, timeoutsmtpd
(default 1200 s per read or write: `451 timeout (#4.4.2)`), rejectrelaytest,
rejectnullsenders, servercert.pem, tlsserverciphers, spfbehavior, spfexp,
spfrules, spfguess, brtlimit.
Environment: TCPLOCALHOST TCPLOCALIP TCPLOCALPORT TCPREMOTEIP TCPREMOTEHOST
TCPREMOTEINFO TCPREMOTEPORT RELAYCLIENT SMTPAUTH FORCETLS DISABLETLS SMTPS
FORCEAUTHMAILFROM DATABYTES DISABLE_MAXRCPT DISABLE_BADMAILFROM
REJECTNULLSENDERS ALLOW_BARELF SMTPD_GREETDELAY DROP_PRE_GREET QMAILQUEUE
ERROR_FD TLSCIPHERS SPFBEHAVIOR SPF_BLOCK_PLUS_ALL DNSCACHEIP QMAILAUTHENTICATED
QTOOLS_AUTHSLEEP BRTLIMIT CHKUSER_START CHKUSER_DISABLE_VARIABLE
CHKUSER_SENDER_NOCHECK_VARIABLE CHKUSER_RCPTLIMIT CHKUSER_WRONGRCPTLIMIT
CHKUSER_MBXQUOTA CHKUSER_SENDER_FORMAT_NOCHECK CHKUSER_SENDER_MX_NOCHECK
CHKUSER_RCPT_FORMAT_NOCHECK CHKUSER_RCPT_MX_NOCHECK CHKUSER_DOUBLEBOUNCE
CHKUSER_IDENTIFY CHKUSER_ERROR_DELAY CHKUSER_ERROR_DELAY_INCREASE (qtools)
VPOPMAILHOME VPOPMAIL_AUTH.

Limits qtools adds (C qmail-smtpd has none; each answer is final):
  a command line over 2048 bytes with its CRLF, or an AUTH line over 12288
  bytes: `500 line too long (#5.5.2)` and the connection is closed;
  more than 1000 recipients in one transaction: `452 max rcpt limit exceeded
  (#5.7.1)` (control/maxrcpt may set a lower limit; over either limit the
  recipient is NOT added, unlike sagredo's, which adds it and says 452);
  the third failed AUTH of a session: `421 too many authentication failures,
  goodbye (#4.7.0)` and the connection is closed.
Other differences from sagredo's qmail-smtpd: checkpassword exit 111 answers
454 4.7.0 (RFC 4954) instead of 535, without the pause; STARTTLS also
forgets MAIL/RCPT and AUTH (RFC 3207 4.2); SIZE= values are not wrapped at
2^64; an unexpected error answers `421 internal error, goodbye (#4.3.0)`;
log lines never carry control characters from the client; unknown base64 is
malformed (strict decoding); without CHKUSER_START chkuser is left out
entirely (sagredo's, compiled in, then answers its own 553 5.7.1 text, logs
and waits); brtlimit also counts that 553.  Not implemented (hooks are in
place): qregex, validrcptto, RCPTCHECK, DNSBL, qmail-spp, client
certificates (tlsclients), the relay via cert.

Exit codes: 0 after QUIT; 1 when the client goes away, times out or is
refused; 111 on an internal error.
"""
import enum
import errno
import os
import select
import time

PROG = "qmail-smtpd"
USAGE = "qmail-smtpd [ checkprogram subprogram ... ]"
FAST_EXIT = True                # everything goes out through os.write
REUSABLE = True                 # a session leaves nothing behind (qtools.lib.reuse)

REPLY = {
    "timeout": b"451 timeout (#4.4.2)\r\n",
    "nomem": b"421 out of memory (#4.3.0)\r\n",
    "control": b"421 unable to read controls (#4.3.0)\r\n",
    "ipme": b"421 unable to figure out my IP addresses (#4.3.0)\r\n",
    "maxrcpt": b"452 max rcpt limit exceeded (#5.7.1)\r\n",
    "straynewline": b"451 See https://cr.yp.to/docs/smtplf.html.\r\n",
    "pregreet": b"554 SMTP protocol violation\r\n",
    "size": b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n",
    "nogateway": b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n",
    "unimpl": b"502 unimplemented (#5.5.1)\r\n",
    "unrecog": b"500 unrecognised (#5.5.2)\r\n",
    "syntax": b"555 syntax error (#5.5.4)\r\n",
    "wantmail": b"503 MAIL first (#5.5.1)\r\n",
    "wantrcpt": b"503 RCPT first (#5.5.1)\r\n",
    "ok": b"250 ok\r\n",
    "flushed": b"250 flushed\r\n",
    "vrfy": b"252 send some mail, i'll try my best\r\n",
    "help": b"214 Roberto's qmail notes home page: https://www.sagredo.eu\r\n",
    "data": b"354 go ahead\r\n",
    "qqt": b"451 qqt failure (#4.3.0)\r\n",
    "hops": b"554 too many hops, this message is looping (#5.4.6)\r\n",
    "child": b"454 oops, problem with child and I can't auth (#4.3.0)\r\n",
    "fork": b"454 oops, child won't start and I can't auth (#4.3.0)\r\n",
    "pipe": b"454 oops, unable to open pipe and I can't auth (#4.3.0)\r\n",
    "write": b"454 oops, unable to write pipe and I can't auth (#4.3.0)\r\n",
    "authd": b"503 you're already authenticated (#5.5.0)\r\n",
    "authmail": b"503 no auth during mail transaction (#5.5.0)\r\n",
    "noauth": b"503 auth not available (#5.3.3)\r\n",
    "authtls": b"538 auth not available without TLS (#5.3.3)\r\n",
    "authabrt": b"501 auth exchange canceled (#5.0.0)\r\n",
    "input": b"501 malformed auth input (#5.5.4)\r\n",
    "authfail": b"535 authentication failed (#5.7.1)\r\n",
    "authinvalid": b"504 auth type invalid (#5.5.1)\r\n",
    "submission": b"530 Authorization required (#5.7.1) \r\n",   # sic: the space
    "authok": b"235 ok, go ahead (#2.0.0)\r\n",
    "authtemp": b"454 4.7.0 temporary authentication failure\r\n",     # qtools: RFC 4954
    "authmany": b"421 too many authentication failures, goodbye (#4.7.0)\r\n",   # qtools
    "login_user": b"334 VXNlcm5hbWU6\r\n",          # "Username:"
    "login_pass": b"334 UGFzc3dvcmQ6\r\n",          # "Password:"
    "plain": b"334 \r\n",
    "bmf": b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n",
    "nullsender": b"421 null senders temporarily denied (#4.3.0)\r\n",
    "relay": b"553 we don't relay (#5.7.1)\r\n",
    "authmismatch": b"503 from and auth not the same (#5.5.1)\r\n",
    "tlsready": b"220 ready for tls\r\n",
    "tlsparam": b"501 Syntax error (no parameters allowed) (#5.5.4)\r\n",
    "toolong": b"500 line too long (#5.5.2)\r\n",                  # qtools
    "internal": b"421 internal error, goodbye (#4.3.0)\r\n",         # qtools
    "spferror": b"451 SPF lookup failure (#4.3.0)\r\n",
    "brtlimit": b"421 too many invalid addresses, goodbye (#4.3.0)\r\n",
}
# the formatted ones: 220 <greeting> ESMTP, 250 <greeting>, 221 <greeting>,
# 250 ok <time> qp <pid>, 451/554 <qmail_close text>, 454 TLS ... (#4.3.0)

LINE_MAX = 2048                 # a command line with its CRLF (RFC 5321 says 512)
AUTHLINE_MAX = 12288            # RFC 4954 4: an AUTH response line
RCPT_MAX = 1000                 # recipients per transaction (RFC 5321 4.5.3.1.8: >= 100)
AUTH_MAXFAIL = 3                # failed AUTH attempts per session
MAXHOPS = 100
CHUNK = 65536
LINGER = 2.0                    # seconds to drain input after a final reply
CUSTOM_ERR_FD = 4               # qmail-queue's fd for custom error texts

# qmail_close(): qmail-queue's exit code -> reply text (first byte D = 554, Z = 451)
QQ_EXIT = {
    115: b"Denvelope address too long for qq (#5.1.3)",
    11: b"Denvelope address too long for qq (#5.1.3)",
    31: b"Dmail server permanently rejected message (#5.3.0)",
    32: b"DPrivate key file does not exist (#5.3.5)",
    51: b"Zqq out of memory (#4.3.0)",
    52: b"Zqq timeout (#4.3.0)",
    53: b"Zqq write error or disk full (#4.3.0)",
    54: b"Zqq read error (#4.3.0)",
    55: b"Zqq unable to read configuration (#4.3.0)",
    56: b"Zqq trouble making network connection (#4.3.0)",
    58: b"Zqq trouble creating child (#4.3.0)",
    59: b"Zqq trouble creating pipes (#4.3.0)",
    61: b"Zqq trouble in home directory (#4.3.0)",
    62: b"Zqq trouble creating files in queue (#4.3.0)",
    63: b"Zqq trouble creating files in queue (#4.3.0)",
    64: b"Zqq trouble creating files in queue (#4.3.0)",
    65: b"Zqq trouble creating files in queue (#4.3.0)",
    66: b"Zqq trouble creating files in queue (#4.3.0)",
    70: b"Zqq trouble with pid file (#4.3.0)",
    71: b"Zmail server temporarily rejected message (#4.3.0)",
    72: b"Zconnection to mail server timed out (#4.4.1)",
    73: b"Zconnection to mail server rejected (#4.4.1)",
    74: b"Zcommunication with mail server failed (#4.4.2)",
    81: b"Zqq internal bug (#4.3.0)",
    91: b"Zqq internal bug (#4.3.0)",
    120: b"Zunable to exec qq (#4.3.0)",
    122: b"Zqq waitpid surprise (#4.3.0)",
    123: b"Zqq crashed (#4.3.0)",
}


def qq_text(status, flagerr, custom=b""):
    """qmail_close(): "" on success, else the D/Z text for a wait status."""
    if os.WIFSIGNALED(status):
        return b"Zqq crashed (#4.3.0)"
    return qq_code_text(os.WEXITSTATUS(status), flagerr, custom)


def qq_code_text(code, flagerr, custom=b""):
    """qmail_close() for qmail-queue's exit code."""
    if code == 0:
        return b"Zqq read error (#4.3.0)" if flagerr else b""
    if code in (82, 88) and len(custom) > 2:
        return custom
    if code in QQ_EXIT:
        return QQ_EXIT[code]
    if 11 <= code <= 40:
        return b"Dqq permanent problem (#5.3.0)"
    return b"Zqq temporary problem (#4.3.0)"


class State(enum.IntEnum):
    """Where the mail transaction is (qmail's seenmail and rcptto.len)."""
    IDLE = 0            # no MAIL yet (after greeting, HELO, RSET, DATA)
    MAIL = 1            # MAIL accepted, no recipient yet
    RCPT = 2            # at least one recipient: DATA may follow


class Exit(Exception):
    """End the session with this exit code (the reply is already queued)."""

    def __init__(self, code, linger=False):
        Exception.__init__(self, code)
        self.code = code
        self.linger = linger


# -- DATA: qmail's blast() ---------------------------------------------------

CONT, END, STRAY = 0, 1, 2
CR, LF, DOT = 13, 10, 46

# (state, byte class) -> (bytes to emit before the byte, emit the byte?,
# next state, action).  Byte classes: CR, LF, DOT; anything else is "other"
# (key None).  Transcribed from sagredo's blast(); state 0 runs of ordinary
# bytes never reach the table.
_STRICT = {
    (0, CR): (b"", False, 4, CONT), (0, LF): (b"", False, 0, STRAY),
    (1, DOT): (b"", False, 2, CONT), (1, CR): (b"", False, 4, CONT),
    (1, LF): (b"", False, 1, STRAY), (1, None): (b"", True, 0, CONT),
    (2, LF): (b"", False, 2, STRAY), (2, CR): (b"", False, 3, CONT),
    (2, DOT): (b"", True, 0, CONT), (2, None): (b"", True, 0, CONT),
    (3, LF): (b"", False, 3, END), (3, CR): (b".\r", False, 4, CONT),
    (3, DOT): (b".\r", True, 0, CONT), (3, None): (b".\r", True, 0, CONT),
    (4, LF): (b"", True, 1, CONT), (4, CR): (b"", True, 4, CONT),
    (4, DOT): (b"\r", True, 0, CONT), (4, None): (b"\r", True, 0, CONT),
}
# ALLOW_BARELF: a bare LF is a line end, and LF . LF ends the data
_BARELF = dict(_STRICT)
_BARELF.update({(0, LF): (b"", True, 1, CONT), (1, LF): (b"", True, 1, CONT),
                (2, LF): (b"", False, 2, END)})


class Blast:
    """qmail's blast() over chunks: feed() returns (output, consumed, action).

    Equivalent to the byte-at-a-time machine (tests/test_smtpd_smuggling.py
    checks it against a plain transcription), but it moves through runs of
    ordinary bytes with find() and takes whole runs of well-formed CRLF lines
    with replace(), so a large message costs a few passes of C code.
    """

    def __init__(self, barelf=False):
        self.state = 1                  # as if after a CRLF
        self.table = _BARELF if barelf else _STRICT
        self.barelf = barelf
        self.inheader = True
        self.hops = 0
        self.hline = b""                # first bytes (up to 9) of the current header line

    def feed(self, data):
        out = []
        table = self.table
        s = self.state
        n = len(data)
        i = 0
        action = CONT
        fast = not self.barelf
        nr = nn = -2                    # cached positions of the next CR / LF
        while i < n:
            if s == 1 and fast:
                fast = False            # once per chunk: O(n) checks
                last = data.rfind(b"\n", i)
                if last >= i:
                    seg = data[i:last + 1]
                    crlf = seg.count(b"\r\n")
                    if (seg.count(b"\n") == crlf and seg.count(b"\r") == crlf
                            and not seg.startswith(b".\r") and b"\n.\r" not in seg):
                        o = seg.replace(b"\r\n", b"\n")
                        if seg.startswith(b".") or b"\n." in o:
                            o = (b"\n" + o).replace(b"\n.", b"\n")[1:]
                        out.append(o)
                        i = last + 1
                        continue
            if s == 0:
                if nr < i and nr != -1:
                    nr = data.find(b"\r", i)
                if nn < i and nn != -1:
                    nn = data.find(b"\n", i)
                if nr == -1 and nn == -1:
                    j = n
                elif nr == -1:
                    j = nn
                elif nn == -1:
                    j = nr
                else:
                    j = nr if nr < nn else nn
                if j > i:
                    out.append(data[i:j])
                    i = j
                    if i >= n:
                        break
            ch = data[i]
            pre, emit, s2, act = table.get((s, ch if ch in (CR, LF, DOT) else None)) \
                or table[(s, None)]
            if act != CONT:
                i += 1
                action = act
                s = s2
                break
            if pre:
                out.append(pre)
            if emit:
                out.append(data[i:i + 1])
            s = s2
            i += 1
        self.state = s
        if self.inheader:
            self._header(data, i)
        return b"".join(out), i, action

    def _header(self, data, end):
        """Count Received/Delivered-To lines until the first empty (CRLF) line,
        on the raw bytes as blast() does."""
        i = 0
        while i < end and self.inheader:
            j = data.find(b"\n", i, end)
            stop = j + 1 if j >= 0 else end
            h = self.hline
            before = len(h)
            if before < 9:
                h = h + data[i:min(stop, i + 9 - before)]
                after = len(h)
                if before < 2 <= after and h[:2] == b"\r\n":
                    self.inheader = False
                if before < 8 <= after and h[:8].lower() == b"received":
                    self.hops += 1
                if before < 9 <= after and h[:9].lower() == b"delivered":
                    self.hops += 1
            self.hline = b"" if j >= 0 else h
            i = stop


# -- small helpers ------------------------------------------------------------

def _env(name):
    return os.environb.get(name)


def _setenv(name, value):
    os.environb[name] = value


def _safe(s):
    """A client's bytes on one printable log line."""
    return bytes(c if 32 <= c < 127 else 63 for c in s)


def _qsafe(s):
    # qsmtpdlog's outqlog(): bytes outside 33..126 become '_'
    return bytes(c if 32 < c < 127 else 95 for c in s)


def log(*parts):
    try:
        os.write(2, b"".join(p if isinstance(p, bytes) else str(p).encode("utf-8", "replace")
                             for p in parts))
    except OSError:
        pass


def _readline(name):
    """control_readline(): the first line, trailing blanks stripped; None if
    the file does not exist; OSError if unreadable."""
    try:
        fd = os.open("control/" + name, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    return data.split(b"\n", 1)[0].rstrip(b" \t\r")


def _readfile(name):
    """control_readfile(): the non-empty, non-# lines; None if missing."""
    try:
        fd = os.open("control/" + name, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while True:
            d = os.read(fd, 65536)
            if not d:
                break
            chunks.append(d)
    finally:
        os.close(fd)
    out = []
    for line in b"".join(chunks).split(b"\n"):
        line = line.rstrip(b" \t\r")
        if line and not line.startswith(b"#"):
            out.append(line)
    return out


def _scan_ulong(s):
    """djb's scan_ulong: the leading digits (0 if none)."""
    k = 0
    while k < len(s) and 48 <= s[k] <= 57:
        k += 1
    return int(s[:k]) if k else 0


def _readint(name, default):
    v = _readline(name)
    if v is None:
        return default
    v = v.strip()
    neg = v.startswith(b"-")
    n = _scan_ulong(v.lstrip(b"+-"))
    return -n if neg else n


def _qmailhome():
    return os.environ.get("QMAILHOME") or "/var/qmail"


def ip_scanbracket(s):
    """ip_scanbracket(): ([a, b, c, d], length) of "[a.b.c.d]" at the start
    of s (each number taken modulo 256, as the C stores it), or (None, 0)."""
    if s[:1] != b"[":
        return None, 0
    k = 1
    ip = []
    for part in range(4):
        j = k
        while j < len(s) and 48 <= s[j] <= 57:
            j += 1
        if j == k:
            return None, 0
        ip.append(int(s[k:j]) & 255)
        k = j
        if part < 3:
            if s[k:k + 1] != b".":
                return None, 0
            k += 1
    if s[k:k + 1] != b"]":
        return None, 0
    return ip, k + 1


def ipme():
    """This host's IPv4 addresses (qmail's ipme): the kernel's local routes."""
    me = {(127, 0, 0, 1), (0, 0, 0, 0)}
    local = _env(b"TCPLOCALIP")
    if local:
        ip, _ = ip_scanbracket(b"[" + local + b"]")
        if ip:
            me.add(tuple(ip))
    try:
        with open("/proc/net/fib_trie", "rb") as f:
            last = None
            for line in f:
                line = line.strip()
                if line.startswith(b"|-- "):
                    last = line[4:]
                elif line == b"/32 host LOCAL" and last:
                    ip, _ = ip_scanbracket(b"[" + last + b"]")
                    if ip:
                        me.add(tuple(ip))
    except OSError:
        pass
    return me


def addrparse(arg, liphost=None, ipme_fn=ipme):
    """qmail's addrparse(): the address in a MAIL/RCPT argument, or None."""
    term = 62                                       # '>'
    i = arg.find(b"<")
    if i >= 0:
        arg = arg[i + 1:]
    else:                                           # partner should go read rfc 821
        term = 32
        i = arg.find(b":")
        arg = arg[i + 1:] if i >= 0 else b""
        if not arg:
            return None
        arg = arg.lstrip(b" ")
    if arg[:1] == b"@":                             # strip source route
        i = arg.find(b":")
        arg = arg[i + 1:] if i >= 0 else b""
    if b'"' not in arg and b"\\" not in arg:
        i = arg.find(bytes((term,)))
        addr = arg if i < 0 else arg[:i]
    else:
        out = bytearray()
        esc = quoted = False
        for ch in arg:                              # copy, stripping quotes
            if esc:
                out.append(ch)
                esc = False
            elif not quoted and ch == term:
                break
            elif ch == 92:
                esc = True
            elif ch == 34:
                quoted = not quoted
            else:
                out.append(ch)
        addr = bytes(out)
    if liphost is not None:
        i = addr.rfind(b"@")
        if i >= 0 and addr[i + 1:i + 2] == b"[":
            ip, k = ip_scanbracket(addr[i + 1:])
            if ip and i + 1 + k == len(addr) and tuple(ip) in ipme_fn():
                addr = addr[:i + 1] + liphost
    if len(addr) + 1 > 900:                         # the C counts the NUL
        return None
    return addr


def mailfrom_parms(arg, databytes):
    """mailfrom_parms(): (too big, smtputf8, AUTH= value or None).  Like the
    C it scans the whole argument, space by space, and stops at a SIZE=
    over databytes."""
    smtputf8 = False
    auth = None
    i = arg.find(b">")
    if not (4 < i < len(arg)):
        return False, smtputf8, auth
    for tok in arg[1:].split(b" "):
        up = tok[:8].upper()
        if up == b"SMTPUTF8":
            smtputf8 = True
        if up[:5] == b"SIZE=" and databytes and _scan_ulong(tok[5:]) > databytes:
            return True, smtputf8, auth
        if up[:5] == b"AUTH=":
            auth = tok[5:]
    return False, smtputf8, auth


def xtext_user(a):
    """mailfrom_auth(): the AUTH= value, +3D and +2B decoded."""
    if a[:2] == b"<>":
        return b"unknown"
    out = bytearray()
    k = 0
    while k < len(a):
        if a[k] == 43:                              # '+'
            if a[k:k + 3].upper() == b"+3D":
                k += 2
                out += b"="
            if a[k:k + 3].upper() == b"+2B":
                k += 2
                out += b"+"
        else:
            out.append(a[k])
        k += 1
    return bytes(out)


def date822(t=None):
    """date822fmt() with sagredo's local-time patch: `9 Dec 2010 13:22:48 +0100`."""
    if t is None:
        t = time.time()
    tm = time.localtime(int(t))
    off = tm.tm_gmtoff or 0
    sign = b"+" if off >= 0 else b"-"
    minutes = (abs(off) + 30) // 60
    return b"%d %s %d %02d:%02d:%02d %s%02d%02d" % (
        tm.tm_mday, b"JanFebMarAprMayJunJulAugSepOctNovDec"[3 * tm.tm_mon - 3:3 * tm.tm_mon],
        tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, minutes // 60, minutes % 60)


_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@%+/=:-")


def safeput(s):
    """received.c's safeput(): characters outside [A-Za-z0-9.@%+/=:-] become '?'."""
    return bytes(c if c in _SAFE else 63 for c in s)


def received(protocol, local, remoteip, remotehost, remoteinfo, helo, relayclient, when=None):
    """The Received line of received.c (sagredo: no IP for relay clients)."""
    parts = [b"Received: from ", safeput(remotehost)]
    if helo is not None:
        parts += [b" (HELO ", safeput(helo), b")"]
    parts.append(b" (")
    if remoteinfo is not None:
        parts.append(safeput(remoteinfo))
    if relayclient is None:
        if remoteinfo is not None:
            parts.append(b"@")
        parts.append(safeput(remoteip))
    parts += [b")\n  by ", safeput(local), b" with ", protocol, b"; ", date822(when), b"\n"]
    return b"".join(parts)


# -- TLS ----------------------------------------------------------------------

_TLS = {}           # cert path -> (stat key, SSLContext); filled by preload() too


def _statkey(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _sni(sslobj, name, ctx):
    """SNI: control/servercerts/<name>/servercert.pem when it exists."""
    if not name or "/" in name:
        return None
    path = "control/servercerts/%s/servercert.pem" % name
    if not os.path.exists(path):
        return None
    try:
        sslobj.context = tls_context(path)
        sslobj.qtools_sni = name
    except Exception:                               # noqa: BLE001 - a bad cert fails the handshake
        import ssl
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
    return None


def tls_context(path="control/servercert.pem"):
    """An SSLContext for path (certificate and key in one file), cached while
    the file is unchanged.  Raises OSError/SSLError."""
    import ssl
    key = _statkey(path)
    hit = _TLS.get(os.path.abspath(path))
    if hit and hit[0] == key:
        return hit[1]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0) | ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    ctx.load_cert_chain(path)
    ctx.sni_callback = _sni
    _TLS[os.path.abspath(path)] = (key, ctx)
    return ctx


def _tls_reason(e):
    r = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
    return _safe(str(r).encode("utf-8", "replace"))


class TLSFailed(Exception):
    pass


# -- the connection: fds 0/1, timeouts, TLS through memory BIOs --------------

class Conn:
    def __init__(self, timeout, rfd=0, wfd=1):
        self.rfd = rfd
        self.wfd = wfd
        self.timeout = timeout
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.ssl = None
        self.bio_in = self.bio_out = None
        self.pr = select.poll()
        self.pr.register(rfd, select.POLLIN)
        self.pw = select.poll()
        self.pw.register(wfd, select.POLLOUT)

    # raw descriptors
    def raw_read(self, timeout=None):
        """One read() of at most CHUNK bytes; b"" at end of file; raises
        Exit(1) after the timeout with `451 timeout` queued."""
        ms = int((self.timeout if timeout is None else timeout) * 1000)
        while True:
            if not self.pr.poll(ms):
                raise TimeoutError
            try:
                return os.read(self.rfd, CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return b""

    def raw_write(self, data):
        view = memoryview(data)
        ms = int(self.timeout * 1000)
        while view:
            if not self.pw.poll(ms):
                raise Exit(1)
            try:
                # at most PIPE_BUF: after POLLOUT this never blocks
                n = os.write(self.wfd, view[:4096])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                raise Exit(1)
            view = view[n:]

    # plaintext
    def put(self, data):
        self.outbuf += data

    def flush(self):
        if not self.outbuf:
            return
        data = bytes(self.outbuf)
        self.outbuf.clear()
        if self.ssl is not None:
            self.ssl.write(data)
            data = self.bio_out.read()
        self.raw_write(data)

    def _tls_out(self):
        data = self.bio_out.read()
        if data:
            self.raw_write(data)

    def fill(self):
        """Flush the replies, then append more input to inbuf (raises
        EOFError at the end of input, TimeoutError)."""
        self.flush()
        if self.ssl is None:
            data = self.raw_read()
            if not data:
                raise EOFError
            self.inbuf += data
            return
        ssl = self.sslmod
        while True:
            try:
                data = self.ssl.read(CHUNK)
            except ssl.SSLWantReadError:
                self._tls_out()
                raw = self.raw_read()
                if not raw:
                    raise EOFError
                self.bio_in.write(raw)
                continue
            except ssl.SSLError:
                raise EOFError
            if not data:
                raise EOFError
            self.inbuf += data
            self._tls_out()
            return

    def getline(self, cap):
        """The next line without its LF; raises OverflowError past cap bytes."""
        while True:
            i = self.inbuf.find(b"\n", 0, cap)
            if i >= 0:
                line = bytes(self.inbuf[:i])
                del self.inbuf[:i + 1]
                return line
            if len(self.inbuf) >= cap:
                raise OverflowError
            self.fill()

    def start_tls(self, ctx):
        """Server handshake over the raw fds; the caller discarded inbuf."""
        import ssl
        self.sslmod = ssl
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.bio_in, self.bio_out, server_side=True)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._tls_out()
                try:
                    raw = self.raw_read()
                except TimeoutError:
                    raise TLSFailed(b"timed out")
                if not raw:
                    raise TLSFailed(b"connection closed")
                self.bio_in.write(raw)
            except (ssl.SSLError, OSError) as e:
                try:
                    self._tls_out()             # the alert, if any
                except Exit:
                    pass
                raise TLSFailed(_tls_reason(e))
        self._tls_out()
        self.ssl = obj
        return obj

    def linger(self):
        """After a final reply: let the client read it before we go (closing
        with unread input would reset the connection and lose the reply)."""
        try:
            self.flush()
        except Exit:
            return
        try:
            import socket
            s = socket.socket(fileno=os.dup(self.wfd))
            try:
                s.shutdown(socket.SHUT_WR)
            finally:
                s.close()
        except OSError:
            try:
                os.close(self.wfd)
            except OSError:
                pass
        deadline = time.monotonic() + LINGER
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                if not self.raw_read(left):
                    return
            except TimeoutError:
                return


# -- configuration, read per connection ----------------------------------------

class Config:
    """setup(): the control files and environment of one session."""

    def __init__(self):
        envb = os.environb
        me = _readline("me")
        greeting = _readline("smtpgreeting")
        if greeting is None:
            greeting = me
        if greeting is None:
            raise OSError(errno.ENOENT, "no control/me")
        self.greeting = greeting
        liphost = _readline("localiphost")
        self.liphost = liphost if liphost is not None else me
        t = _readint("timeoutsmtpd", 1200)
        self.timeout = t if t > 0 else 1
        self.maxrcpt = _readint("maxrcpt", -1)
        rh = _readfile("rcpthosts")
        self.rcpthosts = None if rh is None else frozenset(x.lower() for x in rh)
        bmf = _readfile("badmailfrom")
        self.badmailfrom = frozenset(x.lower() for x in bmf) if bmf else None
        self.rejectrelaytest = _readint("rejectrelaytest", 0)
        x = envb.get(b"REJECTNULLSENDERS")
        self.rejnsmf = _scan_ulong(x) if x is not None else _readint("rejectnullsenders", 0)
        self.databytes = _readint("databytes", 0)
        x = envb.get(b"DATABYTES")
        if x is not None:
            self.databytes = _scan_ulong(x)
        if self.databytes < 0:
            self.databytes = 0
        self.greetdelay = _scan_ulong(envb.get(b"SMTPD_GREETDELAY") or b"")
        self.drop_pre_greet = _scan_ulong(envb.get(b"DROP_PRE_GREET") or b"")
        self.spfbehavior = _readint("spfbehavior", 0)
        x = envb.get(b"SPFBEHAVIOR")
        if x is not None:
            self.spfbehavior = _scan_ulong(x)
        self.spfrules = self.spfguess = None
        self.spfexp = None
        if self.spfbehavior > 0:                   # read only when they can matter
            self.spfrules = _readline("spfrules")
            self.spfguess = _readline("spfguess")
            self.spfexp = _readline("spfexp")
        auth = envb.get(b"SMTPAUTH")
        smtpauth = 0
        if auth is not None:
            auth = auth.lower()
            smtpauth = 1
            if auth in (b"-", b"0"):
                smtpauth = 0
            if auth == b"!":
                smtpauth = 11
            if auth.startswith(b"cram"):
                smtpauth = 2
            if auth.startswith(b"+cram"):
                smtpauth = 3
            if auth.startswith(b"!cram"):
                smtpauth = 12
            if auth.startswith(b"!+cram"):
                smtpauth = 13
        self.smtpauth = smtpauth
        self.forceauthmailfrom = envb.get(b"FORCEAUTHMAILFROM") == b"1"
        self.disabletls = envb.get(b"DISABLETLS") == b"1"
        self.forcetls = envb.get(b"FORCETLS") != b"0"
        self.smtps = b"SMTPS" in envb
        self.barelf = b"ALLOW_BARELF" in envb
        self.disable_badmailfrom = b"DISABLE_BADMAILFROM" in envb
        self.disable_maxrcpt = b"DISABLE_MAXRCPT" in envb
        self.brtlimit = _readint("brtlimit", 0)
        x = envb.get(b"BRTLIMIT")
        if x is not None:
            self.brtlimit = _scan_ulong(x)
        try:
            self.authsleep = float(os.environ.get("QTOOLS_AUTHSLEEP", "5"))
        except ValueError:
            self.authsleep = 5.0


def queue_program():
    """$QMAILQUEUE, else $QMAILHOME/bin/qmail-queue, else qmail-queue on $PATH."""
    qq = os.environ.get("QMAILQUEUE")
    if qq:
        return qq
    p = os.path.join(_qmailhome(), "bin", "qmail-queue")
    if os.access(p, os.X_OK):
        return p
    return "qmail-queue"


# -- the session ---------------------------------------------------------------

class Session:
    def __init__(self, childargs):
        self.childargs = list(childargs)
        self.conn = Conn(1200)
        self.state = State.IDLE
        self.mailfrom = b""
        self.rcpts = []
        self.rcptcount = 0
        self.seenauth = False
        self.authuser = b""
        self.authmethod = b""
        self.authfails = 0
        self.flagbarf = False
        self.smtputf8 = False
        self.flagtls = False
        self.cipher = None
        self.qp = b""
        self.size = b""
        self.mrh = None                     # morercpthosts.cdb reader, opened on demand
        self._ipme = None
        self.addr = b""                     # the address being looked at, for the log
        self.pos = 0                        # envelope position for the log
        self.spf = None                     # this transaction's SPF verdict (qtools.qmail.spf)
        self.spfbarf = None                 # the 550 reply RCPT gets, if the verdict refuses
        self.qmailauth = None               # QMAILAUTHENTICATED as the session found it
        self.chk = None                     # chkuser (qtools.qmail.chkuser), False: not configured
        self.brtcount = 0                   # bad recipients so far (brtlimit)

    # -- output and ends
    def out(self, data):
        self.conn.put(data)

    def die(self, reply, code=1, linger=False):
        if reply:
            self.out(reply)
        raise Exit(code, linger)

    # -- logging (sagredo's qlog lines and auth lines, control characters removed)
    def qlog(self, head, result, reason, detail, code):
        q = (lambda s: s) if self.smtputf8 else _qsafe
        envb = os.environb
        envelope = head == b"qlogenvelope"
        mf = self.mailfrom if self.state != State.IDLE else (self.addr if self.pos == 2 else b"")
        if not envelope and self.rcpts:
            rc = b",".join(q(r) for r in self.rcpts)
        else:
            rc = q(self.addr) if self.pos == 3 else b""
        relay = b"yes" if self.relayclient is not None else b"no"
        rh = b""
        if envelope and self.pos == 3:
            rh = b"yes" if self.inrcpthosts else b"no"
        enc = b"ssl" if self.cfg.smtps else (b"tls" if self.flagtls else b"")
        log(head, b": result=", result, b" code=", code, b" reason=", reason,
            b" detail=", q(detail), b" helo=", q(self.helohost), b" mailfrom=", q(mf),
            b" rcptto=", rc, b" relay=", relay, b" rcpthosts=", rh, b" size=", self.size,
            b" authuser=", q(self.authuser), b" authtype=", self.authmethod,
            b" encrypted=", enc, b" sslverified=no",
            b" localip=", q(envb.get(b"TCPLOCALIP", b"")),
            b" localport=", q(envb.get(b"TCPLOCALPORT", b"")),
            b" remoteip=", q(envb.get(b"TCPREMOTEIP", b"")),
            b" remoteport=", q(envb.get(b"TCPREMOTEPORT", b"")),
            b" remotehost=", q(envb.get(b"TCPREMOTEHOST", b"")),
            b" qp=", self.qp, b" pid=", b"%d" % os.getpid(), b"\n")

    def logit(self, message, reason=None):
        parts = [b"qmail-smtpd: ", message]
        if reason:
            parts += [b" (", reason, b")"]
        parts += [b": ", _safe(self.mailfrom), b" from ", _safe(self.remoteip), b" to ",
                  _safe(self.addr), b" helo ", _safe(self.helohost), b"\n"]
        log(*parts)

    def title(self):
        return b"qmail-smtpd[%d]: " % os.getpid()

    # -- set-up
    def setup(self):
        envb = os.environb
        self.cfg = cfg = Config()
        self.conn.timeout = cfg.timeout
        self.remoteip = envb.get(b"TCPREMOTEIP", b"unknown")
        local = envb.get(b"TCPLOCALHOST")
        if local is None:
            local = envb.get(b"TCPLOCALIP")
        self.local = local if local is not None else b"unknown"
        self.remotehost = envb.get(b"TCPREMOTEHOST", b"unknown")
        self.remoteinfo = envb.get(b"TCPREMOTEINFO")
        self.relayclient = envb.get(b"RELAYCLIENT")
        self.orig = (self.remoteinfo, self.relayclient)
        self.protocol = b"SMTP"
        self.inrcpthosts = False
        self.dohelo(self.remotehost)

    def dohelo(self, arg):
        self.helohost = arg
        self.fakehelo = arg if arg.lower() != self.remotehost.lower() else None

    def ipme(self):
        if self._ipme is None:
            self._ipme = ipme()
        return self._ipme

    # -- the main loop
    def run(self):
        conn = self.conn
        try:
            try:
                os.chdir(_qmailhome())
                self.setup()
            except OSError:
                self.die(REPLY["control"])
            cfg = self.cfg
            if cfg.smtps:
                self.tls_init()
            if self.relayclient is None and cfg.greetdelay:
                self.greetdelay()
            self.out(b"220 " + cfg.greeting + b" ESMTP\r\n")
            self.commands()
        except Exit as e:
            return self.finish(e.code, e.linger)
        except TimeoutError:
            self.qlog(b"qlogenvelope", b"rejected", b"alarmtimeout", b"", b"451")
            self.out(REPLY["timeout"])
            return self.finish(1)
        except EOFError:
            self.logit(b"read failed", b"connection closed by the client before the quit cmd")
            return self.finish(1)
        except MemoryError:
            conn.outbuf.clear()
            self.out(REPLY["nomem"])
            return self.finish(111, True)
        except Exception as e:                      # noqa: BLE001 - never a traceback on the wire
            desc = "%s: %s" % (type(e).__name__, e)
            log(b"qmail-smtpd: fatal: internal error: ", _safe(desc.encode("utf-8", "replace")[:300]),
                b"\n")
            self.out(REPLY["internal"])
            return self.finish(111, True)
        return self.finish(0)

    def finish(self, code, linger=False):
        try:
            if linger:
                self.conn.linger()
            else:
                self.conn.flush()
        except Exit:
            pass
        self.release()
        return code

    def release(self):
        """Close what the session opened (morercpthosts.cdb, chkuser's user
        store): a reusing tcpserver child serves the next client after it."""
        self.child_close()
        self.mrh = None
        if self.chk:
            self.chk.close()
            self.chk = None

    def greetdelay(self):
        cfg = self.cfg
        delay = cfg.greetdelay
        log(self.title(), b"GREETDELAY: %ds\n" % delay)
        if cfg.drop_pre_greet:
            try:
                data = self.conn.raw_read(delay)
            except TimeoutError:
                return
            if not data:
                log(self.title(), b"GREETDELAY from ", _safe(self.remoteip), b": client disconnected\n")
                raise Exit(1)
            log(self.title(), b"GREETDELAY from ", _safe(self.remoteip),
                b": client sent data before greeting\n")
            self.qlog(b"qlogenvelope", b"rejected", b"pregreet", b"", b"554")
            self.die(REPLY["pregreet"], linger=True)
        time.sleep(delay)
        told = False
        while True:                                 # drop what came early
            try:
                data = self.conn.raw_read(0)
            except TimeoutError:
                break
            if not data:
                break
            if not told:
                log(self.title(), b"GREETDELAY from ", _safe(self.remoteip),
                    b": client sent data before greeting. ignoring\n")
                told = True

    def commands(self):
        conn = self.conn
        verbs = VERBS
        while True:
            try:
                line = conn.getline(LINE_MAX)
            except OverflowError:
                self.logit(b"reject", b"line too long")
                self.die(REPLY["toolong"], linger=True)
            if line.endswith(b"\r"):
                line = line[:-1]
            i = line.find(b"\0")
            if i >= 0:
                line = line[:i]
            i = line.find(b" ")
            if i >= 0:
                verb, arg = line[:i], line[i:].lstrip(b" ")
            else:
                verb, arg = line, b""
            fn, flush = verbs.get(verb.lower(), (Session.smtp_unrecog, True))
            fn(self, arg)
            if flush:
                conn.flush()

    # -- verbs
    def smtp_unrecog(self, arg):
        self.out(REPLY["unrecog"])

    def smtp_noop(self, arg):
        self.out(REPLY["ok"])

    def smtp_vrfy(self, arg):
        self.out(REPLY["vrfy"])

    def smtp_help(self, arg):
        self.out(REPLY["help"])

    def smtp_quit(self, arg):
        self.out(b"221 " + self.cfg.greeting + b"\r\n")
        raise Exit(0)

    def smtp_helo(self, arg):
        self.pos = 1
        self.out(b"250 " + self.cfg.greeting + b"\r\n")
        self.state = State.IDLE
        self.dohelo(arg)

    def ehlo_reply(self):
        cfg = self.cfg
        lines = [cfg.greeting]
        if not cfg.disabletls and self.conn.ssl is None and os.path.exists("control/servercert.pem"):
            lines.append(b"STARTTLS")
        lines += [b"PIPELINING", b"SMTPUTF8", b"8BITMIME", b"SIZE %d" % cfg.databytes]
        if not cfg.forcetls or self.conn.ssl is not None:
            a = cfg.smtpauth
            if a in (1, 11):
                lines.append(b"AUTH LOGIN PLAIN")
            elif a in (3, 13):
                lines.append(b"AUTH LOGIN PLAIN CRAM-MD5")
            elif a in (2, 12):
                lines.append(b"AUTH CRAM-MD5")
        return b"".join(b"250-" + x + b"\r\n" for x in lines[:-1]) + b"250 " + lines[-1] + b"\r\n"

    def smtp_ehlo(self, arg):
        self.pos = 1
        self.out(self.ehlo_reply())
        self.state = State.IDLE
        self.dohelo(arg)

    def smtp_rset(self, arg):
        self.state = State.IDLE             # RFC 5321: authentication is kept
        self.mailfrom = b""
        self.rcpts = []
        self.rcptcount = 0
        self.pos = 1
        self.out(REPLY["flushed"])

    def smtp_mail(self, arg):
        cfg = self.cfg
        self.pos = 2
        if cfg.smtpauth > 10 and not self.seenauth:
            self.qlog(b"qlogenvelope", b"rejected", b"authrequired", b"", b"530")
            self.out(REPLY["submission"])
            return
        addr = addrparse(arg, cfg.liphost, self.ipme)
        if addr is None:
            self.out(REPLY["syntax"])
            return
        self.addr = addr
        if cfg.smtpauth and self.seenauth and cfg.forceauthmailfrom and addr != self.authuser:
            self.qlog(b"qlogenvelope", b"rejected", b"authnotmailfrom", b"", b"503")
            self.out(REPLY["authmismatch"])
            return
        if cfg.rejnsmf and not addr:
            self.qlog(b"qlogenvelope", b"rejected", b"nullsenderdenied", b"", b"421")
            self.die(REPLY["nullsender"], linger=True)
        toobig, smtputf8, authparam = mailfrom_parms(arg, cfg.databytes)
        if authparam is not None:
            user = xtext_user(authparam)
            if self.remoteinfo is None:
                self.remoteinfo = user
                _setenv(b"TCPREMOTEINFO", user)
        if toobig:
            self.logit(b"exceeded datasize limit")
            self.qlog(b"qlogreceived", b"rejected", b"databytes_limit_exceeded", b"", b"552")
            self.out(REPLY["size"])
            return
        reply = self.check_sender(addr, smtputf8)
        if reply:
            self.out(reply)
            return
        self.flagbarf = False
        if cfg.badmailfrom and addr:
            a = addr.lower()
            j = a.rfind(b"@")
            self.flagbarf = a in cfg.badmailfrom or (j >= 0 and a[j:] in cfg.badmailfrom)
        self.smtputf8 = smtputf8
        self.rcpts = []
        self.mailfrom = addr
        reply = self.spf_mail(addr)
        if reply:
            self.out(reply)                 # as the C: MAIL is not taken, state unchanged
            return
        self.state = State.MAIL
        self.out(REPLY["ok"])

    def rcpthosts(self, addr):
        """rcpthosts.c: the domain after the last @, or a .suffix of it, is in
        rcpthosts or morercpthosts.cdb."""
        rh = self.cfg.rcpthosts
        if rh is None:
            return True
        j = addr.rfind(b"@")
        if j < 0:
            return True
        host = addr[j + 1:].lower()
        keys = [host] if host else []
        k = host.find(b".", 1)
        while k >= 0:
            keys.append(host[k:])
            k = host.find(b".", k + 1)
        for key in keys:
            if key in rh:
                return True
        if self.mrh is None:
            from qtools.lib import cdb
            try:
                self.mrh = cdb.reader("control/morercpthosts.cdb")
            except FileNotFoundError:
                self.mrh = False
            except OSError:
                self.die(REPLY["control"])
        if self.mrh:
            try:
                for key in keys:
                    if self.mrh.get(key) is not None:
                        return True
            except OSError:
                self.die(REPLY["control"])
        return False

    def smtp_rcpt(self, arg):
        cfg = self.cfg
        self.pos = 3
        if self.state == State.IDLE:
            self.out(REPLY["wantmail"])
            return
        addr = addrparse(arg, cfg.liphost, self.ipme)
        if addr is None:
            self.out(REPLY["syntax"])
            return
        self.addr = addr
        if cfg.rejectrelaytest:
            j = addr.rfind(b"@")
            lp = addr[:j] if j >= 0 else addr
            if b"@" in lp or b"%" in lp or b"!" in lp:
                self.qlog(b"qlogenvelope", b"rejected", b"dontrelay", b"", b"553")
                self.out(REPLY["relay"])
                return
        self.inrcpthosts = self.rcpthosts(addr)
        if self.flagbarf and not cfg.disable_badmailfrom:
            log(self.title(), b"badmailfrom: <", _safe(self.mailfrom), b"> at ", _safe(self.remoteip), b"\n")
            self.qlog(b"qlogenvelope", b"rejected", b"badmailfrom", b"", b"553")
            self.out(REPLY["bmf"])
            return
        allowed = True if self.relayclient is not None else self.inrcpthosts
        reply = self.spf_rcpt()
        if reply:
            self.out(reply)
            return
        if cfg.brtlimit and self.brtcount >= cfg.brtlimit:
            log(self.title(), b"badrcptto: excessive rcptto violations hanging up on ",
                _safe(self.remoteip), b"\n")
            self.qlog(b"qlogenvelope", b"rejected", b"brtlimit", b"", b"421")
            self.die(REPLY["brtlimit"], linger=True)
        addr, reply, match = self.check_rcpt(addr, allowed)
        if reply:
            self.out(reply)
            return
        self.rcptcount += 1
        if (len(self.rcpts) >= RCPT_MAX or
                (cfg.maxrcpt != -1 and not cfg.disable_maxrcpt and self.rcptcount > cfg.maxrcpt)):
            self.out(REPLY["maxrcpt"])
            self.qlog(b"qlogenvelope", b"rejected", b"max_rcpt_exceeded", b"", b"452")
            return
        self.rcpts.append(addr)
        self.state = State.RCPT
        if match:
            self.qlog(b"qlogenvelope", b"accepted", b"rcptto", match, b"250")
        else:
            self.qlog(b"qlogenvelope", b"accepted",
                      b"relayclient" if self.relayclient is not None else b"rcpthosts", b"", b"250")
        self.out(REPLY["ok"])

    # -- chkuser (qtools.qmail.chkuser); without CHKUSER_START, qmail's own rules
    def chkuser(self):
        """The session's chkuser, set up at the first MAIL (its first_time_init),
        or None when CHKUSER_START is unset."""
        if self.chk is None:
            self.chk = False
            if b"CHKUSER_START" in os.environb:
                from qtools.qmail import chkuser
                self.chk = chkuser.Chkuser(self)
        return self.chk or None

    def check_sender(self, addr, smtputf8):
        """chkuser's sender check: a reply to refuse MAIL, or None."""
        chk = self.chkuser()
        if chk is None:
            return None
        why, reply = chk.sender(addr, smtputf8)
        if reply:
            self.qlog(b"qlogenvelope", b"rejected", b"chkusersender", why[0], why[1])
        return reply

    def check_rcpt(self, addr, allowed):
        """chkuser's realrcpt: (address to queue, None, accepted-by detail
        for the log) or (addr, refusal, None)."""
        chk = self.chkuser()
        if chk is None:
            if self.relayclient is not None:
                return addr + self.relayclient, None, None
            if not allowed:
                self.qlog(b"qlogenvelope", b"rejected", b"not_in_rcpthosts", b"", b"553")
                self.brtcount += 1
                return addr, REPLY["nogateway"], None
            return addr, None, None
        from qtools.qmail import chkuser
        status, reply = chk.rcpt(addr, self.mailfrom)
        _, detail, code, bad, _, _ = chkuser.RCPT[status]
        if reply is None:
            if status == chkuser.RELAYING:
                addr += self.relayclient
            return addr, None, detail
        self.qlog(b"qlogenvelope", b"rejected", b"chkuser", detail, code)
        if bad:
            self.brtcount += 1
        return addr, reply, None

    def spf_mail(self, addr):
        """SPF at MAIL (qmail-spf, qtools.qmail.spf): sets SPFRESULT and
        QMAILAUTHENTICATED, remembers a refusal for RCPT; returns the 451
        reply for a DNS failure at spfbehavior 2 and up, else None."""
        cfg = self.cfg
        self.spf = self.spfbarf = None
        if not cfg.spfbehavior or self.relayclient is not None:
            os.environb.pop(b"SPFRESULT", None)
            if self.qmailauth is not None:      # no spf= left from an earlier MAIL
                if self.qmailauth:
                    _setenv(b"QMAILAUTHENTICATED", self.qmailauth)
                else:
                    os.environb.pop(b"QMAILAUTHENTICATED", None)
            return None
        from qtools.qmail import spf
        if self.qmailauth is None:
            self.qmailauth = _env(b"QMAILAUTHENTICATED") or b""
        r = spf.check(addr, self.helohost, self.remoteip, self.local, self.ipme,
                      cfg.spfrules, cfg.spfguess,
                      cfg.spfexp if cfg.spfexp is not None else spf.DEFEXP,
                      os.environb.get(b"SPF_BLOCK_PLUS_ALL", b"0") != b"0")
        self.spf = r
        _setenv(b"SPFRESULT", r.code)
        # spfauthenticated(): for qmail-queue's Authentication-Results
        _setenv(b"QMAILAUTHENTICATED", (self.qmailauth + b";\n\tspf=" if self.qmailauth else b"spf=")
                + r.authinfo())
        if r.code == spf.ERROR:
            if cfg.spfbehavior >= 2:
                self.qlog(b"qlogenvelope", b"rejected", b"spf", b"lookupfailure", b"451")
                return REPLY["spferror"]
        elif cfg.spfbehavior >= spf.REFUSE_FROM.get(r.code, 7):
            self.spfbarf = r.reply()
        return None

    def spf_rcpt(self):
        """The SPF refusal decided at MAIL, or None."""
        if self.spfbarf is None:
            return None
        self.qlog(b"qlogenvelope", b"rejected", b"spf", _env(b"SPFRESULT") or b"", b"550")
        return self.spfbarf

    def spf_received(self):
        """The Received-SPF line that follows the Received line."""
        if self.spf is None or self.relayclient is not None:
            return b""
        return self.spf.header()

    # -- DATA
    def smtp_data(self, arg):
        cfg = self.cfg
        if self.state == State.IDLE:
            self.out(REPLY["wantmail"])
            return
        if not self.rcpts:
            self.out(REPLY["wantrcpt"])
            return
        self.pos = 4
        self.state = State.IDLE
        try:
            qq = open_queue(queue_program(), self.child_close)
        except OSError:
            self.qlog(b"qlogenvelope", b"rejected", b"qqtfailure", b"", b"451")
            self.out(REPLY["qqt"])
            return
        self.qp = b"%d" % qq.pid
        self.out(REPLY["data"])
        protocol = self.protocol
        if self.smtputf8:
            protocol = b"UTF8" + (protocol[1:] if protocol[:1] == b"E" else protocol)
        qq.put(received(protocol, self.local, self.remoteip, self.remotehost, self.remoteinfo,
                        self.fakehelo, _env(b"RELAYCLIENT")))
        stored = 0
        spf = self.spf_received()
        if spf:
            stored += len(spf)
            qq.put(spf)
        # blast: stream the message, counting bytes as stored
        blast = Blast(cfg.barelf)
        conn = self.conn
        limit = cfg.databytes
        try:
            while True:
                if not conn.inbuf:
                    conn.fill()
                data = bytes(conn.inbuf)
                conn.inbuf.clear()
                out, used, action = blast.feed(data)
                if used < len(data):
                    conn.inbuf += data[used:]
                if out:
                    stored += len(out)
                    if limit and stored > limit:
                        qq.fail()
                    qq.put(out)
                if action == END:
                    break
                if action == STRAY:
                    self.qlog(b"qlogenvelope", b"rejected", b"bad_newlines", b"", b"451")
                    self.die(REPLY["straynewline"], linger=True)
        except BaseException:
            qq.abandon()            # the session ends here: no half message stays
            raise
        hops = blast.hops >= MAXHOPS
        if hops:
            qq.fail()
        self.size = b"%d" % stored
        qqx = qq.close(self.mailfrom, self.rcpts)
        if not qqx:
            self.out(b"250 ok %d qp %d\r\n" % (int(time.time()), qq.pid))
            self.qlog(b"qlogreceived", b"accepted", b"queueaccept", b"", b"250")
        elif hops:
            self.out(REPLY["hops"])
            self.qlog(b"qlogreceived", b"rejected", b"message_loop", b"", b"554")
        elif limit and stored > limit:
            self.out(REPLY["size"])
            self.qlog(b"qlogreceived", b"rejected", b"databytes_limit_exceeded", b"", b"552")
            self.logit(b"message too big")
        elif qqx[:1] == b"D":
            self.out(b"554 " + qqx[1:] + b"\r\n")
            self.qlog(b"qlogreceived", b"rejected", b"queuereject", qqx[1:], b"554")
        else:
            self.out(b"451 " + qqx[1:] + b"\r\n")
            self.qlog(b"qlogreceived", b"rejected", b"queue_delay", qqx[1:], b"451")
        self.rcpts = []
        self.size = b""
        self.qp = b""

    def child_close(self):
        """In a forked child: close the session's own descriptors."""
        if self.mrh:
            try:
                self.mrh.close()
            except OSError:
                pass

    # -- AUTH
    def smtp_auth(self, arg):
        cfg = self.cfg
        if not cfg.smtpauth or not self.childargs:
            self.out(REPLY["noauth"])
            self.logit(b"reject (auth not available)")
            return
        if self.seenauth:
            self.out(REPLY["authd"])
            return
        if self.state != State.IDLE:
            self.out(REPLY["authmail"])
            return
        if cfg.forcetls and self.conn.ssl is None:
            self.out(REPLY["authtls"])
            self.logit(b"reject (auth not available without TLS)")
            return
        i = arg.find(b" ")
        mech, rest = (arg[:i], arg[i:].lstrip(b" ")) if i >= 0 else (arg, b"")
        mech = mech.lower()
        fn = AUTHMECHS.get(mech)
        if fn is None:
            self.qlog(b"qlogenvelope", b"rejected", b"authinvalid", b"", b"504")
            self.out(REPLY["authinvalid"])
            return
        self.authmethod = mech
        _setenv(b"SMTPAUTHMETHOD", mech)
        got = fn(self, rest)
        if got is None:
            return                                  # answered already
        user, secret, chal = got
        r = self.authenticate(user, secret, chal)
        if r == 0:
            self.auth_success(user, mech)
        elif r == 111:
            log(self.title(), b"auth: auth-tempfail type=", mech, b" user=<", _safe(user), b">\n")
            self.qlog(b"qlogenvelope", b"rejected", b"authtempfail", b"", b"454")
            self.out(REPLY["authtemp"])
        elif r == 1:
            log(self.title(), b"auth: auth-failed type=", mech, b" user=<", _safe(user), b">\n")
            self.authfails += 1
            if self.authfails >= AUTH_MAXFAIL:
                self.qlog(b"qlogenvelope", b"rejected", b"authfailed", b"toomany", b"421")
                self.die(REPLY["authmany"], linger=True)
            self.qlog(b"qlogenvelope", b"rejected", b"authfailed", b"", b"535")
            self.out(REPLY["authfail"])

    def auth_success(self, user, mech):
        self.seenauth = True
        self.authuser = user
        if self.conn.ssl is not None:
            self.protocol = b"ESMTPSA (" + self.cipher + b" encrypted, authenticated)"
        else:
            self.protocol = b"ESMTPA"
        self.relayclient = b""
        self.remoteinfo = user
        _setenv(b"TCPREMOTEINFO", user)
        _setenv(b"RELAYCLIENT", b"")
        _setenv(b"SMTPAUTHUSER", user)
        _setenv(b"SMTP_AUTH_USER", user)
        log(self.title(), b"auth: auth-success type=", mech, b" user=<", _safe(user), b">\n")
        self.out(REPLY["authok"])

    def authgetl(self):
        """One AUTH response line, or None after a 501 reply."""
        try:
            line = self.conn.getline(AUTHLINE_MAX)
        except OverflowError:
            self.logit(b"reject", b"auth line too long")
            self.die(REPLY["toolong"], linger=True)
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] == b"*" and line[1:2] in (b"", b"\0"):
            self.out(REPLY["authabrt"])
            return None
        if not line:
            self.out(REPLY["input"])
            return None
        return line

    def b64(self, data):
        import binascii
        try:
            return binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            return None

    def b64_or_ask(self, arg, prompt):
        """The base64 argument decoded, or else the decoded answer to a 334
        prompt (a REPLY key, or the line itself); None when the client left
        or cancelled, or (after `501 malformed auth input`) when it is not
        base64."""
        if arg:
            data = self.b64(arg)
        else:
            self.out(REPLY[prompt] if isinstance(prompt, str) else prompt)
            line = self.authgetl()
            if line is None:
                return None
            data = self.b64(line)
        if data is None:
            self.out(REPLY["input"])
        return data

    def auth_login(self, arg):
        user = self.b64_or_ask(arg, "login_user")
        if user is None:
            return None
        pw = self.b64_or_ask(b"", "login_pass")
        if pw is None:
            return None
        if not user or not pw:
            self.out(REPLY["input"])
            return None
        return _cstr(user), _cstr(pw), b""

    def auth_plain(self, arg):
        resp = self.b64_or_ask(arg, "plain")
        if resp is None:
            return None
        parts = resp.split(b"\0")               # authzid \0 authcid \0 password
        user = parts[1] if len(parts) > 1 else b""
        pw = parts[2] if len(parts) > 2 else b""
        if not user or not pw:
            self.out(REPLY["input"])
            return None
        return user, pw, b""

    def auth_cram(self, arg):
        import binascii
        chal = b"<%d.%d@" % (os.getpid(), int(time.time())) + self.local + b">"
        resp = self.b64_or_ask(b"", b"334 " + binascii.b2a_base64(chal, newline=False) + b"\r\n")
        if resp is None:
            return None
        resp = _cstr(resp)
        i = resp.rfind(b" ")
        if i < 0:
            user, digest = b"", b""
        else:
            user, digest = resp[:i], resp[i:].lstrip(b" ")
        if not user or not digest:
            self.out(REPLY["input"])
            return None
        return user, digest, chal

    def authenticate(self, user, secret, chal):
        """Run the checkpassword program: 0 yes, 1 no, 111 temporary, None
        when a 454 has been answered."""
        from qtools.lib import fd as fdio, pathexec
        data = user + b"\0" + secret + b"\0"
        if self.cfg.smtpauth in (2, 3, 12, 13):
            data += chal + b"\0"
        self.conn.flush()
        try:
            r, w = os.pipe()
        except OSError:
            self.out(REPLY["pipe"])
            return None
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            self.out(REPLY["fork"])
            return None
        if pid == 0:
            try:
                self.child_close()          # first: its fds may be 3 or the pipe's
                os.close(w)
                fdio.move(r, 3)
                pathexec.pathexec_run(self.childargs)
            except BaseException:                   # noqa: BLE001 - cannot run it: temporary
                pass
            os._exit(111)
        os.close(r)
        ok = True
        try:
            fdio.writeall(w, data)
        except OSError:
            ok = False
        finally:
            os.close(w)
        _, status = os.waitpid(pid, 0)
        if not ok:
            self.out(REPLY["write"])
            return None
        if os.WIFSIGNALED(status):
            self.out(REPLY["child"])
            return None
        code = os.WEXITSTATUS(status)
        if code == 0:
            return 0
        if code == 111:
            return 111
        if self.cfg.authsleep > 0:
            time.sleep(self.cfg.authsleep)
        return 1

    # -- STARTTLS
    def smtp_tls(self, arg):
        if self.conn.ssl is not None or self.cfg.disabletls:
            self.out(REPLY["unimpl"])
        elif arg:
            self.out(REPLY["tlsparam"])
            self.logit(b"reject (Syntax error, no parameters allowed)")
        else:
            self.tls_init()

    def tls_init(self):
        conn = self.conn
        smtps = self.cfg.smtps
        try:
            ctx = tls_context()
            ciphers = os.environ.get("TLSCIPHERS")
            if ciphers is None:
                lines = _readfile("tlsserverciphers")
                ciphers = b":".join(lines).decode("ascii", "replace") if lines else None
            if ciphers:
                try:
                    ctx.set_ciphers(ciphers)
                except Exception:                   # noqa: BLE001 - the C ignores it too
                    pass
        except Exception as e:                      # noqa: BLE001 - OSError, SSLError
            self.logit(b"unable to create ctx")
            self.out(b"454 TLS unable to initialize ctx: " + _tls_reason(e) + b" (#4.3.0)\r\n")
            if smtps:
                raise Exit(1)
            return
        if not smtps:
            self.flagtls = True
            self.out(REPLY["tlsready"])
        conn.flush()
        conn.inbuf.clear()              # CVE-2011-0411: nothing pipelined survives
        try:
            obj = conn.start_tls(ctx)
        except TLSFailed as e:
            reason = e.args[0]
            self.logit(b"SSL error", reason)
            conn.ssl = None
            self.out(b"454 TLS connection failed: " + reason + b" (#4.3.0)\r\n")
            raise Exit(1)
        self.cipher = (obj.cipher() or ("unknown",))[0].encode("ascii", "replace")
        sni = getattr(obj, "qtools_sni", None)
        if sni:
            self.cfg.greeting = sni.encode("ascii", "replace")
        # RFC 3207 4.2: forget everything the client said before
        self.state = State.IDLE
        self.mailfrom = b""
        self.rcpts = []
        if self.seenauth:
            self.seenauth = False
            self.authuser = b""
            self.remoteinfo, self.relayclient = self.orig
            for name, value in ((b"TCPREMOTEINFO", self.orig[0]), (b"RELAYCLIENT", self.orig[1])):
                if value is None:
                    os.environb.pop(name, None)
                else:
                    _setenv(name, value)
        self.protocol = b"ESMTPS (" + self.cipher + b" encrypted)"
        self.dohelo(self.remotehost)


def _cstr(b):
    """What a C string of these bytes holds: up to the first NUL."""
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


VERBS = {
    b"rcpt": (Session.smtp_rcpt, False),
    b"mail": (Session.smtp_mail, False),
    b"data": (Session.smtp_data, True),
    b"auth": (Session.smtp_auth, True),
    b"quit": (Session.smtp_quit, True),
    b"helo": (Session.smtp_helo, True),
    b"ehlo": (Session.smtp_ehlo, True),
    b"rset": (Session.smtp_rset, False),
    b"help": (Session.smtp_help, True),
    b"starttls": (Session.smtp_tls, True),
    b"noop": (Session.smtp_noop, True),
    b"vrfy": (Session.smtp_vrfy, True),
}

AUTHMECHS = {
    b"login": Session.auth_login,
    b"plain": Session.auth_plain,
    b"cram-md5": Session.auth_cram,
}


# -- qmail-queue ---------------------------------------------------------------

class Queue:
    """qmail.c: qmail_open/put/from/close around a qmail-queue child."""

    def __init__(self, program, child_close=None):
        from qtools.lib import fd as fdio, pathexec
        errfd = CUSTOM_ERR_FD
        x = os.environ.get("ERROR_FD")
        if x is not None:
            errfd = _scan_ulong(x.encode())
        pm = pe = pc = None
        try:
            pm = os.pipe()
            pe = os.pipe()
            pc = os.pipe()
            pid = os.fork()
        except OSError:
            for p in (pm, pe, pc):
                if p:
                    os.close(p[0])
                    os.close(p[1])
            raise
        if pid == 0:
            code = 120
            try:
                if child_close:
                    child_close()           # first: its fds may be errfd's number
                os.dup2(pm[0], 0)
                os.dup2(pe[0], 1)
                fdio.copy(pc[1], errfd)
                for f in (pm[0], pm[1], pe[0], pe[1], pc[0], pc[1]):
                    if f not in (0, 1, errfd):
                        os.close(f)
                try:
                    os.chdir(_qmailhome())
                except OSError:
                    code = 61
                    raise
                pathexec.pathexec_run([program])
            except BaseException:                   # noqa: BLE001
                pass
            os._exit(code)
        self.pid = pid
        os.close(pm[0])
        os.close(pe[0])
        os.close(pc[1])
        self.fdm, self.fde, self.fdc = pm[1], pe[1], pc[0]
        self.flagerr = False
        self.buf = bytearray()

    def fail(self):
        self.flagerr = True

    def put(self, data):
        if self.flagerr:
            return
        self.buf += data
        if len(self.buf) >= CHUNK:
            self._flush(self.fdm)

    def _flush(self, fd):
        from qtools.lib import fd as fdio
        if self.buf and not self.flagerr:
            try:
                fdio.writeall(fd, self.buf)
            except OSError:
                self.flagerr = True
        self.buf.clear()

    def abandon(self):
        """The session dies: close everything, qmail-queue sees a short message."""
        for f in (self.fdm, self.fde, self.fdc):
            try:
                os.close(f)
            except OSError:
                pass

    def close(self, sender, rcpts):
        """qmail_from + qmail_to + qmail_close: "" or a D/Z reply text."""
        self._flush(self.fdm)
        os.close(self.fdm)
        if not self.flagerr:
            self.buf += b"F" + sender + b"\0"
            for r in rcpts:
                self.buf += b"T" + r + b"\0"
                if len(self.buf) >= CHUNK:
                    self._flush(self.fde)
            self.buf += b"\0"
        self._flush(self.fde)
        os.close(self.fde)
        custom = bytearray()
        while len(custom) < 255:
            try:
                d = os.read(self.fdc, 255 - len(custom))
            except InterruptedError:
                continue
            except OSError:
                break
            if not d:
                break
            custom += d
        os.close(self.fdc)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return b"Zqq waitpid surprise (#4.3.0)"
        return qq_text(status, self.flagerr, bytes(custom))


class InlineQueue:
    """The qtools qmail-queue run in this process (qtools.qmail.queue.Inline):
    what Queue does, without the fork (~1.5 ms of CPU a message here).  Only
    used where Queue's child would have run that program elided."""

    def __init__(self):
        from qtools.qmail import queue
        self.q = queue.Inline(_qmailhome())
        self.pid = self.q.pid
        self.flagerr = False

    def fail(self):
        self.flagerr = True
        self.q.fail()

    def put(self, data):
        self.q.put(data)

    def abandon(self):
        self.q.abandon()

    def close(self, sender, rcpts):
        return qq_code_text(self.q.close(sender, rcpts), self.flagerr)


def open_queue(program, child_close=None):
    """qmail_open(): InlineQueue when pathexec would elide program into the
    qtools qmail-queue (elision on, the first executable found on the path
    search is its launcher), else a Queue child."""
    from qtools.lib import pathexec
    if pathexec.elision_enabled():
        for p in pathexec.candidates(program):
            mod = pathexec.launcher_module(p)
            if mod == "qtools.qmail.queue":
                return InlineQueue()
            if mod or (os.path.isfile(p) and os.access(p, os.X_OK)):
                break
    return Queue(program, child_close)


# -- entry points ----------------------------------------------------------------

def preload(argv):
    """In a long-lived parent (tcpserver), before it forks: load what the
    connections will need, so a child pays nothing for it: ssl and the
    certificate (if control/servercert.pem exists), binascii for AUTH, SPF
    and chkuser (with dnspython and the vpopmail store) when they are on,
    the checkprogram and qmail-queue when they are qtools programs."""
    from qtools.lib import pathexec
    import binascii  # noqa: F401
    from qtools.lib import cdb  # noqa: F401
    home = _qmailhome()
    if _spf_on(home):
        try:
            from qtools.qmail import spf
            spf.warm()
        except Exception:                           # noqa: BLE001 - a child will say why
            pass
    if b"CHKUSER_START" in os.environb:
        try:
            from qtools.qmail import chkuser  # noqa: F401
            from qtools.vpopmail import store
            from qtools.lib import dns
            dns.warm()
            if store.backend_name() == "mysql":
                from qtools.vpopmail import store_mysql
                store_mysql.driver()
            else:
                from qtools.vpopmail import store_cdb  # noqa: F401
        except Exception:                           # noqa: BLE001 - a child will say why
            pass
    cert = os.path.join(home, "control", "servercert.pem")
    if os.path.exists(cert):
        try:
            import ssl  # noqa: F401
            tls_context(cert)
        except Exception:                           # noqa: BLE001 - a child will answer 454
            pass
    try:
        pathexec.preload([queue_program()])
    except Exception:                               # noqa: BLE001
        pass
    if len(argv) > 1:
        try:
            pathexec.preload(argv[1:])
        except Exception:                           # noqa: BLE001
            pass


def _spf_on(home):
    """SPF is on for the connections a parent will fork: SPFBEHAVIOR, else
    control/spfbehavior, above 0 (a tcprules SPFBEHAVIOR is not seen here)."""
    x = os.environb.get(b"SPFBEHAVIOR")
    if x is not None:
        return _scan_ulong(x) > 0
    try:
        with open(os.path.join(home, "control", "spfbehavior"), "rb") as f:
            v = f.read(64).split(b"\n", 1)[0].strip()
    except OSError:
        return False
    return _scan_ulong(v.lstrip(b"+")) > 0


def rehearse(argv):
    """In a forked child waiting for its connection: walk the per-connection
    path without side effects (control files, the EHLO reply, blast), so its
    copy-on-write faults happen before a client waits."""
    home = _qmailhome()
    try:
        cwd = os.open(".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.chdir(home)
        s = Session(argv[1:])
        s.setup()
        s.ehlo_reply()
        s.rcpthosts(b"postmaster@localhost")
        addrparse(b"FROM:<a@b.c> SIZE=1", s.cfg.liphost, lambda: ())
        received(b"SMTP", b"l", b"1.2.3.4", b"h", None, None, None)
        Blast().feed(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        if s.mrh:
            s.mrh.close()
    except Exception:                               # noqa: BLE001 - only a rehearsal
        pass
    finally:
        try:
            os.fchdir(cwd)
        finally:
            os.close(cwd)


def main(argv):
    return Session(argv[1:]).run()
