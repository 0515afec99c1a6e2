"""svscan (and svscanboot): supervise pairs wired through one pipe kept for
the life of the entry, dot-names and files skipped, new directories picked
up, killed supervise restarted on the same pipe, the SIGTERM policy (the log
stops after its service, nothing lost), zombie reaping as process 1, mixed
C/qtools trees (I14, I15), and the memory bound of a 15-service tree."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import QBIN, qbin, qenv, wait_until
from svtools import (Proc, alive, children, cmdline, cwd, fdlink, read_status, run,
                     service, supervised, wait_pid)

HERE = os.path.dirname(os.path.abspath(__file__))


def tree(svscan_pid):
    """{title: pid} of svscan's supervise children."""
    return {cmdline(p).decode(): p for p in children(svscan_pid)}


def sup(svscan_pid, title):
    """Pid of the child of svscan whose title is `title`, once it has one."""
    return tree(svscan_pid).get(title)


def log_pair(pid, name):
    """(supervise NAME pid, supervise log pid) once both exist and are wired."""
    t = tree(pid)
    a = t.get("supervise " + name)
    logs = [p for title, p in t.items() if title == "supervise log"
            and cwd(p).endswith("/%s/log" % name)]
    if a and logs and fdlink(a, 1) and fdlink(a, 1) == fdlink(logs[0], 0):
        return a, logs[0]
    return None


def svscan_env(mode, first):
    """PATH with qtools or C supervise first."""
    env = qenv(mode)
    if first == "c":
        env["PATH"] = "/usr/bin:/bin:" + QBIN
    return env


def make_tree(sv):
    service(sv / "a", run="exec 2>&1\necho hello from a\nexec sleep 1000\n",
            log="exec cat > out\n")
    service(sv / "b", run="exec sleep 1001\n")
    service(sv / ".hidden", run="exec sleep 1002\n")
    (sv / "plain").write_text("not a service\n")


@pytest.mark.parametrize("supervise", ["qtools", "c"])
def test_wiring(mode, tmp_path, supervise):
    """I14/I15: qtools svscan starting qtools or C supervise."""
    sv = tmp_path / "sv"
    make_tree(sv)
    env = svscan_env(mode, "c" if supervise == "c" else "q")
    with Proc([qbin("svscan"), str(sv)], env=env, errpath=str(tmp_path / "err")) as s:
        a, log = wait_until(lambda: log_pair(s.pid, "a"), 10, s.p, "a and its log")
        wait_until(lambda: sup(s.pid, "supervise b"), 10, s.p, "b")
        assert cmdline(s.pid) == b"svscan " + str(sv).encode()
        assert fdlink(a, 1).startswith("pipe:")
        # a supervise chdirs into its directory just after it starts
        wait_until(lambda: cwd(log) == str(sv / "a" / "log") and cwd(a) == str(sv / "a"),
                   10, s.p, "supervise in its directory")
        b = sup(s.pid, "supervise b")
        assert fdlink(b, 1) != fdlink(a, 1)
        # a supervise holds nothing but its own end of the pipe
        assert fdlink(a, 0) == "/dev/null" and not fdlink(log, 1).startswith("pipe:")
        assert sorted(tree(s.pid)) == ["supervise a", "supervise b", "supervise log"]
        out = sv / "a" / "log" / "out"
        wait_until(lambda: out.exists() and out.read_text() == "hello from a\n", 10, s.p,
                   "log line")
        wait_pid(str(sv / "b"), proc=s.p)
        assert run([qbin("svstat"), str(sv / "b")], env=env)[1].startswith(
            str(sv / "b").encode() + b": up (pid ")
        assert not os.path.exists(sv / ".hidden" / "supervise")
        assert s.err() == b""


def test_c_svscan_with_qtools_supervise(mode, cbin, tmp_path):
    """I15: Debian's svscan starting qtools supervise; C svc controls them."""
    sv = tmp_path / "sv"
    make_tree(sv)
    with Proc([cbin("svscan"), str(sv)], env=qenv(mode), errpath=str(tmp_path / "err")) as s:
        a, log = wait_until(lambda: log_pair(s.pid, "a"), 10, s.p, "a and its log")
        out = sv / "a" / "log" / "out"
        wait_until(lambda: out.exists() and out.read_text() == "hello from a\n", 10, s.p,
                   "log line")
        pid = wait_pid(str(sv / "b"), proc=s.p)[2]
        run([cbin("svc"), "-d", str(sv / "b")])
        wait_pid(str(sv / "b"), lambda p: p == 0, proc=s.p)
        assert not alive(pid)
        assert run([cbin("svstat"), str(sv / "b")])[1].endswith(b" seconds, normally up\n")


