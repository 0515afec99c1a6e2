"""tcprulescheck: the rule lookup order (inventory 1.3, 1.4; interop check I6).

Every lookup runs through /usr/bin/tcprulescheck and qtools tcprulescheck,
each over a C-built and a qtools-built cdb: all four outputs must be equal.
"""
import os
import subprocess

import pytest

from helpers import qbin, qenv

from qtools.lib import cdb

# One rule per step of rules.c's search, most specific first (rts.tests style).
ORDER = [
    b"xyz@86.75.30.9:allow,which=/first/",
    b"xyz@=one.two.three:allow,which=/second/",
    b"86.75.30.9:allow,which=/third/",
    b"=one.two.three:allow,which=/fourth/",
    b"86.75.30.:allow,which=/fifth/",
    b"86.75.:allow,which=/sixth/",
    b"86.:allow,which=/seventh/",
    b"=.two.three:allow,which=/eighth/",
    b"=.three:allow,which=/ninth/",
    b"=:allow,which=/tenth/",
    b":allow,which=/eleventh/",
]
EXTRA = [
    b"1.2.3.4:deny",
    b"1.2.3.5:deny,X=/after deny/",
    b"1.2.3.6:allow,A=/1/,B=//,C=/x:y,z/",
    b"1.2.3.7:allow,A=/dup1/",
    b"1.2.3.7:allow,A=/dup2/",
    b"=.abuser.edu:deny",
    b"=localhost:allow,which=/localhost/",
    b"0.:allow,which=/zero prefix/",
    b"\xc3\xa9@=h\xc3\xb4te:allow,which=/utf8/",
    b"9.9.9.9-12:allow,which=/range/",
]
FULL = b"\n".join(ORDER + EXTRA) + b"\n"

IP, HOST, INFO = "86.75.30.9", "one.two.three", "xyz"
# (TCPREMOTEIP, TCPREMOTEHOST, TCPREMOTEINFO); None = unset
LOOKUPS = [
    (IP, HOST, INFO),
    (IP, HOST, None),
    (IP, None, INFO),
    (IP, None, None),
    (IP, HOST, "abc"),
    (IP, "x." + HOST, "xyz"),
    ("86.75.30.19", HOST, "xyz"),
    ("86.75.30.19", "other.two.three", None),
    ("86.75.31.9", "three", None),
    ("86.76.30.9", "a.b.c.three", None),
    ("86.76.30.9", "nodots", None),
    ("87.75.30.9", "nodots", None),
    ("87.75.30.9", "", None),                           # empty host: '=' is tried
    ("87.75.30.9", None, ""),                           # empty info: '@IP' is tried
    ("87.75.30.9", None, None),
    (None, None, None),                                 # unset IP: 0.0.0.0
    ("", None, None),                                   # empty IP stays empty
    ("1.2.3.4", HOST, INFO),
    ("1.2.3.4", None, INFO),
    ("1.2.3.5", None, None),
    ("1.2.3.6", None, None),
    ("1.2.3.7", None, None),
    ("5.6.7.8", "mail.abuser.edu", None),
    ("5.6.7.8", "ABUSER.EDU", None),                    # no case folding
    ("5.6.7.8", "localhost", None),
    ("5.6.7.8", "h\xf4te", "\xe9"),                     # bytes go through as they are
    ("9.9.9.11", None, None),
    ("9.9.9.13", None, None),
    ("86.75.30.9.", None, None),
    ("garbage", "..", "@"),
]


def build(cbin, tmp_path, rules, name):
    """(C-built path, qtools-built path); they are byte-identical."""
    paths = []
    for b, tag in ((cbin("tcprules"), "c"), (qbin("tcprules"), "q")):
        p = str(tmp_path / ("%s.%s.cdb" % (name, tag)))
        r = subprocess.run([b, p, p + ".tmp"], input=rules, capture_output=True,
                           env=qenv(), timeout=30)
        assert (r.returncode, r.stderr) == (0, b"")
        paths.append(p)
    with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
        assert a.read() == b.read()
    return paths


