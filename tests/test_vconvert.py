"""vconvert between vpopmail's cdb files and its MySQL schema, in both
elision modes: a cdb installation (users with clear passwords, quotas, flag
bits, lastauth, aliases, limits, an alias domain) goes to MySQL and back
with identical vuserinfo/valias/vdominfo output and byte-identical vpasswd,
vchkpw authenticates the converted users on the other store, reruns change
nothing, and a database that is down or fails half-way gives 111 with the
source untouched."""
import hashlib
import hmac
import os

import pytest

from vpoptools import (VHome, chkpw, mariadb, mariadb_template, private_mariadb,  # noqa: F401
                       vhome)

DOM, OTHER, ALIAS = "example.test", "other.test", "alias.test"


def snapshot(top):
    """Every file below top: its content hash, mode and mtime (the source
    must not change at all)."""
    out = {}
    for root, dirs, files in os.walk(top):
        for n in files + dirs:
            p = os.path.join(root, n)
            st = os.lstat(p)
            h = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            out[p] = (h, st.st_mode, st.st_mtime_ns)
    return out


def populate(vh):
    open(os.path.join(vh.vpop, "etc", "clear-passwd"), "w").close()
    vh.ok("vadddomain", DOM, "pm pass")
    vh.ok("vadduser", "-c", "Joe User", "joe@" + DOM, "s3cret pw")
    vh.ok("vadduser", "ann@" + DOM, "ann's pw")
    vh.ok("vsetuserquota", "ann@" + DOM, "50M")
    vh.ok("vmoduser", "-w", "-u", "ann@" + DOM)                  # NO_WEBMAIL, NO_DIALUP
    assert chkpw(vh, b"joe@example.test\0s3cret pw\0", TCPREMOTEIP="10.1.2.3")[0] == 0
    vh.ok("valias", "-i", "&joe@" + DOM, "info@" + DOM)
    vh.ok("valias", "-i", "&ann@" + DOM, "info@" + DOM)
    vh.ok("valias", "-i", "|/usr/bin/true", "sales.team@" + DOM)
    with open(os.path.join(vh.domdir(DOM), ".qmailadmin-limits"), "w") as f:
        f.write("maxpopaccounts: 10\ndisable_imap\n")
    vh.ok("vaddaliasdomain", DOM, ALIAS)
    vh.ok("vadddomain", OTHER, "other pm")


def views(vh, backend):
    """What the operator tools show, on one store."""
    kw = {"VPOPMAIL_AUTH": backend}
    return {
        "users": vh.ok("vuserinfo", "-D", DOM, **kw),
        "other": vh.ok("vuserinfo", "-D", OTHER, **kw),
        "clear": vh.ok("vuserinfo", "-C", "joe@" + DOM, **kw),
        "aliases": vh.ok("valias", DOM, **kw),
        "dominfo": vh.ok("vdominfo", DOM, **kw),
    }


def tables(vh):
    return {
        "vpopmail": vh.rows("SELECT * FROM vpopmail ORDER BY pw_domain, pw_name"),
        "valias": vh.rows("SELECT alias, domain, valias_line FROM valias ORDER BY id"),
        "lastauth": vh.rows("SELECT * FROM lastauth ORDER BY domain, user"),
        "limits": vh.rows("SELECT * FROM limits ORDER BY domain"),
        "aliasdomains": vh.rows("SELECT * FROM aliasdomains"),
    }


@pytest.fixture
def inst(mariadb, tmp_path):
    """A cdb installation that also has a vpopmail.mysql to convert into."""
    vh = VHome(tmp_path, "cdb")
    vh.use_db(mariadb)
    populate(vh)
    return vh


ALL_OUT = ("alias.test is an alias of example.test.\n"
           "converting example.test...    done\n"
           "converting other.test...    done\n")


