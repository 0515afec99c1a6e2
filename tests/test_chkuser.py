"""chkuser 2.0.9 in qmail-smtpd (qmail-inventory 1.2, the seed's "Testing
chkuser"): real tcpserver + qmail-smtpd sessions on 127.0.0.1 in both
elision modes, a vpopmail domain made by vadddomain/vadduser in both stores
(cdb files and MariaDB), a private dnsmasq for the MX lookups; every reply
of chkuser's table, its limits, its log lines and the store's failures."""
import base64
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest

from dnstest import Dnsmasq
from smtpdtools import Client, checkpassword, make_home, queued, server, smtpd_env
from vpoptools import (VHome, mariadb, mariadb_template, private_mariadb,  # noqa: F401
                       vhome)

from qtools.qmail.chkuser import REPLY as CHK
from qtools.qmail.smtpd import REPLY

MODES = ("elide", "noelide", "reuse")    # conftest: the reuse mode too

DOM = "yourdomain.net"
GREETING = b"220 yourdomain.net ESMTP\r\n"
OK = b"250 ok\r\n"

RECORDS = [
    "local=/xxx/",                                      # the seed's fakedomain.xxx: NXDOMAIN
    "mx-host=gmail.com,gmail-smtp-in.l.google.com,5",   # the seed's sender domain
    "host-record=gmail-smtp-in.l.google.com,127.0.0.9",
    "mx-host=mx.test,mail.mx.test,10",
    "host-record=mail.mx.test,127.0.0.10",
    "host-record=aonly.test,127.0.0.11",                # no MX: its A record will do
]


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    with Dnsmasq(tmp_path_factory.mktemp("dns"), RECORDS) as d:
        yield d


def setup(vh, tmp_path):
    """QMAILHOME (me: yourdomain.net) with the vpopmail domain and a user."""
    home = make_home(tmp_path, me=DOM + "\n")
    assert home == vh.qmail
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "user@" + DOM, "pw")
    return home


def chk_env(vh, mode, dns, start="ALWAYS", **extra):
    e = dict(VPOPMAILHOME=vh.vpop, VPOPMAIL_AUTH=vh.backend, QTOOLS_MYSQL_TIMEOUT="1",
             CHKUSER_START=start, CHKUSER_ERROR_DELAY="0", CHKUSER_ERROR_DELAY_INCREASE="0",
             DNSCACHEIP=dns.dnscacheip if dns else None)
    e.update(extra)
    return smtpd_env(mode, vh.qmail, **e)


def serve(vh, mode, tmp_path, dns, name="smtpd", start="ALWAYS", args=(), **extra):
    return server(mode, vh.qmail, tmp_path, args=args, name=name,
                  env=chk_env(vh, mode, dns, start, **extra))


def connect(srv):
    c = Client(srv.port)
    assert c.reply() == GREETING
    return c


def chklog(log):
    """The CHKUSER lines, without the common client part."""
    out = []
    for line in log.splitlines():
        if line.startswith("CHKUSER "):
            out.append(re.sub(r"\|remoteinfo/auth:[^>]*> remote <[^>]*>", ">", line))
    return out


