"""vchkpw through the checkpassword interface (descriptor 3), against both
stores and in both elision modes: login forms, vpopmail's exit codes, the
environment it sets, flags by protocol (TCPLOCALPORT), CRAM-MD5 with a clear
password, hashes as an existing vpopmail wrote them, lastauth, and the
temporary failures (111) that must never look like a wrong password."""
import hmac
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from helpers import qenv
from vpoptools import (VHome, chkpw, mariadb, mariadb_template, private_mariadb,  # noqa: F401
                       vhome)

DOM = "example.test"


@pytest.fixture
def users(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadduser", "joe@" + DOM, "s3cret pw")
    return vhome


def test_success_runs_the_program_with_its_environment(users, mode):
    code, out, err = chkpw(users, b"Joe@Example.TEST\0s3cret pw\0", ("/usr/bin/env",),
                           mode=mode, TCPLOCALPORT="587", TCPREMOTEIP="10.9.8.7")
    assert code == 0, err
    env = dict(x.split("=", 1) for x in out.decode().splitlines())
    assert env["USER"] == "joe"
    assert env["HOME"] == os.path.join(users.domdir(DOM), "joe")
    assert env["SHELL"] == "NOLOGIN"
    assert env["VPOPUSER"] == "joe@example.test"
    assert err == b""
    out = users.ok("vuserinfo", "-l", "joe@" + DOM).splitlines()
    assert out[1] == "last auth ip: 10.9.8.7"


def test_login_forms(users, mode):
    assert chkpw(users, b"joe%example.test\0s3cret pw\0", mode=mode)[0] == 0
    assert chkpw(users, b"joe/example.test\0s3cret pw\0", mode=mode)[0] == 0
    assert chkpw(users, b"joe\0s3cret pw\0", mode=mode)[0] == 3      # no default domain
    assert chkpw(users, b"joe\0s3cret pw\0", mode=mode, VPOPMAIL_DOMAIN=DOM)[0] == 0
    with open(os.path.join(users.vpop, "etc", "defaultdomain"), "w") as f:
        f.write(DOM + "\n")
    assert chkpw(users, b"JOE\0s3cret pw\0", mode=mode)[0] == 0
    # the program's exit status is vchkpw's, as it replaces vchkpw
    assert chkpw(users, b"joe\0s3cret pw\0", ("false",), mode=mode, TCPLOCALPORT="25")[0] == 1


@pytest.mark.parametrize("data,code,log", [
    (b"joe@example.test\0wrong\0", 3, b"vchkpw-smtp: password fail joe@example.test:1.2.3.4\n"),
    (b"nobody@example.test\0x\0", 3,
     b"vchkpw-smtp: vpopmail user not found nobody@example.test:1.2.3.4\n"),
    (b"joe@nowhere.test\0x\0", 3,
     b"vchkpw-smtp: vpopmail user not found joe@nowhere.test:1.2.3.4\n"),
    (b"\0x\0", 12, b"vchkpw-smtp: null user name given :1.2.3.4\n"),
    (b"joe@example.test\0\0", 13, b"vchkpw-smtp: null password given joe@example.test:1.2.3.4\n"),
    (b"joe@example.test", 13, None),
    (b"", 12, None),
    (b"jo e@example.test\0x\0", 20, None),
    (b"jo:e@example.test\0x\0", 20, None),
    (b"joe@exa_mple.test\0x\0", 20, None),
    (b"joe@example.test/../..\0x\0", 20, None),
    (b"../../etc/passwd@example.test\0x\0", 20, None),
    (b"\xc3\xa9@example.test\0x\0", 20, None),
    (b"j\x01oe@example.test\0x\0", 20, None),
    (b"a" * 200 + b"@example.test\0x\0", 3, None),
    (b"joe@" + b"d" * 200 + b".test\0x\0", 3, None),
    (b"a" * 600, 13, None),                                    # only 512 bytes are read
    (b"joe@example.test\0\0s3cret pw\0", 13, None),
])
def test_refusals(users, data, code, log):
    got, out, err = chkpw(users, data, ("true",), TCPREMOTEIP="1.2.3.4")
    assert got == code, err
    assert out == b""
    if log is not None:
        assert err == log
    assert b"s3cret" not in err and b"wrong" not in err


def test_flags_by_protocol(users, mode, tmp_path):
    imap = tmp_path / "imapd"
    imap.symlink_to("/bin/true")
    users.ok("vmoduser", "-s", "joe@" + DOM)
    ok = b"joe@example.test\0s3cret pw\0"
    code, _, err = chkpw(users, ok, mode=mode, TCPLOCALPORT="25", TCPREMOTEIP="1.2.3.4")
    assert (code, err) == (1, b"vchkpw-smtp: smtp access denied joe@example.test:1.2.3.4\n")
    assert chkpw(users, ok, ("true",), mode=mode, TCPLOCALPORT="9999")[0] == 1     # "true"
    assert chkpw(users, ok, ("/bin/true",), mode=mode, TCPLOCALPORT="110")[0] == 0
    users.ok("vmoduser", "-x", "-p", "-i", "joe@" + DOM)
    assert chkpw(users, ok, mode=mode, TCPLOCALPORT="587")[0] == 0
    assert chkpw(users, ok, ("true",), mode=mode, TCPLOCALPORT="995")[0] == 1
    assert chkpw(users, ok, (str(imap),), mode=mode, TCPLOCALPORT="12345")[0] == 1
    users.ok("vmoduser", "-x", "-w", "joe@" + DOM)
    assert chkpw(users, ok, ("true",), TCPLOCALPORT="143", TCPREMOTEIP="1.2.3.4")[0] == 0
    assert chkpw(users, ok, ("true",), TCPLOCALPORT="143", TCPREMOTEIP="127.0.0.1")[0] == 1
    # a domain-wide limit
    users.ok("vmoduser", "-x", "joe@" + DOM)
    with open(os.path.join(users.domdir(DOM), ".qmailadmin-limits"), "w") as f:
        f.write("disable_smtp\n")
    assert chkpw(users, ok, TCPLOCALPORT="25")[0] == 1
    users.ok("vmoduser", "-o", "joe@" + DOM)                       # V_OVERRIDE
    assert chkpw(users, ok, TCPLOCALPORT="25")[0] == 0


def test_cram_md5_needs_a_clear_password(users, mode):
    chal = b"<12345.1700000000@mx.example.test>"
    good = hmac.new(b"s3cret pw", chal, "md5").hexdigest().encode()
    assert chkpw(users, b"joe@example.test\0" + good + b"\0" + chal + b"\0", mode=mode)[0] == 3
    open(os.path.join(users.vpop, "etc", "clear-passwd"), "w").close()
    users.ok("vpasswd", "joe@" + DOM, "s3cret pw")
    assert users.ok("vuserinfo", "-C", "joe@" + DOM) == "s3cret pw\n"
    code, _, err = chkpw(users, b"joe@example.test\0" + good + b"\0" + chal + b"\0", mode=mode)
    assert code == 0 and b"(CRAM-MD5) login success" in err
    bad = hmac.new(b"other", chal, "md5").hexdigest().encode()
    assert chkpw(users, b"joe@example.test\0" + bad + b"\0" + chal + b"\0", mode=mode)[0] == 3
    # +cram modes send an empty challenge with LOGIN/PLAIN: the crypt check
    assert chkpw(users, b"joe@example.test\0s3cret pw\0\0", mode=mode)[0] == 0


def _crypt(word, salt):
    """A crypt(3) for the test's own hashes: the crypt module (crypt_r on
    3.13), else libcrypt through ctypes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
    except ImportError:
        try:
            import crypt_r as crypt
        except ImportError:
            from qtools.vpopmail import store
            return store.libcrypt_crypt()(word, salt)
    return crypt.crypt(word, salt)


@pytest.mark.parametrize("salt", ["$1$abcdefgh$", "$5$rounds=5000$saltsaltsaltsalt$",
                                  "$6$abcdefgh$", "ab", "{CRYPT}$6$abcdefgh$"])
def test_hashes_vpopmail_wrote(users, salt):
    """An existing installation's hashes: MD5, SHA-256, SHA-512 (8-character
    salt, as mkpasswd3 makes them), DES, with a {SCHEME} prefix."""
    scheme = ""
    if salt.startswith("{"):
        scheme, salt = "{CRYPT}", salt[7:]
    h = scheme + _crypt("old pw", salt)
    users.ok("vmoduser", "-e", h, "joe@" + DOM)
    assert users.ok("vuserinfo", "-p", "joe@" + DOM) == h + "\n"
    assert chkpw(users, b"joe@example.test\0old pw\0")[0] == 0
    assert chkpw(users, b"joe@example.test\0old pX\0")[0] == 3


def test_empty_hash_is_15(users):
    users.ok("vmoduser", "-e", "", "joe@" + DOM)
    if users.ok("vuserinfo", "-p", "joe@" + DOM) == "\n":
        assert chkpw(users, b"joe@example.test\0x\0")[0] == 15


def test_no_descriptor_3(users):
    p = subprocess.run(["vchkpw", "true"], capture_output=True, env=users.env(), timeout=30)
    assert p.returncode == 11 and b"unable to read descriptor 3" in p.stderr


def test_cdb_store_unreadable_is_111(mode, tmp_path):
    vh = VHome(tmp_path, "cdb")
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    ok = b"joe@example.test\0pw\0"
    idx = os.path.join(vh.domdir(DOM), "vpasswd.cdb")
    os.rename(idx, idx + ".save")
    assert chkpw(vh, ok, mode=mode)[0] == 0                     # falls back to vpasswd
    os.mkdir(idx)                                               # EISDIR on read
    code, _, err = chkpw(vh, ok, mode=mode)
    assert code == 111 and b"temporary failure" in err
    os.rmdir(idx)
    with open(idx, "wb") as f:
        f.write(b"\1" * 100)                                     # a truncated cdb
    assert chkpw(vh, ok, mode=mode)[0] == 111
    os.rename(idx + ".save", idx)
    ucdb = os.path.join(vh.qmail, "users", "cdb")
    os.rename(ucdb, ucdb + ".save")
    os.mkdir(ucdb)
    assert chkpw(vh, ok, mode=mode)[0] == 111
    os.rmdir(ucdb)
    assert chkpw(vh, ok, mode=mode)[0] == 3                    # no users/cdb: no domain


def test_mysql_down_is_111(private_mariadb, mode, tmp_path):
    vh = VHome(tmp_path, "mysql", private_mariadb)
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    ok = b"joe@example.test\0pw\0"
    assert chkpw(vh, ok, mode=mode)[0] == 0
    os.kill(private_mariadb.proc.pid, signal.SIGSTOP)           # hung
    try:
        t = time.monotonic()
        code, _, err = chkpw(vh, ok, mode=mode, QTOOLS_MYSQL_TIMEOUT="1")
        assert code == 111 and b"temporary failure" in err, err
        assert time.monotonic() - t < 10
        r = vh.run("vuserinfo", "joe@" + DOM, QTOOLS_MYSQL_TIMEOUT="1")
        assert r.returncode == 111
        assert r.stdout == "Error: no authentication database connection\n"
    finally:
        os.kill(private_mariadb.proc.pid, signal.SIGCONT)
    assert chkpw(vh, ok, mode=mode)[0] == 0
    private_mariadb.kill()                                      # gone: connection refused
    code, _, err = chkpw(vh, ok, mode=mode)
    assert code == 111 and b"temporary failure" in err
    assert chkpw(vh, b"nobody@example.test\0pw\0", mode=mode)[0] == 111
    assert vh.run("vadduser", "new@" + DOM, "pw").returncode == 111


def test_mysql_socket_and_per_domain_tables(mariadb, tmp_path):
    """The socket form of vpopmail.mysql, and a build without MANY_DOMAINS
    (one table per domain, dots and dashes as '_')."""
    vh = VHome(tmp_path, "mysql")
    vh.use_db(mariadb, tcp=False)
    env = vh.env(VPOPMAIL_MANY_DOMAINS="0")
    vh.ok("vadddomain", "my-dom.test", "pmpass", env=env)
    vh.ok("vadduser", "kim@my-dom.test", "pw", env=env)
    rows = vh.rows("SELECT pw_name, pw_dir FROM my_dom_test ORDER BY pw_name")
    assert [r[0] for r in rows] == ["kim", "postmaster"]
    assert chkpw(vh, b"kim@my-dom.test\0pw\0", env=env)[0] == 0
    assert chkpw(vh, b"kim@my-dom.test\0px\0", env=env)[0] == 3


def test_existing_mysql_installation_without_clear_column(mariadb, tmp_path):
    """A table made by a vpopmail built without CLEAR_PASS, rows written
    by hand as vmysql.c writes them."""
    vh = VHome(tmp_path, "mysql", mariadb)
    vh.ok("vadddomain", DOM, "pmpass")
    vh.rows("DROP TABLE vpopmail")
    vh.rows("CREATE TABLE vpopmail (pw_name VARCHAR(64) NOT NULL, pw_domain VARCHAR(96) "
            "NOT NULL, pw_passwd VARCHAR(128), pw_uid INT, pw_gid INT, pw_gecos VARCHAR(64), "
            "pw_dir VARCHAR(160), pw_shell VARCHAR(20), PRIMARY KEY (pw_name, pw_domain))")
    vh.rows("INSERT INTO vpopmail VALUES ('old', %s, %s, 0, 0, 'Old', '/nonexistent/old', "
            "'NOQUOTA')", (DOM, _crypt("oldpw", "$1$saltsalt$")))
    code, _, err = chkpw(vh, b"old@example.test\0oldpw\0")
    assert code == 0, err
    vh.ok("vpasswd", "old@" + DOM, "newpw")
    assert chkpw(vh, b"old@example.test\0newpw\0")[0] == 0
    out = vh.ok("vuserinfo", "-c", "-l", "old@" + DOM).splitlines()
    assert out[0] == "Old" and out[1].startswith("last auth: ")


def test_lean_import_and_preload(tmp_path):
    code = ("import sys; import qtools.vpopmail.vchkpw as v; "
            "bad = [m for m in ('pymysql', 'MySQLdb', 'crypt', 'crypt_r', 'hmac', 'docopt', "
            "'qtools.vpopmail.store', 'qtools.vpopmail.store_mysql') if m in sys.modules]; "
            "print(bad); v.preload(['vchkpw', '/bin/true']); "
            "print([m for m in ('pymysql', 'crypt', 'hmac', 'qtools.vpopmail.store_mysql') "
            "if m in sys.modules or m == 'crypt' and ('crypt_r' in sys.modules "
            "or 'ctypes' in sys.modules)])")
    vh = VHome(tmp_path, "mysql")
    with open(os.path.join(vh.vpop, "etc", "vpopmail.mysql"), "w") as f:
        f.write("127.0.0.1|1|u|p|d\n")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, env=qenv(VPOPMAILHOME=vh.vpop, VPOPMAIL_AUTH=None),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "['pymysql', 'crypt', 'hmac', "
                                             "'qtools.vpopmail.store_mysql']"]


def test_existing_cdb_installation(tmp_path, mode):
    """Files as an existing vpopmail left them: users/assign written by hand
    (users/cdb made by qmail-newu's rules), a vpasswd with hashed user
    directories and a clear-password field, no vpasswd.cdb yet."""
    from qtools.vpopmail import admin
    vh = VHome(tmp_path, "cdb")
    d = vh.domdir("old.test")
    os.makedirs(os.path.join(d, "0", "ann", "Maildir"))
    os.makedirs(os.path.join(vh.qmail, "users"))
    with open(os.path.join(vh.qmail, "users", "assign"), "w") as f:
        f.write("=root:root:0:0:/root:::\n+old.test-:old.test:89:89:%s:-::\n"
                "+alias.test-:old.test:89:89:%s:-::\n.\n" % (d, d))
    saved = dict(os.environ)
    os.environ["QMAILHOME"] = vh.qmail
    try:
        admin.update_newu()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    with open(os.path.join(d, "vpasswd"), "w") as f:
        f.write("ann:%s:1:0:Ann:%s/0/ann:NOQUOTA:annpw\n"
                "bo:%s:1:0:Bo:%s/0/bo:5242880S\n"
                % (_crypt("annpw", "$1$saltsalt$"), d, _crypt("bopw", "xy"), d))
    assert chkpw(vh, b"ann@old.test\0annpw\0", mode=mode)[0] == 0
    assert chkpw(vh, b"ann@alias.test\0annpw\0", mode=mode)[0] == 0     # alias domain
    assert chkpw(vh, b"bo@old.test\0bopw\0", mode=mode)[0] == 0
    assert chkpw(vh, b"root@old.test\0x\0", mode=mode)[0] == 3
    out = vh.ok("vuserinfo", "-d", "-q", "-C", "bo@alias.test").splitlines()
    assert out == ["", "%s/0/bo" % d, "5242880S"]
    vh.ok("vpasswd", "bo@old.test", "newpw")                # rewrites vpasswd + its cdb
    lines = open(os.path.join(d, "vpasswd")).read().splitlines()
    assert lines[0].startswith("ann:$1$saltsalt$") and lines[0].endswith(":NOQUOTA:annpw")
    assert os.path.exists(os.path.join(d, "vpasswd.cdb"))
    assert chkpw(vh, b"bo@old.test\0newpw\0", mode=mode)[0] == 0
    assert chkpw(vh, b"ann@old.test\0annpw\0", mode=mode)[0] == 0


def test_libcrypt_through_ctypes_is_the_crypt_module():
    """Where neither crypt_r nor the crypt module exists (Python 3.13 without
    a compiler for crypt-r), qtools calls libcrypt's crypt_r() through
    ctypes: the same strings for every scheme vpopmail writes, the same "*0"
    for a salt libcrypt refuses."""
    from qtools.vpopmail import store as S
    c = S.libcrypt_crypt()
    ref = S.crypt_function()
    assert ref is not c
    for salt in ("$6$abcdefgh", "$6$rounds=5000$saltsaltsaltsalt", "$5$abc", "$1$saltsalt$",
                 "xy", "*", "", "$y$j9T$abcdefghijklmnopqrstuv"):
        for word in ("pass word", "", "p\u00e4ss"):
            assert c(word, salt) == ref(word, salt), (word, salt)
    with pytest.raises(ValueError):
        c("a\0b", "xy")
