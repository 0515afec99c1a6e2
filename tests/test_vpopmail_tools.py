"""vpopmail's operator tools against both stores (vhome: cdb and mysql):
vadddomain/vdeldomain with everything they do to qmail (users/assign and
qmail-newu's users/cdb, rcpthosts, morercpthosts, virtualdomains, locals,
.qmail-default), vadduser/vdeluser/vpasswd/vsetuserquota/vmoduser,
vuserinfo's and vdominfo's exact lines, the on-disk and SQL formats an
existing vpopmail installation has, exit codes."""
import os
import re
import stat

from vpoptools import chkpw, mariadb, mariadb_template, vhome  # noqa: F401

from qtools.lib import cdb

DOM = "example.test"


def test_vadddomain_does_what_vpopmail_does(vhome):
    os.makedirs(os.path.join(vhome.qmail, "control"))
    with open(os.path.join(vhome.qmail, "control", "locals"), "w") as f:
        f.write("localhost\nexample.test\n")
    assert vhome.run("vadddomain", "Example.TEST", "pmpass").returncode == 0
    d = vhome.domdir(DOM)
    q = vhome.qmail
    assignline = "+%s-:%s:%d:%d:%s:-::" % (DOM, DOM, os.stat(vhome.vpop).st_uid,
                                           os.stat(vhome.vpop).st_gid, d)
    assert open(os.path.join(q, "users", "assign")).read() == assignline + "\n.\n"
    r = cdb.reader(os.path.join(q, "users", "cdb"))
    uid, gid = os.stat(vhome.vpop).st_uid, os.stat(vhome.vpop).st_gid
    # qmail-newu: key !dom- (no NUL for + lines), value without the last NUL
    assert r.get(b"!example.test-") == b"%s\0%d\0%d\0%s\0-\0" % (DOM.encode(), uid, gid,
                                                                d.encode())
    assert r.get(b"") == b"-"                           # the wildchars record
    assert open(os.path.join(q, "control", "rcpthosts")).read() == DOM + "\n"
    assert open(os.path.join(q, "control", "virtualdomains")).read() == "%s:%s\n" % (DOM, DOM)
    assert open(os.path.join(q, "control", "locals")).read() == "localhost\n"
    dq = open(os.path.join(d, ".qmail-default")).read()
    assert re.fullmatch(r"\| \S+/vdelivermail '' delete\n", dq), dq
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700          # umask 077, mode 0750
    for sub in ("new", "cur", "tmp"):
        assert os.path.isdir(os.path.join(d, "postmaster", "Maildir", sub))
    out = vhome.ok("vuserinfo", "-c", "-d", "postmaster@" + DOM)
    assert out == "Postmaster\n%s/postmaster\n" % d
    r = vhome.run("vadddomain", DOM, "x")
    assert (r.returncode, r.stdout) == (243, "Error: Domain already exists\n")


def test_vadddomain_catchall_and_bad_names(vhome):
    vhome.ok("vadddomain", "-e", "catch@else.test", DOM, "pw")
    dq = open(os.path.join(vhome.domdir(DOM), ".qmail-default")).read()
    assert dq.endswith("/vdelivermail '' catch@else.test\n")
    for bad in ("a.b", "nodot", "_under.test", "-lead.test", "trail.test-", "dou..ble.test", "../x.test",
                "a/b.test", "x" * 95 + ".test", "sp ace.test"):
        r = vhome.run("vadddomain", "--", bad, "pw")
        assert r.returncode in (244, 230), (bad, r.returncode, r.stdout)   # -12, -26
        assert r.stdout in ("Error: Invalid domain name\n",
                            "Error: domain name too long (max=96)\n"), r.stdout
    # .dir-control: the domains' hashed-directory counter (cdb store)
    assert sorted(set(os.listdir(os.path.join(vhome.vpop, "domains"))) - {".dir-control"}) \
        == [DOM]


def test_usage_errors(vhome):
    for argv in (("vadddomain",), ("vadduser",), ("vdeluser",), ("vdeldomain",),
                 ("vpasswd",), ("vsetuserquota", "a@b.test"), ("vdominfo", "-Z"),
                 ("vuserinfo",), ("vmoduser",)):
        r = vhome.run(*argv)
        assert r.returncode == 100, (argv, r.returncode, r.stdout, r.stderr)
        assert r.stderr.startswith(argv[0] + ": usage: "), r.stderr
    r = vhome.run("vmoduser", "-h")
    assert r.returncode == 0 and "-p NO_POP" in r.stdout


