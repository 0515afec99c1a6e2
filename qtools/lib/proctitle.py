"""proctitle - what `ps axfww` shows, for the long-running programs.

setproctitle rewrites the argv area so the seed's process tree reads
`tcpserver -v -H ...`, `supervise qmail-smtpd`, not `python3 /venv/bin/...`.
Its import costs ~11 ms (it pulls in logging), so only long-lived programs
and parents that fork per connection use it.
"""
import sys


def set(title):
    try:
        import setproctitle
    except ImportError:                      # pragma: no cover - optional at run time
        return
    setproctitle.setproctitle(title)


def from_argv(argv=None):
    set(" ".join(argv if argv is not None else sys.argv))
