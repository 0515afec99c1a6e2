"""mconnect-io - the copying half of mconnect, run by tcpclient.

usage: mconnect-io   (with descriptor 6 reading from and 7 writing to the network)

A forked child copies descriptor 0 to descriptor 7, inserting a CR before
every LF; the parent copies descriptor 6 to descriptor 1.  When the network
side ends (or cannot be read), the parent stops the child and exits 0.  The
end of descriptor 0 does not close the connection: as in ucspi-tcp 0.88,
mconnect-io waits for the server to hang up (after QUIT).  Output that
cannot be written is dropped.

Exit codes: 0; 111 unable to fork.
"""
import os
import signal

from qtools.lib import sig, strerr

PROG = "mconnect-io"
USAGE = "mconnect-io"


def _writeall(fd, data):
    while data:
        data = data[os.write(fd, data):]


def send(out=7):
    """The child: fd 0 -> fd 7 with CRs; ends at the end of input or on an error."""
    while True:
        try:
            data = os.read(0, 4096)
        except OSError:
            return 111
        if not data:
            return 0
        try:
            _writeall(out, data.replace(b"\n", b"\r\n"))
        except OSError:
            return 111


def main(argv):
    sig.ignore(signal.SIGPIPE)
    try:
        pid = os.fork()
    except OSError as e:
        strerr.die(111, PROG, "unable to fork: ", e)
    if pid == 0:
        code = 111
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = send()
        finally:
            os._exit(code)
    while True:
        try:
            data = os.read(6, 4096)
        except OSError:
            break
        if not data:
            break
        try:
            _writeall(1, data)
        except OSError:
            pass                    # like a C buffer_put whose flush failed
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except OSError:
        pass
    return 0