def test_seed_transcripts(vhome, mode, tmp_path, dns):
    """The seed's three chkuser sessions, reply for reply: the syntax replies
    are the seed's `mailbox syntax not allowed` (sagredo now says `rcpt` /
    `sender syntax`, qmail-inventory 0.1; the seed is the reference), and
    the seed's `isn''t` is the web page's escaping of `isn't`."""
    setup(vhome, tmp_path)
    with serve(vhome, mode, tmp_path, dns) as srv:
        c = connect(srv)
        assert c.cmd(b"mail from: unexistent@fakedomain.xxx") == \
            b"550 5.1.8 sorry, can't find a valid MX for sender domain (chkuser)\r\n"
        assert c.cmd(b"mail from: unexistent@fake_domain.xxx") == \
            b"553 5.1.7 sorry, mailbox syntax not allowed (chkuser)\r\n"
        assert c.cmd(b"quit") == b"221 yourdomain.net\r\n"
        c.close()
        c = connect(srv)
        assert c.cmd(b"mail from: someone@gmail.com") == OK
        assert c.cmd(b"rcpt to: nobody@yourdomain.net") == \
            b"550 5.1.1 sorry, no mailbox here by that name (chkuser)\r\n"
        assert c.cmd(b"quit") == b"221 yourdomain.net\r\n"
        c.close()
        c = connect(srv)
        assert c.cmd(b"mail from: someone@gmail.com") == OK
        assert c.cmd(b"rcpt to: someone@gmail.com") == \
            b"553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts (chkuser)\r\n"
        assert c.cmd(b"quit") == b"221 yourdomain.net\r\n"
        c.close()
        # and with swaks, as the seed suggests for all its telnet tests
        for frm, to, after, want in (
                ("unexistent@fakedomain.xxx", "nobody@" + DOM, "MAIL", CHK["sendermx"]),
                ("unexistent@fake_domain.xxx", "nobody@" + DOM, "MAIL", CHK["senderformat"]),
                ("someone@gmail.com", "nobody@" + DOM, "RCPT", CHK["norcpt"]),
                ("someone@gmail.com", "someone@gmail.com", "RCPT", CHK["norelay"]),
                ("someone@gmail.com", "user@" + DOM, "RCPT", None)):
            r = subprocess.run(["swaks", "-s", "127.0.0.1", "-p", str(srv.port), "-f", frm,
                                "-t", to, "--quit-after", after], capture_output=True, timeout=60)
            if want:
                assert b"<** " + want.rstrip(b"\r\n") in r.stdout, r.stdout
            else:
                assert b"<-  250 ok" in r.stdout.split(b"RCPT TO")[1], r.stdout
        log = srv.log()
    lines = chklog(log)
    assert "CHKUSER rejected sender: from <unexistent@fakedomain.xxx> rcpt <> : " \
        "invalid sender MX domain" in lines
    assert "CHKUSER rejected sender: from <unexistent@fake_domain.xxx> rcpt <> : " \
        "invalid sender address format" in lines
    assert "CHKUSER accepted sender: from <someone@gmail.com> rcpt <> : sender accepted" in lines
    assert "CHKUSER rejected rcpt: from <someone@gmail.com> rcpt <nobody@yourdomain.net> : " \
        "not existing recipient" in lines
    assert "CHKUSER rejected relaying: from <someone@gmail.com> rcpt <someone@gmail.com> : " \
        "client not allowed to relay" in lines
    assert "CHKUSER accepted rcpt: from <someone@gmail.com> rcpt <user@yourdomain.net> : " \
        "found existing recipient" in lines
    assert "CHKUSER rejected rcpt: from <someone@gmail.com|remoteinfo/auth:|chkuser-identify:> " \
        "remote <helo:|remotehostname:unknown|remotehostip:127.0.0.1> rcpt " \
        "<nobody@yourdomain.net> : not existing recipient" in log
    assert "qlogenvelope: result=rejected code=550 reason=chkusersender detail=sendermxinvalid " in log
    assert "qlogenvelope: result=rejected code=553 reason=chkusersender detail=senderformat " in log
    assert "qlogenvelope: result=rejected code=550 reason=chkuser detail=nomailbox " in log
    assert "qlogenvelope: result=rejected code=553 reason=chkuser detail=notinrcpthosts " in log
    assert "qlogenvelope: result=accepted code=250 reason=rcptto detail=chkuser " in log


def add_valias(vh, monkeypatch, alias, line):
    """Store a virtual alias through the store itself (valias_insert)."""
    from qtools.vpopmail import store as S
    for k, v in (("VPOPMAILHOME", vh.vpop), ("QMAILHOME", vh.qmail), ("VPOPMAIL_AUTH", vh.backend)):
        monkeypatch.setenv(k, v)
    st = S.open_store()
    try:
        st.valias_insert(alias, DOM, line)
    finally:
        st.close()