def test_round_trip(inst, mode):
    vh = inst
    d = vh.domdir(DOM)
    before = views(vh, "cdb")
    assert "disable" not in before["users"]
    assert "imap access closed (*)" in before["users"]         # the limits file applies
    vpasswd = open(os.path.join(d, "vpasswd"), "rb").read()
    assert b":s3cret pw\n" in vpasswd                           # clear passwords kept
    aliasfiles = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)
                  if n.startswith(".qmail-") and n != ".qmail-default"}
    assert sorted(aliasfiles) == [".qmail-info", ".qmail-sales:team"]
    cdb_before = snapshot(vh.vpop)

    r = vh.run("vconvert", "-c", "-m", mode=mode)
    assert (r.returncode, r.stdout, r.stderr) == (0, ALL_OUT, "")
    assert snapshot(vh.vpop) == cdb_before                      # the source is untouched
    assert views(vh, "mysql") == before
    t = tables(vh)
    assert ("ann", DOM) in [(x[0], x[1]) for x in t["vpopmail"]]
    assert t["valias"] == (("info", DOM, "&joe@" + DOM), ("info", DOM, "&ann@" + DOM),
                           ("sales.team", DOM, "|/usr/bin/true"))
    assert t["aliasdomains"] == ((ALIAS, DOM),)
    lim = vh.rows("SELECT maxpopaccounts, disable_imap, disable_pop FROM limits "
                  "WHERE domain = %s", (DOM,))
    assert lim == ((10, 1, 0),)
    # the hashed-directory counters (bigdir) go along
    dc = open(os.path.join(d, ".dir-control"), "rb").read()
    assert vh.rows("SELECT domain, cur_users, the_dir FROM dir_control ORDER BY domain") == (
        ("dom_%d" % os.stat(vh.vpop).st_uid, 2, ""), (DOM, 3, ""), (OTHER, 1, ""))

    # vchkpw on the MySQL store: crypted passwords, CRAM-MD5 with the clear one
    on_mysql = vh.env(mode, VPOPMAIL_AUTH="mysql")
    assert chkpw(vh, b"joe@example.test\0s3cret pw\0", env=on_mysql)[0] == 0
    assert chkpw(vh, b"ann@example.test\0ann's pw\0", env=on_mysql)[0] == 0
    assert chkpw(vh, b"joe@alias.test\0s3cret pw\0", env=on_mysql)[0] == 0
    assert chkpw(vh, b"joe@example.test\0wrong\0", env=on_mysql)[0] == 3
    chal = b"<1.2@mx.example.test>"
    resp = hmac.new(b"pm pass", chal, "md5").hexdigest().encode()
    assert chkpw(vh, b"postmaster@example.test\0" + resp + b"\0" + chal + b"\0",
                 env=on_mysql)[0] == 0

    # a rerun changes nothing
    r = vh.run("vconvert", "-c", "-m", mode=mode)
    assert (r.returncode, r.stdout) == (0, ALL_OUT)
    assert tables(vh) == t

    # back: the cdb files are gone, MySQL has everything
    for n in ["vpasswd", "vpasswd.cdb", ".qmailadmin-limits", ".dir-control"] + list(aliasfiles):
        os.unlink(os.path.join(d, n))
    os.unlink(os.path.join(vh.domdir(OTHER), "vpasswd"))
    os.unlink(os.path.join(vh.domdir(OTHER), "vpasswd.cdb"))
    r = vh.run("vconvert", "-m", "-c", mode=mode)
    assert (r.returncode, r.stdout, r.stderr) == (0, ALL_OUT, "")
    assert views(vh, "cdb") == before
    assert open(os.path.join(d, "vpasswd"), "rb").read() == vpasswd
    assert open(os.path.join(d, ".dir-control"), "rb").read() == dc
    for n, data in aliasfiles.items():
        assert open(os.path.join(d, n), "rb").read() == data
        assert oct(os.stat(os.path.join(d, n)).st_mode & 0o777) == "0o600"
    assert tables(vh) == t                                      # MySQL untouched
    cdb_after = snapshot(vh.vpop)
    r = vh.run("vconvert", "-m", "-c", mode=mode)
    assert r.returncode == 0
    after_rerun = snapshot(vh.vpop)
    assert {p: v[0] for p, v in after_rerun.items()} == {p: v[0] for p, v in cdb_after.items()}
    assert chkpw(vh, b"joe@example.test\0s3cret pw\0", mode=mode)[0] == 0
    assert chkpw(vh, b"ann@example.test\0ann's pw\0", mode=mode)[0] == 0


