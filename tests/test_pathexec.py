"""Exec elision must be invisible: a program run through pathexec_run sees the
same argv, environment, fds, signal dispositions and mask, and its exit status
reaches the parent the same way, whether it was exec'd or elided."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import qenv

HERE = os.path.dirname(os.path.abspath(__file__))

DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, %(here)r)
    from qtools.lib import pathexec
    signal.signal(signal.SIGTERM, lambda *a: None)     # caught: must become DFL
    signal.signal(signal.SIGHUP, signal.SIG_IGN)       # ignored: stays ignored
    signal.signal(signal.SIGCHLD, lambda *a: None)
    r, w = os.pipe()                                   # close-on-exec: must vanish
    keep = os.open("/dev/null", os.O_RDONLY)
    os.dup2(keep, 9)                                   # inheritable: must stay as fd 9
    os.close(keep)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])   # the mask survives exec
    pathexec.preload(["probe"])
    pid = os.fork()
    if pid == 0:
        pathexec.env("PROBE_SET", "yes")
        pathexec.env("PROBE_GONE", None)
        try:
            pathexec.pathexec_run(["probe", %(code)r, "x y"])
        except OSError as e:
            os.write(2, b"unable to run: %%d\\n" %% e.errno)
            os._exit(111)
    _, st = os.waitpid(pid, 0)
    sys.stdout.flush()
    os._exit(os.waitstatus_to_exitcode(st))
""")


def launcher(tmp_path):
    p = tmp_path / "probe"
    p.write_text("#!%s\n# qtools-program: probe_prog\nimport sys; sys.path.insert(0, %r)\n"
                 "from qtools.lib.run import launch; launch('probe_prog')\n"
                 % (sys.executable, HERE))
    p.chmod(0o755)
    return p


