"""qmail-smtpd AUTH: LOGIN/PLAIN/CRAM-MD5 through a checkpassword program
(qmail-inventory 3.2), FORCETLS, SMTPAUTH modes, the seed's submission
transcript, failures, the 111 deviation (454 4.7.0) and the failure cap.
The pause after a failure is shortened with QTOOLS_AUTHSLEEP=0.2."""
import base64
import hmac
import re
import subprocess
import time

from smtpdtools import (certfile, checkpassword, connect, make_home, queued,  # noqa: F401
                        server)

from qtools.qmail.smtpd import REPLY

MODES = ("elide", "noelide", "reuse")    # conftest: the reuse mode too

B = lambda s: base64.b64encode(s).decode().encode()    # noqa: E731
USER = b"test@test.net"


def submission(mode, tmp_path, certfile, **env):
    home = make_home(tmp_path, cert=certfile, databytes="3000000\n")
    prog, log = checkpassword(tmp_path)
    extra = dict(SMTPAUTH="!", FORCEAUTHMAILFROM=None)
    extra.update(env)
    return home, log, server(mode, home, tmp_path, args=(prog, "true"), **extra)


def tls(srv):
    c = connect(srv)
    assert c.cmd(b"STARTTLS") == REPLY["tlsready"]
    c.starttls()
    return c


def test_seed_submission_plaintext(mode, tmp_path, certfile):
    """EHLO without AUTH before TLS (FORCETLS), 530 with its trailing space, 538."""
    home, log, srv = submission(mode, tmp_path, certfile)
    with srv as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO test") == (b"250-mx.example.test\r\n250-STARTTLS\r\n250-PIPELINING\r\n"
                                       b"250-SMTPUTF8\r\n250-8BITMIME\r\n250 SIZE 3000000\r\n")
        assert c.cmd(b"mail from:someone@somewhere.net") == b"530 Authorization required (#5.7.1) \r\n"
        assert c.cmd(b"AUTH PLAIN") == b"538 auth not available without TLS (#5.3.3)\r\n"
        assert c.cmd(b"AUTH LOGIN") == REPLY["authtls"]
        assert c.cmd(b"STARTTLS") == b"220 ready for tls\r\n"
        c.starttls()
        assert c.cmd(b"EHLO test") == (b"250-mx.example.test\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n"
                                       b"250-8BITMIME\r\n250-SIZE 3000000\r\n250 AUTH LOGIN PLAIN\r\n")
        c.close()
    assert not log.exists()