def test_mirror_and_named_domains(inst):
    vh = inst
    vh.ok("vconvert", "-c", "-m")
    vh.ok("vdeluser", "ann@" + DOM)                             # gone from cdb
    vh.ok("valias", "-d", "sales.team@" + DOM)
    r = vh.run("vconvert", "-c", "-m", DOM)
    assert (r.returncode, r.stdout) == (0, "converting example.test done\n")
    names = [x[0] for x in vh.rows("SELECT pw_name FROM vpopmail WHERE pw_domain = %s "
                                   "ORDER BY pw_name", (DOM,))]
    assert names == ["joe", "postmaster"]
    assert vh.rows("SELECT DISTINCT alias FROM valias") == (("info",),)
    r = vh.run("vconvert", "-d", "-c", "-m", OTHER, "nowhere.test")
    assert r.returncode == 100
    assert r.stdout == ("converting other.test postmaster\ndone\n"
                        "converting nowhere.test domain conversion failed\n")
    assert r.stderr == "vconvert: warning: nowhere.test: Domain does not exist\n"


USAGE = ("vconvert: usage: vconvert -c -m | -m -c | -e -c|-m | -p file -c|-m | -S "
         "[-d] [-v] [domain ...]\n")


def test_usage_and_unknown(inst):
    vh = inst
    for argv in (("vconvert",), ("vconvert", "-c"), ("vconvert", "-x", "-c", "-m"),
                 ("vconvert", "-e"), ("vconvert", "-p")):
        r = vh.run(*argv)
        assert r.returncode == 100 and r.stderr.endswith(USAGE), r
    for argv in (("-c", "-c"), ("-e", "-e"), ("-e", "-p", "f"), ("-p", "f", "-e"),
                 ("-m", "-e"), ("-c", "-p", "f")):
        r = vh.run("vconvert", *argv)
        assert (r.returncode, r.stdout) == (100, "unknown conversion\n"), argv
    r = vh.run("vconvert", "-v", "-c", "-m", OTHER)
    assert r.returncode == 0 and r.stdout.startswith("version: ")


def store_opt(vh):
    return "-m" if vh.backend == "mysql" else "-c"


def test_sqwebmail_passwords(vhome):
    """-S: Maildir/sqwebmail-pass = TAB hash NL for every user (vsqwebmail_pass)."""
    vh = vhome
    vh.ok("vadddomain", DOM, "pm pass")
    vh.ok("vadduser", "joe@" + DOM, "joe pw")
    r = vh.run("vconvert", "-S", DOM)
    assert (r.returncode, r.stdout) == (0, "converting example.test done\n")
    for user in ("joe", "postmaster"):
        crypted = vh.ok("vuserinfo", "-p", "%s@%s" % (user, DOM)).strip()
        path = os.path.join(vh.domdir(DOM), user, "Maildir", "sqwebmail-pass")
        with open(path, "rb") as f:
            assert f.read() == b"\t" + crypted.encode() + b"\n"
        st = os.stat(path)
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, os.stat(vh.domdir(DOM)).st_uid)
    r = vh.run("vconvert", "-S", "-d", "nowhere.test")
    assert r.returncode == 100 and r.stdout == "converting nowhere.test domain conversion failed\n"


