#!/usr/bin/env python3
"""aio_smtpd.py MAILDIR - the anchors' "aio" server: aiosmtpd on 127.0.0.1
(a free port, printed on stdout as the first line once listening), each
message written to MAILDIR/tmp/<unique>, fsync'd, renamed into MAILDIR/new/
and new/ fsync'd before the 250 (write+fsync+rename+fsync(dir) in the event
loop).  Runs until SIGTERM.  Accepts any sender and recipient.
"""
import asyncio
import os
import signal
import socket
import sys

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, maildir):
        self.tmp = os.path.join(maildir, "tmp")
        self.new = os.path.join(maildir, "new")
        self.newfd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)
        self.seq = 0
        self.pid = os.getpid()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.seq += 1
        name = "%d.%d.%d" % (self.pid, self.seq, id(envelope))
        tmp = os.path.join(self.tmp, name)
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.new, name))
        os.fsync(self.newfd)
        return "250 OK"


def main():
    maildir = sys.argv[1]
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    handler = Handler(maildir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, hostname="aio.test.example", decode_data=False,
                     data_size_limit=None),
        sock=sock, backlog=128))
    print(sock.getsockname()[1], flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