def test_recipients(vhome, mode, tmp_path, dns, monkeypatch):
    """Steps 1-13 of realrcpt, each reply of the table."""
    setup(vhome, tmp_path)
    d = vhome.domdir(DOM)
    vhome.ok("vadduser", "bounced@" + DOM, "pw")
    vhome.ok("vmoduser", "-b", "bounced@" + DOM)
    with open(os.path.join(d, ".qmail-info"), "w") as f:           # an alias file
        f.write("&user@yourdomain.net\n")
    with open(os.path.join(d, ".qmail-first:last"), "w") as f:     # dots are colons
        f.write("&user@yourdomain.net\n")
    with open(os.path.join(d, ".qmail-lists-default"), "w") as f:  # a -default file
        f.write("|true\n")
    os.makedirs(os.path.join(d, "ml"))                              # an ezmlm list
    open(os.path.join(d, "ml", "editor"), "w").close()
    add_valias(vhome, monkeypatch, "fwd", "&user@yourdomain.net")
    with serve(vhome, mode, tmp_path, dns) as srv:
        c = connect(srv)
        assert c.cmd(b"HELO client.test") == b"250 yourdomain.net\r\n"
        assert c.cmd(b"MAIL FROM:<someone@mx.test>") == OK
        for rcpt, want in (
                (b"user@yourdomain.net", OK),
                (b"USER@YourDomain.NET", OK),                    # 1. lowercased
                (b"nobody@yourdomain.net", CHK["norcpt"]),       # 13.
                (b"postmaster", CHK["domainmissing"]),           # 2.
                (b"<>", CHK["domainmissing"]),
                (b"<a b@yourdomain.net>", CHK["rcptformat"]),    # 3.
                (b"<u(x)@yourdomain.net>", CHK["rcptformat"]),
                (b"u@-yourdomain.net", CHK["rcptformat"]),
                (b"u@nx.test", CHK["rcptmx"]),                   # 4. not ours: MX
                (b"u@x.servfail.test", CHK["mxtmp"]),
                (b"u@mx.test", CHK["norelay"]),
                (b"u@aonly.test", CHK["norelay"]),
                (b"anyone@example.test", OK),                    # 5. not a vpopmail domain
                (b"fwd@yourdomain.net", OK),                     # 8. valias
                (b"info@yourdomain.net", OK),                    # 9. .qmail-info
                (b"first.last@yourdomain.net", OK),
                (b"lists-foo-bar@yourdomain.net", OK),           # 10. .qmail-lists-default
                (b"bounced@yourdomain.net", CHK["norcpt"]),      # 11. BOUNCE_MAIL
                (b"ml-subscribe@yourdomain.net", OK),            # 12. ezmlm
                (b"ml@yourdomain.net", CHK["norcpt"]),
                (b"a/../../x@yourdomain.net", CHK["norcpt"])):
            arg = rcpt if rcpt.startswith(b"<") else b"<" + rcpt + b">"
            assert c.cmd(b"RCPT TO:" + arg) == want, rcpt
        assert c.cmd(b"DATA") == b"354 go ahead\r\n"
        c.send(b"Subject: chkuser\r\n\r\nbody\r\n.\r\n")
        assert re.match(rb"250 ok \d+ qp \d+\r\n$", c.reply())
        c.close()
        log = srv.log()
    (msg, env), = queued(vhome.qmail)
    assert env.split(b"\0")[3:-1] == [
        b"Tuser@yourdomain.net", b"TUSER@YourDomain.NET", b"Tanyone@example.test",
        b"Tfwd@yourdomain.net", b"Tinfo@yourdomain.net", b"Tfirst.last@yourdomain.net",
        b"Tlists-foo-bar@yourdomain.net", b"Tml-subscribe@yourdomain.net"]
    lines = chklog(log)
    assert "CHKUSER rejected rcpt: from <someone@mx.test> rcpt <a b@yourdomain.net> : " \
        "invalid rcpt address format" in lines
    assert "CHKUSER rejected rcpt: from <someone@mx.test> rcpt <u@nx.test> : " \
        "invalid rcpt MX domain" in lines
    assert "CHKUSER rejected rcpt: from <someone@mx.test> rcpt <u@x.servfail.test> : " \
        "temporary DNS problem" in lines
    assert not any("postmaster" in x for x in lines)       # chkuser logs no missing domain
    for detail, code in (("domainmissing", 550), ("rcptformat", 553), ("rcptmxinvalid", 550),
                         ("rcptmxdnstmpfail", 451), ("notinrcpthosts", 553), ("nomailbox", 550)):
        assert "code=%d reason=chkuser detail=%s " % (code, detail) in log
    assert "helo=client.test" in log and "Traceback" not in log


