"""supervise: status file, fifos and lock byte-compatible with daemontools 0.76
(checked with the C svc/svstat/svok), restart throttle, control letters,
faults (kill -9, missing or unrunnable ./run, garbage on the control fifo, a
second supervise), the Debian patches and the ./finish extension."""
import os
import signal
import stat
import subprocess
import time

import pytest

from helpers import qbin, qenv, wait_until
from svtools import (TAIBASE, alive, cmdline, noaccess_prefix, proc_state, read_status,
                     run, service, sleep_until, start_supervise, status_time, supervised,
                     wait_pid)


def test_usage(env, cbin):
    for args in ([], ["a", "b"]):
        q = run([qbin("supervise")] + args, env=env)
        c = run([cbin("supervise")] + args)
        assert q == c == (100, b"", b"supervise: usage: supervise dir\n")


def test_nonexistent_dir(env, cbin, tmp_path):
    q = run([qbin("supervise"), "nonexistent"], env=env, cwd=tmp_path)
    c = run([cbin("supervise"), "nonexistent"], cwd=tmp_path)
    assert q == c == (111, b"", b"supervise: fatal: unable to chdir to nonexistent: "
                      b"file does not exist\n")


def test_unreadable_service_dir(env, cbin, tmp_path):
    d = tmp_path / "s"
    service(d)
    os.chmod(d, 0)
    try:
        pre = noaccess_prefix()
        q = run(pre + [qbin("supervise"), "s"], env=env, cwd=tmp_path)
        c = run(pre + [cbin("supervise"), "s"], cwd=tmp_path)
    finally:
        os.chmod(d, 0o755)
    assert q == c == (111, b"", b"supervise: fatal: unable to chdir to s: access denied\n")


def test_files_status_and_c_clients(env, cbin, tmp_path):
    """I1: a qtools supervise, read and driven by the C svstat, svok and svc."""
    d = service(tmp_path / "s")
    t0 = time.time()
    sv = start_supervise(d, env)
    try:
        st = wait_pid(d, proc=sv.p)
        pid = st[2]
        # the 18-byte status: TAI64N now-ish, ns as taia_now (usec*1000+500), pid LE
        raw = open(os.path.join(d, "supervise/status"), "rb").read()
        assert len(raw) == 18
        assert abs(status_time(st) - t0) < 5 and st[1] % 1000 == 500
        assert raw[12:16] == pid.to_bytes(4, "little") and raw[16:] == b"\0u"
        wait_until(lambda: cmdline(pid) == b"sleep 1000", 5, sv.p, "run exec'd")
        modes = {n: os.lstat(os.path.join(d, "supervise", n)).st_mode
                 for n in ("control", "ok", "lock", "status")}
        assert stat.S_IMODE(os.stat(os.path.join(d, "supervise")).st_mode) == 0o700
        assert stat.S_ISFIFO(modes["control"]) and stat.S_IMODE(modes["control"]) == 0o600
        assert stat.S_ISFIFO(modes["ok"]) and stat.S_IMODE(modes["ok"]) == 0o600
        assert stat.S_IMODE(modes["lock"]) == 0o600
        assert os.path.getsize(os.path.join(d, "supervise/lock")) == 0
        assert stat.S_IMODE(modes["status"]) == 0o644
        assert not os.path.exists(os.path.join(d, "supervise/status.new"))
        # C svstat and svok
        code, out, _ = run([cbin("svstat"), d])
        assert code == 0 and out.decode().startswith("%s: up (pid %d) " % (d, pid))
        assert out.endswith(b" seconds\n")
        assert run([cbin("svok"), d])[0] == 0
        # C svc -p: paused byte, STOP; the timestamp moves only on start/death
        assert run([cbin("svc"), "-p", d])[0] == 0
        wait_until(lambda: read_status(d)[3] == 1, 5, sv.p, "paused byte")
        assert read_status(d)[:2] == st[:2]
        wait_until(lambda: proc_state(pid) == "T", 5, sv.p, "run stopped")
        assert run([cbin("svstat"), d])[1].endswith(b" seconds, paused\n")
        run([cbin("svc"), "-c", d])
        wait_until(lambda: read_status(d)[3] == 0, 5, sv.p, "continued")
        wait_until(lambda: proc_state(pid) != "T", 5, sv.p, "run continued")
        # -d: TERM+CONT, want d, stays down; -u: new pid; -o: want 0
        run([cbin("svc"), "-d", d])
        st2 = wait_pid(d, lambda p: p == 0, proc=sv.p)
        assert st2[4] == ord("d") and not alive(pid)
        assert run([cbin("svstat"), d])[1].decode().startswith("%s: down " % d)
        assert run([cbin("svstat"), d])[1].endswith(b" seconds, normally up\n")
        run([cbin("svc"), "-u", d])
        st3 = wait_pid(d, proc=sv.p)
        assert st3[2] != pid and st3[4] == ord("u")
        run([cbin("svc"), "-o", d])
        wait_until(lambda: read_status(d)[4] == 0, 5, sv.p, "want once")
        run([cbin("svc"), "-dx", d])
        assert sv.p.wait(10) == 0
        assert run([cbin("svstat"), d])[1] == b"%s: supervise not running\n" % d.encode()
        assert run([cbin("svok"), d])[0] == 100
        assert read_status(d)[2] == 0
    finally:
        sv.__exit__()


