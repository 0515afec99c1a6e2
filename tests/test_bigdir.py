"""vpopmail's hashed directories (bigdir.c, USERS_BIG_DIR): the counter
class against the sequence bigdir.c gives (worked out by hand), the
.dir-control file byte for byte, and vadduser/vdeluser/vadddomain/
vdeldomain keeping the counters of both stores (vhome: cdb and mysql)."""
import os
import subprocess

import pytest

from helpers import qbin
from vpoptools import mariadb, mariadb_template, vhome  # noqa: F401

from qtools.vpopmail import bigdir

DOM = "big.test"


def test_sequence_matches_the_c_code():
    """The directories bigdir.c hands out, worked out by hand from its code:
    every 100th user moves on; one level of 62 (0-9A-Za-z), then at 6300
    level 1 opens ("0/0"; level_index[1] starts one ahead, so the first pass
    of level 1 is 62 steps, the later ones carry into level 0 at "?/z")."""
    want = {1: "", 99: "", 100: "0", 199: "0", 200: "1", 6100: "y", 6199: "y",
            6200: "z", 6299: "z", 6300: "0/0", 6400: "0/1", 12400: "0/z",
            12500: "1/0", 18600: "1/z", 18700: "2/0", 250000: "d/J"}
    v = bigdir.VDir()
    got = {}
    prev = ""
    for n in range(1, 250001):
        d = v.inc()
        assert d == prev or n % 100 == 0, n             # moves only every 100th
        prev = d
        if n in want:
            got[n] = d
    assert got == want
    assert v.level_cur == 1 and v.cur_users == 250000


def test_third_level():
    v = bigdir.VDir()
    got = {}
    for n in range(1, 390801):
        d = v.inc()
        if n in (390599, 390600, 390699, 390700, 390800):
            got[n] = d
    assert got == {390599: "z/y", 390600: "z/z", 390699: "z/z", 390700: "0/0/0",
                   390800: "0/0/1"}
    assert v.level_cur == 2


def test_file_format_and_read_quirk():
    v = bigdir.VDir()
    v.inc()
    assert bigdir.format_file(v) == b"1\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n"
    # vcdb.c reads the third number of a line after the first space again
    w = bigdir.parse_file(bigdir.format_file(v))
    assert w.level_mod == [0, 2, 2] and w.cur_users == 1 and w.the_dir == ""
    for _ in range(99):
        w.inc()
    assert bigdir.format_file(w) == b"100\n0\n3\n0 0 0\n61 61 61\n0 2 2\n0 0 0\n0\n"
    # through the file the first two levels go as in memory
    a, b = bigdir.VDir(), bigdir.VDir()
    for n in range(13000):
        a.inc()
        b = bigdir.parse_file(bigdir.format_file(b))
        b.inc()
        assert a.the_dir == b.the_dir, n
    # atol: a count vpopmail wrapped below 0 reads as LONG_MAX
    big = bigdir.parse_file(b"18446744073709551615\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n")
    assert big.cur_users == (1 << 63) - 1
    for bad in (b"", b"1\n0\n3\n", b"1\n7\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n",
                b"1\n0\n3\n0 0 0\n61 99 61\n0 2 4\n0 0 0\n\n",
                b"1\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n../x\n",
                b"1\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n/etc\n",
                b"1\n0\n3\n0 0\n61 61 61\n0 2 4\n0 0 0\n\n",
                b"1\n0\n3\n0 0 0\n61 61 61\n0 999 4\n0 0 0\n\n"):
        with pytest.raises(bigdir.Corrupt):
            bigdir.parse_file(bad)


# -- the tools -----------------------------------------------------------------
@pytest.fixture
def lib(vhome, monkeypatch):
    """The vpopmail library in-process on vhome's installation."""
    for k in ("VPOPMAILHOME", "QMAILHOME", "VPOPMAIL_AUTH", "QTOOLS_MYSQL_TIMEOUT"):
        monkeypatch.setenv(k, vhome.env()[k])
    from qtools.vpopmail import store as S
    st = S.open_store(vhome.backend)
    yield st
    st.close()


