"""Helpers for the daemontools filter and chain-loader tests (multilog,
tai64n, envdir, setlock, softlimit, ...): run a program to completion with
bounded time and compare qtools with Debian's C binary."""
import re
import subprocess

from helpers import qbin

HEX24 = re.compile(rb"@[0-9a-f]{24}")


def run(argv, input=b"", env=None, cwd=None, timeout=30):
    """(exit code, stdout, stderr) of argv run to completion."""
    p = subprocess.run(argv, input=input, capture_output=True, env=env, cwd=cwd,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def both(name, args, cbin, env, input=b"", cwd=None, cenv=None):
    """Run qtools' and the C program with the same arguments: (q, c) results.
    The C one runs with the C tools first on PATH (a C-only chain)."""
    q = run([qbin(name)] + list(args), input=input, env=env, cwd=cwd)
    c = run([cbin(name)] + list(args), input=input, env=cenv if cenv is not None else cenv_of(env),
            cwd=cwd)
    return q, c


def cenv_of(env):
    e = dict(env)
    e["PATH"] = "/usr/bin:/bin"
    e.pop("QTOOLS_NOELIDE", None)
    return e


def mask(b):
    """TAI64N labels replaced by x's, as rts.tests does with sed."""
    return HEX24.sub(b"@" + b"x" * 24, b)


def sh(script, env, cwd, timeout=30):
    """Run a shell script; (code, stdout, stderr)."""
    return run(["/bin/sh", "-c", script], env=env, cwd=cwd, timeout=timeout)
