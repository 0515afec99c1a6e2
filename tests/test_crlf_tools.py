"""addcr, delcr, fixcrio, argv0 against Debian's binaries (ucspi-tcp 0.88).

Pure transforms are checked on golden pairs (so they hold without the C
tools too) and against the C binaries on the same inputs, including large
random inputs where CRs and LFs fall on every read boundary.
"""
import os
import random
import signal
import subprocess

import pytest

from helpers import qbin, qenv, wait_until

GOLDEN = [
    # input, addcr, delcr
    (b"", b"", b""),
    (b"a\nb\n", b"a\r\nb\r\n", b"a\nb\n"),
    (b"a\r\nb\r\n", b"a\r\r\nb\r\r\n", b"a\nb\n"),
    (b"c\r\r\n", b"c\r\r\r\n", b"c\r\n"),                    # only one CR goes
    (b"d\re\r", b"d\re\r", b"d\re\r"),                       # a final partial line keeps its CR
    (b"\r", b"\r", b"\r"),
    (b"\r\r", b"\r\r", b"\r\r"),
    (b"x\r\r\n\r", b"x\r\r\r\n\r", b"x\r\n\r"),
    (b"\n\n", b"\r\n\r\n", b"\n\n"),
    (b"partial", b"partial", b"partial"),
    (b"\0\xff\r\n\x7f", b"\0\xff\r\r\n\x7f", b"\0\xff\n\x7f"),
]


def filt(binary, data, env, **kw):
    p = subprocess.run([binary], input=data, capture_output=True, env=env, timeout=30, **kw)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("inp,add,dele", GOLDEN)
def test_golden(mode, inp, add, dele):
    assert filt(qbin("addcr"), inp, qenv(mode)) == (0, add, b"")
    assert filt(qbin("delcr"), inp, qenv(mode)) == (0, dele, b"")


@pytest.mark.parametrize("inp,add,dele", GOLDEN)
def test_golden_is_what_c_does(cbin, inp, add, dele):
    assert filt(cbin("addcr"), inp, qenv()) == (0, add, b"")
    assert filt(cbin("delcr"), inp, qenv()) == (0, dele, b"")


def random_crlf(n, seed):
    rnd = random.Random(seed)
    return bytes(rnd.choice(b"\r\n\r\nab\0") for _ in range(n))


@pytest.mark.parametrize("seed", [1, 2])
def test_large_input_same_as_c(cbin, mode, seed):
    data = random_crlf(300000, seed)
    for prog in ("addcr", "delcr"):
        assert filt(qbin(prog), data, qenv(mode)) == filt(cbin(prog), data, qenv())


def test_arguments_ignored_and_write_error(cbin, mode):
    for prog in ("addcr", "delcr"):
        for b in (cbin(prog), qbin(prog)):
            p = subprocess.run([b, "x", "-y"], input=b"a\n", capture_output=True,
                               env=qenv(mode), timeout=10)
            assert p.returncode == 0 and p.stderr == b""
            with open("/dev/full", "wb") as full:
                p = subprocess.run([b], input=b"a\n" * 10000, stdout=full,
                                   stderr=subprocess.PIPE, env=qenv(mode), timeout=10)
            assert (p.returncode, p.stderr) == (111, b""), b