def test_vadduser_and_formats(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadduser", "-c", "Joe User", "Joe@Example.test", "secret 1")
    d = vhome.domdir(DOM)
    udir = os.path.join(d, "joe")
    for sub in ("new", "cur", "tmp"):
        assert os.path.isdir(os.path.join(udir, "Maildir", sub))
    if vhome.backend == "cdb":
        lines = open(os.path.join(d, "vpasswd")).read().splitlines()
        assert [x.split(":")[0] for x in lines] == ["joe", "postmaster"]    # sorted
        f = lines[0].split(":")
        assert len(f) == 7 and f[2:] == ["1", "0", "Joe User", udir, "NOQUOTA"]
        assert re.fullmatch(r"\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}", f[1])
        r = cdb.reader(os.path.join(d, "vpasswd.cdb"))
        assert r.get(b"joe") == lines[0].split(":", 1)[1].encode()
        assert stat.S_IMODE(os.stat(os.path.join(d, "vpasswd")).st_mode) == 0o600
    else:
        (row,) = vhome.rows("SELECT pw_name, pw_domain, pw_uid, pw_gid, pw_gecos, pw_dir, "
                            "pw_shell, pw_clear_passwd FROM vpopmail WHERE pw_name='joe'")
        assert row == ("joe", DOM, 0, 0, "Joe User", udir, "NOQUOTA", "")
        ((ip, ts),) = vhome.rows("SELECT remote_ip, timestamp FROM lastauth "
                                 "WHERE user='joe' AND domain=%s", (DOM,))
        assert ip == "0.0.0.0" and ts > 0
    assert chkpw(vhome, b"joe@example.test\0secret 1\0")[0] == 0
    r = vhome.run("vadduser", "joe@" + DOM, "x")
    assert (r.returncode, r.stdout) == (255, "Error: User already exists\n")
    r = vhome.run("vadduser", "joe@nowhere.test", "x")
    assert (r.returncode, r.stdout) == (255, "Error: Domain does not exist\n")
    r = vhome.run("vadduser", "joe", "x")
    assert r.returncode == 255 and r.stdout.startswith("You did not use a full email")


def test_vuserinfo_exact_lines(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadduser", "bob@" + DOM, "pw1")
    d = os.path.join(vhome.domdir(DOM), "bob")
    out = vhome.ok("vuserinfo", "bob@" + DOM).splitlines()
    assert out[0] == "name:   bob"
    assert out[1].startswith("passwd: $6$")
    assert out[2:] == ["clear passwd: ", "comment/gecos: bob",
                       "uid:    %d" % (1 if vhome.backend == "cdb" else 0), "gid:    0",
                       "flags:  0", "gecos: bob", "limits: No user limits set.",
                       "dir:       " + d, "quota:     NOQUOTA", "usage:     NOQUOTA",
                       out[12], "last auth: Never logged in"]
    assert out[12].startswith("account created: ")
    assert chkpw(vhome, b"bob@example.test\0pw1\0", TCPREMOTEIP="10.1.2.3")[0] == 0
    out = vhome.ok("vuserinfo", "-l", "bob@" + DOM).splitlines()
    assert out[0].startswith("last auth: ") and out[1] == "last auth ip: 10.1.2.3"
    r = vhome.run("vuserinfo", "nobody@" + DOM)
    assert (r.returncode, r.stdout) == (255, "no such user nobody@example.test\n")
    out = vhome.ok("vuserinfo", "-n", "-D", DOM)
    assert out == "-" * 42 + "\nbob\n" + "-" * 42 + "\npostmaster\n"


def test_vmoduser_flags_and_limits(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadduser", "al@" + DOM, "pw")
    vhome.ok("vmoduser", "-s", "-p", "-c", "Al", "al@" + DOM)
    out = vhome.ok("vuserinfo", "al@" + DOM).splitlines()
    assert "gid:    2050" in out and "flags:  2050" in out and "gecos: Al" in out
    i = out.index("limits:")
    assert out[i + 1:i + 3] == ["        pop access closed", "        smtp access is closed"]
    assert chkpw(vhome, b"al@example.test\0pw\0")[0] == 1                  # NO_SMTP
    # a domain limit adds a flag the user does not have: marked (*)
    with open(os.path.join(vhome.domdir(DOM), ".qmailadmin-limits"), "w") as f:
        f.write("maxpopaccounts: -1\ndisable_imap\n")
    out = vhome.ok("vuserinfo", "al@" + DOM).splitlines()
    assert "flags:  2058" in out and "        imap access closed (*)" in out
    assert out[out.index("dir:       " + vhome.domdir(DOM) + "/al") - 1] == \
        "        * = set by domain-wide limits"
    vhome.ok("vmoduser", "-x", "al@" + DOM)
    assert vhome.ok("vuserinfo", "-g", "al@" + DOM) == "0\n"
    assert chkpw(vhome, b"al@example.test\0pw\0")[0] == 0
    vhome.ok("vmoduser", "-C", "newpw", "al@" + DOM)
    assert chkpw(vhome, b"al@example.test\0newpw\0")[0] == 0
    r = vhome.run("vmoduser", "-p", "ghost@" + DOM)
    assert (r.returncode, r.stdout) == (255, "no such user ghost@example.test\n")


def test_vpasswd_vsetuserquota(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadduser", "cy@" + DOM, "old")
    vhome.ok("vpasswd", "cy@" + DOM, "new")
    assert chkpw(vhome, b"cy@example.test\0old\0")[0] == 3
    assert chkpw(vhome, b"cy@example.test\0new\0")[0] == 0
    r = vhome.run("vpasswd", "-r8", "cy@" + DOM)
    pw = r.stdout.split("Random password: ")[1].strip()
    assert len(pw) == 8 and chkpw(vhome, b"cy@example.test\0" + pw.encode() + b"\0")[0] == 0
    r = vhome.run("vpasswd", "nobody@" + DOM, "x")
    assert (r.returncode, r.stdout) == (255, "Error: User does not exist\n")
    vhome.ok("vsetuserquota", "cy@" + DOM, "50M,1000C")
    assert vhome.ok("vuserinfo", "-q", "cy@" + DOM) == "52428800S,1000C\n"
    md = os.path.join(vhome.domdir(DOM), "cy", "Maildir")
    with open(os.path.join(md, "new", "1.2.host,S=5242880"), "w") as f:
        f.write("x")
    vhome.ok("vsetuserquota", "cy@" + DOM, "10M")
    assert open(os.path.join(md, "maildirsize")).read() == "10485760S\n5242880 1\n"
    assert vhome.ok("vuserinfo", "-Q", "cy@" + DOM) == "50%\n"
    vhome.ok("vsetuserquota", "cy@" + DOM, "NOQUOTA")
    assert not os.path.exists(os.path.join(md, "maildirsize"))
    # vmoduser -d: the password may no longer be changed
    vhome.ok("vmoduser", "-d", "cy@" + DOM)
    assert vhome.run("vpasswd", "cy@" + DOM, "again").returncode == 255


def test_vdeluser_vdeldomain(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadddomain", "other.test", "pmpass")
    vhome.ok("vadduser", "dd@" + DOM, "pw")
    vhome.ok("vdeluser", "dd@" + DOM)
    assert not os.path.exists(os.path.join(vhome.domdir(DOM), "dd"))
    assert chkpw(vhome, b"dd@example.test\0pw\0")[0] == 3
    r = vhome.run("vdeluser", "dd@" + DOM)
    assert (r.returncode, r.stdout) == (246, "Error: User does not exist\n")
    vhome.ok("vdeldomain", DOM)
    assert not os.path.exists(vhome.domdir(DOM))
    q = vhome.qmail
    assert open(os.path.join(q, "control", "rcpthosts")).read() == "other.test\n"
    assert open(os.path.join(q, "control", "virtualdomains")).read() == \
        "other.test:other.test\n"
    assert open(os.path.join(q, "users", "assign")).read().startswith("+other.test-:")
    assert cdb.reader(os.path.join(q, "users", "cdb")).get(b"!example.test-") is None
    if vhome.backend == "mysql":
        assert vhome.rows("SELECT * FROM vpopmail WHERE pw_domain=%s", (DOM,)) == ()
    r = vhome.run("vdeldomain", DOM)
    assert (r.returncode, r.stdout) == (245, "Error: Domain does not exist\n")


def test_vdominfo(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadduser", "u1@" + DOM, "pw")
    st = os.stat(vhome.vpop)
    out = vhome.ok("vdominfo", DOM)
    assert out == ("domain: %s\nuid:    %d\ngid:    %d\ndir:    %s\nusers:  2\n"
                   % (DOM, st.st_uid, st.st_gid, vhome.domdir(DOM)))
    assert vhome.ok("vdominfo", "-t", "-n", DOM) == "%s\n2\n" % DOM
    r = vhome.run("vdominfo", "nope.test")
    assert (r.returncode, r.stdout) == (255, "domain nope.test does not exist\n")


def test_morercpthosts_after_50(vhome, tmp_path):
    ctl = os.path.join(vhome.qmail, "control")
    os.makedirs(ctl)
    with open(os.path.join(ctl, "rcpthosts"), "w") as f:
        f.write("".join("d%02d.test\n" % i for i in range(50)))
    vhome.ok("vadddomain", "late.test", "pw")
    assert "late.test" not in open(os.path.join(ctl, "rcpthosts")).read()
    assert open(os.path.join(ctl, "morercpthosts")).read() == "late.test\n"
    assert cdb.reader(os.path.join(ctl, "morercpthosts.cdb")).get(b"late.test") == b""
    vhome.ok("vdeldomain", "late.test")
    assert not os.path.exists(os.path.join(ctl, "morercpthosts"))
    assert not os.path.exists(os.path.join(ctl, "morercpthosts.cdb"))