def state(vhome, key, domdir=None):
    """The stored state as the dir-control text."""
    if vhome.backend == "cdb":
        path = os.path.join(domdir or os.path.join(vhome.vpop, "domains"), ".dir-control")
        with open(path, "rb") as f:
            return f.read()
    rows = vhome.rows("SELECT cur_users, level_cur, level_max, level_start0, level_start1, "
                      "level_start2, level_end0, level_end1, level_end2, level_mod0, "
                      "level_mod1, level_mod2, level_index0, level_index1, level_index2, "
                      "the_dir FROM dir_control WHERE domain = %s", (key,))
    assert len(rows) == 1, rows
    return ("%d\n%d\n%d\n%d %d %d\n%d %d %d\n%d %d %d\n%d %d %d\n%s\n"
            % tuple(rows[0])).encode()


def want(vhome, n, the_dir, index0=0):
    """The state after n additions on level 0 (the cdb store writes back
    what vcdb.c read: the third numbers repeat the second)."""
    if vhome.backend == "cdb":
        return ("%d\n0\n3\n0 0 0\n61 61 61\n0 2 2\n%d 0 0\n%s\n"
                % (n, index0, the_dir)).encode()
    return ("%d\n0\n3\n0 0 0\n61 61 61\n0 2 4\n%d 0 0\n%s\n" % (n, index0, the_dir)).encode()


FIRST = b"1\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n"


def userdir(vhome, user):
    return vhome.ok("vuserinfo", "-d", "%s@%s" % (user, DOM)).strip()


def test_vadduser_hashes_from_the_100th_user(vhome, lib):
    from qtools.vpopmail import admin
    vhome.ok("vadddomain", DOM, "pmpass")           # postmaster is user 1
    d = vhome.domdir(DOM)
    assert state(vhome, DOM, d) == FIRST
    for i in range(2, 99):
        admin.vadduser(lib, "u%03d" % i, DOM, "pw", crypted="x")
    vhome.ok("vadduser", "u099@" + DOM, "pw")
    assert userdir(vhome, "u099") == d + "/u099"
    vhome.ok("vadduser", "u100@" + DOM, "pw")
    vhome.ok("vadduser", "u101@" + DOM, "pw")
    for u in ("u100", "u101"):
        assert userdir(vhome, u) == d + "/0/" + u
        assert os.path.isdir(os.path.join(d, "0", u, "Maildir", "new"))
    assert oct(os.stat(os.path.join(d, "0")).st_mode & 0o777) == "0o700"   # 0750, umask 077
    assert state(vhome, DOM, d) == want(vhome, 101, "0")
    # vdeluser decrements; the hash stays where it is
    vhome.ok("vdeluser", "u101@" + DOM)
    assert not os.path.exists(os.path.join(d, "0", "u101"))
    assert state(vhome, DOM, d) == want(vhome, 100, "0")
    vhome.ok("vdeluser", "u050@" + DOM)
    assert state(vhome, DOM, d) == want(vhome, 99, "0")
    # 100 again: inc_dir moves on to 1 (vpopmail's way)
    vhome.ok("vadduser", "u102@" + DOM, "pw")
    assert userdir(vhome, "u102") == d + "/1/u102"
    assert state(vhome, DOM, d) == want(vhome, 100, "1", index0=1)


