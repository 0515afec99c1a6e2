"""tcprules: byte-identical cdbs and identical errors against Debian's
/usr/bin/tcprules (inventory 1.2, interop check I5), through both backends
of qtools.lib.cdb (cdbx and the pure-Python PyMaker/PyReader)."""
import errno
import os
import stat
import subprocess
import sys

import pytest

from helpers import qbin, qenv

from qtools.lib import cdb

# Everything tcprules.c has a branch for: comments, blank lines, trailing
# blanks, colon-less lines, allow/deny, several variables, any quote char,
# values with ':' and ',', ranges (capped, empty bounds, wrapping, no keys),
# =host, =.suffix, info@ip, info@=host, the empty default rule, duplicates,
# deny with variables, a last line without a newline.
RICH = b"""# ucspi-tcp rules, the rich version
joe@127.0.0.1:allow,which=/first/

127.0.0.1:allow,which="second",RELAYCLIENT=""   \t
127.:allow,which=+third+,RELAYCLIENT=""
   # not a comment, and no colon so ignored
nocolonline
1.2.3.37:deny
1.2.3.250-300:allow,R="range"
10.2-3.:deny
1.2.3.300-400:allow
1.2.3.-3:allow,LOW="empty bottom"
1.2.3.7-:allow,HIGH="empty top: no keys"
1.2.3.18446744073709551617-2:allow,WRAP="scan_ulong wraps"
=host.example.com:allow,H="h"
=.abuser.edu:deny
=:allow,which="named"
info@1.2.3.4:allow,X=|a:b,c|
info@=host.example.com:allow,Y='q'
1.2.3.4:allow,X="dup"
1.2.3.4:allow,X==x=,Y=\x00nul\x00
:allow,which="fourth"
:allow,which="fifth"
1.2.3.5:deny,X="1"
1.2.3.6:allow,=/empty name/,E=//
\t\t
8.8.8.8:allow,U="\xc3\xa9t\xc3\xa9 \xff"
:allow,trailing="blank"\t \t
nocolon at the end"""

BAD_LINES = [
    b"1.2.3.4:allow,FOO=bar",             # unquoted: 'b' opens, no closing 'b'
    b"a-b.:deny",                         # range bounds not numeric
    b"x:maybe",
    b"1.2.3.4:allow,",                    # trailing comma
    b"1.2.3.4:allow,X=",
    b"1.2.3.4:allow,X",
    b"1.2.3.4:allowed",
    b"1.2.3.4:denyx",
    b"1.2.3.4: allow",
    b"1.2.3.4:allow ,X=\"y\"",
    b"1.2.3.4:allow,A=\"x\"junk",
    b"1.2.3.4:allow\r",
    b"1.2.3. 3-4:allow",
    b"1.2.3.+3-4:allow",
    b"a:foo\x00bar",                      # printed up to the NUL, as a C string
]

GOOD_LINES = [
    b"1.2.3.4:allow, X=\"y\"",            # the name is " X"
    b"1.2.3.4:allow,SP=\"a\" ",
    b"1.2.3.4:allow,FOO=barb",            # FOO=ar
    b"1.2.3.4:allow,=/a/",
    b"1-2:allow",
    b"-:allow",
    b"1.2.3.-:allow",
    b"1.2.3.4-5.6-7:allow",
    b"1.2.3.99999999999999999999999-1:allow",
    b"a\x00b:allow,X=/1/",
    b"\x00#:allow",
    b"a@1-2:deny",                        # '@': no range expansion
    b"=a-b:deny",
]


def run_rules(binary, data, d, env=None, name="rules"):
    cdbp, tmpp = str(d / (name + ".cdb")), str(d / (name + ".tmp"))
    p = subprocess.run([binary, cdbp, tmpp], input=data, capture_output=True,
                       env=env, timeout=30)
    out = None
    if os.path.exists(cdbp):
        with open(cdbp, "rb") as f:
            out = f.read()
    return p.returncode, p.stderr, out


# qtools tcprules with cdbx hidden: qtools.lib.cdb falls back to PyMaker
FALLBACK = ("import sys; sys.modules['cdbx'] = None\n"
            "from qtools.lib.run import launch\n"
            "sys.argv = ['tcprules'] + sys.argv[1:]\n"
            "launch('qtools.ucspi.tcprules')\n")


