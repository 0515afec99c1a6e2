"""rblsmtpd - block mail from RBL-listed sites, in front of any SMTP server.

usage: rblsmtpd [ -b ] [ -B ] [ -c ] [ -C ] [ -t timeout ] [ -r base ] [ -a base ]
       smtpd [ arg ... ]

rblsmtpd runs smtpd, unless it is told to block this client.  Then it
speaks a small SMTP dialogue of its own instead, refusing every attempt to
send mail, and logs one line on descriptor 2:

    rblsmtpd: IP pid PID: 451 TEXT

Whether to block ($TCPREMOTEIP is the client, as tcpserver sets it):
  $RBLSMTPD set and empty       do not block; lookups are skipped
  $RBLSMTPD = "-text"           block with 553 text
  $RBLSMTPD = "text"            block with 451 text
  $RBLSMTPD unset               ask the sources below, in command-line order;
                                the first one that decides wins:
  -r base   RBL: if d.c.b.a.base (client a.b.c.d) has TXT records, block;
            their text is the message
  -a base   anti-RBL: if d.c.b.a.base has an A record, do not block

Options:
  -B  (default) 451 for RBL-listed clients     -b  553 for them
  -C  (default) fail open: a lookup that fails temporarily counts as
      "not listed" (-r) or "anti-listed" (-a)
  -c  fail closed: a failed -r lookup blocks with "temporary RBL lookup
      error"; a failed -a lookup decides nothing.  Any temporary failure
      makes the code 451, even with -b.
  -t n  drop the dialogue after n seconds (default 60).  -t0: no dialogue,
      print the message line once and exit.

The message is the code, a space and the text cut to 200 bytes, with bytes
outside 32..126 shown as '?'.  The dialogue: `220 rblsmtpd.local` first;
then per line (trailing CR dropped, NUL read as LF, the verb is the text
before the first space, any case) QUIT gets `221 rblsmtpd.local` and ends
the session, HELO EHLO MAIL RSET NOOP get `250 rblsmtpd.local`, anything
else gets the message.  End of input or the timeout end it quietly.

Lookups go through qtools.lib.dns, which honours DNSCACHEIP=ip[:port]; the
DNS code is loaded only when -r or -a is used (rblsmtpd runs once per
connection, and a blocked client should cost as little as possible).  Like
Debian's package there is no default RBL.

Exit codes: 0 after a dialogue; 100 usage; 111 unable to run smtpd;
otherwise smtpd's.
"""
import os

from qtools.lib.env import getb
from qtools.lib.sgetopt import UsageError, getopt, scan_ulong

PROG = "rblsmtpd"
USAGE = "rblsmtpd [ -b ] [ -R ] [ -t timeout ] [ -r base ] [ -a base ] smtpd [ arg ... ]"
OPTS = "bBcCt:r:a:"
FAST_EXIT = True            # everything is written with os.write
REUSABLE = True             # leaves nothing behind (qtools.lib.reuse); a timeout _exits

GREET = b"220 rblsmtpd.local\r\n"
OK = b"250 rblsmtpd.local\r\n"
BYE = b"221 rblsmtpd.local\r\n"
REPLIES = {b"quit": BYE, b"helo": OK, b"ehlo": OK, b"mail": OK, b"rset": OK, b"noop": OK}
TEMPERR = b"temporary RBL lookup error"
TEXTMAX = 200               # rblsmtpd.c: text cut to 200 bytes
_PRINTABLE = bytes(c if 32 <= c <= 126 else 63 for c in range(256))
LINEMAX = 1000              # bytes of a command line kept; only the verb matters

UNDECIDED, ACCEPT, REJECT, BOUNCE = 0, 1, 2, 3      # rblsmtpd.c `decision`


class State:
    def __init__(self, ip):
        self.ip = ip
        self.decision = UNDECIDED
        self.text = b""
        self.rblerror = False       # -b
        self.failclosed = False     # -c
        self.mustnotbounce = False  # a lookup failed temporarily

    def rbl(self, base):
        """-r: TXT lookup; listed if there is any text."""
        if self.decision:
            return
        from qtools.lib import dns
        try:
            text = b"".join(dns.txt(reverse(self.ip) + base))
        except dns.PermFail:
            text = b""
        except Exception:                   # TempFail, or a name DNS can't carry
            self.mustnotbounce = True
            if self.failclosed:
                self.text = TEMPERR
                self.decision = REJECT
            return
        if text:
            self.text = text
            self.decision = BOUNCE if self.rblerror else REJECT

    def antirbl(self, base):
        """-a: A lookup; any address means accept."""
        if self.decision:
            return
        from qtools.lib import dns
        try:
            found = dns.a(reverse(self.ip) + base)
        except dns.PermFail:
            found = []
        except Exception:
            self.mustnotbounce = True
            if not self.failclosed:
                self.decision = ACCEPT
            return
        if found:
            self.decision = ACCEPT


