"""qmail-qstat - summarize the status of the mail queue.

usage: qmail-qstat

Prints, for the queue in $QMAILHOME/queue (default /var/qmail/queue):
    messages in queue: N
    messages in queue but not yet preprocessed: M
N counts the files in mess/<0..22>/, M those in todo/ (qmail-qstat.sh counts
the same with find; with the vanilla layout todo/ is not split).  Run it as
root or as a member of group qmail, which can read mess/ and todo/.

Differences: the shell original prints find's complaints and a wrong count
when it cannot read a directory; qtools stops with
`qmail-qstat: fatal: unable to read DIR: ERR` and exit 111.

Exit codes: 0 ok, 100 usage, 111 a queue directory could not be read.
"""
import os

from qtools.lib import queue as qlib
from qtools.lib import strerr

PROG = "qmail-qstat"
USAGE = "qmail-qstat"


def count(path):
    """Files below path (find path -print minus the directory itself)."""
    n = 0
    try:
        with os.scandir(path) as it:
            for e in it:
                n += 1
                if e.is_dir(follow_symlinks=False):
                    n += count(e.path)
    except OSError as e:
        strerr.die(111, PROG, "unable to read ", path, ": ", e)
    return n


def main(argv):
    if len(argv) > 1:
        strerr.die_usage(PROG, USAGE)
    q = qlib.queuedir()
    mess = os.path.join(q, "mess")
    try:
        subdirs = os.listdir(mess)
    except OSError as e:
        strerr.die(111, PROG, "unable to read ", mess, ": ", e)
    # find mess/* -print, minus the entries of mess/ themselves
    messages = sum(count(os.path.join(mess, d)) for d in subdirs
                   if os.path.isdir(os.path.join(mess, d))
                   and not os.path.islink(os.path.join(mess, d)))
    todo = count(os.path.join(q, "todo"))
    os.write(1, b"messages in queue: %d\nmessages in queue but not yet preprocessed: %d\n"
             % (messages, todo))
    return 0