def run_fallback(data, d, name="fallback"):
    cdbp, tmpp = str(d / (name + ".cdb")), str(d / (name + ".tmp"))
    p = subprocess.run([sys.executable, "-c", FALLBACK, cdbp, tmpp], input=data,
                       capture_output=True, env=qenv(), timeout=30)
    out = None
    if os.path.exists(cdbp):
        with open(cdbp, "rb") as f:
            out = f.read()
    return p.returncode, p.stderr, out


def c_build(cbin, data, d, name="c"):
    rc, err, out = run_rules(cbin("tcprules"), data, d, name=name)
    assert (rc, err) == (0, b""), err
    return out


def test_rich_file_byte_identical(tmp_path, cbin):
    c = c_build(cbin, RICH, tmp_path)
    q = run_rules(qbin("tcprules"), RICH, tmp_path, env=qenv(), name="q")
    f = run_fallback(RICH, tmp_path)
    assert q == (0, b"", c)
    assert f == (0, b"", c)
    mode = stat.S_IMODE(os.stat(tmp_path / "c.cdb").st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "q.cdb").st_mode) == mode
    assert not os.path.exists(tmp_path / "q.tmp")


def test_rich_file_records(tmp_path, cbin):
    """What the records are (read back with the C-built file)."""
    db = cdb.reader(_write(tmp_path, c_build(cbin, RICH, tmp_path)))
    try:
        items = list(db.items())
        assert db.get(b"joe@127.0.0.1") == b"+which=first\0"
        assert db.get(b"127.0.0.1") == b"+which=second\0+RELAYCLIENT=\0"
        assert db.get(b"127.") == b"+which=third\0+RELAYCLIENT=\0"
        assert db.get(b"1.2.3.37") == b"D\0"
        assert [k for k, v in items if v == b"+R=range\0"] == [
            b"1.2.3.%d" % n for n in range(250, 256)]
        assert db.get(b"10.2.") == db.get(b"10.3.") == b"D\0"
        assert [k for k, v in items if v == b"+LOW=empty bottom\0"] == [
            b"1.2.3.0", b"1.2.3.1", b"1.2.3.2", b"1.2.3.3"]
        assert [k for k, v in items if v == b"+WRAP=scan_ulong wraps\0"] == [
            b"1.2.3.1", b"1.2.3.2"]
        assert not any(v.startswith(b"+HIGH") for k, v in items)
        assert [db.get(b"1.2.3.%d" % n) for n in (255, 256, 300, 400)] == [
            b"+R=range\0", None, None, None]
        assert db.get(b"info@1.2.3.4") == b"+X=a:b,c\0"
        assert db.get(b"info@=host.example.com") == b"+Y=q\0"
        assert db.getall(b"1.2.3.4") == [b"+X=dup\0", b"+X=x\0+Y=nul\0"]
        assert db.getall(b"") == [b"+which=fourth\0", b"+which=fifth\0",
                                  b"+trailing=blank\0"]
        assert db.get(b"1.2.3.5") == b"D\0+X=1\0"
        assert db.get(b"1.2.3.6") == b"+=empty name\0+E=\0"
        assert db.get(b"8.8.8.8") == b"+U=\xc3\xa9t\xc3\xa9 \xff\0"
        assert db.get(b"=") == b"+which=named\0"
        assert db.get(b"nocolonline") is None
    finally:
        db.close()


def _write(d, data, name="copy.cdb"):
    p = d / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("line", BAD_LINES, ids=lambda b: b.decode("latin-1"))
def test_parse_error_like_c(tmp_path, cbin, line):
    """Same message and exit code as the C; rules.cdb is left untouched."""
    old = c_build(cbin, b"1.2.3.4:allow,OLD=/1/\n", tmp_path, name="rules")
    data = b"# before\n1.2.3.4:allow\n" + line + b"\n9.9.9.9:deny\n"
    expect = b"tcprules: fatal: unable to parse this line: " + line.split(b"\0")[0] + b"\n"
    c = run_rules(cbin("tcprules"), data, tmp_path)
    assert c == (100, expect, old)
    q = run_rules(qbin("tcprules"), data, tmp_path, env=qenv())
    assert q == (100, expect, old)
    f = run_fallback(data, tmp_path, name="rules")
    assert f == (100, expect, old)


