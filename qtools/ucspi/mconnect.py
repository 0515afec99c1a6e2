"""mconnect - talk to an SMTP server by hand.

usage: mconnect [ host [ port ] ]

mconnect connects to port (default 25) on host (default the local host,
0), sends its input there with a CR added before each LF, and prints what
the server sends, until the server closes the connection.

As in ucspi-tcp 0.88 it is `tcpclient -RHl0 -- host port mconnect-io`
(the original is a shell script): both are found through $PATH, and with
qtools' exec elision the whole chain runs in this one process.  Connection
errors are therefore tcpclient's
(`tcpclient: unable to connect to 127.0.0.1 port 25: connection refused`).

Exit codes: 0 when the server closed the connection; 100 usage (from
tcpclient); 111 no connection or unable to run tcpclient.
"""
from qtools.lib import pathexec, strerr

PROG = "mconnect"
USAGE = "mconnect [ host [ port ] ]"


def main(argv):
    host = argv[1] if len(argv) > 1 else "0"        # sh "${1-0}": set but empty stays empty
    port = argv[2] if len(argv) > 2 else "25"
    args = ["tcpclient", "-RHl0", "--", host, port, "mconnect-io"]
    try:
        pathexec.pathexec_run(args)
    except OSError as e:
        strerr.die(111, PROG, "unable to run tcpclient: ", e)