def test_new_dir_killed_supervise_and_same_pipe(mode, tmp_path):
    """SIGHUP scans at once; a killed supervise comes back on the same pipe;
    a new directory is also found by the plain 5-s rescan."""
    sv = tmp_path / "sv"
    make_tree(sv)
    with Proc([qbin("svscan"), str(sv)], env=qenv(mode), errpath=str(tmp_path / "err")) as s:
        a, log = wait_until(lambda: log_pair(s.pid, "a"), 10, s.p, "a and its log")
        pipe = fdlink(a, 1)
        # new service, picked up on SIGHUP
        service(sv / "c", run="exec sleep 1003\n", log="exec cat > out\n")
        os.kill(s.pid, signal.SIGHUP)
        wait_until(lambda: log_pair(s.pid, "c"), 5, s.p, "c after SIGHUP")
        # kill -9 both supervise of a: the next scan restarts them on the old pipe
        orphan = wait_pid(str(sv / "a"), proc=s.p)[2]
        os.kill(a, signal.SIGKILL)
        os.kill(log, signal.SIGKILL)
        wait_until(lambda: not supervised(str(sv / "a")), 5, s.p, "a unsupervised")
        os.kill(s.pid, signal.SIGHUP)
        a2, log2 = wait_until(lambda: log_pair(s.pid, "a"), 5, s.p, "a restarted")
        assert a2 != a and log2 != log and fdlink(a2, 1) == pipe
        # the new supervise stops the old ./run (C would run a second copy)
        wait_until(lambda: not alive(orphan), 8, s.p, "orphan stopped")
        assert wait_pid(str(sv / "a"), lambda p: p not in (0, orphan), proc=s.p)
        # and the 5-s rescan alone finds a new directory
        service(sv / "d", run="exec sleep 1004\n")
        wait_until(lambda: sup(s.pid, "supervise d"), 8, s.p, "d without SIGHUP")


def test_non_utf8_service_name(mode, tmp_path):
    """Directory names are bytes: a Latin-1 name is supervised like any other."""
    sv = tmp_path / "sv"
    name = os.fsdecode(b"caf\xe9")
    service(sv / name, log="exec cat > out\n", run="echo hi\nexec sleep 1000\n")
    with Proc([qbin("svscan"), str(sv)], env=qenv(mode), errpath=str(tmp_path / "err")) as s:
        wait_pid(str(sv / name), proc=s.p)
        out = sv / name / "log" / "out"
        wait_until(lambda: out.exists() and out.read_text() == "hi\n", 10, s.p, "log line")
        assert s.err() == b""


def test_renamed_dir_keeps_its_supervise(mode, tmp_path):
    sv = tmp_path / "sv"
    service(sv / "a")
    with Proc([qbin("svscan"), str(sv)], env=qenv(mode)) as s:
        a = wait_until(lambda: sup(s.pid, "supervise a"), 10, s.p, "a")
        os.rename(sv / "a", sv / "z")
        os.kill(s.pid, signal.SIGHUP)
        # give the scan something to do and check it did it
        service(sv / "y")
        wait_until(lambda: sup(s.pid, "supervise y"), 5, s.p, "y")
        assert sup(s.pid, "supervise a") == a and not sup(s.pid, "supervise z")


@pytest.mark.parametrize("supervise", ["qtools", "c"])
def test_sigterm_stops_tree_log_last(mode, tmp_path, supervise):
    """SIGTERM: services down first, then their loggers read to end-of-file;
    svscan exits 0 and nothing of the tree is left (also with C supervise)."""
    sv = tmp_path / "sv"
    service(sv / "a", log="exec cat > out\n", run=(
        "exec 2>&1\n"
        "trap 'i=0; while [ $i -lt 500 ]; do echo bye $i; i=$((i+1)); done; exit 0' TERM\n"
        "echo up\n"
        "while :; do sleep 0.05; done\n"))
    service(sv / "b", run="exec sleep 1001\n")
    env = svscan_env(mode, "c" if supervise == "c" else "q")
    with Proc([qbin("svscan"), str(sv)], env=env, errpath=str(tmp_path / "err")) as s:
        wait_until(lambda: log_pair(s.pid, "a"), 10, s.p, "a and its log")
        out = sv / "a" / "log" / "out"
        wait_until(lambda: out.exists() and out.read_text() == "up\n", 10, s.p, "up")
        wait_pid(str(sv / "b"), proc=s.p)
        procs = [s.pid] + children(s.pid)
        procs += [c for p in procs for c in children(p)]
        os.kill(s.pid, signal.SIGTERM)
        assert s.wait(10) == 0
        assert s.err() == b""
        wait_until(lambda: not any(alive(p) for p in procs), 5, what="tree gone")
        lines = out.read_text().splitlines()
        assert lines == ["up"] + ["bye %d" % i for i in range(500)]
        for d in ("a", "a/log", "b"):
            assert read_status(str(sv / d))[2] == 0 and not supervised(str(sv / d))