def test_senders(vhome, mode, tmp_path, dns):
    """chkuser_sender: null sender, format (plain and SMTPUTF8), MX (MX
    record, A record only, none, DNS failure), #@[] and the NOCHECK
    variables."""
    setup(vhome, tmp_path)
    cases = (
        (b"<>", OK),
        (b"<a@mx.test>", OK),
        (b"<a.b+c=d#e$f%g?h*i^j~k&l/m\\\\n_o-p@mx.test>", OK),
        (b"<a@aonly.test>", OK),
        (b"<a@nx.test>", CHK["sendermx"]),
        (b"<a@x.servfail.test>", CHK["mxtmp"]),
        (b"<a@" + b"x" * 64 + b".test>", CHK["sendermx"]),       # a label DNS cannot carry
        (b"<a'b@mx.test>", CHK["senderformat"]),
        (b"<a@mx..test>", CHK["senderformat"]),
        (b"<a@mx.-test>", CHK["senderformat"]),
        (b"<a@x.t>", CHK["senderformat"]),                        # too short
        (b"<a@localhost>", CHK["senderformat"]),                  # no dot
        (b"<nodomain>", CHK["senderformat"]),
        (b"<#@[]>", CHK["senderformat"]),
        ("<\u00e4@mx.test> SMTPUTF8".encode(), OK),
        ("<\u00e4@mx.test>".encode(), CHK["senderformat"]),
        (b"<a;b@mx.test> SMTPUTF8", CHK["senderformat"]),
    )
    with serve(vhome, mode, tmp_path, dns) as srv:
        c = connect(srv)
        for arg, want in cases:
            assert c.cmd(b"MAIL FROM:" + arg) == want, arg
        c.close()
        log = srv.log()
    assert "CHKUSER accepted sender: from <> rcpt <> : accepted null sender always" in chklog(log)
    assert "code=451 reason=chkusersender detail=sendermxdnstmpfail " in log
    with serve(vhome, mode, tmp_path, dns, name="nocheck", CHKUSER_SENDER_FORMAT_NOCHECK="",
               CHKUSER_SENDER_MX_NOCHECK="1", CHKUSER_DOUBLEBOUNCE="1") as srv:
        c = connect(srv)
        for arg in (b"<a@nx.test>", b"<a'b@x>", b"<#@[]>"):
            assert c.cmd(b"MAIL FROM:" + arg) == OK, arg
        c.close()
    with serve(vhome, mode, tmp_path, dns, name="mxonly", CHKUSER_SENDER_FORMAT_NOCHECK="1") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<#@[]>") == CHK["sendermx"]
        assert c.cmd(b"MAIL FROM:<a_b@mx.test>") == OK
        c.close()
        assert "CHKUSER accepted doublebounce" not in srv.log()