def lookup_env(ip, host, info):
    env = qenv()
    for k, v in (("TCPREMOTEIP", ip), ("TCPREMOTEHOST", host), ("TCPREMOTEINFO", info)):
        env.pop(k, None)
        if v is not None:
            env[k] = v
    return env


def check(cbin, paths, ip, host, info):
    env = lookup_env(ip, host, info)
    outs = set()
    for b in (cbin("tcprulescheck"), qbin("tcprulescheck")):
        for p in paths:
            r = subprocess.run([b, p], capture_output=True, env=env, timeout=30)
            outs.add((r.returncode, r.stdout, r.stderr))
    assert len(outs) == 1, (ip, host, info, outs)
    return outs.pop()


def test_lookups_full_rules(tmp_path, cbin):
    paths = build(cbin, tmp_path, FULL, "full")
    seen = {}
    for ip, host, info in LOOKUPS:
        rc, out, err = check(cbin, paths, ip, host, info)
        assert (rc, err) == (0, b"")
        seen[(ip, host, info)] = out
    assert seen[(IP, HOST, INFO)] == (b"rule xyz@86.75.30.9:\n"
                                      b"set environment variable which=first\n"
                                      b"allow connection\n")
    # INFO@=HOST comes before IP
    assert seen[("1.2.3.4", HOST, INFO)].startswith(b"rule xyz@=one.two.three:")
    assert seen[("1.2.3.4", None, INFO)] == b"rule 1.2.3.4:\ndeny connection\n"
    assert seen[("1.2.3.5", None, None)] == b"rule 1.2.3.5:\ndeny connection\n"
    assert seen[("1.2.3.6", None, None)] == (b"rule 1.2.3.6:\n"
                                             b"set environment variable A=1\n"
                                             b"set environment variable B=\n"
                                             b"set environment variable C=x:y,z\n"
                                             b"allow connection\n")
    assert b"A=dup1" in seen[("1.2.3.7", None, None)]
    assert seen[(None, None, None)].startswith(b"rule 0.:")
    assert seen[("", None, None)].startswith(b"rule :")
    assert seen[("87.75.30.9", "", None)].startswith(b"rule =:")
    assert seen[("5.6.7.8", "ABUSER.EDU", None)].startswith(b"rule =:")
    assert seen[("5.6.7.8", "h\xf4te", "\xe9")].startswith(b"rule \xc3\xa9@=h\xc3\xb4te:")


def test_search_order(tmp_path, cbin):
    """Drop the most specific rule one at a time: each lookup must find the
    next one down the list, and at the end nothing at all (default)."""
    expected = [b"first", b"second", b"third", b"fourth", b"fifth", b"sixth",
                b"seventh", b"eighth", b"ninth", b"tenth", b"eleventh"]
    for i in range(len(ORDER) + 1):
        paths = build(cbin, tmp_path, b"\n".join(ORDER[i:]) + b"\n", "order%d" % i)
        rc, out, err = check(cbin, paths, IP, HOST, INFO)
        if i < len(ORDER):
            key = ORDER[i].split(b":")[0]
            assert out == (b"rule " + key + b":\nset environment variable which="
                           + expected[i] + b"\nallow connection\n")
        else:
            assert out == b"default:\nallow connection\n"


def test_hand_built_data(tmp_path, cbin):
    """Rule data tcprules never writes: records after a D are not printed,
    unknown records are skipped, an unterminated tail is ignored."""
    p = str(tmp_path / "hand.cdb")
    m = cdb.make(p)
    m.add(b"1.1.1.1", b"+A=1\0D\0+B=2\0")
    m.add(b"1.1.1.2", b"?junk\0+A=1\0+tail-without-nul")
    m.add(b"1.1.1.3", b"Dx\0")
    m.add(b"1.1.1.4", b"+noequals\0")
    m.finish()
    outs = {}
    for ip in ("1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"):
        outs[ip] = check(cbin, [p], ip, None, None)[1]
    assert outs["1.1.1.1"] == (b"rule 1.1.1.1:\nset environment variable A=1\n"
                               b"deny connection\n")
    assert outs["1.1.1.2"] == (b"rule 1.1.1.2:\nset environment variable A=1\n"
                               b"allow connection\n")
    assert outs["1.1.1.3"] == b"rule 1.1.1.3:\ndeny connection\n"
    assert outs["1.1.1.4"] == (b"rule 1.1.1.4:\nset environment variable noequals\n"
                               b"allow connection\n")


