"""valias and vaddaliasdomain against both stores (vhome: .qmail-<alias> files
and the MySQL valias table), in both elision modes: valias.c's output and
exit codes, line order, one-line removal, hostile alias names and lines
(clear errors, nothing written outside the domain tree), the store methods
vdelivermail and vpopmaild call, alias domains as vdominfo shows them, a
database that is down (111)."""
import os
import signal
import stat
import subprocess

import pytest

from helpers import qbin
from vpoptools import VHome, mariadb, mariadb_template, private_mariadb, vhome  # noqa: F401

from qtools.vpopmail import store as S

DOM = "example.test"


@pytest.fixture
def dom(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    return vhome


def tree(top):
    """Every path below top with its size and mode (to show nothing else
    changed)."""
    out = {}
    for root, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[p] = (st.st_size if not stat.S_ISDIR(st.st_mode) else 0, st.st_mode)
    return out


def alias_rows(vh, alias=None):
    if vh.backend == "cdb":
        return None
    q = "SELECT alias, domain, valias_line, valias_type, copy FROM valias"
    if alias:
        return vh.rows(q + " WHERE alias = %s ORDER BY id", (alias,))
    return vh.rows(q + " ORDER BY id")


def test_insert_show_remove_delete(dom, mode):
    vh = dom
    lines = ["&joe@else.test", "fred@other.test", "|/usr/bin/true",
             vh.domdir(DOM) + "/postmaster/Maildir/"]
    for x in lines:
        assert vh.run("valias", "-i", x, "Bob.Smith@Example.TEST", mode=mode).returncode == 0
    # glibc getopt permutes: the operand may come first
    assert vh.run("valias", "bob.smith@example.test", "-i", "&last@else.test",
                  mode=mode).returncode == 0
    lines.append("&last@else.test")
    want = "".join("bob.smith@example.test -> %s\n" % x for x in lines)
    assert vh.ok("valias", "bob.smith@" + DOM, mode=mode) == want
    assert vh.ok("valias", "-s", "bob.smith@" + DOM, mode=mode) == want
    if vh.backend == "cdb":
        path = os.path.join(vh.domdir(DOM), ".qmail-bob:smith")    # '.' stored as ':'
        assert open(path).read() == "".join(x + "\n" for x in lines)
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        dst = os.stat(vh.domdir(DOM))
        assert (st.st_uid, st.st_gid) == (dst.st_uid, dst.st_gid)
        assert not [n for n in os.listdir(vh.domdir(DOM)) if "tmp" in n]
    else:
        assert alias_rows(vh) == tuple(("bob.smith", DOM, x, 1, 0) for x in lines)

    r = vh.run("valias", "-i", "fred@other.test", "bob.smith@" + DOM, mode=mode)
    assert (r.returncode, r.stdout, r.stderr) == (
        255, "", "Error: alias bob.smith@example.test -> fred@other.test already exists.\n")

    assert vh.run("valias", "-r", "fred@other.test", "bob.smith@" + DOM,
                  mode=mode).returncode == 0
    lines.remove("fred@other.test")
    assert vh.ok("valias", "bob.smith@" + DOM) == "".join(
        "bob.smith@example.test -> %s\n" % x for x in lines)

    assert vh.run("valias", "-d", "bob.smith@" + DOM, mode=mode).returncode == 0
    r = vh.run("valias", "bob.smith@" + DOM, mode=mode)
    assert (r.returncode, r.stdout) == (255, "No aliases bob.smith@example.test found\n")
    assert not os.path.exists(os.path.join(vh.domdir(DOM), ".qmail-bob:smith"))
    # deleting what is not there is no error (valias.c ignores the result)
    assert vh.run("valias", "-d", "bob.smith@" + DOM, mode=mode).returncode == 0


def test_removing_the_last_line_removes_the_alias(dom):
    dom.ok("valias", "-i", "&a@else.test", "x@" + DOM)
    dom.ok("valias", "-r", "&a@else.test", "x@" + DOM)
    # an empty .qmail-x would mean default delivery to the domain directory
    assert not os.path.exists(os.path.join(dom.domdir(DOM), ".qmail-x"))
    assert dom.run("valias", "x@" + DOM).returncode == 255


def test_domain_listing_and_names(dom, mode):
    vh = dom
    for alias, line in (("zed", "&z@else.test"), ("abc", "&a1@else.test"),
                        ("Mid.dle", "&m@else.test"), ("abc", "&a2@else.test")):
        vh.ok("valias", "-i", line, "%s@%s" % (alias, DOM))
    assert vh.ok("valias", DOM, mode=mode) == (
        "abc@example.test -> &a1@else.test\n"
        "abc@example.test -> &a2@else.test\n"
        "mid.dle@example.test -> &m@else.test\n"
        "zed@example.test -> &z@else.test\n")
    assert vh.ok("valias", "-n", DOM, mode=mode) == "abc\nmid.dle\nzed\n"
    r = vh.run("valias", "-n", "abc@" + DOM, mode=mode)
    assert (r.returncode, r.stderr) == (255, "Please enter domain name only.\n")
    r = vh.run("valias", "nowhere.test", mode=mode)
    assert (r.returncode, r.stdout) == (
        255, "invalid domain, not in qmail assign file\nNo aliases found for domain nowhere.test\n")
    vh.ok("vadddomain", "empty.test", "pw")
    r = vh.run("valias", "empty.test")
    assert (r.returncode, r.stdout) == (255, "No aliases found for domain empty.test\n")
    assert vh.run("valias", "-n", "empty.test").returncode == 255
    r = vh.run("valias", "-i", "&a@b.test", "x@nowhere.test")
    assert (r.returncode, r.stdout, r.stderr) == (
        245, "invalid domain, not in qmail assign file\n", "Error: Domain does not exist\n")
    if vh.backend == "cdb":
        # the domain's own .qmail-default is never an alias
        assert ".qmail-default" in os.listdir(vh.domdir(DOM))


@pytest.mark.parametrize("name,code,text", [
    ("../x", 255, "Illegal username"),
    ("../../etc/passwd", 255, "Illegal username"),
    (".hidden", 255, "Illegal username"),
    ("-dash", 255, "Illegal username"),
    ("sp ace", 255, "Illegal username"),
    ("co:lon", 255, "Illegal username"),
    ("default", 255, "Illegal username"),
    ("a" * 65, 231, "user name too long (max=64)"),
])
def test_bad_alias_names(dom, name, code, text):
    vh = dom
    before = tree(os.path.dirname(vh.vpop))
    r = vh.run("valias", "-i", "&a@else.test", "--", "%s@%s" % (name, DOM))
    assert (r.returncode, r.stderr) == (code, "Error: %s\n" % text), r
    r = vh.run("valias", "-d", "--", "%s@%s" % (name, DOM))
    assert r.returncode == code
    assert tree(os.path.dirname(vh.vpop)) == before
    assert os.path.exists(os.path.join(vh.domdir(DOM), ".qmail-default"))


def test_bad_lines(dom):
    vh = dom
    before = tree(os.path.dirname(vh.vpop))
    r = vh.run("valias", "-i", "&a@else.test\n|/bin/sh -c evil", "x@" + DOM)
    assert (r.returncode, r.stderr) == (236, "Error: bad character\n")
    r = vh.run("valias", "-i", "&" + "a" * 159, "x@" + DOM)
    assert (r.returncode, r.stderr) == (224, "Error: alias line too long (max=160)\n")
    r = vh.run("valias", "-i", "   ", "x@" + DOM)
    assert r.returncode == 236
    assert tree(os.path.dirname(vh.vpop)) == before
    vh.ok("valias", "-i", "&" + "a" * 158, "x@" + DOM)          # 159 characters: fits


def test_store_methods(dom, monkeypatch):
    """What vdelivermail, chkuser and vpopmaild call."""
    for k, v in dom.env().items():
        monkeypatch.setenv(k, v)
    st = S.open_store()
    try:
        assert st.valias_select("a.b", DOM) == []
        st.valias_insert("a.b", DOM, "&x@y.test")
        st.valias_insert("a.b", DOM, "  &z@y.test")            # leading blanks dropped
        st.valias_insert("c", DOM, "|/bin/true")
        st.valias_insert("a.b", DOM, "&x@y.test")              # the store keeps duplicates
        assert st.valias_select("a.b", DOM) == ["&x@y.test", "&z@y.test", "&x@y.test"]
        assert st.valias_select_all(DOM) == [("a.b", "&x@y.test"), ("a.b", "&z@y.test"),
                                             ("a.b", "&x@y.test"), ("c", "|/bin/true")]
        st.valias_remove("a.b", DOM, "&x@y.test")
        assert st.valias_select("a.b", DOM) == ["&z@y.test"]
        st.valias_delete("a.b", DOM)
        assert st.valias_select("a.b", DOM) == []
        assert st.valias_select("c", "nowhere.test") == []
        before = tree(os.path.dirname(dom.vpop))
        for bad in ("../x", "a/b", "x\0y", "a" * 65, "default", ".x", "", "a\nb"):
            with pytest.raises(S.StoreError):
                st.valias_insert(bad, DOM, "&q@q.test")
            with pytest.raises(S.StoreError):
                st.valias_delete(bad, DOM)
            assert st.valias_select(bad, DOM) == []
        for bad in ("&a\0b", "&a\nb", "&a\rb", "x" * 160):
            with pytest.raises(S.StoreError):
                st.valias_insert("ok", DOM, bad)
        with pytest.raises(S.StoreError) as e:
            st.valias_insert("ok", "nowhere.test", "&a@b.test")
        assert e.value.code == S.VA_DOMAIN_DOES_NOT_EXIST
        with pytest.raises(S.StoreError):
            st.valias_insert("ok", "../..", "&a@b.test")
        assert tree(os.path.dirname(dom.vpop)) == before
    finally:
        st.close()


def test_concurrent_inserts_keep_every_line(dom):
    env = dom.env()
    procs = []
    for w in range(2):
        script = "".join("valias -i '&w%d-%d@else.test' x@%s || exit 1\n" % (w, i, DOM)
                         for i in range(8))
        procs.append(subprocess.Popen(["/bin/sh", "-c", script], env=env))
    for p in procs:
        assert p.wait(60) == 0
    got = dom.ok("valias", "x@" + DOM).splitlines()
    assert sorted(got) == sorted("x@example.test -> &w%d-%d@else.test" % (w, i)
                                 for w in range(2) for i in range(8))
    for w in range(2):                                          # each writer's order kept
        mine = [x for x in got if "&w%d-" % w in x]
        assert mine == ["x@example.test -> &w%d-%d@else.test" % (w, i) for i in range(8)]


def test_mailing_list_symlinks(tmp_path):
    """An ezmlm list in a cdb domain: .qmail-list and .qmail-list-default are
    symbolic links; valias lists the base name once and never writes
    through the link."""
    vh = VHome(tmp_path, "cdb")
    vh.ok("vadddomain", DOM, "pw")
    d = vh.domdir(DOM)
    listdir = tmp_path / "list"
    listdir.mkdir()
    (listdir / "qmail").write_text("|/usr/bin/ezmlm-send '%s'\n" % listdir)
    (listdir / "qmail-default").write_text("|/usr/bin/ezmlm-manage '%s'\n" % listdir)
    os.symlink(str(listdir / "qmail"), os.path.join(d, ".qmail-list"))
    os.symlink(str(listdir / "qmail-default"), os.path.join(d, ".qmail-list-default"))
    assert vh.ok("valias", "-n", DOM) == "list\n"
    assert vh.ok("valias", "list@" + DOM) == "list@example.test -> |/usr/bin/ezmlm-send '%s'\n" \
        % listdir
    r = vh.run("valias", "-i", "&x@else.test", "list@" + DOM)
    assert r.returncode == 239 and "symbolic link" in r.stderr            # -17
    assert (listdir / "qmail").read_text() == "|/usr/bin/ezmlm-send '%s'\n" % listdir
    vh.ok("valias", "-d", "list@" + DOM)                     # the link goes, not the list
    assert not os.path.lexists(os.path.join(d, ".qmail-list"))
    assert (listdir / "qmail").exists()


def test_usage(dom):
    for argv, code in ((("valias",), 100), (("valias", "-Z", "x@" + DOM), 100),
                       (("valias", "-i"), 100), (("vaddaliasdomain",), 100),
                       (("vaddaliasdomain", DOM), 100)):
        r = dom.run(*argv)
        assert r.returncode == code, (argv, r)
        assert ("%s: usage: " % argv[0]) in r.stderr
    r = dom.run("valias", "-v", "-n", DOM)
    assert r.returncode == 255 and r.stdout.startswith("version: ")


def test_vaddaliasdomain(dom, mode):
    vh = dom
    assert vh.run("vaddaliasdomain", DOM, "Alias.TEST", mode=mode).returncode == 0
    # the backward-compatible order: alias first
    assert vh.run("vaddaliasdomain", "other.test", DOM, mode=mode).returncode == 0
    out = vh.ok("vdominfo", DOM).splitlines()
    assert out[0] == "domain: example.test"
    assert sorted(x for x in out if x.startswith("alias:")) == ["alias: alias.test",
                                                                "alias: other.test"]
    assert vh.ok("vdominfo", "alias.test").splitlines()[0] == \
        "domain: alias.test (alias of example.test)"
    q = vh.qmail
    assign = open(os.path.join(q, "users", "assign")).read().splitlines()
    d = vh.domdir(DOM)
    ids = "%d:%d" % (os.stat(vh.vpop).st_uid, os.stat(vh.vpop).st_gid)
    assert "+alias.test-:example.test:%s:%s:-::" % (ids, d) in assign
    assert "alias.test" in open(os.path.join(q, "control", "rcpthosts")).read().split()
    assert "alias.test:alias.test" in open(
        os.path.join(q, "control", "virtualdomains")).read().split()
    if vh.backend == "mysql":
        assert sorted(vh.rows("SELECT alias, domain FROM aliasdomains")) == [
            ("alias.test", DOM), ("other.test", DOM)]
    # an alias of the alias domain is an alias of the real one
    vh.ok("valias", "-i", "&a@else.test", "x@alias.test")
    assert vh.ok("valias", "x@" + DOM) == "x@example.test -> &a@else.test\n"
    assert vh.ok("valias", "x@alias.test") == "x@alias.test -> &a@else.test\n"
    for argv, out in (
            ((DOM, "alias.test"), "Error: Both domains already exist, unable to create alias.\n"),
            (("no1.test", "no2.test"),
             "Error: Neither 'no1.test' or 'no2.test'  exist, unable to create alias.\n"),
            ((DOM, DOM), "Error: real domain and alias domain are the same!\n")):
        r = vh.run("vaddaliasdomain", *argv, mode=mode)
        assert (r.returncode, r.stdout) == (255, out), r
    before = open(os.path.join(q, "users", "assign")).read()
    for bad in ("..x.test", "x", "-x.test", "a" * 97 + ".test"):
        r = vh.run("vaddaliasdomain", DOM, bad)
        assert r.returncode in (244, 230) and r.stdout.startswith("Error: "), (bad, r)
    assert open(os.path.join(q, "users", "assign")).read() == before


def test_mysql_down_is_111(private_mariadb, tmp_path, mode):
    vh = VHome(tmp_path, "mysql", private_mariadb)
    vh.ok("vadddomain", DOM, "pw")
    vh.ok("valias", "-i", "&a@else.test", "x@" + DOM)
    os.kill(private_mariadb.proc.pid, signal.SIGSTOP)           # hung
    try:
        r = vh.run("valias", "x@" + DOM, mode=mode, QTOOLS_MYSQL_TIMEOUT="1")
        assert (r.returncode, r.stdout) == (111, "Error: no authentication database connection\n")
    finally:
        os.kill(private_mariadb.proc.pid, signal.SIGCONT)
    private_mariadb.kill()
    for argv in (("valias", "x@" + DOM), ("valias", DOM), ("valias", "-i", "&b@c.test",
                                                           "x@" + DOM),
                 ("valias", "-d", "x@" + DOM), ("valias", "-n", DOM)):
        r = vh.run(*argv, mode=mode)
        assert r.returncode == 111, (argv, r)
        assert "valias: fatal: " in r.stderr
    env = vh.env()
    for k in ("VPOPMAILHOME", "QMAILHOME", "VPOPMAIL_AUTH"):
        os.environ[k] = env[k]
    try:
        st = S.open_store()
        with pytest.raises(S.TempFail):
            st.valias_select("x", DOM)
        with pytest.raises(S.TempFail):
            st.valias_select_all(DOM)
    finally:
        for k in ("VPOPMAILHOME", "QMAILHOME", "VPOPMAIL_AUTH"):
            os.environ.pop(k, None)


def test_launchers():
    for p in ("valias", "vaddaliasdomain", "vconvert"):
        assert os.access(qbin(p), os.X_OK)


def test_cdb_missing_domain_directory_is_tempfail(tmp_path, monkeypatch):
    """users/cdb names a directory that is not there (an unmounted file
    system): valias_select cannot know, so TempFail, never []."""
    vh = VHome(tmp_path, "cdb")
    vh.ok("vadddomain", DOM, "pw")
    vh.ok("valias", "-i", "&a@else.test", "x@" + DOM)
    os.rename(vh.domdir(DOM), vh.domdir(DOM) + ".away")
    for k, v in vh.env().items():
        monkeypatch.setenv(k, v)
    st = S.open_store()
    with pytest.raises(S.TempFail):
        st.valias_select("x", DOM)
    with pytest.raises(S.TempFail):
        st.valias_select("nobody", DOM)
    with pytest.raises(S.TempFail):
        st.valias_select_all(DOM)
    r = vh.run("valias", "x@" + DOM)
    assert (r.returncode, r.stdout) == (111, "Error: no authentication database connection\n")
    assert "domain directory missing" in r.stderr


def test_vdeldomain_takes_its_aliases_along(dom):
    """A domain deleted and added again starts without the old aliases (the
    valias rows live outside the domain's tree in mysql), and an alias
    domain's aliasdomains row goes with it."""
    vh = dom
    vh.ok("valias", "-i", "&joe@else.test", "sales@" + DOM)
    vh.ok("vaddaliasdomain", DOM, "alias.test")
    if vh.backend == "mysql":
        assert list(vh.rows("SELECT alias FROM aliasdomains")) == [("alias.test",)]
    vh.ok("vdeldomain", "alias.test")
    if vh.backend == "mysql":
        assert list(vh.rows("SELECT alias FROM aliasdomains")) == []
    vh.ok("vdeldomain", DOM)
    if vh.backend == "mysql":
        assert list(alias_rows(vh)) == []
    vh.ok("vadddomain", DOM, "pmpass")
    r = vh.run("valias", "sales@" + DOM)
    assert (r.returncode, r.stdout) == (255, "No aliases sales@example.test found\n")