def test_sigterm_bound(mode, tmp_path):
    """A service that ignores TERM is killed after the grace period."""
    sv = tmp_path / "sv"
    service(sv / "a", run="trap '' TERM\nwhile :; do sleep 0.05; done\n")
    with Proc([qbin("svscan"), str(sv)], env=qenv(mode), errpath=str(tmp_path / "err")) as s:
        pid = wait_pid(str(sv / "a"), proc=s.p)[2]
        wait_until(lambda: ignored(pid) & (1 << (signal.SIGTERM - 1)), 5, s.p, "trap set")
        t = time.monotonic()
        os.kill(s.pid, signal.SIGTERM)
        assert s.wait(10) == 0
        assert 4.5 < time.monotonic() - t < 8
        assert not alive(pid)


def ignored(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return int(line.split()[1], 16)
    return 0


def test_chdir_failure(mode, cbin, tmp_path):
    q = run([qbin("svscan"), "nonexistent"], env=qenv(mode), cwd=tmp_path)
    c = run([cbin("svscan"), "nonexistent"], cwd=tmp_path)
    assert q == c == (111, b"", b"svscan: fatal: unable to chdir to nonexistent: "
                      b"file does not exist\n")


def test_stat_warnings(mode, cbin, tmp_path):
    """A dangling symlink: `unable to stat NAME: file does not exist`, both."""
    errs = {}
    for who, binary in (("q", qbin("svscan")), ("c", cbin("svscan"))):
        sv = tmp_path / who
        sv.mkdir()
        os.symlink("missing", sv / "dangling")
        with Proc([binary, str(sv)], env=qenv(mode), errpath=str(tmp_path / (who + ".err"))) as s:
            wait_until(lambda: s.err(), 5, s.p, "a warning")
            errs[who] = s.err()
    assert errs["q"] == errs["c"] == b"svscan: warning: unable to stat dangling: " \
                                     b"file does not exist\n"


def test_pid1_reaps_orphans_and_stops(mode, tmp_path):
    """As process 1 of a pid namespace: orphans are reaped, TERM stops all."""
    if os.geteuid() != 0:
        pytest.skip("needs root for unshare --pid")
    sv = tmp_path / "sv"
    service(sv / "a", run=(
        "i=0; while [ $i -lt 5 ]; do sh -c 'sleep 0.1 &'; i=$((i+1)); done\n"
        "exec sleep 1000\n"), log="exec cat > out\n")
    with Proc(["unshare", "--pid", "--fork", "--kill-child", qbin("svscan"), str(sv)],
              env=qenv(mode), errpath=str(tmp_path / "err")) as u:
        pid1 = wait_until(lambda: children(u.pid) and children(u.pid)[0], 10, u.p, "svscan")
        wait_until(lambda: log_pair(pid1, "a"), 10, u.p, "tree")
        wait_pid(str(sv / "a"), proc=u.p)

        def zombies():
            return [c for c in children(pid1) if not alive(c)]

        def orphans():
            sups = set(tree(pid1).values())
            return [c for c in children(pid1) if c not in sups]
        # the five `sleep 0.1` were reparented to svscan and must not linger
        wait_until(lambda: not orphans() and not zombies(), 5, u.p, "orphans reaped")
        os.kill(pid1, signal.SIGTERM)
        assert u.wait(10) == 0


# -- svscanboot --------------------------------------------------------------

def test_svscanboot(mode, tmp_path):
    sv = tmp_path / "service"
    service(sv / "a", run="env > env.txt\necho oops from a >&2\nexec sleep 1000\n",
            log="exec cat > out\n")
    # a supervise left over from an earlier boot: svscanboot's svc -dx stops it
    service(sv / "old", run="exec sleep 1005\n")
    # as from init: a minimal environment (setproctitle must still find argv)
    env = {k: v for k, v in qenv(mode).items() if k in ("PATH", "QTOOLS_NOELIDE")}
    env["SVSCANDIR"] = str(sv)
    with Proc([qbin("supervise"), str(sv / "old")], env=env) as old:
        wait_until(lambda: supervised(str(sv / "old")), 10, old.p, "leftover supervise")
        with Proc([qbin("svscanboot")], env=env) as boot:
            assert old.wait(10) == 0
            kids = wait_until(lambda: len(children(boot.pid)) == 2 and children(boot.pid),
                              10, boot.p, "svscan and readproctitle")
            titles = {cmdline(p).split(b" ")[0]: p for p in kids}
            scan, rpt = titles[b"svscan"], titles[b"readproctitle"]
            assert cmdline(boot.pid) == b"svscanboot " + str(sv).encode()
            assert cmdline(scan) == b"svscan " + str(sv).encode()
            wait_until(lambda: sup(scan, "supervise a") and sup(scan, "supervise log"), 10,
                       boot.p, "service a and its log")
            envtxt = sv / "a" / "env.txt"
            wait_until(lambda: envtxt.exists() and envtxt.read_text().endswith("\n"), 10,
                       boot.p, "a's environment")
            environ = sorted(envtxt.read_text().splitlines())
            # env - PATH=$PATH (sh adds PWD); QTOOLS_NOELIDE passes through; an
            # exec'd Python with no locale in its environment adds LC_CTYPE (PEP 538)
            environ = [v for v in environ if not v.startswith(("PWD=", "OLDPWD=", "SHLVL="))
                       and v != "LC_CTYPE=C.UTF-8"]
            assert environ[0].startswith("PATH=" + QBIN + ":/command:")
            assert environ[1:] == (["QTOOLS_NOELIDE=1"] if mode == "noelide" else [])
            # svscan's stderr (and so supervise's and run's) ends in readproctitle
            title = b"readproctitle service errors: "

            def shown():
                c = cmdline(rpt)
                return c.startswith(title) and b"oops from a\n" in c and c
            c = wait_until(shown, 10, boot.p, "error in the title")
            assert len(c) == len(title) + 400 and c[len(title):].startswith(b"...")
            assert fdlink(scan, 2) == fdlink(scan, 1) == fdlink(rpt, 0)
            assert fdlink(scan, 0) == "/dev/null" and fdlink(boot.pid, 2) == "/dev/null"
            procs = [scan, rpt] + children(scan)
            os.kill(boot.pid, signal.SIGTERM)
            assert boot.wait(10) == 0
            assert not any(alive(p) for p in procs)


# -- memory ------------------------------------------------------------------

def test_memory_per_supervise(tmp_path):
    """15 services under qtools svscan with elision: each supervise is a fork
    of svscan, far below a fresh interpreter (bench/memory.py measures it)."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
    try:
        import memory
    finally:
        sys.path.pop(0)
    r = memory.measure_tree(str(tmp_path / "q"), 15, "qtools", qenv("elide"))
    assert r["supervise_count"] == 15
    assert r["private_kb_per_supervise"] < 3 * 1024, r
    assert r["pss_kb_per_supervise"] < 3 * 1024, r


def test_crashing_log_run_is_reported(mode, tmp_path):
    """A log/run that dies at once: the service is kept (blocked on the pipe,
    never killed by EPIPE), and supervise says so on svscan's stderr instead
    of restarting the logger silently forever."""
    sv = tmp_path / "sv"
    service(sv / "a", log="exit 3\n", run=(
        "exec 2>&1\n"
        "i=0; while [ $i -lt 100000 ]; do echo line $i; i=$((i+1)); done\n"
        "exec sleep 100\n"))
    env = svscan_env(mode, "q")
    with Proc([qbin("svscan"), str(sv)], env=env, errpath=str(tmp_path / "err")) as s:
        wait_until(lambda: b"keeps dying at once" in s.err(), 15, s.p, "crash-loop warning")
        err = s.err().decode()
        assert ("supervise: warning: log/run keeps dying at once (exit code 3); "
                "restarting it every second") in err, err
        assert err.count("keeps dying") == 1                  # at most once a minute
        # the service is still there, blocked on the full pipe, not killed
        st = open(str(sv / "a" / "supervise" / "status"), "rb").read()
        assert int.from_bytes(st[12:16], "little") != 0


def test_sticky_dir_means_logged(mode, tmp_path):
    """daemontools 0.70 semantics, kept: a sticky service directory gets a log
    supervise even without log/ (which then fails, loudly); a plain one does
    not."""
    sv = tmp_path / "sv"
    service(sv / "sticky", run="exec sleep 100\n")
    service(sv / "plain", run="exec sleep 100\n")
    os.chmod(sv / "sticky", 0o1755)
    env = svscan_env(mode, "q")
    with Proc([qbin("svscan"), str(sv)], env=env, errpath=str(tmp_path / "err")) as s:
        wait_until(lambda: b"unable to chdir to log" in s.err(), 10, s.p, "log supervise")
        wait_until(lambda: sup(s.pid, "supervise plain"), 10, s.p, "plain")
        err = s.err().decode()
        assert "supervise: fatal: unable to chdir to log: file does not exist" in err
        assert not log_pair(s.pid, "plain")          # not sticky, no log/: no logger