def run_both(cbin, args, env=None):
    out = []
    for b in (cbin("tcprulescheck"), qbin("tcprulescheck")):
        r = subprocess.run([b] + args, capture_output=True, env=env or qenv(), timeout=30)
        out.append((r.returncode, r.stdout, r.stderr))
    return out


def test_usage(cbin):
    c, q = run_both(cbin, [])
    assert c == q == (100, b"", b"tcprulescheck: usage: tcprulescheck rules.cdb\n")


def test_missing_cdb(tmp_path, cbin):
    p = str(tmp_path / "missing.cdb")
    c, q = run_both(cbin, [p])
    assert c == q == (111, b"", b"tcprulescheck: fatal: unable to read " + p.encode()
                      + b": file does not exist\n")


def test_corrupt_cdb(tmp_path, cbin):
    """Truncated or garbage: protocol error; empty: invalid argument (djb cdb)."""
    good = build(cbin, tmp_path, FULL, "good")[0]
    with open(good, "rb") as f:
        data = f.read()
    cases = {"trunc.cdb": (data[:100], b"protocol error"),
             "trunc2.cdb": (data[:2100], b"protocol error"),
             "garbage.cdb": (bytes(range(256)) * 12, b"protocol error"),
             "empty.cdb": (b"", b"invalid argument")}
    for name, (content, text) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        c, q = run_both(cbin, [str(p)], lookup_env(IP, HOST, INFO))
        assert c == q == (111, b"", b"tcprulescheck: fatal: unable to read "
                          + str(p).encode() + b": " + text + b"\n"), name


def test_directory_as_cdb(tmp_path):
    """The C tcprulescheck crashes (SIGSEGV) here; qtools reports it."""
    d = tmp_path / "dir.cdb"
    os.mkdir(d)
    r = subprocess.run([qbin("tcprulescheck"), str(d)], capture_output=True,
                       env=lookup_env(IP, None, None), timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (
        111, b"", b"tcprulescheck: fatal: unable to read " + str(d).encode()
        + b": is a directory\n")


@pytest.mark.parametrize("nocdbx", [False, True], ids=["cdbx", "pure-python"])
def test_pure_python_reader(tmp_path, cbin, nocdbx):
    """The same lookups through qtools.ucspi.rules with either cdb backend."""
    import sys
    paths = build(cbin, tmp_path, FULL, "full")
    code = ("import sys\n" + ("sys.modules['cdbx'] = None\n" if nocdbx else "") +
            "from qtools.lib.run import launch\n"
            "sys.argv = ['tcprulescheck'] + sys.argv[1:]\n"
            "launch('qtools.ucspi.tcprulescheck')\n")
    for ip, host, info in LOOKUPS[:12]:
        env = lookup_env(ip, host, info)
        c = subprocess.run([cbin("tcprulescheck"), paths[0]], capture_output=True,
                           env=env, timeout=30)
        q = subprocess.run([sys.executable, "-c", code, paths[1]], capture_output=True,
                           env=env, timeout=30)
        assert (q.returncode, q.stdout, q.stderr) == (c.returncode, c.stdout, c.stderr)


def test_output_errors_ignored_like_c(tmp_path, cbin):
    """tcprulescheck.c never checks its final flush: a full or closed stdout
    still exits 0 with nothing on stderr."""
    p = build(cbin, tmp_path, FULL, "full")[0]
    env = lookup_env(IP, HOST, INFO)
    for b in (cbin("tcprulescheck"), qbin("tcprulescheck")):
        with open("/dev/full", "wb") as full:
            r = subprocess.run([b, p], stdout=full, stderr=subprocess.PIPE, env=env, timeout=30)
        assert (r.returncode, r.stderr) == (0, b""), b
        r = subprocess.run([b, p], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                           timeout=30, preexec_fn=lambda: os.close(1))
        assert (r.returncode, r.stderr) == (0, b""), b