def reverse(ip):
    """d.c.b.a. for a.b.c.d, exactly as rblsmtpd.c ip_init() builds it."""
    out = []
    i = len(ip)
    while i:
        j = ip.rfind(".", 0, i) + 1
        out.append(ip[j:i] + ".")
        if not j:
            break
        i = j - 1
    return "".join(out)


def message(st):
    code = b"451 " if st.mustnotbounce or st.decision == REJECT else b"553 "
    text = st.text[:TEXTMAX]
    return code + text.translate(_PRINTABLE)


def _out(data):
    """safewrite: a client that went away ends the session."""
    try:
        while data:
            data = data[os.write(1, data):]
    except OSError:
        os._exit(0)


def dialogue(msg, timeout):
    import signal
    from qtools.lib import sig
    sig.catch(signal.SIGALRM, lambda n, f: os._exit(0))     # rblsmtpd.c drop()
    signal.alarm(timeout & 0xFFFFFFFF)
    _out(GREET)
    reject = msg + b"\r\n"
    line = bytearray()
    while True:
        try:
            data = os.read(0, 1024)
        except OSError:
            return
        if not data:
            return
        start = 0
        while True:
            i = data.find(b"\n", start)
            piece = data[start:] if i < 0 else data[start:i]
            room = LINEMAX - len(line)
            if room > 0:
                line += piece[:room]
            if i < 0:
                break
            start = i + 1
            # commands.c: NUL becomes LF (so it can't end the verb early),
            # one trailing CR goes, the verb ends at the first space
            cmd = bytes(line).replace(b"\0", b"\n")
            del line[:]
            if cmd.endswith(b"\r"):
                cmd = cmd[:-1]
            reply = REPLIES.get(cmd.split(b" ", 1)[0].lower(), reject)
            _out(reply)
            if reply is BYE:
                return


def _scan(argv):
    """(uses -r/-a, smtpd argv) without a word on stderr; None on a usage error."""
    lookups = False
    i = 1
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        for j in range(1, len(a)):
            c = a[j]
            if c in "tra":
                lookups = lookups or c != "t"
                if j + 1 == len(a):
                    i += 1
                break
            if c not in "bBcC":
                return None
        i += 1
    return lookups, argv[i:]


def preload(argv):
    """pathexec.preload hook, in tcpserver's parent: load the DNS code if -r or
    -a will need it, and the SMTP server this one runs for allowed clients."""
    scan = _scan(argv)
    if not scan:
        return
    getopt(argv, OPTS, PROG)    # _scan() found it valid: the parse is remembered
    if scan[0]:
        from qtools.lib import dns
        try:
            dns.warm()
        except Exception:                       # noqa: BLE001 - a child will say so
            pass
    if scan[1]:
        from qtools.lib import pathexec
        pathexec.preload(scan[1])


def rehearse(argv):
    """pathexec.rehearse hook: pass the rehearsal on to smtpd."""
    scan = _scan(argv)
    if scan and scan[1]:
        from qtools.lib import pathexec
        pathexec.rehearse(scan[1])


def main(argv):
    st = State(getb(b"TCPREMOTEIP", b"").decode("latin-1"))
    x = getb(b"RBLSMTPD")
    if x is not None:
        if not x:
            st.decision = ACCEPT
        elif x[:1] == b"-":
            st.text, st.decision = x[1:], BOUNCE
        else:
            st.text, st.decision = x, REJECT
    timeout = 60
    try:
        opts, args = getopt(argv, OPTS, PROG)
        if not args:
            raise UsageError
    except UsageError:
        os.write(2, b"rblsmtpd: usage: " + USAGE.encode() + b"\n")
        return 100
    # sources are asked in command-line order, as rblsmtpd.c does while parsing
    for o, a in opts:
        if o == "b":
            st.rblerror = True
        elif o == "B":
            st.rblerror = False
        elif o == "c":
            st.failclosed = True
        elif o == "C":
            st.failclosed = False
        elif o == "t":
            timeout = scan_ulong(a)
        elif o == "r":
            st.rbl(a)
        elif o == "a":
            st.antirbl(a)
    if st.decision >= REJECT:
        msg = message(st)
        try:
            os.write(2, b"rblsmtpd: %s pid %d: %s\n" % (st.ip.encode("latin-1"), os.getpid(), msg))
        except OSError:
            pass
        if not timeout:
            _out(msg + b"\r\n")
        else:
            dialogue(msg, timeout)
        return 0
    from qtools.lib import pathexec, strerr
    try:
        pathexec.pathexec_run(args)
    except OSError as e:
        strerr.die(111, PROG, "unable to run ", args[0], ": ", e)
