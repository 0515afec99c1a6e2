"""proctitle - what `ps axfww` shows, for the long-running programs.

setproctitle rewrites the argv area so the seed's process tree reads
`tcpserver -v -H ...`, `supervise qmail-smtpd`, not `python3 /venv/bin/...`.
Its package __init__ imports logging and with it threading, which costs
~11 ms to import and, worse, registers at-fork handlers that make every
later fork() of a tcpserver or svscan ~0.4 ms slower.  So only the C
extension is loaded, without the package __init__.
"""
import sys

_mod = None


def load():
    """Load the extension now (a preload hook, before privileges drop);
    None if it cannot be loaded."""
    try:
        return _load()
    except Exception:                   # e.g. the installation is unreadable after setuid
        return None


def _load():
    global _mod
    if _mod is None:
        mod = sys.modules.get("setproctitle")
        if mod is None:
            import importlib.machinery
            import types
            spec = importlib.machinery.PathFinder.find_spec("setproctitle")
            if spec is None or not spec.submodule_search_locations:
                return None
            pkg = types.ModuleType("setproctitle")
            pkg.__path__ = list(spec.submodule_search_locations)
            sys.modules["setproctitle"] = pkg
            try:
                from setproctitle import _setproctitle as mod
            except ImportError:
                return None
            finally:
                del sys.modules["setproctitle"]
                sys.modules.pop("setproctitle._setproctitle", None)
        _mod = mod
    return _mod


def loaded():
    """True if the title can be set without importing anything."""
    return _mod is not None


def set(title):
    m = load()
    if m is not None:
        # argv bytes that are not UTF-8 (surrogate escapes) cannot be passed on
        m.setproctitle(title.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def from_argv(argv=None):
    set(" ".join(argv if argv is not None else sys.argv))