def test_concurrent_vadduser_get_different_counters(vhome, lib):
    from qtools.vpopmail import admin
    vhome.ok("vadddomain", DOM, "pmpass")
    for i in range(2, 97):
        admin.vadduser(lib, "u%03d" % i, DOM, "pw", crypted="x")
    env = vhome.env()
    procs = [subprocess.Popen([qbin("vadduser"), "c%d@%s" % (i, DOM), "pw"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (out, err)
    d = vhome.domdir(DOM)
    assert state(vhome, DOM, d) == want(vhome, 100, "0")
    hashed = [u for u in ("c0", "c1", "c2", "c3") if userdir(vhome, u) == d + "/0/" + u]
    assert len(hashed) == 1, hashed


def test_corrupt_state_is_an_error_and_touches_nothing(vhome, lib):
    vhome.ok("vadddomain", DOM, "pmpass")
    d = vhome.domdir(DOM)
    bad = b"5\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n../../etc\n"
    if vhome.backend == "cdb":
        with open(os.path.join(d, ".dir-control"), "wb") as f:
            f.write(bad)
    else:
        vhome.rows("UPDATE dir_control SET the_dir = '../../etc' WHERE domain = %s", (DOM,))
    before = sorted(os.listdir(d))
    saved = state(vhome, DOM, d)
    r = vhome.run("vadduser", "joe@" + DOM, "pw")
    assert r.returncode == 253, (r.returncode, r.stdout, r.stderr)        # VA_BAD_DIR
    assert r.stdout.startswith("Error: corrupt ") and "the_dir" in r.stdout, r.stdout
    assert sorted(os.listdir(d)) == before
    assert state(vhome, DOM, d) == saved
    r = vhome.run("vuserinfo", "joe@" + DOM)
    assert r.returncode != 0
    if vhome.backend == "cdb":
        assert saved == bad


def test_vadddomain_hashes_after_100_domains(vhome, lib):
    from qtools.vpopmail import admin
    uid = os.stat(vhome.vpop).st_uid
    key = "dom_%d" % uid
    for i in range(1, 100):
        admin.vadddomain(lib, "d%03d.test" % i, hup=False)
    domains = os.path.join(vhome.vpop, "domains")
    assert os.path.isdir(os.path.join(domains, "d099.test"))
    vhome.ok("vadddomain", DOM, "pmpass")
    d = os.path.join(domains, "0", DOM)
    assert os.path.isfile(os.path.join(d, ".qmail-default"))
    assert userdir(vhome, "postmaster") == d + "/postmaster"
    assert state(vhome, key) == want(vhome, 100, "0")
    with open(os.path.join(vhome.qmail, "users", "assign")) as f:
        assert "+%s-:%s:%d:%d:%s:-::\n" % (DOM, DOM, uid, os.stat(vhome.vpop).st_gid, d) \
            in f.read()
    vhome.ok("vadduser", "joe@" + DOM, "pw")
    assert userdir(vhome, "joe") == d + "/joe"
    vhome.ok("vdeldomain", DOM)
    assert not os.path.exists(d)
    assert state(vhome, key) == want(vhome, 99, "0")
    if vhome.backend == "mysql":
        assert vhome.rows("SELECT * FROM dir_control WHERE domain = %s", (DOM,)) == ()


def test_continues_a_state_vpopmail_left(vhome, lib):
    """A domain at its 6499th user, as vpopmail's own file (or row) has it:
    the next user goes to 0/2 (0/0 came at 6300, 0/1 at 6400)."""
    vhome.ok("vadddomain", DOM, "pmpass")
    d = vhome.domdir(DOM)
    if vhome.backend == "cdb":
        with open(os.path.join(d, ".dir-control"), "wb") as f:
            f.write(b"6499\n1\n3\n0 0 0\n61 61 61\n0 2 2\n0 2 2\n0/1\n")
        after = b"6500\n1\n3\n0 0 0\n61 61 61\n0 2 2\n0 3 2\n0/2\n"
        deleted = b"6499\n1\n3\n0 0 0\n61 61 61\n0 2 2\n0 3 3\n0/2\n"   # read as 0 3 3
    else:
        vhome.rows("REPLACE INTO dir_control VALUES (%s, 6499, 1, 3, 0, 0, 0, 61, 61, 61, "
                   "0, 2, 4, 0, 2, 0, '0/1')", (DOM,))
        after = b"6500\n1\n3\n0 0 0\n61 61 61\n0 2 4\n0 3 0\n0/2\n"
        deleted = after.replace(b"6500", b"6499", 1)
    vhome.ok("vadduser", "joe@" + DOM, "pw")
    assert userdir(vhome, "joe") == d + "/0/2/joe"
    assert os.path.isdir(os.path.join(d, "0", "2", "joe", "Maildir", "cur"))
    assert state(vhome, DOM, d) == after
    vhome.ok("vdeluser", "joe@" + DOM)
    assert not os.path.exists(os.path.join(d, "0", "2", "joe"))
    assert state(vhome, DOM, d) == deleted
