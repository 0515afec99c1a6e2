"""Shared fixtures: real processes, started by the tests, on 127.0.0.1.

QBIN is the directory of the installed qtools launchers (the venv running
pytest); CBIN holds Debian's C originals (ucspi-tcp, daemontools) used for
interop checks.  Process tests take the `mode` fixture and run twice: with
exec elision on and with QTOOLS_NOELIDE=1 (the SMTP ones a third time, with
QTOOLS_REUSE=100).
"""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import QBIN, CBIN, qenv  # noqa: E402


def pytest_generate_tests(metafunc):
    """Process tests run in the modes their module's MODES names: by default
    elision on and off; the SMTP modules add "reuse" (elision on, and
    QTOOLS_REUSE=100: tcpserver children serve connection after connection)."""
    own = any("mode" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))
    if "mode" in metafunc.fixturenames and not own:
        metafunc.parametrize("mode", getattr(metafunc.module, "MODES", ("elide", "noelide")),
                             indirect=True)


@pytest.fixture
def mode(request):
    """'elide', 'noelide' or 'reuse'; pass it to helpers.qenv() for the
    process env."""
    return request.param


@pytest.fixture
def env(mode):
    return qenv(mode)


@pytest.fixture
def cbin():
    """Path of a Debian C original; fails (not skips) if it is missing, since
    the test command installs them."""
    def find(name):
        p = os.path.join(CBIN, name)
        if not os.path.exists(p):
            if os.environ.get("QTOOLS_SKIP_C"):
                pytest.skip("C %s not installed" % name)
            pytest.fail("C %s not installed (run the README's test command)" % name)
        return p
    return find


@pytest.fixture
def tmp(tmp_path):
    return tmp_path