def test_passwd_file(vhome, tmp_path):
    """-p FILE: user:crypted lines become users with those hashes (they log
    in with their old passwords), sqwebmail-pass without a newline; the
    first user that cannot be added ends the domain with `Error: ...`."""
    from test_vchkpw import _crypt
    vh = vhome
    vh.ok("vadddomain", DOM, "pm pass")
    ann, bob = _crypt("ann pw", "$6$annsalt"), _crypt("bob pw", "$1$bobsalt$")
    pf = tmp_path / "passwd"
    pf.write_text("ann:%s\n\n  Bob\t%s:extra\nlonely\n" % (ann, bob))
    r = vh.run("vconvert", "-p", str(pf), store_opt(vh), DOM)
    assert (r.returncode, r.stdout, r.stderr) == (0, "converting example.test done\n", "")
    assert vh.ok("vuserinfo", "-p", "ann@" + DOM).strip() == ann
    assert vh.ok("vuserinfo", "-p", "bob@" + DOM).strip() == bob
    assert chkpw(vh, b"bob@example.test\0bob pw\0")[0] == 0
    assert chkpw(vh, b"ann@example.test\0ann pw\0")[0] == 0
    with open(os.path.join(vh.domdir(DOM), "ann", "Maildir", "sqwebmail-pass"), "rb") as f:
        assert f.read() == b"\t" + ann.encode()
    # ann exists now: vadduser refuses her, and the domain stops there
    pf.write_text("ann:%s\ncarl:%s\n" % (ann, bob))
    r = vh.run("vconvert", "-p", str(pf), store_opt(vh), DOM)
    assert r.returncode == 100
    assert r.stdout == ("converting example.test Error: Username exists\n"
                        "domain conversion failed\n")
    assert vh.run("vuserinfo", "carl@" + DOM).returncode != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="/etc/shadow and useradd need root")
def test_system_accounts(vhome):
    """-e: an account of /etc/passwd with a hash in /etc/shadow becomes a
    user with that hash; locked and password-less accounts are skipped."""
    import shutil
    import subprocess
    if not shutil.which("useradd"):
        pytest.skip("no useradd")
    vh = vhome
    vh.ok("vadddomain", DOM, "pm pass")
    from test_vchkpw import _crypt
    name = "qtvc%d" % os.getpid()
    h = _crypt("sys pw", "$6$syssalt")
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-c", "Sys User",
                    "-p", h, name], check=True, timeout=60)
    try:
        r = vh.run("vconvert", "-e", store_opt(vh), DOM)
    finally:
        subprocess.run(["userdel", name], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("converting example.test ")
    assert r.stdout.endswith("done\n")
    assert "skipping daemon\n" in r.stdout           # '*' in /etc/shadow
    assert vh.ok("vuserinfo", "-p", "%s@%s" % (name, DOM)).strip() == h
    assert vh.ok("vuserinfo", "-c", "%s@%s" % (name, DOM)).strip() == "Sys User"
    assert chkpw(vh, b"%s@example.test\0sys pw\0" % name.encode())[0] == 0


def test_database_down_leaves_the_source(private_mariadb, tmp_path, mode):
    vh = VHome(tmp_path, "cdb")
    vh.use_db(private_mariadb)
    populate(vh)
    before = snapshot(vh.vpop)
    private_mariadb.kill()
    r = vh.run("vconvert", "-c", "-m", mode=mode)
    assert r.returncode == 111
    assert r.stdout == ("alias.test is an alias of example.test.\n"
                        "converting example.test...    domain conversion failed\n")
    assert r.stderr.startswith("vconvert: fatal: unable to convert example.test: ")
    assert snapshot(vh.vpop) == before
    r = vh.run("vconvert", "-m", "-c", mode=mode)                # MySQL as the source
    assert r.returncode == 111 and "vconvert: fatal: " in r.stderr
    assert snapshot(vh.vpop) == before


def test_failure_half_way_then_rerun(inst):
    """The database refuses the alias step (a foreign `valias` table): the
    users are in, vconvert stops with 111, the source is untouched; once
    the table is fixed a rerun completes."""
    vh = inst
    vh.rows("CREATE TABLE valias (something INT)")
    before = snapshot(vh.vpop)
    r = vh.run("vconvert", "-c", "-m")
    assert r.returncode == 111
    assert r.stdout.endswith("converting example.test...    domain conversion failed\n")
    assert "vconvert: fatal: unable to convert example.test: MySQL: " in r.stderr
    assert snapshot(vh.vpop) == before
    vh.rows("DROP TABLE valias")
    r = vh.run("vconvert", "-c", "-m")
    assert (r.returncode, r.stdout) == (0, ALL_OUT)
    assert views(vh, "mysql") == views(vh, "cdb")
