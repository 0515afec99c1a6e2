"""daemontools 0.76: svscan, supervise, svc, svstat, svok, multilog, tai64n, readproctitle ..."""
