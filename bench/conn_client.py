#!/usr/bin/env python3
"""conn_client.py PORT N CONC [EXPECT] - open N connections to 127.0.0.1:PORT,
CONC at a time; each reads the first line and checks it starts with EXPECT.
Prints one line: rate (conn/s), median and p90 latency, errors.  Bounded: N
connections, 30 s socket timeouts."""
import socket
import statistics
import sys
import threading
import time


def one(port, expect):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        buf = b""
        while b"\n" not in buf:
            d = s.recv(4096)
            if not d:
                break
            buf += d
    finally:
        s.close()
    return time.perf_counter() - t0, buf.startswith(expect)


def run(port, n, conc, expect=b"553"):
    for _ in range(min(5, n)):
        one(port, expect)
    lat, errs = [], []

    def worker(k):
        for _ in range(k):
            try:
                dt, ok = one(port, expect)
                lat.append(dt)
                if not ok:
                    errs.append("bad reply")
            except OSError as e:
                errs.append(repr(e))

    per = n // conc
    ths = [threading.Thread(target=worker, args=(per,)) for _ in range(conc)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    el = time.perf_counter() - t0
    lat.sort()
    return {"n": len(lat), "rate": len(lat) / el, "median_ms": statistics.median(lat) * 1000,
            "p90_ms": lat[int(len(lat) * 0.9)] * 1000, "errors": len(errs)}


if __name__ == "__main__":
    port, n, conc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    expect = sys.argv[4].encode() if len(sys.argv) > 4 else b"553"
    r = run(port, n, conc, expect)
    print("n=%(n)d rate=%(rate).1f conn/s median=%(median_ms).2fms p90=%(p90_ms).2fms errors=%(errors)d" % r)
