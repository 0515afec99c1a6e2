"""Helpers for the vpopmail tests: a private MariaDB started by the tests
(test-infrastructure.md section 1: install-db once per session into a
template, copied per server; socket under /tmp, a free port on 127.0.0.1,
--no-defaults first, --user=root), and the `vhome` fixture that runs a test
against both stores: cdb (vpopmail's files) and mysql (a fresh database on
the session's server)."""
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from helpers import qbin, qenv

MARIADBD = "/usr/sbin/mariadbd"
USER, PASSWORD = "vpopmail", "s3cret"
_dbno = itertools.count(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class MariaDB:
    """One mariadbd on a copy of the template datadir."""

    def __init__(self, template):
        self.dir = tempfile.mkdtemp(prefix="qtdb.", dir="/tmp")
        self.sock = os.path.join(self.dir, "mysqld.sock")
        self.port = None
        self.proc = None
        shutil.copytree(template, os.path.join(self.dir, "data"), symlinks=True)

    def start(self):
        import pymysql
        self.port = self.port or free_port()
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--user=root", "--datadir=%s/data" % self.dir,
             "--socket=%s" % self.sock, "--pid-file=%s/mysqld.pid" % self.dir,
             "--port=%d" % self.port, "--bind-address=127.0.0.1", "--skip-name-resolve",
             "--log-error=%s/mysqld.err" % self.dir, "--tmpdir=%s" % self.dir,
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=4M"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("mariadbd exited: %s" % self.errlog())
            try:
                pymysql.connect(unix_socket=self.sock, user="root", connect_timeout=1,
                                read_timeout=2).close()
                break
            except pymysql.err.OperationalError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("mariadbd not ready: %s" % self.errlog())
            time.sleep(0.05)
        self.sql("CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s'"
                 % (USER, PASSWORD))
        self.sql("CREATE USER IF NOT EXISTS '%s'@'localhost' IDENTIFIED BY '%s'"
                 % (USER, PASSWORD))
        for host in ("127.0.0.1", "localhost"):
            self.sql("GRANT ALL ON *.* TO '%s'@'%s'" % (USER, host))
        return self

    def errlog(self):
        try:
            with open(os.path.join(self.dir, "mysqld.err")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def sql(self, query, args=(), db=None):
        import pymysql
        c = pymysql.connect(unix_socket=self.sock, user="root", database=db, autocommit=True,
                            connect_timeout=5, read_timeout=10, write_timeout=10)
        try:
            with c.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall()
        finally:
            c.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# Test modules import these fixtures, so pytest makes one session fixture
# per module: share the template and the server through this cache (the
# instance that made one removes it at the end of the session).
_shared = {}


@pytest.fixture(scope="session")
def mariadb_template():
    if "template" in _shared:
        yield _shared["template"]
        return
    if not os.path.exists(MARIADBD):
        pytest.fail("mariadbd not installed (run the README's test command)")
    d = tempfile.mkdtemp(prefix="qtdbt.", dir="/tmp")
    try:
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root",
                        "--datadir=%s/data" % d, "--auth-root-authentication-method=socket",
                        "--skip-test-db", "--skip-name-resolve", "--innodb-log-file-size=4M"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
        _shared["template"] = os.path.join(d, "data")
        yield _shared["template"]
    finally:
        _shared.pop("template", None)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb(mariadb_template):
    db = _shared.get("server")
    if db is not None and db.proc.poll() is None:
        yield db
        return
    db = MariaDB(mariadb_template)
    try:
        db.start()
        _shared["server"] = db
        yield db
    finally:
        _shared.pop("server", None)
        db.cleanup()


@pytest.fixture
def private_mariadb(mariadb_template):
    """A server of the test's own (to kill or stop)."""
    db = MariaDB(mariadb_template)
    try:
        db.start()
        yield db
    finally:
        db.cleanup()


class VHome:
    """VPOPMAILHOME + QMAILHOME for one test, and the store's backend."""

    def __init__(self, tmp_path, backend, db=None, qmailhome=None):
        self.backend = backend
        self.db = db
        self.vpop = str(tmp_path / "vpopmail")
        self.qmail = qmailhome or str(tmp_path / "qmail")
        os.makedirs(os.path.join(self.vpop, "etc"), exist_ok=True)
        os.makedirs(self.qmail, exist_ok=True)
        self.dbname = None
        if backend == "mysql" and db is not None:
            self.use_db(db)

    def use_db(self, db, tcp=True):
        self.db = db
        self.dbname = self.dbname or "vp%d_%d" % (os.getpid(), next(_dbno))
        db.sql("CREATE DATABASE IF NOT EXISTS `%s`" % self.dbname)
        host = "127.0.0.1|%d" % db.port if tcp else "%s|0" % db.sock
        with open(os.path.join(self.vpop, "etc", "vpopmail.mysql"), "w") as f:
            f.write("# vpopmail.mysql written by the test\n%s|%s|%s|%s\n"
                    % (host, USER, PASSWORD, self.dbname))

    def env(self, mode="elide", **extra):
        e = dict(VPOPMAILHOME=self.vpop, QMAILHOME=self.qmail, QTOOLS_MYSQL_TIMEOUT="2",
                 VPOPMAIL_AUTH=self.backend)
        e.update(extra)
        return qenv(mode, **e)

    def run(self, *argv, mode="elide", input=None, env=None, timeout=60, **extra):
        """Run a tool; CompletedProcess with text output."""
        return subprocess.run([qbin(argv[0])] + list(argv[1:]), input=input,
                              capture_output=True, text=True, timeout=timeout,
                              env=env or self.env(mode, **extra))

    def ok(self, *argv, **kw):
        r = self.run(*argv, **kw)
        assert r.returncode == 0, (argv, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def rows(self, query, args=()):
        return self.db.sql(query, args, db=self.dbname)

    def domdir(self, domain):
        return os.path.join(self.vpop, "domains", domain)


@pytest.fixture(params=["cdb", "mysql"])
def vhome(request, tmp_path):
    """The same test against vpopmail's file store and its MySQL schema."""
    db = request.getfixturevalue("mariadb") if request.param == "mysql" else None
    return VHome(tmp_path, request.param, db)


def _fd3(r):
    if r != 3:
        os.dup2(r, 3)
    os.set_inheritable(3, True)


def chkpw(vh, data, args=("true",), mode="elide", env=None, **extra):
    """Run vchkpw with data on descriptor 3; (exit code, stdout, stderr)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        # preexec_fn runs before close_fds would close fd 3: keep them open
        # (Python's own fds are close-on-exec anyway)
        p = subprocess.run([qbin("vchkpw")] + list(args), close_fds=False, capture_output=True,
                           env=env or vh.env(mode, **extra), timeout=60,
                           preexec_fn=lambda: _fd3(r))
    finally:
        os.close(r)
    return p.returncode, p.stdout, p.stderr
