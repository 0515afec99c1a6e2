#!/usr/bin/env python3
"""Connection rate: qtools tcpserver vs the C tcpserver, one run, as ratios.

Each server runs `rblsmtpd -t0 true` per connection with RBLSMTPD="-blocked"
set from a tcprules cdb, so every connection gets one `553 blocked` line:
  C      : /usr/bin/tcpserver -> /usr/bin/rblsmtpd (C child, exec)
  elide  : qtools tcpserver -> qtools rblsmtpd, exec elided (fork only)
  noelide: qtools tcpserver -> qtools rblsmtpd, QTOOLS_NOELIDE=1 (fork+exec Python)
  reuse  : elide with QTOOLS_REUSE=100 (a child serves up to 100 connections in turn)
measured one connection at a time and 10 at once.  Loopback only; every
load loop is bounded by a connection count and socket timeouts.

usage: bench/connrate.py [N]     (N connections per case, default 2000)
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conn_client  # noqa: E402

QBIN = os.path.dirname(os.path.abspath(sys.executable))


def server(tcpserver, rblsmtpd, env, rules):
    p = subprocess.Popen([tcpserver, "-1", "-v", "-H", "-R", "-l", "0", "-c", "100", "-x", rules,
                          "127.0.0.1", "0", rblsmtpd, "-t0", "true"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                         start_new_session=True)
    port = int(p.stdout.readline())
    return p, port


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    d = tempfile.mkdtemp(prefix="connrate.")
    rules = os.path.join(d, "rules.cdb")
    subprocess.run([os.path.join(QBIN, "tcprules"), rules, rules + ".tmp"],
                   input=b'127.0.0.1:allow,RBLSMTPD="-blocked"\n', check=True)
    base = dict(os.environ, PATH=QBIN + ":/usr/bin:/bin")
    base.pop("QTOOLS_NOELIDE", None)
    base.pop("QTOOLS_REUSE", None)
    cases = [
        ("C tcpserver + C rblsmtpd", "/usr/bin/tcpserver", "/usr/bin/rblsmtpd", base),
        ("qtools, elision on", os.path.join(QBIN, "tcpserver"), "rblsmtpd", base),
        ("qtools, elision off", os.path.join(QBIN, "tcpserver"), "rblsmtpd",
         dict(base, QTOOLS_NOELIDE="1")),
        ("qtools, QTOOLS_REUSE=100", os.path.join(QBIN, "tcpserver"), "rblsmtpd",
         dict(base, QTOOLS_REUSE="100")),
    ]
    results = {}
    print("# connrate: %d connections per case, nproc=%d, load=%s"
          % (n, os.cpu_count(), open("/proc/loadavg").read().split()[0]))
    for name, ts, rbl, env in cases:
        p, port = server(ts, rbl, env, rules)
        try:
            k = n if "off" not in name else max(200, n // 5)
            seq = conn_client.run(port, k, 1)
            c10 = conn_client.run(port, k, 10)
        finally:
            p.terminate()
            p.wait()
        results[name] = (seq, c10)
        print("%-28s seq %7.1f conn/s (%.2f ms)  c10 %7.1f conn/s  errors %d/%d"
              % (name, seq["rate"], seq["median_ms"], c10["rate"], seq["errors"], c10["errors"]))
    c = results["C tcpserver + C rblsmtpd"]
    e = results["qtools, elision on"]
    x = results["qtools, elision off"]
    print("ratio elide/C      : seq %.2fx  c10 %.2fx   (target >= 0.7x)"
          % (e[0]["rate"] / c[0]["rate"], e[1]["rate"] / c[1]["rate"]))
    print("ratio elide/noelide: seq %.2fx  c10 %.2fx   (target >= 5x)"
          % (e[0]["rate"] / x[0]["rate"], e[1]["rate"] / x[1]["rate"]))
    r = results["qtools, QTOOLS_REUSE=100"]
    print("ratio reuse/C      : seq %.2fx  c10 %.2fx"
          % (r[0]["rate"] / c[0]["rate"], r[1]["rate"] / c[1]["rate"]))


if __name__ == "__main__":
    main()
