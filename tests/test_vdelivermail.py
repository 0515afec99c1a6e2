"""vdelivermail as qmail-local runs it from .qmail-default (message on fd 0,
EXT/HOST/RPLINE/DTLINE/SENDER in the environment), against both stores and
in both elision modes: Maildir delivery (names, headers, sizes, fsync'ed
link), Maildir++ quota (maildirsize parsed here independently, over quota,
the daily warning, 20 deliveries racing), the not-found instructions, the
BOUNCE_MAIL flag, the user's .qmail lines (forward through a real
qmail-queue, programs, Maildirs), loops, a stopped MariaDB (111), and
hostile names that must not write anything outside the domain's tree.
Also maildirquota on its own: parsing, sums, recounts, concurrent appends."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import qbin, small_tmpfs
from qqtools import mkqueue
from vpoptools import (VHome, mariadb, mariadb_template, private_mariadb,  # noqa: F401
                       vhome)

from qtools.vpopmail import maildirquota as mq
from qtools.vpopmail.vdelivermail import TEXT

DOM = "example.test"
MSG = b"From: a@b.test\nTo: joe@example.test\nSubject: hi\n\nbody line\n"
RP = "Return-Path: <a@b.test>\n"
NAME = re.compile(r"^(\d+)\.(\d+)(_\d+)?\.([^/]+),S=(\d+)$")


@pytest.fixture
def dom(vhome):
    vhome.ok("vadddomain", DOM, "pmpass")
    vhome.ok("vadduser", "joe@" + DOM, "pw")
    return vhome


def maildir(vh, user="joe"):
    return os.path.join(vh.domdir(DOM), user, "Maildir")


def files(d):
    try:
        return sorted(os.listdir(d))
    except FileNotFoundError:
        return []


def snapshot(top):
    out = {}
    for root, dirs, fs in os.walk(top):
        for n in dirs + fs:
            p = os.path.join(root, n)
            out[os.path.relpath(p, top)] = os.lstat(p).st_size if n in fs else None
    return out


def parse_maildirsize(path):
    """The Maildir++ file read here, without qtools: (spec, bytes, count,
    delta lines)."""
    with open(path, "rb") as f:
        lines = f.read().decode().split("\n")
    assert lines[-1] == "", "maildirsize must end in a newline"
    spec, deltas = lines[0], lines[1:-1]
    total = count = 0
    for line in deltas:
        m = re.fullmatch(r"(-?\d+) (-?\d+)", line)
        assert m, "bad maildirsize line %r" % line
        total += int(m.group(1))
        count += int(m.group(2))
    return spec, total, count, len(deltas)


def deliver(vh, tmp_path, ext="joe", host=DOM, msg=MSG, instr="delete", mode="elide",
            args=None, pipe=False, **env):
    """Run vdelivermail like qmail-local: (exit code, stdout, stderr)."""
    e = dict(EXT=ext, HOST=host, RPLINE=RP, SENDER="a@b.test",
             DTLINE="Delivered-To: %s-%s@%s\n" % (host, ext, host),
             RECIPIENT="%s-%s@%s" % (host, ext, host), USER=host, LOCAL="%s-%s" % (host, ext))
    e.update(env)
    argv = [qbin("vdelivermail")] + (["", instr] if args is None else list(args))
    if pipe:
        p = subprocess.run(argv, input=msg, capture_output=True, timeout=60,
                           env=vh.env(mode, **e))
    else:
        mf = tmp_path / ("msg.%d" % time.monotonic_ns())
        mf.write_bytes(msg)
        with open(mf, "rb") as f:
            p = subprocess.run(argv, stdin=f, capture_output=True, timeout=60,
                               env=vh.env(mode, **e))
        mf.unlink()
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def stored(md):
    """[(name, bytes)] of new/."""
    out = []
    for n in files(os.path.join(md, "new")):
        with open(os.path.join(md, "new", n), "rb") as f:
            out.append((n, f.read()))
    return out


# -- Maildir delivery ----------------------------------------------------------
def test_delivery_lands_in_new(dom, mode, tmp_path):
    dom.ok("vsetuserquota", "joe@" + DOM, "50M")
    md = maildir(dom)
    code, out, err = deliver(dom, tmp_path, mode=mode)
    assert (code, out, err) == (0, "", "")
    (name, data), = stored(md)
    want = RP.encode() + b"Delivered-To: joe@example.test\n" + MSG
    assert data == want
    m = NAME.match(name)
    assert m and int(m.group(5)) == len(want), name
    assert m.group(4) == os.uname().nodename[:32]
    assert abs(int(m.group(1)) - time.time()) < 60
    assert files(os.path.join(md, "tmp")) == []
    assert os.stat(os.path.join(md, "new", name)).st_mode & 0o777 == 0o600
    spec, total, count, _ = parse_maildirsize(os.path.join(md, "maildirsize"))
    assert (spec, total, count) == ("52428800S", len(want), 1)
    # a second one: another name, the deltas add up
    code, _, _ = deliver(dom, tmp_path, mode=mode, msg=MSG + b"more\n")
    assert code == 0
    got = stored(md)
    assert len(got) == 2
    spec, total, count, _ = parse_maildirsize(os.path.join(md, "maildirsize"))
    assert (total, count) == (sum(len(d) for _, d in got), 2)
    assert total == sum(int(NAME.match(n).group(5)) for n, _ in got)


def test_pipe_on_stdin_and_nul_bytes(dom, tmp_path):
    """A pipe is made seekable; NUL bytes and a missing final newline are
    stored as they came."""
    msg = b"Subject: x\n\n\0bin\0ary\0" + bytes(range(256)) + b"no newline"
    assert deliver(dom, tmp_path, msg=msg, pipe=True)[0] == 0
    (_, data), = stored(maildir(dom))
    assert data.endswith(b"Delivered-To: joe@example.test\n" + msg)


def test_no_quota_no_maildirsize(dom, tmp_path):
    assert deliver(dom, tmp_path)[0] == 0
    assert len(stored(maildir(dom))) == 1
    assert not os.path.exists(os.path.join(maildir(dom), "maildirsize"))


def test_extension_and_alias_domain(dom, tmp_path):
    """joe-lists@ reaches joe (QMAIL_EXT) through his .qmail-lists; an
    alias domain's HOST reaches the real domain."""
    udir = os.path.join(dom.domdir(DOM), "joe")
    os.mkdir(os.path.join(udir, "Lists"))
    for s in ("new", "cur", "tmp"):
        os.mkdir(os.path.join(udir, "Lists", s))
    with open(os.path.join(udir, ".qmail-lists"), "w") as f:
        f.write("./Lists/\n")
    assert deliver(dom, tmp_path, ext="joe-lists")[0] == 0
    (_, data), = stored(os.path.join(udir, "Lists"))
    assert b"Delivered-To: joe-lists@example.test\n" in data
    assert deliver(dom, tmp_path, ext="joe-other")[0] == 0       # no .qmail-other
    (_, data), = stored(maildir(dom))
    assert b"Delivered-To: joe@example.test\n" in data
    # an alias domain
    from qtools.vpopmail import admin
    env = dom.env()
    r = subprocess.run([sys.executable, "-c",
                        "from qtools.vpopmail import admin; admin.vaddaliasdomain("
                        "'alias.test', 'example.test')"], env=env, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert admin is not None
    assert deliver(dom, tmp_path, host="alias.test")[0] == 0
    assert len(stored(maildir(dom))) == 2


def test_missing_user_dir_is_made_again(dom, tmp_path):
    import shutil
    shutil.rmtree(os.path.join(dom.domdir(DOM), "joe"))
    assert deliver(dom, tmp_path)[0] == 0
    assert len(stored(maildir(dom))) == 1
    shutil.rmtree(maildir(dom))
    assert deliver(dom, tmp_path)[0] == 0
    assert len(stored(maildir(dom))) == 1


def test_empty_dir_field_gets_a_directory(dom, tmp_path):
    """A user without a directory (added by hand to the store) gets
    <domain dir>/<user> with its Maildir, recorded in the store."""
    code = ("from qtools.vpopmail import store as S\n"
            "st = S.open_store(); pw = st.getpw('joe', 'example.test'); pw.dir = ''\n"
            "st.setpw(pw, 'example.test')\n")
    r = subprocess.run([sys.executable, "-c", code], env=dom.env(), capture_output=True)
    assert r.returncode == 0, r.stderr
    import shutil
    shutil.rmtree(os.path.join(dom.domdir(DOM), "joe"))
    assert deliver(dom, tmp_path)[0] == 0
    assert len(stored(maildir(dom))) == 1
    assert re.search(r"dir:\s+%s/joe\n" % re.escape(dom.domdir(DOM)),
                     dom.ok("vuserinfo", "joe@" + DOM))


# -- quota -------------------------------------------------------------------
def test_over_quota_bounces_and_leaves_nothing(dom, mode, tmp_path):
    dom.ok("vsetuserquota", "joe@" + DOM, "1000")
    md = maildir(dom)
    before = snapshot(md)
    code, out, _ = deliver(dom, tmp_path, mode=mode, msg=MSG + b"x" * 2000)
    assert (code, out) == (100, TEXT["overquota"] + "\n\n")
    assert files(os.path.join(md, "new")) == [] and files(os.path.join(md, "tmp")) == []
    after = snapshot(md)
    assert after.pop("quotawarn") == 0                  # the warning's time stamp (vpopmail's)
    assert after == before
    # the domain's own text
    with open(os.path.join(dom.domdir(DOM), ".over-quota.msg"), "w") as f:
        f.write("Mailbox full. (#5.2.2)\n")
    code, out, _ = deliver(dom, tmp_path, mode=mode, msg=MSG + b"x" * 2000)
    assert (code, out) == (100, "Mailbox full. (#5.2.2)\n\n")
    # a message that fits still goes in
    assert deliver(dom, tmp_path, mode=mode)[0] == 0


def test_count_quota(dom, tmp_path):
    dom.ok("vsetuserquota", "joe@" + DOM, "1C")
    assert deliver(dom, tmp_path)[0] == 0
    code, out, _ = deliver(dom, tmp_path)
    assert code == 100 and out.startswith("user is over quota")
    assert len(stored(maildir(dom))) == 1
    spec, total, count, _ = parse_maildirsize(os.path.join(maildir(dom), "maildirsize"))
    assert (spec, count) == ("1C", 1)


def test_quota_warning_once_a_day(dom, tmp_path):
    dom.ok("vsetuserquota", "joe@" + DOM, "10000")
    md = maildir(dom)
    with open(os.path.join(dom.domdir(DOM), ".quotawarn.msg"), "w") as f:
        f.write("Subject: your mailbox is almost full\n\nPlease clean up.\n")
    assert deliver(dom, tmp_path, msg=MSG + b"x" * 9000)[0] == 0    # 0 % before
    assert len(stored(md)) == 1
    assert deliver(dom, tmp_path)[0] == 0                           # 91 %: warned
    got = stored(md)
    assert len(got) == 3
    warn = [d for _, d in got if b"almost full" in d]
    assert len(warn) == 1
    assert re.match(rb"Delivered-To: joe@example.test\nDate: \w{3}, \d\d \w{3} \d{4} "
                    rb"\d\d:\d\d:\d\d [+-]\d{4}\nSubject: your mailbox", warn[0]), warn[0]
    assert os.path.exists(os.path.join(md, "quotawarn"))
    assert deliver(dom, tmp_path)[0] == 0                           # not again today
    assert len(stored(md)) == 4
    _, total, count, _ = parse_maildirsize(os.path.join(md, "maildirsize"))
    assert (total, count) == (sum(len(d) for _, d in stored(md)), 4)
    # a day later it warns again
    past = time.time() - 86401
    os.utime(os.path.join(md, "quotawarn"), (past, past))
    assert deliver(dom, tmp_path)[0] == 0
    assert len([1 for _, d in stored(md) if b"almost full" in d]) == 2


def test_twenty_deliveries_race(dom, mode, tmp_path):
    dom.ok("vsetuserquota", "joe@" + DOM, "100M")
    md = maildir(dom)
    n = 20
    procs = []
    e = dict(EXT="joe", HOST=DOM, RPLINE=RP, DTLINE="Delivered-To: %s-joe@%s\n" % (DOM, DOM))
    try:
        for i in range(n):
            mf = tmp_path / ("race.%d" % i)
            mf.write_bytes(MSG + b"message %d\n" % i + b"y" * (i * 37))
            with open(mf, "rb") as f:
                procs.append(subprocess.Popen([qbin("vdelivermail"), "", "delete"], stdin=f,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              env=dom.env(mode, **e)))
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, (out, err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    got = stored(md)
    assert len(got) == n
    assert sorted(re.search(rb"message (\d+)", d).group(1) for _, d in got) == \
        sorted(b"%d" % i for i in range(n))
    assert files(os.path.join(md, "tmp")) == []
    spec, total, count, lines = parse_maildirsize(os.path.join(md, "maildirsize"))
    assert (spec, total, count) == ("104857600S", sum(len(d) for _, d in got), n)
    assert lines == n + 1


# -- users that are not there -------------------------------------------------
def test_unknown_user_delete_and_bounce(dom, mode, tmp_path):
    before = snapshot(dom.vpop)
    assert deliver(dom, tmp_path, ext="nobody", mode=mode) == (0, "", "")
    assert snapshot(dom.vpop) == before
    code, out, _ = deliver(dom, tmp_path, ext="nobody", instr="bounce-no-mailbox", mode=mode)
    assert (code, out) == (100, "Sorry, no mailbox here by that name. (#5.1.1)\n")
    assert snapshot(dom.vpop) == before
    with open(os.path.join(dom.vpop, "domains", ".no-user.msg"), "w") as f:
        f.write("No such user here.\n")
    code, out, _ = deliver(dom, tmp_path, ext="nobody", instr="bounce-no-mailbox")
    assert (code, out) == (100, "No such user here.\n")
    with open(os.path.join(dom.domdir(DOM), ".no-user.msg"), "w") as f:
        f.write("Nobody by that name at example.test.\n")
    code, out, _ = deliver(dom, tmp_path, ext="nobody", instr="bounce-no-mailbox")
    assert (code, out) == (100, "Nobody by that name at example.test.\n")


def test_catchall_path_and_address(dom, tmp_path):
    pm = os.path.join(dom.domdir(DOM), "postmaster")
    code, out, _ = deliver(dom, tmp_path, ext="nobody", instr=pm)
    assert (code, out) == (0, TEXT["willdeliver"] % (pm + "/") + "\n")
    (_, data), = stored(os.path.join(pm, "Maildir"))
    assert data == RP.encode() + b"Delivered-To: nobody@example.test\n" + MSG
    # an address: forwarded through qmail-queue
    q = mkqueue(dom.qmail)
    code, out, err = deliver(dom, tmp_path, ext="nobody", instr="catch@other.test")
    assert (code, out) == (0, ""), err
    envs, msgs = queued(q)
    assert envs == [b"Fa@b.test\0Tcatch@other.test\0"]
    assert msgs[0].endswith(b"Delivered-To: nobody@example.test\n" + MSG)


def queued(q):
    """(envelopes without u/p, messages without the Received line) in todo/."""
    envs, msgs = [], []
    for n in sorted(os.listdir(os.path.join(q, "todo"))):
        with open(os.path.join(q, "todo", n), "rb") as f:
            envs.append(re.sub(rb"^u\d+\0p\d+\0", b"", f.read()))
        with open(os.path.join(q, "mess", str(int(n) % 23), n), "rb") as f:
            msgs.append(f.read().split(b"\n", 1)[1])
    return envs, msgs


def test_bounce_mail_flag(dom, mode, tmp_path):
    dom.ok("vmoduser", "-b", "joe@" + DOM)
    code, out, _ = deliver(dom, tmp_path, mode=mode)
    assert (code, out) == (100, "vdelivermail: account is locked email bounced "
                                "joe@example.test\n")
    assert stored(maildir(dom)) == []


# -- the user's .qmail ---------------------------------------------------------
def test_dot_qmail_forward_program_and_maildir(dom, mode, tmp_path):
    q = mkqueue(dom.qmail)
    udir = os.path.join(dom.domdir(DOM), "joe")
    seen = tmp_path / "seen"
    with open(os.path.join(udir, ".qmail"), "w") as f:
        f.write("# joe's deliveries\n"
                "&bob@elsewhere.test\n"
                "carol@elsewhere.test  \n"
                "|cat > %s; echo \"$SENDER $SHELL\" >> %s\n"
                "./Maildir/\n" % (seen, seen))
    code, out, err = deliver(dom, tmp_path, mode=mode, NEWSENDER="joe-owner@example.test")
    assert (code, out) == (0, ""), err
    envs, msgs = queued(q)
    assert sorted(envs) == [b"Fjoe-owner@example.test\0Tbob@elsewhere.test\0",
                            b"Fjoe-owner@example.test\0Tcarol@elsewhere.test\0"]
    for m in msgs:
        assert m == b"Delivered-To: joe@example.test\n" + MSG
    assert seen.read_bytes() == MSG + b"a@b.test /bin/sh\n"
    (_, data), = stored(maildir(dom))
    assert data == RP.encode() + b"Delivered-To: joe@example.test\n" + MSG


def test_valias_lines(dom, mode, tmp_path):
    """valias rows (a .qmail-<alias> file or the valias table) are delivered
    by vdelivermail: a Maildir, a forward, a program; the -default wildcard
    sets $DEFAULT."""
    q = mkqueue(dom.qmail)
    jmd = maildir(dom) + "/"
    seen = tmp_path / "seen"
    dom.ok("valias", "-i", jmd, "sales@" + DOM)
    dom.ok("valias", "-i", "&bob@elsewhere.test", "sales@" + DOM)
    dom.ok("valias", "-i", "|echo \"$DEFAULT\" >> %s" % seen, "list-default@" + DOM)
    code, out, err = deliver(dom, tmp_path, ext="sales", mode=mode)
    assert (code, out) == (0, TEXT["valias"] + "\n"), err
    (_, data), = stored(maildir(dom))
    assert data == RP.encode() + b"Delivered-To: joe@example.test\n" + MSG
    envs, msgs = queued(q)
    assert envs == [b"Fa@b.test\0Tbob@elsewhere.test\0"]
    assert msgs == [b"Delivered-To: sales@example.test\n" + MSG]
    code, out, _ = deliver(dom, tmp_path, ext="list-foo-bar", mode=mode)
    assert (code, out) == (0, TEXT["valias"] + "\n")
    assert seen.read_text() == "foo-bar\n"
    # an alias naming itself loops
    dom.ok("valias", "-i", "&self@example.test", "self@" + DOM)
    code, out, _ = deliver(dom, tmp_path, ext="self", mode=mode,
                           msg=b"Delivered-To: self@example.test\n" + MSG)
    assert (code, out) == (100, "mail is looping\n")


PROGRAM_CODES = [
    ("|exit 100", 100), ("|exit 64", 100), ("|exit 112", 100), ("|exit 111", 111),
    ("|exit 3", 111), ("|kill -9 $$", 111), ("|exit 99", 99), ("|exit 0", 0),
]


def test_program_exit_codes(dom, tmp_path):
    udir = os.path.join(dom.domdir(DOM), "joe")
    for line, code in PROGRAM_CODES:
        with open(os.path.join(udir, ".qmail"), "w") as f:
            f.write(line + "\n./Maildir/\n")
        assert deliver(dom, tmp_path)[0] == code, line
        # 99 stops as qmail-local's 99 does; 0 goes on to the next line
        assert len(stored(maildir(dom))) == (1 if code == 0 else 0), line


def test_forward_failure_is_reported(dom, tmp_path):
    udir = os.path.join(dom.domdir(DOM), "joe")
    with open(os.path.join(udir, ".qmail"), "w") as f:
        f.write("&bob@elsewhere.test\n")
    fake = tmp_path / "qq"
    fake.write_text("#!/bin/sh\ncat >/dev/null; exit 71\n")
    fake.chmod(0o755)
    code, out, _ = deliver(dom, tmp_path, QMAILQUEUE=str(fake))
    assert (code, out) == (111, "Unable to forward message: mail server temporarily rejected "
                                "message (#4.3.0).\n")
    fake.write_text("#!/bin/sh\ncat >/dev/null; exit 31\n")
    code, out, _ = deliver(dom, tmp_path, QMAILQUEUE=str(fake))
    assert code == 100 and "permanently rejected" in out
    # no queue at all: qmail-queue cannot chdir, 111
    code, out, _ = deliver(dom, tmp_path)
    assert code == 111 and out.startswith("Unable to forward message: ")


def test_defaultdelivery_and_comment_only_dot_qmail(dom, tmp_path):
    """control/defaultdelivery is used unless it calls vdelivermail (the
    DEFAULT_DELIVERY build); a .qmail of comments only drops the message
    (vpopmail's check_forward_deliver counts a comment as a delivery)."""
    ctl = os.path.join(dom.qmail, "control")
    os.makedirs(ctl, exist_ok=True)
    seen = tmp_path / "seen"
    with open(os.path.join(ctl, "defaultdelivery"), "w") as f:
        f.write("# comment\n|cat > %s\n" % seen)
    assert deliver(dom, tmp_path) == (0, "", "")
    assert seen.read_bytes() == MSG and stored(maildir(dom)) == []
    with open(os.path.join(ctl, "defaultdelivery"), "w") as f:
        f.write("| /home/vpopmail/bin/vdelivermail '' delete\n")
    assert deliver(dom, tmp_path)[0] == 0
    assert len(stored(maildir(dom))) == 1
    with open(os.path.join(dom.domdir(DOM), "joe", ".qmail"), "w") as f:
        f.write("# nothing here\n")
    assert deliver(dom, tmp_path) == (0, "", "")
    assert len(stored(maildir(dom))) == 1


def test_mbox_line_is_deferred(dom, tmp_path):
    udir = os.path.join(dom.domdir(DOM), "joe")
    with open(os.path.join(udir, ".qmail"), "w") as f:
        f.write("./Mailbox\n")
    code, out, _ = deliver(dom, tmp_path)
    assert (code, out) == (111, "can't handle mbox delivery for ./Mailbox")


# -- loops ---------------------------------------------------------------------
LOOPS = [
    (b"Delivered-To: joe@example.test\n" + MSG, {}, 100),
    (b"X: y\ndelivered-to: JOE@Example.TEST\n" + MSG, {}, 100),
    (MSG, {"DTLINE": "Delivered-To: joe@example.test\n"}, 100),
    (b"X-Long: " + b"z" * 100000 + b"\nDelivered-To: joe@example.test\n\nb\n", {}, 100),
    (MSG + b"Delivered-To: joe@example.test\n", {}, 0),          # in the body
    (b"Delivered-To: joe@example.test.evil\n" + MSG, {}, 0),
]


def test_loops(dom, mode, tmp_path):
    for msg, env, code in LOOPS:
        got, out, _ = deliver(dom, tmp_path, msg=msg, mode=mode, **env)
        assert got == code, msg[:60]
        if code == 100:
            assert out == "mail is looping\n"
            assert stored(maildir(dom)) == []
    assert len(stored(maildir(dom))) == 2


def test_forward_loop(dom, tmp_path):
    udir = os.path.join(dom.domdir(DOM), "joe")
    with open(os.path.join(udir, ".qmail"), "w") as f:
        f.write("&bob@elsewhere.test\n")
    code, out, _ = deliver(dom, tmp_path, msg=b"Delivered-To: bob@elsewhere.test\n" + MSG)
    assert (code, out) == (100, "mail is looping\n")


# -- arguments, bad input --------------------------------------------------------
def test_arguments_and_environment(dom, tmp_path):
    assert deliver(dom, tmp_path, args=[""]) == (111, TEXT["syntax"] + "\n", "")
    assert deliver(dom, tmp_path, args=["", "delete", "x"])[0] == 111
    assert deliver(dom, tmp_path, EXT=None) == (100, TEXT["noext"] + "\n", "")
    assert deliver(dom, tmp_path, HOST=None) == (100, TEXT["nohost"] + "\n", "")
    assert stored(maildir(dom)) == []


HOSTILE = [
    ("../victim", DOM, "invalid username\n"),
    ("../../../victim", DOM, "invalid username\n"),
    ("a/b", DOM, "invalid username\n"),
    ("..", DOM, "invalid username\n"),
    (".hidden", DOM, "invalid username\n"),
    ("-rf", DOM, "invalid username\n"),
    ("", DOM, "invalid username\n"),
    ("jo e", DOM, "invalid username\n"),
    ("j\u00e9", DOM, "invalid username\n"),
    ("joe", "../victim", "invalid domain name\n"),
    ("joe", "a/b", "invalid domain name\n"),
    ("joe", "ex ample.test", "invalid domain name\n"),
]


def test_hostile_names(dom, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    before = snapshot(str(tmp_path))
    for ext, host, out in HOSTILE:
        for instr in ("delete", "bounce-no-mailbox", os.path.join(dom.domdir(DOM), "joe")):
            code, got, _ = deliver(dom, tmp_path, ext=ext, host=host, instr=instr)
            assert (code, got) == (100, out), (ext, host, instr)
    assert snapshot(str(tmp_path)) == before


def test_overlong_and_unknown_names_are_no_such_user(dom, tmp_path):
    before = snapshot(dom.vpop)
    for ext, host in (("u" * 65, DOM), ("u" * 300, DOM), ("joe", "d" * 97 + ".test"),
                      ("joe", ".."), ("joe", "nowhere.test")):
        assert deliver(dom, tmp_path, ext=ext, host=host)[:2] == (0, ""), (ext, host)
        code, out, _ = deliver(dom, tmp_path, ext=ext, host=host, instr="bounce-no-mailbox")
        assert (code, out) == (100, "Sorry, no mailbox here by that name. (#5.1.1)\n")
    assert snapshot(dom.vpop) == before


def test_user_dir_outside_the_domain_is_refused(dom, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    dom.ok("vmoduser", "-D", str(victim), "joe@" + DOM)
    code, out, _ = deliver(dom, tmp_path)
    assert (code, out) == (111, TEXT["outside"] % victim + "\n")
    assert os.listdir(victim) == []


def test_nul_or_nothing_in_a_dot_qmail_line(dom, tmp_path):
    udir = os.path.join(dom.domdir(DOM), "joe")
    with open(os.path.join(udir, ".qmail"), "wb") as f:
        f.write(b"&bob@else\0where.test\n")
    assert deliver(dom, tmp_path) == (111, TEXT["nul"] + "\n", "")
    with open(os.path.join(udir, ".qmail"), "wb") as f:
        f.write(b"&  \n")
    assert deliver(dom, tmp_path) == (111, TEXT["noaddress"] + "\n", "")
    assert stored(maildir(dom)) == []


def test_symlinked_maildirsize_is_not_written_through(dom, tmp_path):
    dom.ok("vsetuserquota", "joe@" + DOM, "50M")
    target = tmp_path / "target"
    target.write_text("52428800S\n0 0\n")
    ms = os.path.join(maildir(dom), "maildirsize")
    os.unlink(ms)
    os.symlink(target, ms)
    assert deliver(dom, tmp_path)[0] == 0
    assert target.read_text() == "52428800S\n0 0\n"
    assert len(stored(maildir(dom))) == 1


# -- the store down --------------------------------------------------------------
def test_mysql_down_is_111(private_mariadb, mode, tmp_path):
    vh = VHome(tmp_path, "mysql", private_mariadb)
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    assert deliver(vh, tmp_path, mode=mode)[0] == 0
    os.kill(private_mariadb.proc.pid, signal.SIGSTOP)               # hung
    try:
        t = time.monotonic()
        code, out, _ = deliver(vh, tmp_path, mode=mode, QTOOLS_MYSQL_TIMEOUT="1")
        assert (code, out) == (111, TEXT["dbdown"] + "\n")
        assert time.monotonic() - t < 10
    finally:
        os.kill(private_mariadb.proc.pid, signal.SIGCONT)
    private_mariadb.kill()                                          # gone
    before = snapshot(vh.vpop)
    for ext, instr in (("joe", "delete"), ("nobody", "delete"),
                       ("nobody", "bounce-no-mailbox")):
        code, out, _ = deliver(vh, tmp_path, ext=ext, instr=instr, mode=mode)
        assert (code, out) == (111, TEXT["dbdown"] + "\n")
    assert snapshot(vh.vpop) == before
    assert len(stored(maildir(vh))) == 1


def test_lean_import(tmp_path):
    """vdelivermail runs per delivery: a plain cdb delivery loads no heavy
    module (signal/enum, subprocess, socket, email, the SQL drivers)."""
    vh = VHome(tmp_path, "cdb")
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    vh.ok("vsetuserquota", "joe@" + DOM, "50M")
    code = ("import os, sys\n"
            "from qtools.vpopmail import vdelivermail as v\n"
            "rc = v.main(['vdelivermail', '', 'delete'])\n"
            "bad = [m for m in ('signal', 'enum', 'socket', 'subprocess', 'email', 'ssl',\n"
            "       'pymysql', 'MySQLdb', 'tempfile', 'shutil', 'random') if m in sys.modules]\n"
            "os.write(2, repr(bad).encode())\n"
            "os._exit(rc)\n")
    mf = tmp_path / "m"
    mf.write_bytes(MSG)
    with open(mf, "rb") as f:
        r = subprocess.run([sys.executable, "-c", code], stdin=f, capture_output=True,
                           env=vh.env(EXT="joe", HOST=DOM, RPLINE=RP))
    assert (r.returncode, r.stderr) == (0, b"[]")
    assert len(stored(maildir(vh))) == 1


# -- maildirquota ----------------------------------------------------------------
def mkmaildir(path):
    for s in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, s), exist_ok=True)
    return str(path)


def put(md, sub, name, size):
    with open(os.path.join(md, sub, name), "wb") as f:
        f.write(b"x" * size)


@pytest.mark.parametrize("spec,want", [
    ("NOQUOTA", (0, 0)), ("", (0, 0)), ("52428800S", (52428800, 0)), ("1000C", (0, 1000)),
    ("52428800S,1000C", (52428800, 1000)), ("1000C,5000S", (5000, 1000)),
    ("123456", (123456, 0)), (b"10S,2C", (10, 2)),
])
def test_parse_spec(spec, want):
    assert mq.parse_spec(spec) == want


def test_count_rules(tmp_path):
    md = mkmaildir(tmp_path / "Maildir")
    put(md, "new", "1.1.h,S=100", 7)                     # S= wins over the real size
    put(md, "cur", "2.2.h,S=200:2,S", 3)
    put(md, "cur", "3.3.h:2,ST", 50)                     # flagged T: not counted
    put(md, "cur", "4.4.h:2,RS", 40)                     # no S=: stat size
    put(md, "new", ".hidden", 1000)
    fold = mkmaildir(os.path.join(md, ".Sent"))
    put(fold, "cur", "5.5.h,S=11:2,S", 1)
    trash = mkmaildir(os.path.join(md, ".Trash"))
    put(trash, "cur", "6.6.h,S=5000:2,S", 1)
    assert mq.count(md) == (100 + 200 + 40 + 11, 4)
    assert mq.usage(md) == (351, 4)                      # no spec: counted, no file
    assert not os.path.exists(os.path.join(md, "maildirsize"))
    assert mq.usage(md, "1000S") == (351, 4)
    assert parse_maildirsize(os.path.join(md, "maildirsize")) == ("1000S", 351, 4, 1)
    assert files(os.path.join(md, "tmp")) == []
    # a folder's quota is its parent's
    open(os.path.join(fold, "maildirfolder"), "w").close()
    assert mq.usage(fold, "1000S") == (351, 4)
    assert mq.percent_used(fold, "1000S") == 35


def test_deltas_are_summed_and_stale_files_recounted(tmp_path):
    md = mkmaildir(tmp_path / "Maildir")
    put(md, "new", "1.1.h,S=500", 1)
    ms = os.path.join(md, "maildirsize")
    with open(ms, "w") as f:
        f.write("10000S,10C\n100 1\n250 2\n-50 -1\n")
    assert mq.usage(md, "10000S,10C") == (300, 2)        # the file is trusted
    assert mq.percent_used(md, "10000S,10C") == 20       # 2 of 10 messages
    old = time.time() - 16 * 60
    os.utime(ms, (old, old))
    assert mq.usage(md, "10000S,10C") == (500, 1)        # older than 15 min: counted
    assert parse_maildirsize(ms) == ("10000S,10C", 500, 1, 1)
    with open(ms, "a") as f:
        f.write("7 1\n" * 1300)                          # 5120 bytes or more
    assert mq.usage(md, "10000S,10C") == (500, 1)
    with open(ms, "a") as f:
        f.write("7 1\n")
    assert mq.usage(md, "20000S") == (500, 1)            # another spec: counted
    assert parse_maildirsize(ms)[0] == "20000S"


def test_over_quota_confirms_with_a_count(tmp_path):
    md = mkmaildir(tmp_path / "Maildir")
    ms = os.path.join(md, "maildirsize")
    with open(ms, "w") as f:
        f.write("1000S\n900 1\n100 1\n")                 # says full; the Maildir is empty
    assert not mq.over_quota(md, "1000S", 50)
    assert parse_maildirsize(ms) == ("1000S", 0, 0, 1)
    put(md, "new", "1.1.h,S=990", 1)
    with open(ms, "w") as f:
        f.write("1000S\n990 1\n")                        # one line, fresh: trusted
    assert mq.over_quota(md, "1000S", 20)
    assert not mq.over_quota(md, "1000S", 10)
    assert mq.percent_used(md, "1000S") == 99
    assert mq.over_quota(md, "2C", 1) is False and mq.over_quota(md, "1C", 1) is True
    assert mq.percent_used(md, "NOQUOTA") == 0 and not mq.over_quota(md, "NOQUOTA", 10 ** 9)
    assert mq.percent_used(md, "100S") == 100
    assert mq.percent_used(md, "52428800S") == 0         # qcalc's /1024 for big quotas


def test_add_makes_the_file_when_missing(tmp_path):
    md = mkmaildir(tmp_path / "Maildir")
    put(md, "new", "1.1.h,S=42", 1)
    mq.add(md, "1000S", 42, 1)                           # the count includes it
    assert parse_maildirsize(os.path.join(md, "maildirsize")) == ("1000S", 42, 1, 1)
    mq.add(md, "1000S", 8, 1)
    assert parse_maildirsize(os.path.join(md, "maildirsize")) == ("1000S", 50, 2, 2)
    mq.add(md, "NOQUOTA", 8, 1)                          # no limit: not touched
    assert parse_maildirsize(os.path.join(md, "maildirsize"))[1:3] == (50, 2)


def test_concurrent_appends(tmp_path):
    md = mkmaildir(tmp_path / "Maildir")
    with open(os.path.join(md, "maildirsize"), "w") as f:
        f.write("999999999S\n0 0\n")
    code = ("import sys; from qtools.vpopmail import maildirquota as mq\n"
            "for i in range(200): mq.add(sys.argv[1], '999999999S', int(sys.argv[2]) + i, 1)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, md, str(k * 1000)])
             for k in range(10)]
    try:
        for p in procs:
            assert p.wait(60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    spec, total, count, lines = parse_maildirsize(os.path.join(md, "maildirsize"))
    assert (count, lines) == (2000, 2001)
    assert total == sum(k * 1000 + i for k in range(10) for i in range(200))
    # more than 5120 bytes now: the next reader recounts (an empty Maildir)
    assert mq.usage(md, "999999999S") == (0, 0)


# -- durability ------------------------------------------------------------------
def test_sync_order(tmp_path):
    """The message file is fsync'ed before its link into new/, new/ is
    fsync'ed before the tmp name goes and before maildirsize is touched."""
    vh = VHome(tmp_path, "cdb")
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    vh.ok("vsetuserquota", "joe@" + DOM, "50M")
    log = tmp_path / "strace.log"
    mf = tmp_path / "m"
    mf.write_bytes(MSG)
    e = vh.env(EXT="joe", HOST=DOM, RPLINE=RP)
    with open(mf, "rb") as f:
        p = subprocess.run(["strace", "-f", "-y", "-qq", "-o", str(log), "-e",
                            "trace=openat,write,fsync,fdatasync,link,linkat,unlink,rename,"
                            "exit_group", qbin("vdelivermail"), "", "delete"],
                           stdin=f, env=e, timeout=60, capture_output=True)
    assert p.returncode == 0, p.stderr
    md = os.path.realpath(maildir(vh))
    seq = []
    for line in log.read_text(errors="replace").splitlines():
        line = re.sub(r"^\d+\s+", "", line)
        call = line.split("(", 1)[0]
        if call in ("fsync", "fdatasync", "write"):
            m = re.search(r"^\w+\(\d+<([^>]*)>", line)
            if not m or not m.group(1).startswith(md):
                continue
            ev = "%s %s" % (call, os.path.relpath(m.group(1), md))
        elif call in ("link", "linkat", "rename", "unlink"):
            args = [a for a in re.findall(r'"([^"]*)"', line)]
            if not any(a.startswith(md) for a in args):
                continue
            ev = call + " " + " ".join(os.path.relpath(a, md) for a in args)
        elif call == "openat" and "O_CREAT" in line:
            path = re.search(r'"([^"]*)"', line).group(1)
            if not path.startswith(md):
                continue
            ev = "create " + os.path.relpath(path, md)
        elif call == "exit_group":
            ev = "exit"
        else:
            continue
        ev = re.sub(r"\d+\.\d+\.[^ ,]+", "NAME", ev)
        ev = re.sub(r"S=\d+", "S=N", ev)
        if seq and seq[-1] == ev:
            continue
        seq.append(ev)
    assert seq == ["create tmp/NAME", "write tmp/NAME", "fsync tmp/NAME",
                   "link tmp/NAME new/NAME,S=N", "fsync new", "unlink tmp/NAME",
                   "write maildirsize", "exit"], seq


def test_kill9_never_leaves_a_partial_message(tmp_path):
    """Killed at any moment, a delivery leaves a complete message in new/
    or none (debris only in tmp/), and the next try delivers it."""
    import random
    vh = VHome(tmp_path, "cdb")
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    md = maildir(vh)
    body = MSG + b"z" * 3_000_000
    mf = tmp_path / "m"
    mf.write_bytes(body)
    e = vh.env(EXT="joe", HOST=DOM, RPLINE=RP)
    rnd = random.Random(4711)
    for _ in range(12):
        with open(mf, "rb") as f:
            p = subprocess.Popen([qbin("vdelivermail"), "", "delete"], stdin=f, env=e,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.0, 0.25))     # a random moment, not synchronisation
        p.kill()
        p.wait(30)
        for n, data in stored(md):
            assert data == RP.encode() + b"Delivered-To: joe@example.test\n" + body
            assert int(NAME.match(n).group(5)) == len(data)
    assert deliver(vh, tmp_path, msg=body)[0] == 0
    assert len(stored(md)) >= 1


@pytest.fixture
def small_fs(tmp_path):
    with small_tmpfs(tmp_path / "small", "300k") as d:
        yield d


def test_disk_full_is_111_and_leaves_nothing(small_fs, tmp_path):
    vh = VHome(small_fs, "cdb")
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    md = maildir(vh)
    code, out, _ = deliver(vh, tmp_path, msg=MSG + b"x" * 400_000)
    assert code == 111 and out.startswith("write failed errno = 28\n"), out
    assert out.endswith(TEXT["system"] + "\n")
    assert files(os.path.join(md, "tmp")) == [] and files(os.path.join(md, "new")) == []
    assert deliver(vh, tmp_path)[0] == 0                     # room again for a small one
    assert len(stored(md)) == 1


# -- interop: courier's Maildir++ (Debian maildrop's deliverquota) ----------------
DELIVERQUOTA = next((p for p in ("/usr/sbin/deliverquota", "/usr/bin/deliverquota")
                     if os.path.exists(p)), None)


@pytest.mark.skipif(DELIVERQUOTA is None,
                    reason="courier's deliverquota (Debian package maildrop) not installed")
def test_interop_with_courier_deliverquota(tmp_path):
    """vdelivermail and courier's deliverquota share a Maildir: each reads
    the other's maildirsize lines and names, the sums agree with a count,
    and both refuse the same over-quota message."""
    vh = VHome(tmp_path, "cdb")
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "joe@" + DOM, "pw")
    vh.ok("vsetuserquota", "joe@" + DOM, "5000")
    md = maildir(vh)

    def courier(msg):
        mf = tmp_path / "cm"
        mf.write_bytes(msg)
        with open(mf, "rb") as f:
            return subprocess.run([DELIVERQUOTA, md, "5000S"], stdin=f, capture_output=True,
                                  timeout=60).returncode

    def total():
        return sum(int(NAME.match(n).group(5)) if NAME.match(n) else
                   int(re.search(r",S=(\d+)", n).group(1)) for n, _ in stored(md)), \
            len(stored(md))

    assert deliver(vh, tmp_path)[0] == 0
    assert courier(MSG) == 0
    assert deliver(vh, tmp_path)[0] == 0
    assert mq.usage(md, "5000S") == total() and total()[1] == 3
    big = MSG + b"x" * 4850                                # fits alone, not with the rest
    assert courier(big) == 77                               # our deltas count for courier
    assert deliver(vh, tmp_path, msg=big)[0] == 100         # and courier's for us
    # courier recounts a Maildir we wrote: the same totals as ours
    os.unlink(os.path.join(md, "maildirsize"))
    assert courier(MSG) == 0
    assert mq.read(md).size == total()[0] and mq.read(md).count == total()[1]
    assert mq.count(md) == total()