def run_driver(tmp_path, mode, code="7"):
    launcher(tmp_path)
    env = qenv(mode, PROBE_GONE="bye", PROBE_KEEP="kept")
    env["PATH"] = "%s:%s" % (tmp_path, env["PATH"])
    p = subprocess.run([sys.executable, "-c", DRIVER % {"here": HERE, "code": code}],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return p.returncode, json.loads(p.stdout), p.stderr


def test_elided_and_exec_look_the_same(tmp_path):
    rc_e, st_e, err_e = run_driver(tmp_path, "elide")
    rc_x, st_x, err_x = run_driver(tmp_path, "noelide")
    assert (rc_e, rc_x) == (7, 7), (err_e, err_x)
    assert st_e == st_x
    st = st_e
    # an exec'd launcher sees its resolved path as argv[0] (#! handling)
    assert st["argv"] == [str(tmp_path / "probe"), "7", "x y"]
    assert st["env"] == {"PROBE_SET": "yes", "PROBE_KEEP": "kept"}
    assert sorted(st["fds"]) == ["0", "1", "2", "9"]          # the pipe is gone
    assert st["signals"]["SIGTERM"] == "DFL"
    assert st["signals"]["SIGCHLD"] == "DFL"
    assert st["signals"]["SIGHUP"] == "IGN"
    assert st["signals"]["SIGPIPE"] == "IGN"                  # as a fresh Python has it
    assert "SIGUSR1" in st["mask"]


def test_exit_status_passes_through(tmp_path):
    for mode in ("elide", "noelide"):
        assert run_driver(tmp_path, mode, code="0")[0] == 0
        assert run_driver(tmp_path, mode, code="100")[0] == 100


def test_elision_really_elides(tmp_path):
    """In elide mode the probe runs in the forked child itself (no new
    interpreter): the preloaded module is already imported there."""
    launcher(tmp_path)
    code = textwrap.dedent("""
        import os, sys
        sys.path.insert(0, %r)
        from qtools.lib import pathexec
        pathexec.preload(["probe"])
        import probe_prog
        probe_prog.main = lambda argv: (os.write(1, b"in-process\\n"), 3)[1]
        pid = os.fork()
        if pid == 0:
            pathexec.pathexec_run(["probe"])
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """ % HERE)
    env = qenv("elide")
    env["PATH"] = "%s:%s" % (tmp_path, env["PATH"])
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert (p.returncode, p.stdout) == (3, b"in-process\n")
    env["QTOOLS_NOELIDE"] = "1"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert p.returncode == 0 and b"in-process" not in p.stdout


@pytest.mark.parametrize("mode", ["elide", "noelide"])
def test_path_search_like_execvp(tmp_path, mode):
    """A non-executable file earlier on PATH is skipped (EACCES remembered);
    a missing program gives ENOENT."""
    code = textwrap.dedent("""
        import os
        from qtools.lib import pathexec
        try:
            pathexec.pathexec_run([os.environ["WHAT"]])
        except OSError as e:
            print(e.errno)
    """)
    bad = tmp_path / "a"
    bad.mkdir()
    (bad / "prog").write_text("#!/bin/sh\necho wrong\n")        # not executable
    env = qenv(mode)
    env["PATH"] = "%s:%s" % (bad, env["PATH"])
    env["WHAT"] = "prog"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert p.stdout.strip() == b"13"                              # EACCES
    env["WHAT"] = "no-such-program-here"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert p.stdout.strip() == b"2"
    (bad / "prog").chmod(0o755)
    env["WHAT"] = "prog"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert p.stdout == b"wrong\n"


FREEZE = textwrap.dedent("""
    import gc, os, sys
    sys.path.insert(0, %(top)r)
    from qtools.lib import pathexec
    shared = {"k": [1, 2, 3], "s": "x" * 100}
    n = pathexec.freeze()
    after = ["made", "after"]
    if sys.version_info >= (3, 12):        # the fallback where /proc/self/mem is refused
        mark, done = pathexec._ctypes_writer()
        other = ["marked", "through", "ctypes"]
        mark(id(other))
        done()
        assert sys.getrefcount(other) >= 2 ** 31, sys.getrefcount(other)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                   # a child uses and changes what it shares
        shared["k"].append(4)
        os.write(w, repr(shared["k"]).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    print(n, sys.getrefcount(shared), sys.getrefcount(after), gc.get_freeze_count(),
          os.read(r, 100).decode(), shared["k"], sep="|")
""")


def interpreters():
    """This venv's Python, and the newer CPythons found on PATH or among
    pyenv's versions (where PEP 683's immortal objects exist), to run
    pathexec.freeze() under each."""
    import glob
    import shutil
    found = [sys.executable]
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for v in ("3.12", "3.13", "3.14"):
        for p in [shutil.which("python" + v)] + sorted(
                glob.glob(os.path.join(pyenv, "versions", v + "*", "bin", "python" + v))):
            if p and subprocess.run([p, "-c", "1"], capture_output=True).returncode == 0:
                found.append(p)
                break
    return found


@pytest.mark.parametrize("python", interpreters())
def test_freeze_makes_the_parent_immortal(python):
    """freeze(): everything alive is frozen for the GC and, on CPython >= 3.12,
    immortal (its reference count is never written again, so forked children
    copy no page for counting; written through /proc/self/mem, or ctypes
    where that is refused); objects made afterwards stay mortal; a child
    still changes shared objects privately."""
    p = subprocess.run([python, "-c", FREEZE % {"top": os.path.dirname(HERE)}],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    n, shared_refs, after_refs, frozen, child_k, parent_k = p.stdout.split("|")
    version = tuple(int(x) for x in subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True, text=True).stdout.split())
    assert int(frozen) > 1000
    assert child_k == "[1, 2, 3, 4]" and parent_k.strip() == "[1, 2, 3]"
    assert int(after_refs) < 10
    if version >= (3, 12):
        assert int(n) > 1000
        assert int(shared_refs) >= 2 ** 31
    else:
        assert int(n) == 0 and int(shared_refs) < 10