def test_limits(vhome, mode, tmp_path, dns):
    """CHKUSER_RCPTLIMIT=3: the third recipient of the session is refused,
    then everything (intrusion threshold); CHKUSER_WRONGRCPTLIMIT=2: two
    unknown recipients, then everything is refused, RSET or not."""
    setup(vhome, tmp_path)
    with serve(vhome, mode, tmp_path, dns, CHKUSER_RCPTLIMIT="3") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["norcpt"]
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == CHK["maxrcpt"]
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == CHK["intrusion"]
        assert c.cmd(b"RSET") == REPLY["flushed"]
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == CHK["intrusion"]
        c.close()
        log = srv.log()
    lines = chklog(log)
    assert "CHKUSER intrusion threshold: from <a@mx.test> rcpt <user@yourdomain.net> : " \
        "max number of allowed rcpt" in lines
    assert "CHKUSER rejected rcpt: from <a@mx.test> rcpt <user@yourdomain.net> : " \
        "max number of recipients" in lines
    assert "CHKUSER rejected intrusion: from <a@mx.test> rcpt <user@yourdomain.net> : " \
        "rcpt ignored, session over intrusion threshold" in lines
    assert "code=550 reason=chkuser detail=maxrcpt " in log
    assert "code=550 reason=chkuser detail=instrusionthreshold " in log   # sic
    with serve(vhome, mode, tmp_path, dns, name="wrong", CHKUSER_WRONGRCPTLIMIT="2") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["norcpt"]
        assert c.cmd(b"RCPT TO:<u@mx.test>") == CHK["norelay"]       # not an unknown user
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == OK
        assert c.cmd(b"RCPT TO:<postmaster>") == CHK["domainmissing"]
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == CHK["intrusion"]
        assert c.cmd(b"RSET") == REPLY["flushed"]
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == CHK["intrusion"]
        c.close()
        assert "CHKUSER intrusion threshold: from <a@mx.test> rcpt <postmaster> : " \
            "max number of allowed invalid rcpt" in chklog(srv.log())