def test_process_title(env, tmp_path):
    """ps shows `supervise qmail-smtpd`, as in the seed's process tree."""
    service(tmp_path / "qmail-smtpd")
    sv = start_supervise("qmail-smtpd", env, cwd=str(tmp_path))
    try:
        assert cmdline(sv.pid) == b"supervise qmail-smtpd"
    finally:
        sv.__exit__()


def test_restart_after_kill9_is_throttled(env, tmp_path):
    """kill -9 of ./run: a new pid within ~1 s, starts at least 1 s apart."""
    d = service(tmp_path / "s")
    sv = start_supervise(d, env)
    try:
        first = wait_pid(d, proc=sv.p)
        os.kill(first[2], signal.SIGKILL)
        t = time.monotonic()
        nxt = wait_pid(d, lambda p: p not in (0, first[2]), 5, sv.p, "restart")
        assert time.monotonic() - t < 2.5
        assert status_time(nxt) - status_time(first) >= 0.99
        assert alive(nxt[2])
    finally:
        sv.__exit__()


def test_crash_loop_rate(env, tmp_path):
    """A ./run that exits at once is started at most once a second."""
    d = service(tmp_path / "s", run="date +%s.%N >> starts\nexit 1\n")
    sv = start_supervise(d, env)
    try:
        starts = os.path.join(d, "starts")

        def count():
            try:
                return len(open(starts).read().split())
            except OSError:
                return 0
        wait_until(lambda: count() >= 2, 10, sv.p, "two starts")
        times = [float(x) for x in open(starts).read().split()]
        assert all(b - a >= 0.95 for a, b in zip(times, times[1:]))
    finally:
        sv.__exit__()


