"""The seed's submission with AUTH, end to end: `tcpserver ... qmail-smtpd
vchkpw /bin/true` on 127.0.0.1 with a user made by vadduser, SMTPAUTH="!"
and FORCETLS as in the seed, STARTTLS then AUTH LOGIN / PLAIN (raw bytes and
smtplib), against both stores and in both elision modes; and the faults: a
hung or dead MariaDB, an unreadable vpasswd.cdb -> vchkpw exits 111 ->
`454 4.7.0 temporary authentication failure`, never 535."""
import base64
import os
import re
import signal
import smtplib
import ssl

from smtpdtools import certfile, connect, make_home, queued, server, smtpd_env  # noqa: F401
from vpoptools import (VHome, mariadb, mariadb_template, private_mariadb,  # noqa: F401
                       vhome)

from qtools.qmail.smtpd import REPLY

B = lambda s: base64.b64encode(s)    # noqa: E731
DOM = "test.net"
USER = b"test@test.net"
PASS = b"s3cret pass"


def setup(vh, tmp_path, certfile):
    home = make_home(tmp_path, cert=certfile, databytes="3000000\n")
    assert home == vh.qmail
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", USER.decode(), PASS.decode())
    return home


def submission(vh, mode, tmp_path, **extra):
    env = smtpd_env(mode, vh.qmail, SMTPAUTH="!", VPOPMAILHOME=vh.vpop,
                    VPOPMAIL_AUTH=vh.backend, QTOOLS_MYSQL_TIMEOUT="1", **extra)
    return server(mode, vh.qmail, tmp_path, args=("vchkpw", "/bin/true"), env=env)


def tls(srv):
    c = connect(srv)
    assert c.cmd(b"STARTTLS") == b"220 ready for tls\r\n"
    c.starttls()
    return c


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def test_seed_transcript_with_vadduser_user(vhome, mode, tmp_path, certfile):
    home = setup(vhome, tmp_path, certfile)
    with submission(vhome, mode, tmp_path) as srv:
        c = connect(srv)
        assert c.cmd(b"EHLO test") == (b"250-mx.example.test\r\n250-STARTTLS\r\n"
                                       b"250-PIPELINING\r\n250-SMTPUTF8\r\n250-8BITMIME\r\n"
                                       b"250 SIZE 3000000\r\n")
        assert c.cmd(b"mail from:someone@somewhere.net") == \
            b"530 Authorization required (#5.7.1) \r\n"
        assert c.cmd(b"AUTH LOGIN") == b"538 auth not available without TLS (#5.3.3)\r\n"
        assert c.cmd(b"STARTTLS") == b"220 ready for tls\r\n"
        c.starttls()
        assert c.cmd(b"EHLO test").endswith(b"250-SIZE 3000000\r\n250 AUTH LOGIN PLAIN\r\n")
        assert c.cmd(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert c.cmd(b"dGVzdEB0ZXN0Lm5ldA==") == b"334 UGFzc3dvcmQ6\r\n"
        assert c.cmd(B(b"wrong")) == b"535 authentication failed (#5.7.1)\r\n"
        assert c.cmd(b"AUTH LOGIN " + B(USER)) == b"334 UGFzc3dvcmQ6\r\n"
        assert c.cmd(B(PASS)) == b"235 ok, go ahead (#2.0.0)\r\n"
        assert c.cmd(b"mail from:yourself@somedomain.net") == b"250 ok\r\n"
        assert c.cmd(b"rcpt to:someone@somewhere.net") == b"250 ok\r\n"
        assert c.cmd(b"data") == b"354 go ahead\r\n"
        c.send(b"subject: smtp-auth + tls test\r\n\r\nThis is the body.\r\n.\r\n")
        assert re.match(rb"250 ok \d+ qp \d+\r\n$", c.reply())
        assert c.cmd(b"quit") == b"221 mx.example.test\r\n"
        c.close()
        log = srv.log()
        port = srv.port
    (msg, env), = queued(home)
    assert env.endswith(b"Fyourself@somedomain.net\0Tsomeone@somewhere.net\0")
    assert b"(test@test.net)" in msg.split(b"\n")[1]
    # the service in vchkpw's log tag is the port when it is not a known one
    assert "vchkpw-%d: password fail test@test.net:127.0.0.1" % port in log
    assert "wrong" not in log and PASS.decode() not in log


def test_smtplib_plain_and_login(vhome, mode, tmp_path, certfile):
    home = setup(vhome, tmp_path, certfile)
    with submission(vhome, mode, tmp_path) as srv:
        for mech in ("PLAIN", "LOGIN"):
            s = smtplib.SMTP("127.0.0.1", srv.port, timeout=15)
            try:
                s.ehlo("client.test")
                s.starttls(context=ctx())
                s.ehlo("client.test")
                assert s.esmtp_features["auth"].strip() == "LOGIN PLAIN"
                s.user, s.password = USER.decode(), "bad"
                fn = s.auth_plain if mech == "PLAIN" else s.auth_login
                try:
                    s.auth(mech, fn, initial_response_ok=mech == "PLAIN")
                    raise AssertionError("bad password accepted")
                except smtplib.SMTPAuthenticationError as e:
                    assert e.smtp_code == 535
                s.password = PASS.decode()
                assert s.auth(mech, fn, initial_response_ok=mech == "PLAIN")[0] == 235
                s.sendmail("yourself@somedomain.net", ["far@away.test"],
                           b"Subject: via %s\r\n\r\nbody\r\n" % mech.encode())
                s.quit()
            finally:
                s.close()
    assert len(queued(home)) == 2


def _tempfail(srv):
    c = tls(srv)
    c.cmd(b"EHLO test")
    r = c.cmd(b"AUTH PLAIN " + B(b"\0" + USER + b"\0" + PASS))
    c.close()
    return r


def test_mariadb_hung_or_dead_is_454(private_mariadb, mode, tmp_path, certfile):
    vh = VHome(tmp_path, "mysql", private_mariadb)
    setup(vh, tmp_path, certfile)
    with submission(vh, mode, tmp_path) as srv:
        assert _tempfail(srv) == REPLY["authok"]
        os.kill(private_mariadb.proc.pid, signal.SIGSTOP)
        try:
            assert _tempfail(srv) == b"454 4.7.0 temporary authentication failure\r\n"
        finally:
            os.kill(private_mariadb.proc.pid, signal.SIGCONT)
        assert _tempfail(srv) == REPLY["authok"]
        private_mariadb.kill()
        assert _tempfail(srv) == b"454 4.7.0 temporary authentication failure\r\n"
        log = srv.log()
        port = srv.port
    assert "vchkpw-%d: temporary failure test@test.net: " % port in log
    assert "auth-tempfail type=plain user=<test@test.net>" in log


def test_unreadable_vpasswd_cdb_is_454(mode, tmp_path, certfile):
    vh = VHome(tmp_path, "cdb")
    setup(vh, tmp_path, certfile)
    idx = os.path.join(vh.domdir(DOM), "vpasswd.cdb")
    with submission(vh, mode, tmp_path) as srv:
        os.unlink(idx)
        os.mkdir(idx)
        assert _tempfail(srv) == b"454 4.7.0 temporary authentication failure\r\n"
        os.rmdir(idx)
        assert _tempfail(srv) == REPLY["authok"]            # vpasswd read instead
