"""relay - the fork-and-copy frame shared by recordio and fixcrio.

ucspi-tcp's recordio.c and fixcrio.c have the same shape: make two pipes,
fork; the *parent* becomes the program (fd 0 reads the first pipe, fd 1
writes the second), so whoever started us still waits for the program and
its pid is the one logged; the *child* copies fd 0 -> program and
program -> fd 1, passing every packet (at most 256 bytes) through a filter.
The copier exits when the program's output ends, or when a write fails.

The filter object has four methods:
    left(data) -> bytes     a packet read from fd 0; returns what the program gets
    left_eof()              fd 0 ended (the program's input is then closed)
    right(data) -> bytes    a packet of the program's output; returns what fd 1 gets
    right_eof()             the program's output ended (the copier then exits)
"""
import os
import select
import signal

PACKET = 256


def copy(filt, fdleft, fdright):
    """The copier (doit() in recordio.c): 0 -> fdleft, fdright -> 1.
    Both directions are independent state machines: reading, or writing the
    packet just read; -1 means closed."""
    left = right = 0                # 0 reading, 1 writing, -1 closed
    lbuf = rbuf = b""
    while True:
        p = select.poll()
        if left == 0:
            p.register(0, select.POLLIN)
        elif left == 1:
            p.register(fdleft, select.POLLOUT)
        if right == 0:
            p.register(fdright, select.POLLIN)
        else:
            p.register(1, select.POLLOUT)
        ready = dict(p.poll())
        if left == 0 and ready.get(0):
            try:
                data = os.read(0, PACKET)
            except OSError:
                data = b""
            if not data:
                left = -1
                os.close(fdleft)
                filt.left_eof()
            else:
                lbuf = filt.left(data)
                left = 1 if lbuf else 0
        elif left == 1 and ready.get(fdleft):
            try:
                n = os.write(fdleft, lbuf)
            except OSError:
                return
            lbuf = lbuf[n:]
            if not lbuf:
                left = 0
        if right == 0 and ready.get(fdright):
            try:
                data = os.read(fdright, PACKET)
            except OSError:
                data = b""
            if not data:
                filt.right_eof()
                return
            rbuf = filt.right(data)
            right = 1 if rbuf else 0
        elif right == 1 and ready.get(1):
            try:
                n = os.write(1, rbuf)
            except OSError:
                return
            rbuf = rbuf[n:]
            if not rbuf:
                right = 0


def spawn(prog, argv, filt):
    """Fork the copier, then run argv as this process.  Returns only by
    raising SystemExit (strerr.die) on failure."""
    from qtools.lib import pathexec, strerr
    try:
        inr, inw = os.pipe()
        outr, outw = os.pipe()
    except OSError as e:
        strerr.die(111, prog, "unable to create pipe: ", e)
    try:
        pid = os.fork()
    except OSError as e:
        strerr.die(111, prog, "unable to fork: ", e)
    if pid == 0:
        code = 0
        try:
            # a dead program must not kill the copier: its write just fails
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            os.close(inr)
            os.close(outw)
            copy(filt, inw, outr)
        except BaseException:               # noqa: BLE001 - never run the parent's code
            code = 111
        os._exit(code)
    os.close(inw)
    os.close(outr)
    try:
        os.dup2(inr, 0)
        os.dup2(outw, 1)
    except OSError as e:
        strerr.die(111, prog, "unable to move descriptors: ", e)
    os.close(inr)
    os.close(outw)
    try:
        pathexec.pathexec_run(argv)
    except OSError as e:
        strerr.die(111, prog, "unable to run ", argv[0], ": ", e)