@pytest.mark.parametrize("line", GOOD_LINES, ids=lambda b: b.decode("latin-1"))
def test_odd_lines_like_c(tmp_path, cbin, line):
    data = line + b"\n"
    c = c_build(cbin, data, tmp_path)
    assert run_rules(qbin("tcprules"), data, tmp_path, env=qenv(), name="q") == (0, b"", c)
    assert run_fallback(data, tmp_path) == (0, b"", c)


def test_empty_input(tmp_path, cbin):
    c = c_build(cbin, b"", tmp_path)
    assert len(c) == 2048
    assert run_rules(qbin("tcprules"), b"", tmp_path, env=qenv(), name="q") == (0, b"", c)
    assert run_fallback(b"", tmp_path) == (0, b"", c)


def test_many_records_identical(tmp_path, cbin):
    """Enough records that hash tables collide and probe."""
    data = b"".join(b"10.%d.%d.0-255:allow,N=/%d/\n" % (a, b, a * 7 + b)
                    for a in range(3) for b in range(4))
    c = c_build(cbin, data, tmp_path)
    assert run_rules(qbin("tcprules"), data, tmp_path, env=qenv(), name="q") == (0, b"", c)
    assert run_fallback(data, tmp_path) == (0, b"", c)


def both(cbin, args, stdin=b"", **kw):
    out = []
    for b in (cbin("tcprules"), qbin("tcprules")):
        p = subprocess.run([b] + args, input=stdin, capture_output=True, env=qenv(),
                           timeout=30, **kw)
        out.append((p.returncode, p.stdout, p.stderr))
    return out


def test_usage(tmp_path, cbin):
    for args in ([], [str(tmp_path / "a.cdb")]):
        c, q = both(cbin, args)
        assert c == q == (100, b"", b"tcprules: usage: tcprules rules.cdb rules.tmp\n")


def test_unable_to_create(tmp_path, cbin):
    """A tmp path in a missing directory (chmod does not stop root)."""
    args = [str(tmp_path / "r.cdb"), str(tmp_path / "nodir" / "r.tmp")]
    c, q = both(cbin, args, b"1.2.3.4:allow\n")
    assert c == q == (111, b"", b"tcprules: fatal: unable to create " + args[1].encode()
                      + b": file does not exist\n")
    os.mkdir(tmp_path / "isdir.tmp")
    args = [str(tmp_path / "r.cdb"), str(tmp_path / "isdir.tmp")]
    c, q = both(cbin, args, b"1.2.3.4:allow\n")
    assert c == q == (111, b"", b"tcprules: fatal: unable to create " + args[1].encode()
                      + b": is a directory\n")
    assert not os.path.exists(tmp_path / "r.cdb")


def test_unable_to_move(tmp_path, cbin):
    os.mkdir(tmp_path / "r.cdb")
    (tmp_path / "r.cdb" / "keep").write_bytes(b"")
    args = [str(tmp_path / "r.cdb"), str(tmp_path / "r.tmp")]
    c, q = both(cbin, args, b"1.2.3.4:allow\n")
    assert c == q == (111, b"", b"tcprules: fatal: unable to move " + args[1].encode()
                      + b" to " + args[0].encode() + b": is a directory\n")


