"""A private dnsmasq for tests that look names up (test-infrastructure.md §2).

Dnsmasq(tmp_path, lines) answers everything under .test and in-addr.arpa
from `lines` (dnsmasq.conf syntax: txt-record=, host-record=, ptr-record=);
other names under .test are NXDOMAIN; anything under servfail.test gets
SERVFAIL (from a fake upstream thread in this process) and anything under
timeout.test no answer at all.

As root it listens on 127.0.0.N port 53, so djbdns' resolver in Debian's C
binaries (whose $DNSCACHEIP takes an address but no port) can use it too:
`.port53` is then true.  Otherwise it uses a free port on 127.0.0.1 and only
qtools (DNSCACHEIP=ip:port) can ask it.  `.dnscacheip` is the value to set.
"""
import os
import random
import socket
import struct
import subprocess
import threading
import time

from helpers import sbin


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (a small race remains;
    the caller retries)."""
    for _ in range(20):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise AssertionError("no free port")


def query_packet(name, qtype=1, qid=0x1234):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)


class _ServfailUpstream(threading.Thread):
    """Answers every query with SERVFAIL (the recipe's fake upstream)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                q, peer = self.sock.recvfrom(512)
            except (socket.timeout, OSError):
                continue
            if len(q) < 12:
                continue
            flags = 0x8000 | (q[2] & 0x79) << 8 | 0x0080 | 2
            try:
                self.sock.sendto(q[:2] + flags.to_bytes(2, "big") + q[4:6] + b"\0" * 6 + q[12:],
                                 peer)
            except OSError:
                pass

    def stop(self):
        self.done.set()
        self.join(2)
        self.sock.close()


class Dnsmasq:
    def __init__(self, tmp_path, lines, prefer53=True):
        self.dir = str(tmp_path)
        self.lines = list(lines)
        self.prefer53 = prefer53 and os.geteuid() == 0
        self.proc = None

    def _config(self, ip, port):
        conf = [
            "port=%d" % port, "listen-address=%s" % ip, "bind-interfaces",
            "no-resolv", "no-hosts", "no-poll", "no-negcache",
            "local=/test/", "local=/in-addr.arpa/",
            "server=/servfail.test/127.0.0.1#%d" % self.servfail.port,
            "server=/timeout.test/127.0.0.1#%d" % self.blackhole.getsockname()[1],
        ] + self.lines
        path = os.path.join(self.dir, "dnsmasq.conf")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        return path

    def _start(self, ip, port):
        conf = self._config(ip, port)
        err = open(os.path.join(self.dir, "dnsmasq.err"), "wb")
        proc = subprocess.Popen(
            [sbin("dnsmasq"), "--keep-in-foreground", "--conf-file=" + conf, "--pid-file=",
             "--log-facility=" + os.path.join(self.dir, "dnsmasq.log")],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        err.close()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(0.05)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return None                         # port taken: try another
                try:
                    probe.sendto(query_packet("ready.probe.test"), (ip, port))
                    probe.recvfrom(512)
                    return proc
                except OSError:
                    continue
            proc.kill()
            proc.wait(5)
            raise AssertionError("dnsmasq did not answer")
        finally:
            probe.close()

    def __enter__(self):
        self.servfail = _ServfailUpstream()
        self.servfail.start()
        self.blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.blackhole.bind(("127.0.0.1", 0))
        try:
            for attempt in range(8):
                if self.prefer53 and attempt < 4:
                    ip, port = "127.0.0.%d" % random.randint(100, 250), 53
                else:
                    ip, port = "127.0.0.1", _free_port()
                self.proc = self._start(ip, port)
                if self.proc:
                    break
            else:
                raise AssertionError("dnsmasq could not bind: %s" % self.stderr())
        except BaseException:
            self.servfail.stop()
            self.blackhole.close()
            raise
        self.ip, self.port = ip, port
        self.port53 = port == 53
        self.dnscacheip = ip if port == 53 else "%s:%d" % (ip, port)
        return self

    def stderr(self):
        try:
            with open(os.path.join(self.dir, "dnsmasq.err"), "rb") as f:
                return f.read().decode("latin-1")
        except OSError:
            return ""

    def __exit__(self, *a):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.servfail.stop()
        self.blackhole.close()