def test_kill9_supervise_then_new_supervise(env, tmp_path):
    """supervise killed: ./run keeps running as an orphan (as with C); a new
    supervise takes over cleanly: it stops the orphan (found through the
    status file and its working directory), says so, and starts one ./run."""
    d = service(tmp_path / "s", run="trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    sv = start_supervise(d, env)
    try:
        p1 = wait_pid(d, proc=sv.p)[2]
        os.kill(sv.pid, signal.SIGKILL)
        sv.p.wait(5)
        wait_until(lambda: not supervised(d), 5, what="ok fifo released")
        assert alive(p1)
        code, out, _ = run([qbin("svstat"), d], env=env)
        assert out == b"%s: supervise not running\n" % d.encode()
        assert run([qbin("svok"), d], env=env)[0] == 100
        sv2 = start_supervise(d, env, errpath=str(tmp_path / "err2"))
        try:
            p2 = wait_pid(d, lambda p: p not in (0, p1), proc=sv2.p)[2]
            wait_until(lambda: not alive(p1), 5, what="orphan stopped")
            assert alive(p2)
            assert (b"supervise: warning: %s: stopping ./run (pid %d) left running by a "
                    b"previous supervise" % (d.encode(), p1)) in sv2.err()
        finally:
            sv2.__exit__()
    finally:
        sv.__exit__()              # the group kill takes the orphan too


@pytest.mark.parametrize("case", ["missing", "noexec"])
def test_unrunnable_run(env, cbin, tmp_path, case):
    """./run missing or not executable: the child prints the C message, exits
    111, and supervise keeps retrying once a second."""
    svs = {}
    try:
        for who, binary in (("q", qbin("supervise")), ("c", cbin("supervise"))):
            d = service(tmp_path / who / "s", run=None if case == "missing" else "exit 0\n")
            if case == "noexec":
                os.chmod(os.path.join(d, "run"), 0o644)
            svs[who] = start_supervise("s", env, binary=binary, errpath=str(tmp_path / who) + ".err",
                                       cwd=str(tmp_path / who), prefix=noaccess_prefix())
        msg = b"supervise: fatal: unable to start s/run: "
        out = {}
        for who, sv in svs.items():
            wait_until(lambda: sv.err().count(msg) >= 2, 10, sv.p, "two failed starts")
            assert supervised(str(tmp_path / who / "s")) and sv.p.poll() is None
            out[who] = sv.err().splitlines()[0]
    finally:
        for sv in svs.values():
            sv.__exit__()
    reason = b"file does not exist" if case == "missing" else b"access denied"
    assert out["q"] == out["c"] == b"supervise: fatal: unable to start s/run: " + reason


def test_garbage_on_control_fifo(env, tmp_path):
    d = service(tmp_path / "s")
    sv = start_supervise(d, env)
    try:
        st = wait_pid(d, proc=sv.p)
        garbage = bytes(b for b in range(256) if b not in b"udopchaitkx") * 4
        fd = os.open(os.path.join(d, "supervise/control"), os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, garbage)
        os.write(fd, b"p")
        os.close(fd)
        # all garbage is consumed (one byte per loop), then the `p`
        wait_until(lambda: read_status(d)[3] == 1, 10, sv.p, "p after the garbage")
        assert read_status(d)[:3] == st[:3] and alive(st[2])
        run([qbin("svc"), "-dx", d], env=env)
        assert sv.p.wait(10) == 0
    finally:
        sv.__exit__()


@pytest.mark.parametrize("first,second", [("q", "q"), ("c", "q"), ("q", "c")])
def test_second_supervise_is_refused(env, cbin, tmp_path, first, second):
    d = service(tmp_path / "s")
    bins = {"q": qbin("supervise"), "c": cbin("supervise")}
    sv = start_supervise(d, env, binary=bins[first])
    try:
        pid = wait_pid(d, proc=sv.p)[2]
        code, out, err = run([bins[second], "s"], env=env, cwd=tmp_path)
        assert (code, out, err) == (
            111, b"", b"supervise: fatal: unable to acquire s/supervise/lock: temporary failure\n")
        assert sv.p.poll() is None and read_status(d)[2] == pid and alive(pid)
    finally:
        sv.__exit__()


def test_once_runs_exactly_once(env, tmp_path):
    """The seed's `clear` service: down file, `svc -o` runs it once."""
    d = service(tmp_path / "clear", run="echo ran >> count\n", down=True)
    sv = start_supervise(d, env)
    try:
        assert read_status(d)[2:] == (0, 0, ord("d"))
        t = read_status(d)[:2]
        assert run([qbin("svc"), "-o", d], env=env)[0] == 0
        wait_until(lambda: read_status(d)[2] == 0 and read_status(d)[:2] != t, 10, sv.p,
                   "one run over")
        assert read_status(d)[4] == 0
        # a restart would follow the death at once: give it a moment to show
        sleep_until(time.monotonic() + 0.5)
        assert open(os.path.join(d, "count")).read() == "ran\n"
        assert read_status(d)[2] == 0
        code, out, _ = run([qbin("svstat"), d], env=env)
        assert out.decode().startswith(d + ": down ") and out.endswith(b" seconds\n")
    finally:
        sv.__exit__()


def test_signals(env, tmp_path):
    """h a i t k reach ./run; k makes supervise restart it."""
    d = service(tmp_path / "s", run=(
        "for s in HUP ALRM INT TERM; do trap \"echo $s >> sigs\" $s; done\n"
        "echo $$ > pid\n"
        "while :; do sleep 0.05; done\n"))
    sv = start_supervise(d, env)
    try:
        pid = wait_pid(d, proc=sv.p)[2]
        sigs = os.path.join(d, "sigs")
        wait_until(lambda: os.path.exists(os.path.join(d, "pid")), 5, sv.p, "traps set")
        for letter, name in (("h", "HUP"), ("a", "ALRM"), ("i", "INT"), ("t", "TERM")):
            run([qbin("svc"), "-" + letter, d], env=env)
            wait_until(lambda: os.path.exists(sigs) and name in open(sigs).read().split(),
                       5, sv.p, name)
        run([qbin("svc"), "-k", d], env=env)
        wait_pid(d, lambda p: p not in (0, pid), 5, sv.p, "restart after k")
        assert not alive(pid)
    finally:
        sv.__exit__()


def test_down_file_and_up(env, cbin, tmp_path):
    d = service(tmp_path / "s", down=True)
    sv = start_supervise(d, env)
    try:
        assert read_status(d)[2] == 0
        for prog in (qbin("svstat"), cbin("svstat")):
            out = run([prog, d])[1].decode()
            assert out.startswith(d + ": down ") and out.endswith(" seconds\n")
        run([qbin("svc"), "-u", d], env=env)
        wait_pid(d, proc=sv.p)
        out = run([cbin("svstat"), d])[1].decode()
        assert out.endswith(" seconds, normally down\n")
    finally:
        sv.__exit__()


def test_dangling_supervise_symlink(env, cbin, tmp_path):
    """Debian patch 0002: ./supervise -> missing target: the target is created."""
    for who, binary in (("q", qbin("supervise")), ("c", cbin("supervise"))):
        d = service(tmp_path / who / "s")
        os.symlink("../state", os.path.join(d, "supervise"))
        sv = start_supervise(d, env, binary=binary)
        try:
            wait_pid(d, proc=sv.p)
            target = tmp_path / who / "state"
            assert target.is_dir() and stat.S_IMODE(target.stat().st_mode) == 0o700
            assert (target / "status").exists() and stat.S_ISFIFO((target / "ok").stat().st_mode)
        finally:
            sv.__exit__()


def test_finish_script(env, tmp_path):
    """qtools extension: ./finish CODE SIG after each death, then the restart."""
    d = service(tmp_path / "s", run="echo $$ > pid\nexit 3\n",
                finish="echo \"$1 $2\" >> fin\n")
    sv = start_supervise(d, env)
    try:
        fin = os.path.join(d, "fin")
        first = wait_pid(d, proc=sv.p)[2]
        # ./run exits 3; supervise reaps it after its 1-s pause, runs finish,
        # and only then starts ./run again
        wait_pid(d, lambda p: p not in (0, first), 10, sv.p, "restart after finish")
        assert open(fin).read() == "3 0\n"
    finally:
        sv.__exit__()
    # a killed ./run: 256 and the signal
    d = service(tmp_path / "t", run="exec sleep 1000\n", finish="echo \"$1 $2\" >> fin\n")
    sv = start_supervise(d, env)
    try:
        pid = wait_pid(d, proc=sv.p)[2]
        run([qbin("svc"), "-dx", d], env=env)
        assert sv.p.wait(10) == 0
        assert open(os.path.join(d, "fin")).read() == "256 %d\n" % signal.SIGTERM
        assert not alive(pid)
    finally:
        sv.__exit__()


def test_finish_timeout_and_exit_waits(env, tmp_path):
    """A finish that outlives timeout-finish is killed; `x` waits for finish."""
    d = service(tmp_path / "s", run="exec sleep 1000\n",
                finish="echo started >> fin\nexec sleep 1000\n")
    with open(os.path.join(d, "timeout-finish"), "w") as f:
        f.write("300\n")
    sv = start_supervise(d, env)
    try:
        wait_pid(d, proc=sv.p)
        t = time.monotonic()
        run([qbin("svc"), "-dx", d], env=env)
        wait_until(lambda: os.path.exists(os.path.join(d, "fin")), 5, sv.p, "finish ran")
        assert sv.p.wait(10) == 0
        assert 0.25 <= time.monotonic() - t < 5
    finally:
        sv.__exit__()


def test_status_timestamp_only_on_pid_change(env, tmp_path):
    d = service(tmp_path / "s")
    sv = start_supervise(d, env)
    try:
        st = wait_pid(d, proc=sv.p)
        for letters in ("p", "c", "o", "u", "h"):
            run([qbin("svc"), "-" + letters, d], env=env)
        wait_until(lambda: read_status(d)[4] == ord("u"), 5, sv.p, "u")
        assert read_status(d)[:3] == st[:3]
        assert st[0] > TAIBASE
    finally:
        sv.__exit__()


RTS = r"""
umask 022
mkdir test.sv
echo '--- svstat handles new and nonexistent directories'
( echo '#!/bin/sh'; echo echo hi ) > test.sv/run
chmod 755 test.sv/run
touch test.sv/down
svstat test.sv nonexistent; echo $?
echo '--- svc handles new and nonexistent directories'
svc test.sv nonexistent; echo $?
echo '--- svok handles new and nonexistent directories'
svok test.sv; echo $?
svok nonexistent; echo $?
echo '--- supervise handles nonexistent directories'
supervise nonexistent; echo $?
echo '--- supervise starts, svok works, svstat works, svc -x works'
supervise test.sv &
i=0; until svok test.sv || [ $i -gt 200 ]; do sleep 0.05; i=$((i+1)); done
svstat test.sv | sed 's/[0-9]* seconds/x seconds/'; echo $?
svc -x test.sv; echo $?
wait
svstat test.sv; echo $?
echo '--- svc -ox works'
supervise test.sv &
i=0; until svok test.sv || [ $i -gt 200 ]; do sleep 0.05; i=$((i+1)); done
svc -ox test.sv
wait
echo '--- svstat works for up services'
( echo '#!/bin/sh'; echo sleep 1; echo svstat . ) > test.sv/run
chmod 755 test.sv/run
supervise test.sv \
| sed -e 's/[0-9]* seconds/x seconds/' -e 's/pid [0-9]*/pid x/' &
i=0; until svok test.sv || [ $i -gt 200 ]; do sleep 0.05; i=$((i+1)); done
svc -ox test.sv
wait
echo '--- svc -u works'
( echo '#!/bin/sh'; echo echo first; echo mv run2 run ) > test.sv/run
chmod 755 test.sv/run
( echo '#!/bin/sh'; echo echo second; echo svc -x . ) > test.sv/run2
chmod 755 test.sv/run2
supervise test.sv &
i=0; until svok test.sv || [ $i -gt 200 ]; do sleep 0.05; i=$((i+1)); done
svc -u test.sv
wait
echo '--- readproctitle insists on an argument'
readproctitle < /dev/null; echo $?
echo '--- readproctitle insists on last argument being at least five bytes'
readproctitle .......... four < /dev/null; echo $?
"""

# daemontools-ucspi-inventory.md 3.2, the supervision part
RTS_EXPECTED = """\
--- svstat handles new and nonexistent directories
test.sv: unable to open supervise/ok: file does not exist
nonexistent: unable to chdir: file does not exist
0
--- svc handles new and nonexistent directories
svc: warning: unable to control test.sv: file does not exist
svc: warning: unable to chdir to nonexistent: file does not exist
0
--- svok handles new and nonexistent directories
100
svok: fatal: unable to chdir to nonexistent: file does not exist
111
--- supervise handles nonexistent directories
supervise: fatal: unable to chdir to nonexistent: file does not exist
111
--- supervise starts, svok works, svstat works, svc -x works
test.sv: down x seconds
0
0
test.sv: supervise not running
0
--- svc -ox works
hi
--- svstat works for up services
.: up (pid x) x seconds, normally down
--- svc -u works
first
second
--- readproctitle insists on an argument
100
--- readproctitle insists on last argument being at least five bytes
100
"""


def test_rts_golden(mode, tmp_path):
    """djb's rts.tests cases for svstat/svc/svok/supervise/readproctitle; in
    one of the modes the same script also runs against Debian's binaries,
    side by side, to check the script itself."""
    runs = {"qtools": qenv(mode)}
    if mode == "elide" and os.path.exists("/usr/bin/supervise"):
        runs["c"] = {"PATH": "/usr/bin:/bin"}
    procs = {}
    for name, env in runs.items():
        os.mkdir(tmp_path / name)
        procs[name] = subprocess.Popen(["sh", "-c", "exec 2>&1\n" + RTS], env=env,
                                       cwd=tmp_path / name, stdout=subprocess.PIPE)
    for name, p in procs.items():
        out = p.communicate(timeout=60)[0].decode()
        assert out == RTS_EXPECTED, name


PIDS_CGROUP = "/sys/fs/cgroup/pids"


@pytest.mark.skipif(not os.access(PIDS_CGROUP, os.W_OK), reason="no writable pids cgroup")
def test_fork_failure_warning(env, cbin, tmp_path):
    """Debian 0003: fork fails (pids.max reached): a warning, supervise lives
    on (and would retry after its 60-s sleep)."""
    errs = {}
    for who, binary in (("q", qbin("supervise")), ("c", cbin("supervise"))):
        d = service(tmp_path / who / "s", down=True)
        cg = os.path.join(PIDS_CGROUP, "qtools-test-%d-%s" % (os.getpid(), who))
        os.mkdir(cg)
        sv = start_supervise("s", env, binary=binary, errpath=str(tmp_path / who) + ".err",
                             cwd=str(tmp_path / who))
        try:
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(sv.pid))
            with open(os.path.join(cg, "pids.max"), "w") as f:
                f.write("1")
            run([qbin("svc"), "-u", d], env=env)
            wait_until(lambda: sv.err(), 10, sv.p, "warning")
            assert sv.p.poll() is None and read_status(d)[2] == 0
            errs[who] = sv.err()
        finally:
            sv.__exit__()
            with open(os.path.join(cg, "pids.max"), "w") as f:
                f.write("max")
            wait_until(lambda: not open(os.path.join(cg, "cgroup.procs")).read(), 5,
                       what="cgroup empty")
            os.rmdir(cg)
    assert errs["q"] == errs["c"] == (b"supervise: warning: unable to fork for s, "
                                      b"sleeping 60 seconds: temporary failure\n")
