"""Hostile input to the vpopmail tools: `../`, '/', leading dots and
dashes, overlong names, unknown domains, and store entries whose directory
points outside the domain (a corrupted or malicious vpasswd or SQL row).
Each gets a clear error, and nothing outside the domain's tree is created
or removed."""
import os

import pytest

from vpoptools import mariadb, mariadb_template, vhome  # noqa: F401

DOM = "example.test"


def snapshot(top):
    out = set()
    for root, dirs, files in os.walk(top):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(root, n), top))
    return out


@pytest.fixture
def world(vhome, tmp_path):
    vhome.ok("vadddomain", DOM, "pmpass")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    return vhome, victim


@pytest.mark.parametrize("name,code,text", [
    ("../victim@example.test", 255, "Error: Illegal username"),
    ("../../victim@example.test", 255, "Error: Illegal username"),
    ("a/b@example.test", 255, "Error: Illegal username"),
    ("..@example.test", 255, "Error: Illegal username"),
    (".hidden@example.test", 255, "Error: Illegal username"),
    ("-rf@example.test", 255, "Error: Illegal username"),
    ("sp ace@example.test", 255, "Error: Illegal username"),
    ("x@example.test", 255, "Error: Illegal username"),          # one character
    ("u" * 65 + "@example.test", 231, "Error: user name too long (max=64)"),
    ("ok@../victim", 244, "Error: Invalid domain name"),
    ("ok@nowhere.test", 255, "Error: Domain does not exist"),
])
def test_vadduser_refuses(world, tmp_path, name, code, text):
    vh, victim = world
    before = snapshot(str(tmp_path))
    r = vh.run("vadduser", "--", name, "pw")
    assert (r.returncode, r.stdout.strip()) == (code, text), r.stderr
    assert snapshot(str(tmp_path)) == before
    assert (victim / "keep").read_text() == "precious"


def test_vdeluser_never_leaves_the_domain(world, tmp_path):
    vh, victim = world
    vh.ok("vadduser", "eve@" + DOM, "pw")
    vh.ok("vmoduser", "-D", str(victim), "eve@" + DOM)        # the dir field points out
    r = vh.run("vdeluser", "eve@" + DOM)
    assert r.returncode == 253 and r.stdout == "Error: could not remove %s\n" % victim
    assert (victim / "keep").read_text() == "precious"
    r = vh.run("vdeluser", "../victim@" + DOM)
    assert r.returncode == 255 and r.stdout == "Error: Illegal username\n"
    assert (victim / "keep").read_text() == "precious"


def test_vdeldomain_refuses_a_directory_outside(world, tmp_path):
    vh, victim = world
    assign = os.path.join(vh.qmail, "users", "assign")
    text = open(assign).read()
    with open(assign, "w") as f:
        f.write(text.replace(":%s:" % vh.domdir(DOM), ":%s:" % victim))
    from qtools.vpopmail import admin
    env = dict(os.environ)
    os.environ["QMAILHOME"] = vh.qmail
    try:
        admin.update_newu()
    finally:
        os.environ.clear()
        os.environ.update(env)
    r = vh.run("vdeldomain", DOM)
    assert r.returncode == 0
    assert r.stdout == "Warning: Failed to delete directory tree: %s\n" % DOM
    assert (victim / "keep").read_text() == "precious"
    assert "example.test" not in open(assign).read()


@pytest.mark.parametrize("args", [
    ("vuserinfo", "nobody@nowhere.test"), ("vdeluser", "nobody@nowhere.test"),
    ("vpasswd", "nobody@nowhere.test", "x"), ("vsetuserquota", "nobody@nowhere.test", "1M"),
    ("vmoduser", "-p", "nobody@nowhere.test"), ("vdominfo", "nowhere.test"),
    ("vdeldomain", "nowhere.test"), ("vuserinfo", "../../etc@example.test"),
])
def test_unknown_domains_are_clear_errors(world, tmp_path, args):
    vh, _ = world
    before = snapshot(str(tmp_path))
    r = vh.run(*args)
    assert r.returncode not in (0, 111), (args, r.returncode, r.stdout)
    assert r.stdout.strip() and not r.stderr, (r.stdout, r.stderr)
    assert snapshot(str(tmp_path)) == before