def test_unable_to_read_input(tmp_path, cbin):
    """stdin open for writing only: read(2) fails with EBADF.  (A directory on
    stdin, EISDIR in the C, stops the Python interpreter before main runs.)"""
    args = [str(tmp_path / "r.cdb"), str(tmp_path / "r.tmp")]
    out = []
    for b in (cbin("tcprules"), qbin("tcprules")):
        d = os.open(tmp_path / "wo", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            p = subprocess.run([b] + args, stdin=d, capture_output=True, env=qenv(),
                               timeout=30)
        finally:
            os.close(d)
        out.append((p.returncode, p.stderr))
    assert out[0] == out[1] == (
        111, b"tcprules: fatal: unable to read input: file descriptor not open\n")
    assert not os.path.exists(tmp_path / "r.cdb")


def test_replaces_atomically(tmp_path):
    """The new cdb arrives by rename: a reader holding the old one keeps it."""
    run_rules(qbin("tcprules"), b"1.2.3.4:allow,V=/old/\n", tmp_path, env=qenv())
    old = cdb.reader(str(tmp_path / "rules.cdb"))
    try:
        ino = os.stat(tmp_path / "rules.cdb").st_ino
        assert run_rules(qbin("tcprules"), b"1.2.3.4:allow,V=/new/\n", tmp_path,
                         env=qenv())[0] == 0
        assert os.stat(tmp_path / "rules.cdb").st_ino != ino
        assert old.get(b"1.2.3.4") == b"+V=old\0"
    finally:
        old.close()
    new = cdb.reader(str(tmp_path / "rules.cdb"))
    assert new.get(b"1.2.3.4") == b"+V=new\0"
    new.close()


# -- qtools.lib.cdb: both backends against C-built files --------------------

def test_pymaker_reproduces_c_cdb(tmp_path, cbin):
    c = c_build(cbin, RICH, tmp_path)
    records = list(cdb.PyReader(c).items())
    assert len(records) > 20
    with open(tmp_path / "py.cdb", "w+b") as f:
        m = cdb.PyMaker(f)
        for k, v in records:
            m.add(k, v)
        m.finish()
    assert (tmp_path / "py.cdb").read_bytes() == c
    m = cdb.make(str(tmp_path / "seam.cdb"))           # cdbx when installed
    for k, v in records:
        m.add(k, v)
    m.finish()
    assert (tmp_path / "seam.cdb").read_bytes() == c


def test_pyreader_and_seam_agree_on_c_cdb(tmp_path, cbin):
    c = c_build(cbin, RICH, tmp_path)
    py = cdb.PyReader(c)
    path = _write(tmp_path, c)
    seam, bulk = cdb.reader(path), cdb.bulk_reader(path)      # pread; cdbx's mmap
    try:
        items = list(py.items())
        assert items == list(seam.items()) == list(bulk.items())
        for k, v in items:
            assert py.get(k) == seam.get(k) == bulk.get(k)
            assert py.getall(k) == seam.getall(k) == bulk.getall(k)
            assert v in py.getall(k)
        for k in (b"nope", b"1.2.3.", b"=", b"x" * 300):
            assert py.get(k) == seam.get(k) == bulk.get(k)
            assert py.getall(k) == seam.getall(k) == bulk.getall(k)
        assert py.get(b"nope", b"dflt") == b"dflt"
    finally:
        seam.close()
        bulk.close()


def test_cdb_hash():
    # djb's cdb_hash: h = 5381; h = ((h << 5) + h) ^ c
    assert cdb.cdb_hash(b"") == 5381
    assert cdb.cdb_hash(b"a") == ((5381 << 5) + 5381) ^ 97


@pytest.mark.parametrize("backend", ["py", "seam", "bulk"])
def test_bad_cdb_errors(tmp_path, cbin, backend):
    """Truncated or garbage files fail with djb's errno: EPROTO; an empty one
    with EINVAL (the C cdb cannot mmap it and reads)."""
    c = c_build(cbin, RICH, tmp_path)

    def open_(data):
        if backend == "py":
            return cdb.PyReader(data)
        opener = cdb.reader if backend == "seam" else cdb.bulk_reader
        return opener(_write(tmp_path, data, "bad.cdb"))

    with pytest.raises(OSError) as e:
        open_(b"").get(b"1.2.3.4")
    assert e.value.errno == errno.EINVAL
    for data in (c[:100], c[:2047]):
        with pytest.raises(OSError) as e:
            open_(data).get(b"1.2.3.4")
        assert e.value.errno == errno.EPROTO
    with pytest.raises(OSError) as e:
        open_(c[:2100]).get(b"127.0.0.1")
    assert e.value.errno == errno.EPROTO


def test_fallback_really_is_pure_python(tmp_path):
    code = FALLBACK.split("from qtools.lib.run")[0] + (
        "from qtools.lib import cdb\n"
        "m = cdb.make(sys.argv[1]); m.finish()\n"
        "print(type(m).__name__, type(cdb.bulk_reader(sys.argv[1])).__name__)\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.cdb")],
                       capture_output=True, env=qenv(), timeout=30)
    assert (p.stdout, p.stderr) == (b"PyMaker FdReader\n", b"")