def test_seed_auth_login_relay(mode, tmp_path, certfile):
    home, log, srv = submission(mode, tmp_path, certfile)
    with srv as srv:
        c = tls(srv)
        c.cmd(b"EHLO test")
        assert c.cmd(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert c.cmd(b"dGVzdEB0ZXN0Lm5ldA==") == b"334 UGFzc3dvcmQ6\r\n"
        assert c.cmd(B(b"good")) == b"235 ok, go ahead (#2.0.0)\r\n"
        assert c.cmd(b"mail from:yourself@somedomain.net") == b"250 ok\r\n"
        assert c.cmd(b"rcpt to:someone@somewhere.net") == b"250 ok\r\n"
        assert c.cmd(b"data") == b"354 go ahead\r\n"
        c.send(b"subject: smtp-auth + tls test\r\n\r\nThis is the body FOLLOWING A BLANK LINE.\r\n.\r\n")
        assert re.match(rb"250 ok \d+ qp \d+\r\n$", c.reply())
        assert c.cmd(b"AUTH LOGIN") == b"503 you're already authenticated (#5.5.0)\r\n"
        assert c.cmd(b"quit") == b"221 mx.example.test\r\n"
        c.close()
    assert log.read_bytes() == USER + b"\0good\0|"
    (msg, env), = queued(home)
    assert env.endswith(b"Fyourself@somedomain.net\0Tsomeone@somewhere.net\0")
    line = msg.split(b"\n")[1:3]
    # authenticated: RELAYCLIENT set, so no IP; the user as remoteinfo
    assert line[0] == b"Received: from unknown (HELO test) (test@test.net)" or \
        line[0].startswith(b"Received: from ") and line[0].endswith(b"(test@test.net)"), line
    assert re.match(rb"  by \S+ with ESMTPSA \(TLS_\w+ encrypted, authenticated\); ", line[1]), line


def test_seed_auth_plain(mode, tmp_path, certfile):
    home, log, srv = submission(mode, tmp_path, certfile)
    with srv as srv:
        c = tls(srv)
        assert c.cmd(b"AUTH PLAIN AHRlc3RAdGVzdC5uZXQAdGVzdA==") == REPLY["authfail"]
        assert c.cmd(b"AUTH PLAIN " + B(b"other\0" + USER + b"\0good")) == REPLY["authok"]
        assert c.cmd(b"MAIL FROM:<x@y.test>") == REPLY["ok"]
        assert c.cmd(b"RCPT TO:<a@far.away.test>") == REPLY["ok"]
        c.close()
    assert log.read_bytes() == USER + b"\0test\0|" + USER + b"\0good\0|"


def test_auth_plain_continuation_and_errors(mode, tmp_path, certfile):
    home, log, srv = submission(mode, tmp_path, certfile)
    with srv as srv:
        c = tls(srv)
        assert c.cmd(b"AUTH") == REPLY["authinvalid"]
        assert c.cmd(b"AUTH DIGEST-MD5") == b"504 auth type invalid (#5.5.1)\r\n"
        assert c.cmd(b"AUTH PLAIN") == b"334 \r\n"
        assert c.cmd(b"*") == b"501 auth exchange canceled (#5.0.0)\r\n"
        assert c.cmd(b"AUTH PLAIN") == b"334 \r\n"
        assert c.cmd(b"") == b"501 malformed auth input (#5.5.4)\r\n"
        assert c.cmd(b"AUTH PLAIN !!!!") == REPLY["input"]
        assert c.cmd(b"AUTH PLAIN " + B(b"\0" + USER)) == REPLY["input"]
        assert c.cmd(b"AUTH LOGIN " + B(USER)) == REPLY["login_pass"]
        assert c.cmd(b"*") == REPLY["authabrt"]
        assert c.cmd(b"AUTH PLAIN") == REPLY["plain"]
        assert c.cmd(B(b"\0" + USER + b"\0good")) == REPLY["authok"]
        c.close()
        c = tls(srv)
        assert c.cmd(b"MAIL FROM:<a@b.test>") == REPLY["submission"]
        c.close()


def test_auth_in_transaction_and_not_available(mode, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile)
    prog, log = checkpassword(tmp_path)
    with server(mode, home, tmp_path, args=(prog, "true"), SMTPAUTH="", FORCETLS="0") as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO x").endswith(b"250-SIZE 0\r\n250 AUTH LOGIN PLAIN\r\n")
        c.cmd(b"MAIL FROM:<a@b.test>")
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0good")) == REPLY["authmail"]
        c.cmd(b"RSET")
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0good")) == REPLY["authok"]
        c.close()
    with server(mode, home, tmp_path, name="noprog", SMTPAUTH="", FORCETLS="0") as srv:
        c = connect(srv)
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0good")) == b"503 auth not available (#5.3.3)\r\n"
        c.close()
    with server(mode, home, tmp_path, args=(prog, "true"), name="off") as srv:
        c = connect(srv)
        assert c.cmd(b"AUTH LOGIN") == REPLY["noauth"]
        c.close()


def test_auth_failure_pause_tempfail_and_cap(mode, tmp_path, certfile):
    home, log, srv = submission(mode, tmp_path, certfile)
    with srv as srv:
        c = tls(srv)
        t = time.monotonic()
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0bad")) == b"535 authentication failed (#5.7.1)\r\n"
        assert time.monotonic() - t >= 0.2
        t = time.monotonic()
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0temp")) == b"454 4.7.0 temporary authentication failure\r\n"
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0temp")) == REPLY["authtemp"]
        assert time.monotonic() - t < 2
        assert c.cmd(b"AUTH LOGIN " + B(b"u")) == REPLY["login_pass"]
        assert c.cmd(B(b"wrong")) == REPLY["authfail"]
        # the third failure ends the session
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0bad")) == \
            b"421 too many authentication failures, goodbye (#4.7.0)\r\n"
        assert c.rest() == b""
        c.close()
    assert srv.log().count("auth: auth-failed type=plain user=<u>") == 2
    assert srv.log().count("auth: auth-failed type=login user=<u>") == 1
    assert "auth: auth-tempfail type=plain user=<u>" in srv.log()


def test_cram_md5(mode, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile)
    prog, log = checkpassword(tmp_path)
    with server(mode, home, tmp_path, args=(prog, "true"), opts=("-v", "-l", "mx.example.test"),
                SMTPAUTH="+cram", FORCETLS="0") as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO x").endswith(b"250 AUTH LOGIN PLAIN CRAM-MD5\r\n")
        r = c.cmd(b"AUTH CRAM-MD5")
        assert r.startswith(b"334 ")
        chal = base64.b64decode(r[4:-2])
        assert re.match(rb"<\d+\.\d+@mx\.example\.test>$", chal), chal
        digest = hmac.new(b"good", chal, "md5").hexdigest().encode()
        assert c.cmd(B(b"cram@user " + digest)) == REPLY["authok"]
        c.close()
        c = connect(srv)
        c.cmd(b"AUTH CRAM-MD5")
        assert c.cmd(B(b"nospace")) == REPLY["input"]
        # +cram: LOGIN and PLAIN write an empty challenge too
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0good")) == REPLY["authok"]
        c.close()
    data = log.read_bytes()
    assert data.startswith(b"cram@user\0" + digest + b"\0" + chal + b"\0|")
    assert data.endswith(b"|u\0good\0\0|")


def test_forceauthmailfrom(mode, tmp_path, certfile):
    home, log, srv = submission(mode, tmp_path, certfile, FORCEAUTHMAILFROM="1")
    with srv as srv:
        c = tls(srv)
        assert c.cmd(b"AUTH PLAIN " + B(b"\0" + USER + b"\0good")) == REPLY["authok"]
        assert c.cmd(b"MAIL FROM:<other@test.net>") == b"503 from and auth not the same (#5.5.1)\r\n"
        assert c.cmd(b"MAIL FROM:<test@test.net>") == REPLY["ok"]
        c.close()


def test_starttls_forgets_auth(mode, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile)
    prog, log = checkpassword(tmp_path)
    with server(mode, home, tmp_path, args=(prog, "true"), SMTPAUTH="!", FORCETLS="0") as srv:
        c = connect(srv)
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0good")) == REPLY["authok"]
        assert c.cmd(b"MAIL FROM:<a@b.test>") == REPLY["ok"]
        assert c.cmd(b"STARTTLS") == REPLY["tlsready"]
        c.starttls()
        assert c.cmd(b"MAIL FROM:<a@b.test>") == REPLY["submission"]
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0good")) == REPLY["authok"]
        c.close()


def test_swaks_auth(mode, tmp_path, certfile):
    home, log, srv = submission(mode, tmp_path, certfile)
    with srv as srv:
        base = ["swaks", "-s", "127.0.0.1", "-p", str(srv.port), "-t", "someone@somewhere.net",
                "-f", "test@test.net", "--ehlo", "test"]
        r = subprocess.run(base + ["-tls", "--auth", "LOGIN", "--auth-user", "test@test.net",
                                   "--auth-password", "good"], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout
        assert b"<~  235 ok, go ahead (#2.0.0)" in r.stdout
        r = subprocess.run(base + ["-a", "PLAIN", "-au", "test@test.net", "-ap", "good"],
                           capture_output=True, timeout=60)
        assert r.returncode != 0
        assert b"did not advertise authentication" in r.stderr and b"AUTH" not in r.stdout
    assert len(queued(home)) == 1


def test_auth_after_cdb_lookup(mode, tmp_path):
    """morercpthosts.cdb open on a low fd does not disturb fd 3 of the
    checkpassword child, nor fd 4 of qmail-queue."""
    from qtools.lib import cdb
    home = make_home(tmp_path)
    mk = cdb.make(tmp_path / "qmail" / "control" / "morercpthosts.cdb")
    mk.add(b"more.test", b"")
    mk.finish()
    prog, log = checkpassword(tmp_path)
    with server(mode, home, tmp_path, args=(prog, "true"), SMTPAUTH="", FORCETLS="0") as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        assert c.cmd(b"RCPT TO:<u@more.test>") == REPLY["ok"]
        c.cmd(b"DATA")
        c.send(b"\r\n.\r\n")
        assert c.reply().startswith(b"250 ok ")
        assert c.cmd(b"AUTH PLAIN " + B(b"\0u\0good")) == REPLY["authok"]
        c.close()
    assert log.read_bytes() == b"u\0good\0|"
