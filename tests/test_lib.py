"""The shared library's pure parts: djb error texts, djb getopt, TAI64 labels."""
import errno
import subprocess
import sys

import pytest

from qtools.lib import sgetopt, strerr, tai64


def test_errstr_is_djbs_not_strerror():
    assert strerr.errstr(errno.ENOENT) == "file does not exist"
    assert strerr.errstr(errno.EAGAIN) == "temporary failure"      # first match on Linux
    assert strerr.errstr(errno.ENXIO) == "device not configured"
    assert strerr.errstr(errno.EADDRINUSE) == "address already used"
    assert strerr.errstr(OSError(errno.EACCES, "x")) == "access denied"
    assert strerr.errstr(99999) == "unknown error"


def run_getopt(argv, opts):
    code = ("import sys; from qtools.lib import sgetopt\n"
            "try:\n print(sgetopt.getopt(%r, %r, 'prog'))\n"
            "except sgetopt.UsageError: sys.exit(100)" % (argv, opts))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("argv,expect", [
    (["p", "-vH", "-c5", "-x", "f", "a", "-q"], "([('v', None), ('H', None), ('c', '5'), ('x', 'f')], ['a', '-q'])"),
    (["p", "--", "-v"], "([], ['-v'])"),
    (["p", "-", "x"], "([], ['-', 'x'])"),
])
def test_getopt_like_djb(argv, expect):
    r = run_getopt(argv, "vHc:x:")
    assert r.stdout.strip() == expect


def test_getopt_messages():
    r = run_getopt(["p", "-T"], "vc:")
    assert (r.returncode, r.stderr) == (100, "prog: illegal option -- T\n")
    r = run_getopt(["p", "-c"], "vc:")
    assert (r.returncode, r.stderr) == (100, "prog: option requires an argument -- c\n")


def test_scan_ulong():
    assert sgetopt.scan_ulong("89") == 89
    assert sgetopt.scan_ulong("12ab") == 12
    assert sgetopt.scan_ulong("nobody") == 0


def test_tai64_label_roundtrip():
    lab = tai64.label((tai64.BASE + 1700000000, 123456500))
    assert lab == b"@400000006553f10a075bcbf4"
    assert tai64.parse_label(lab) == (1700000000, 123456500)
    assert tai64.parse_label(b"@zz") is None
    sec, nano = tai64.now()
    assert nano % 1000 == 500                 # taia_now(): 1000*usec + 500