def test_delcr_holds_a_cr_across_reads(mode):
    """A CR at the end of one read waits for the next byte."""
    p = subprocess.Popen([qbin("delcr")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=qenv(mode), start_new_session=True)
    try:
        os.set_blocking(p.stdout.fileno(), False)
        got = bytearray()

        def out_is(want):
            try:
                d = os.read(p.stdout.fileno(), 4096)
            except BlockingIOError:
                d = b""
            got.extend(d)
            return bytes(got) == want
        for piece, want in ((b"a\r", b"a"), (b"\nb\r", b"a\nb"), (b"\r", b"a\nb\r"),
                            (b"c", b"a\nb\r\rc")):
            p.stdin.write(piece)
            p.stdin.flush()
            wait_until(lambda: out_is(want), 10, p, "delcr output %r" % want)
        p.stdin.write(b"\r")
        p.stdin.close()
        assert p.wait(10) == 0
        wait_until(lambda: out_is(b"a\nb\r\rc\r"), 10, None, "the final CR")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdout.close()


# -- fixcrio ------------------------------------------------------------------------

FIX_PROG = ["sh", "-c", "cat >&2; printf 'x\\ny\\r\\nz\\r\\r\\n\\r\\rw\\n\\n'"]


def fixcrio(binary, args, data, env):
    p = subprocess.run([binary] + args, input=data, capture_output=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_fixcrio_both_directions(cbin, mode):
    inp = b"a\nb\r\nc\r\r\nd\n\n\re"
    q = fixcrio(qbin("fixcrio"), FIX_PROG, inp, qenv(mode))
    assert q == (0, b"x\r\ny\r\nz\r\r\n\r\rw\r\n\r\n", b"a\r\nb\r\nc\r\r\nd\r\n\r\n\re")
    assert q == fixcrio(cbin("fixcrio"), FIX_PROG, inp, qenv(mode))


def test_fixcrio_large_same_as_c(cbin, mode):
    data = random_crlf(100000, 3)
    prog = ["sh", "-c", "cat >&2; printf 'end\\n'"]
    assert fixcrio(qbin("fixcrio"), prog, data, qenv(mode)) == \
        fixcrio(cbin("fixcrio"), prog, data, qenv(mode))


@pytest.mark.parametrize("binary", ["c", "q"])
def test_fixcrio_remembers_cr_across_packets(cbin, mode, binary):
    path = cbin("fixcrio") if binary == "c" else qbin("fixcrio")
    p = subprocess.Popen([path, "cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=qenv(mode), start_new_session=True)
    try:
        got = bytearray()

        def out_is(want):
            got.extend(os.read(p.stdout.fileno(), 4096))
            return bytes(got) == want
        for piece, want in ((b"a\r", b"a\r"), (b"\nb", b"a\r\nb"), (b"\n", b"a\r\nb\r\n")):
            p.stdin.write(piece)
            p.stdin.flush()
            wait_until(lambda: out_is(want), 10, None, "fixcrio output %r" % want)
        p.stdin.close()
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdout.close()


@pytest.mark.parametrize("args", [[], ["nonexist-program"]])
def test_fixcrio_errors_same_as_c(cbin, mode, args):
    c = fixcrio(cbin("fixcrio"), args, b"", qenv(mode))
    q = fixcrio(qbin("fixcrio"), args, b"", qenv(mode))
    assert q == c
    assert q[0] == (100 if not args else 111)


# -- argv0 --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [], ["sh"], ["sh", "foo", "-c", "echo $0 $1", "arg1"], ["/bin/sh", "-sh", "-c", "echo $0"],
    ["nonexist-program", "foo"], ["/nonexist/prog", "foo"], ["/etc/passwd", "foo"],
    ["/tmp", "foo"],
])
def test_argv0_same_as_c(cbin, mode, args):
    c = subprocess.run([cbin("argv0")] + args, capture_output=True, env=qenv(mode), timeout=10,
                       stdin=subprocess.DEVNULL)
    q = subprocess.run([qbin("argv0")] + args, capture_output=True, env=qenv(mode), timeout=10,
                       stdin=subprocess.DEVNULL)
    assert (q.returncode, q.stdout, q.stderr) == (c.returncode, c.stdout, c.stderr)


def test_argv0_sets_argv0(mode):
    p = subprocess.run([qbin("argv0"), "sh", "my-name", "-c", "echo $0; tr '\\0' ' ' "
                        "</proc/$$/cmdline"], capture_output=True, env=qenv(mode), timeout=10)
    assert p.stdout.startswith(b"my-name\nmy-name -c ")


def test_argv0_runs_a_qtools_program(mode):
    """realname may be a qtools launcher: elided or exec'd, it runs the same."""
    p = subprocess.run([qbin("argv0"), "addcr", "whatever", "ignored"], input=b"a\nb\n",
                       capture_output=True, env=qenv(mode), timeout=10)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"a\r\nb\r\n", b"")