def test_domain_mode(vhome, mode, tmp_path, dns):
    """CHKUSER_START=DOMAIN: only a domain whose .qmail-default says
    bounce-no-mailbox has its recipients checked."""
    setup(vhome, tmp_path)
    qd = os.path.join(vhome.domdir(DOM), ".qmail-default")
    with open(qd, "rb") as f:
        assert b"bounce-no-mailbox" not in f.read()             # vadddomain writes `delete`
    with serve(vhome, mode, tmp_path, dns, start="DOMAIN") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == OK
        assert c.cmd(b"RCPT TO:<u@mx.test>") == CHK["norelay"]
        with open(qd, "w") as f:
            f.write("| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["norcpt"]
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == OK
        c.close()
        assert "CHKUSER accepted any rcpt: from <a@mx.test> rcpt <nobody@yourdomain.net> : " \
            "accepted any recipient for this domain" in chklog(srv.log())
    with serve(vhome, mode, tmp_path, dns, name="none", start="NONE") as srv:
        c = connect(srv)                                          # any other value: off
        assert c.cmd(b"MAIL FROM:<a'b@nx.test>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == OK
        assert c.cmd(b"RCPT TO:<u@mx.test>") == CHK["norelay"]
        c.close()
        lines = chklog(srv.log())
    assert "CHKUSER accepted sender: from <a'b@nx.test> rcpt <> : accepted any sender always" \
        in lines
    assert "CHKUSER accepted any rcpt: from <a'b@nx.test> rcpt <nobody@yourdomain.net> : " \
        "accepted any recipient for any rcpt domain" in lines


def test_relayclient_and_auth_skip_chkuser(vhome, mode, tmp_path, dns):
    """RELAYCLIENT (tcprules, or AUTH before the first MAIL) turns chkuser
    off: any sender, any recipient (the RELAYCLIENT value is appended to the
    relayed ones only); CHKUSER_DISABLE_VARIABLE names another variable."""
    setup(vhome, tmp_path)
    with serve(vhome, mode, tmp_path, dns, RELAYCLIENT="") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a'b@nx.test>") == OK
        for r in (b"nobody@yourdomain.net", b"far@nx.test", b"u@mx.test"):
            assert c.cmd(b"RCPT TO:<" + r + b">") == OK
        c.close()
        lines = chklog(srv.log())
    assert "CHKUSER relaying rcpt: from <a'b@nx.test> rcpt <far@nx.test> : client allowed to relay" \
        in lines
    cp, _ = checkpassword(tmp_path)
    with serve(vhome, mode, tmp_path, dns, name="auth", args=(cp, "true"), SMTPAUTH="",
               FORCETLS="0") as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO client.test").startswith(b"250-")
        assert c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0user@yourdomain.net\0good")) == \
            REPLY["authok"]
        assert c.cmd(b"MAIL FROM:<a'b@nx.test>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == OK
        assert c.cmd(b"RCPT TO:<far@nx.test>") == OK
        c.close()
    with serve(vhome, mode, tmp_path, dns, name="var", RELAYCLIENT="",
               CHKUSER_DISABLE_VARIABLE="CHKUSER_OFF",
               CHKUSER_SENDER_NOCHECK_VARIABLE="CHKUSER_OFF") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@nx.test>") == CHK["sendermx"]
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["norcpt"]
        assert c.cmd(b"RCPT TO:<far@nx.test>") == CHK["rcptmx"]
        assert c.cmd(b"RCPT TO:<far@mx.test>") == OK            # relayed
        c.close()
    with serve(vhome, mode, tmp_path, dns, name="unset", start=None) as srv:
        c = connect(srv)                                          # no CHKUSER_START: qmail's rules
        assert c.cmd(b"MAIL FROM:<a'b@nx.test>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == OK
        assert c.cmd(b"RCPT TO:<far@mx.test>") == REPLY["nogateway"]
        c.close()
        assert "CHKUSER" not in srv.log()


def test_mariadb_stopped(private_mariadb, mode, tmp_path, dns):
    """The store cannot answer: 451 4.3.0, even for a recipient an alias file
    would accept (vauth_open comes first); back when the server is."""
    vh = VHome(tmp_path, "mysql", private_mariadb)
    setup(vh, tmp_path)
    with open(os.path.join(vh.domdir(DOM), ".qmail-info"), "w") as f:
        f.write("&user@yourdomain.net\n")
    with serve(vh, mode, tmp_path, dns) as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == OK
        private_mariadb.stop()
        for r in (b"user@yourdomain.net", b"nobody@yourdomain.net", b"info@yourdomain.net"):
            assert c.cmd(b"RCPT TO:<" + r + b">") == CHK["resource"], r
        assert c.cmd(b"RCPT TO:<anyone@example.test>") == OK      # not a vpopmail domain
        c.close()
        c = connect(srv)                                          # a new session, no server
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == CHK["resource"]
        c.close()
        private_mariadb.start()
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == OK
        c.close()
        log = srv.log()
    assert "CHKUSER no auth resource: from <a@mx.test> rcpt <user@yourdomain.net> : " \
        "no auth resource available" in chklog(log)
    assert "code=451 reason=chkuser detail=noauthresource " in log


def test_unreadable_vpasswd_cdb(mode, tmp_path, dns):
    """cdb store: a vpasswd.cdb that cannot be read is 451 4.3.0, never 550."""
    vh = VHome(tmp_path, "cdb")
    setup(vh, tmp_path)
    idx = os.path.join(vh.domdir(DOM), "vpasswd.cdb")
    with serve(vh, mode, tmp_path, dns) as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        os.rename(idx, idx + ".save")
        os.mkdir(idx)
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["resource"]
        os.rmdir(idx)
        os.rename(idx + ".save", idx)
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["norcpt"]
        c.close()


def test_error_delays(mode, tmp_path):
    """Each refusal waits CHKUSER_ERROR_DELAY ms, then that plus
    CHKUSER_ERROR_DELAY_INCREASE for each one before it (1000 and 300 by
    default); accepted recipients do not wait."""
    vh = VHome(tmp_path, "cdb")
    setup(vh, tmp_path)
    with serve(vh, mode, tmp_path, None, CHKUSER_ERROR_DELAY="200",
               CHKUSER_ERROR_DELAY_INCREASE="150", CHKUSER_SENDER_MX_NOCHECK="1") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@b.test>") == OK
        took = []
        for r in (b"postmaster", b"nobody@yourdomain.net", b"user@yourdomain.net", b"postmaster"):
            t = time.monotonic()
            c.cmd(b"RCPT TO:<" + r + b">")
            took.append(time.monotonic() - t)
        c.close()
    assert 0.2 <= took[0] < 0.35 + 0.5
    assert 0.35 <= took[1] < 0.5 + 0.5
    assert took[2] < 0.2
    assert 0.5 <= took[3] < 0.65 + 0.5


def test_brtlimit(mode, tmp_path, dns):
    """BRTLIMIT (control/brtlimit): after that many bad recipients the next
    RCPT gets 421 and the connection closes; chkuser's temporary answers do
    not count."""
    vh = VHome(tmp_path, "cdb")
    setup(vh, tmp_path)
    with serve(vh, mode, tmp_path, dns, BRTLIMIT="2") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["norcpt"]
        assert c.cmd(b"RCPT TO:<u@x.servfail.test>") == CHK["mxtmp"]
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == OK
        assert c.cmd(b"RCPT TO:<u@mx.test>") == CHK["norelay"]
        assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == REPLY["brtlimit"]
        assert c.rest() == b""
        c.close()
        log = srv.log()
    assert re.search(r"qmail-smtpd\[\d+\]: badrcptto: excessive rcptto violations hanging up on "
                     r"127\.0\.0\.1", log)
    assert "code=421 reason=brtlimit " in log


def _world_reachable(path):
    d = path
    while d != "/":
        d = os.path.dirname(d)
        if not os.stat(d).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o001)


def test_as_vpopmail_user(mode, tmp_path, dns):
    """The seed runs qmail-smtpd as vpopmail:vchkpw: chkuser only needs to
    read the vpopmail files (a uid of their own here, mode 0700 trees)."""
    import sys
    import tempfile
    if mode == "noelide" and not _world_reachable(os.path.realpath(sys.executable)):
        pytest.skip("python is not reachable by another uid here: only in-process (elide)")
    top = tempfile.mkdtemp(prefix="chkuid.", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        vh = VHome(pathlib.Path(top), "cdb")
        setup(vh, pathlib.Path(top))
        uid = gid = 65534
        for root, dirs, files in os.walk(vh.vpop):
            for n in dirs + files:
                os.lchown(os.path.join(root, n), uid, gid)
        os.chown(vh.vpop, uid, gid)
        os.chmod(vh.vpop, 0o700)
        os.chmod(os.path.join(vh.qmail, "users"), 0o755)        # as qmail's hier.c makes it
        e = chk_env(vh, mode, dns)
        with server(mode, vh.qmail, tmp_path, env=e, name="uid",
                    opts=("-v", "-u", str(uid), "-g", str(gid))) as srv:
            c = connect(srv)
            assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
            assert c.cmd(b"RCPT TO:<user@yourdomain.net>") == OK
            assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["norcpt"]
            c.close()
            os.chown(vh.vpop, 0, 0)                               # now it cannot read them
            c = connect(srv)
            assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
            assert c.cmd(b"RCPT TO:<nobody@yourdomain.net>") == CHK["resource"]
            c.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_mbxquota(vhome, mode, tmp_path, dns):
    """CHKUSER_MBXQUOTA=pct: a user's Maildir++ at pct% or more of its quota
    is full (552 5.2.2); NOQUOTA users never are."""
    maildirquota = pytest.importorskip("qtools.vpopmail.maildirquota")
    setup(vhome, tmp_path)
    vhome.ok("vadduser", "-q", "1000S", "small@" + DOM, "pw")
    vhome.ok("vadduser", "big@" + DOM, "pw")
    for who, spec in (("small", "1000S"), ("big", "NOQUOTA")):
        md = os.path.join(vhome.domdir(DOM), who, "Maildir")
        with open(os.path.join(md, "new", "1.1.host,S=900"), "wb") as f:
            f.write(b"x" * 900)
        maildirquota.add(md, spec, 900, 1)                  # as vdelivermail does
    with serve(vhome, mode, tmp_path, dns, CHKUSER_MBXQUOTA="80") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<small@yourdomain.net>") == CHK["mbxfull"]
        assert c.cmd(b"RCPT TO:<big@yourdomain.net>") == OK
        c.close()
        log = srv.log()
    assert "CHKUSER mbx overquota: from <a@mx.test> rcpt <small@yourdomain.net> : " \
        "rcpt mailbox is overquota" in chklog(log)
    with serve(vhome, mode, tmp_path, dns, name="95", CHKUSER_MBXQUOTA="95") as srv:
        c = connect(srv)
        assert c.cmd(b"MAIL FROM:<a@mx.test>") == OK
        assert c.cmd(b"RCPT TO:<small@yourdomain.net>") == OK
        c.close()
