"""vpopmaild under a real tcpserver on 127.0.0.1, real socket clients,
against both stores and in both elision modes: the seed's login transcript
(port 89 in the seed), login failures and limits, login levels, add_user
then AUTH through vchkpw, add_domain/del_domain through the root monitor
(privilege separation: the session reads as the vpopmail uid), hostile
input (overlong lines, NUL, '../'), the read timeout, a MariaDB stopped
mid-session."""
import os
import pathlib
import re
import shutil
import socket
import stat
import sys
import tempfile

import pytest

from helpers import TcpServer, needs_root, wait_until
from svtools import children
from vpoptools import (VHome, chkpw, mariadb, mariadb_template,  # noqa: F401
                       private_mariadb)

from qtools.vpopmail import privsep
from qtools.vpopmail.vpopmaild import ERRMSG, MAXLINE, err

DOM = "yourdomain.net"
NOBODY = 65534
ROOT = os.geteuid() == 0
SESSION_UID = NOBODY if ROOT else os.geteuid()
FLAGS = ("no_password_change no_pop no_webmail no_imap bounce_mail no_relay no_dialup "
         "user_flag_0 user_flag_1 user_flag_2 user_flag_3 no_smtp domain_admin_privileges "
         "override_domain_limits no_spamassassin delete_spam no_maildrop "
         "system_admin_privileges").split()


@pytest.fixture(params=["cdb", "mysql"])
def vh(request):
    """vhome in a directory the session's uid can reach (pytest's tmp_path
    is 0700 root): $VPOPMAILHOME owned by nobody when run as root, so the
    session drops to nobody (admin.vpopmail_ids(): no vpopmail user)."""
    d = tempfile.mkdtemp(prefix="vpopmaild.", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        db = request.getfixturevalue("mariadb") if request.param == "mysql" else None
        yield vhome_at(d, request.param, db)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def vhome_at(d, backend, db):
    v = VHome(pathlib.Path(d), backend, db)
    v.top = d
    # an installed qmail has these, world-readable (admin.py would make
    # them under vadddomain's umask 077, unreadable for the session)
    for sub in ("users", "control"):
        os.makedirs(os.path.join(v.qmail, sub), 0o755, exist_ok=True)
    if ROOT:
        os.chown(v.vpop, NOBODY, NOBODY)
    return v


def daemon(vh, mode, args=(), **extra):
    return TcpServer(["-HR", "-l", "0"] + list(args), ["vpopmaild"], env=vh.env(mode, **extra))


class Client:
    def __init__(self, srv, timeout=10):
        self.sock = srv.connect(timeout)
        self.f = self.sock.makefile("rb")
        self.banner = self.f.readline()

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        return self.f.readline()

    def cmd(self, text):
        """Send a command line, return the first reply line."""
        self.send(text + b"\r\n")
        return self.line()

    def data(self):
        """The lines of a +OK+ reply up to '.', as one bytes string."""
        out = b""
        for _ in range(100000):
            ln = self.line()
            assert ln, "connection closed in a multi-line reply"
            out += ln
            if ln == b".\r\n":
                return out
        raise AssertionError("no end of reply")

    def multi(self, text):
        first = self.cmd(text)
        assert first == b"+OK+\r\n", first
        return self.data()

    def rest(self):
        return self.f.read()

    def close(self):
        self.f.close()
        self.sock.close()


def setup_users(vh):
    open(os.path.join(vh.vpop, "etc", "clear-passwd"), "w").close()
    vh.ok("vadddomain", DOM, "pmpass")
    vh.ok("vadduser", "-c", "userName userSurname", "userid@" + DOM, "PASS WORD")
    return vh


def login_block(vh, user, domain, comment, clear, flags=0, compact=False):
    a = vh.ok("vdominfo", domain)
    uid = int(re.search(r"^uid: *(\d+)", a, re.M).group(1))
    gid = int(re.search(r"^gid: *(\d+)", a, re.M).group(1))
    crypted = vh.ok("vuserinfo", "-p", "%s@%s" % (user, domain)).strip()
    ddir = vh.domdir(domain)
    head = ("+OK+\r\nvpopmail_dir %s\r\ndomain_dir %s\r\nuid %d\r\ngid %d\r\n"
            % (vh.vpop, ddir, uid, gid))
    return head + user_block(user, ddir, comment, crypted, clear, flags, compact) + ".\r\n"


def user_block(user, ddir, comment, crypted, clear, flags=0, compact=False):
    out = ("name %s\r\ncomment %s\r\nquota NOQUOTA\r\nuser_dir %s/%s\r\n"
           "encrypted_password %s\r\nclear_text_password %s\r\n"
           % (user, comment, ddir, user, crypted, clear))
    if compact:
        return out + "gidflags %d\r\n" % flags
    bits = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800,
            0x1000, 0x2000, 0x4000, 0x8000, 0x40000, 0x10000)
    return out + "".join("%s %d\r\n" % (k, 1 if flags & b else 0) for k, b in zip(FLAGS, bits))


def sysadmin(vh, domain="admin.test"):
    """An SA_ADMIN user (vmoduser -S works as root only; as another user the
    store row is edited the same way through vmoduser's -e path)."""
    vh.ok("vadddomain", domain, "pm")
    vh.ok("vadduser", "boss@" + domain, "bosspw")
    if ROOT:
        vh.ok("vmoduser", "-S", "boss@" + domain)
    else:
        from qtools.vpopmail import store as S
        env = os.environ.copy()
        os.environ.update(VPOPMAILHOME=vh.vpop, QMAILHOME=vh.qmail, VPOPMAIL_AUTH=vh.backend)
        try:
            st = S.open_store()
            pw = st.getpw("boss", domain)
            pw.gid |= S.SA_ADMIN
            st.setpw(pw, domain)
            st.close()
        finally:
            os.environ.clear()
            os.environ.update(env)
    return b"login boss@" + domain.encode() + b" bosspw"


# -- the seed ---------------------------------------------------------------------
def test_seed_login_transcript(vh, mode):
    setup_users(vh)
    with daemon(vh, mode) as srv:
        c = Client(srv)
        assert c.banner == b"+OK \r\n"
        got = c.multi(b"login userid@yourdomain.net PASS WORD")
        want = login_block(vh, "userid", DOM, "userName userSurname", "PASS WORD")
        assert (b"+OK+\r\n" + got).decode() == want
        assert c.cmd(b"quit") == b"+OK \r\n"
        assert c.rest() == b""
        c.close()


def test_clogin_slogin_and_postmaster_rights(vh, mode):
    setup_users(vh)
    with daemon(vh, mode) as srv:
        c = Client(srv)
        got = b"+OK+\r\n" + c.multi(b"CLOGIN userid@YourDomain.net PASS WORD")
        assert got.decode() == login_block(vh, "userid", DOM, "userName userSurname",
                                           "PASS WORD", compact=True)
        c.close()
        c = Client(srv)
        assert c.cmd(b"slogin postmaster@yourdomain.net pmpass") == b"+OK \r\n"
        # postmaster: domain admin (QA_ADMIN ORed into the session's copy
        # only); slogin's output type makes every user block compact
        info = c.multi(b"user_info postmaster@yourdomain.net")
        assert info.endswith(b"clear_text_password pmpass\r\ngidflags 0\r\n.\r\n")
        assert c.multi(b"user_count yourdomain.net") == b"count 2\r\n.\r\n"
        c.close()
        c = Client(srv)
        got = c.multi(b"login postmaster@yourdomain.net pmpass")
        assert b"domain_admin_privileges 1\r\n" in got
        assert c.cmd(b"q") == b"+OK \r\n"
        c.close()


# -- login failures and limits -----------------------------------------------------
def test_login_failures(vh, mode):
    setup_users(vh)
    with daemon(vh, mode) as srv:
        c = Client(srv)
        assert c.cmd(b"login userid@yourdomain.net wrong") == b"-ERR 8.207 Invalid Login\r\n"
        assert c.cmd(b"login nobody@yourdomain.net x") == b"-ERR 8.206 Invalid Login\r\n"
        assert c.cmd(b"login us er@yourdomain.net x") == b"-ERR 8.206 Invalid Login\r\n"
        # the 4th failed login: its own reply, then 5.105 and the end
        assert c.cmd(b"login ../x@yourdomain.net x") == b"-ERR 8.205 Invalid Login\r\n"
        assert c.line() == b"-ERR 5.105 Too many invalid login attempts\r\n"
        assert c.rest() == b""
        c.close()
        c = Client(srv)
        assert c.cmd(b"login") == b"-ERR 6.203 Email Address Required\r\n"
        assert c.cmd(b"login userid@yourdomain.net") == b"-ERR 7.204 Password Required\r\n"
        assert c.cmd(b"bogus") == b"-ERR 4.104 Invalid Command\r\n"
        assert c.cmd(b"user_info userid@yourdomain.net") == b"-ERR 4.104 Invalid Command\r\n"
        # the 5th command before a login ends the session
        assert c.cmd(b"login userid@yourdomain.net PASS WORD") == \
            b"-ERR 5.102 Too many invalid login attempts\r\n"
        assert c.rest() == b""
        c.close()


def test_help_before_login_counts(vh, mode):
    setup_users(vh)
    with daemon(vh, mode) as srv:
        c = Client(srv)
        assert c.multi(b"HELP") == (
            b"\r\nLogin\r\n"
            b"login login user@domain password - expanded bitmaps\r\n"
            b"clogin login user@domain password - compact bitmapts\r\n"
            b"slogin login user@domain password - silent results\r\n"
            b"\r\nUtility\r\nhelp help\r\nexit quit\r\nquit quit\r\nq quit\r\n.\r\n")
        c.send(b"\r\n\r\n")                         # blank lines count too
        assert c.cmd(b"quit") == b"+OK \r\n"
        c.close()
        c = Client(srv)
        c.send(b"\r\n\r\n\r\n\r\n")
        assert c.cmd(b"quit") == b"-ERR 5.102 Too many invalid login attempts\r\n"
        c.close()


# -- login levels --------------------------------------------------------------------
def test_levels(vh, mode):
    setup_users(vh)
    vh.ok("vadddomain", "other.test", "otherpw")
    with daemon(vh, mode) as srv:
        c = Client(srv)                             # a user: level 1
        c.multi(b"login userid@yourdomain.net PASS WORD")
        for cmd in (b"list_domains", b"add_domain x.test pw", b"user_info userid@" + DOM.encode(),
                    b"add_user a@yourdomain.net pw", b"nonsense"):
            assert c.cmd(cmd) == b"-ERR 4.107 Invalid Command\r\n", cmd
        assert c.cmd(b"get_lastauth userid@yourdomain.net") == b"-ERR 9.3701 Not Authorized\r\n"
        assert c.cmd(b"get_user_size userid@yourdomain.net") == b"-ERR 3801 not authorized\r\n"
        assert c.cmd(b"mod_user postmaster@yourdomain.net") == \
            b"-ERR 11.504 Not Authorized for domain\r\n"
        help_text = c.multi(b"help")
        assert b"mod_user " in help_text and b"list_domains" not in help_text
        assert help_text.startswith(b"\r\nUser\r\nmod_user user@domain (option lines)")
        # a user may change its own comment and password, not its flags
        assert c.cmd(b"mod_user userid@yourdomain.net") == b"+OK \r\n"
        c.send(b"comment=New Name\r\nno_pop 1\r\nclear_text_password new pass\r\n.\r\n")
        assert c.line() == b"+OK \r\n"
        # a ':' in a crypted password would shift vpasswd's fields into the
        # flags: refused, nothing changed
        assert c.cmd(b"mod_user userid@yourdomain.net") == b"+OK \r\n"
        c.send(b"comment x\r\nencrypted_password x:1:65536:g:/tmp:NOQUOTA\r\n.\r\n")
        assert c.line() == b"-ERR 0.507 bad character\r\n"
        c.close()
        assert chkpw(vh, b"userid@yourdomain.net\0new pass\0", mode=mode)[0] == 0
        assert vh.ok("vuserinfo", "-c", "-g", "userid@" + DOM) == "0\nNew Name\n"
        c = Client(srv)                             # postmaster: level 2
        c.multi(b"login postmaster@yourdomain.net pmpass")
        assert c.cmd(b"add_domain x.test pw") == b"-ERR 4.107 Invalid Command\r\n"
        assert c.cmd(b"get_limits yourdomain.net") == b"-ERR 9.3401 Not Authorized\r\n"
        assert c.cmd(b"user_info postmaster@other.test") == \
            b"-ERR 11.604 Not Authorized for domain\r\n"
        assert c.cmd(b"add_user x@other.test pw") == b"-ERR 11.304 Not Authorized for domain\r\n"
        assert c.cmd(b"del_user postmaster@other.test") == b"-ERR 9.404 Not Authorized\r\n"
        assert c.cmd(b"user_info ghost@yourdomain.net") == b"-ERR 12.605 User does not exist\r\n"
        assert c.cmd(b"del_user ghost@yourdomain.net") == b"-ERR 0,405 User does not exist\r\n"
        assert c.cmd(b"add_list yourdomain.net l") == b"-ERR 36.4001 Not Implemented yet\r\n"
        assert c.cmd(b"get_ip_map 1.2.3.4") == b"-ERR 33.3004 Not Available\r\n"
        c.close()


# -- users -------------------------------------------------------------------------------
def test_add_user_then_auth_through_vchkpw(vh, mode):
    setup_users(vh)
    with daemon(vh, mode) as srv:
        c = Client(srv)
        c.multi(b"login postmaster@yourdomain.net pmpass")
        assert c.cmd(b"add_user New@yourdomain.net pass with spaces") == b"+OK \r\n"
        assert c.cmd(b"add_user new@yourdomain.net again") == \
            b"-ERR 0.305 Username exists\r\n"
        assert c.cmd(b"add_user n2@yourdomain.net") == b"-ERR 7.305 Password Required\r\n"
        assert c.cmd(b"add_user") == b"-ERR 6.302 Email Address Required\r\n"
        info = c.multi(b"user_info new@yourdomain.net")
        assert info.startswith(b"name new\r\ncomment new\r\nquota NOQUOTA\r\nuser_dir %s/new\r\n"
                               % vh.domdir(DOM).encode())
        assert b"clear_text_password pass with spaces\r\n" in info
        users = c.multi(b"list_users yourdomain.net")
        assert users.count(b"name ") == 3 and users.count(b"\r\n\r\n") == 3
        # a page of one: the users before it still get their empty line (sic)
        page2 = c.multi(b"list_users yourdomain.net 2 1")
        assert page2.startswith(b"\r\nname postmaster\r\n") and page2.count(b"name ") == 1
        assert c.multi(b"get_user_size new@yourdomain.net") == b"size 0\r\ncount 0\r\n.\r\n"
        size = c.multi(b"get_domain_size yourdomain.net")
        assert size.endswith(b"domain yourdomain.net\r\nsize 0\r\ncount 0\r\n.\r\n")
        last = c.multi(b"get_lastauth new@yourdomain.net")
        assert re.match(rb"time \d+\r\nip 0\.0\.0\.0\r\n\.\r\n$", last)
        c.close()
    uid = os.stat(os.path.join(vh.domdir(DOM), "new")).st_uid
    assert uid == SESSION_UID
    code, _, errout = chkpw(vh, b"new@yourdomain.net\0pass with spaces\0", mode=mode)
    assert code == 0, errout
    assert chkpw(vh, b"new@yourdomain.net\0wrong\0", mode=mode)[0] == 3
    with daemon(vh, mode) as srv:
        c = Client(srv)
        c.multi(b"login postmaster@yourdomain.net pmpass")
        assert c.cmd(b"del_user new@yourdomain.net") == b"+OK \r\n"
        c.close()
    assert not os.path.exists(os.path.join(vh.domdir(DOM), "new"))
    assert chkpw(vh, b"new@yourdomain.net\0pass with spaces\0", mode=mode)[0] == 3


# -- domains through the monitor --------------------------------------------------------
def session_pid(srv, client):
    """The process serving this connection: its fd 0 is the server side of
    the client's socket (inode from /proc/net/tcp)."""
    lport = srv.port
    rport = client.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            p = line.split()
            if int(p[1].split(":")[1], 16) == lport and int(p[2].split(":")[1], 16) == rport:
                inode = p[9]
    assert inode
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/fd/0" % pid) == "socket:[%s]" % inode:
                return int(pid)
        except OSError:
            continue
    raise AssertionError("no process reads the connection")


def status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)


@needs_root
def test_session_reads_unprivileged_monitor_keeps_root(vh, mode):
    setup_users(vh)
    with daemon(vh, mode) as srv:
        c = Client(srv)
        pid = session_pid(srv, c)
        wait_until(lambda: status(pid)["State"].strip().startswith("S"), what="session reads")
        st = status(pid)
        assert st["Uid"].split() == [str(NOBODY)] * 4
        assert st["Gid"].split() == [str(NOBODY)] * 4
        assert st["Groups"].split() == [str(NOBODY)]
        assert int(st["PPid"]) == srv.proc.pid      # tcpserver's child
        mon = children(pid)
        assert len(mon) == 1
        ms = status(mon[0])
        assert ms["Uid"].split() == ["0"] * 4
        assert os.readlink("/proc/%d/fd/0" % mon[0]) == "/dev/null"
        assert os.readlink("/proc/%d/fd/1" % mon[0]) == "/dev/null"
        assert c.cmd(b"quit") == b"+OK \r\n"
        assert c.rest() == b""
        c.close()
        wait_until(lambda: not os.path.exists("/proc/%d" % mon[0])
                   or status(mon[0])["State"].strip().startswith("Z"), what="monitor ends")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_add_and_del_domain(vh, mode):
    login = sysadmin(vh)
    vh.ok("vadddomain", DOM, "pmpass")
    ctl = os.path.join(vh.qmail, "control")
    with daemon(vh, mode) as srv:
        c = Client(srv)
        assert c.multi(login).endswith(b"system_admin_privileges 1\r\n.\r\n")
        assert c.cmd(b"add_domain New.Test  pm pass") == b"+OK \r\n"
        assert "new.test\n" in read(os.path.join(ctl, "rcpthosts"))
        assert "new.test:new.test\n" in read(os.path.join(ctl, "virtualdomains"))
        assert "+new.test-:new.test:" in read(os.path.join(vh.qmail, "users", "assign"))
        ddir = vh.domdir("new.test")
        assert os.stat(ddir).st_uid == SESSION_UID
        assert os.stat(os.path.join(ddir, "postmaster", "Maildir")).st_uid == SESSION_UID
        assert c.cmd(b"add_domain new.test x") == b"-ERR 0.804 Domain already exists\r\n"
        assert c.cmd(b"add_domain bad_name.test x") == b"-ERR 0.804 Invalid domain name\r\n"
        assert c.cmd(b"add_domain x.test") == b"-ERR 7.803 Password Required\r\n"
        assert c.cmd(b"add_domain") == b"-ERR 13.802 Domain Required\r\n"
        info = c.multi(b"dom_info new.test")
        assert info == (b"domain new.test\r\npath %s\r\nuid %d\r\ngid %d\r\n.\r\n"
                        % (ddir.encode(), SESSION_UID, SESSION_UID))
        assert c.cmd(b"add_alias_domain new.test alias.test") == b"+OK \r\n"
        assert c.cmd(b"add_alias_domain new.test alias.test") == \
            b"-ERR 0.1204 Domain already exists\r\n"
        if vh.backend == "mysql":
            assert vh.rows("SELECT alias, domain FROM aliasdomains") == (("alias.test", "new.test"),)
        assert c.multi(b"dom_info new.test").endswith(b"alias alias.test\r\n.\r\n")
        assert c.cmd(b"dom_info nope.test") == b"-ERR 0.1404 Domain does not exist\r\n"
        doms = c.multi(b"list_domains")
        assert b"new.test new.test\r\n" in doms and b"new.test alias.test\r\n" in doms
        assert c.multi(b"domain_count") == b"count 4\r\n.\r\n"
        n = doms.split(b"\r\n").index(b"new.test new.test")
        assert c.multi(b"find_domain new.test") == b"page %d\r\n.\r\n" % (n + 1)
        assert c.multi(b"find_domain nope.test 10") == b".\r\n"
        c.close()
        code, _, errout = chkpw(vh, b"postmaster@alias.test\0 pm pass\0", mode=mode)
        assert code == 0, errout
        c = Client(srv)
        c.multi(login)
        assert c.cmd(b"del_domain new.test") == b"+OK \r\n"
        assert c.cmd(b"del_domain new.test") == b"-ERR 0.1303 Domain does not exist\r\n"
        c.close()
    assert "new.test" not in read(os.path.join(ctl, "rcpthosts"))
    assert "new.test" not in read(os.path.join(ctl, "virtualdomains"))
    assert "new.test" not in read(os.path.join(vh.qmail, "users", "assign"))
    assert not os.path.exists(vh.domdir("new.test"))
    if vh.backend == "mysql":
        assert vh.rows("SELECT pw_name FROM vpopmail WHERE pw_domain = 'new.test'") == ()


def test_aliases(vh, mode):
    setup_users(vh)
    vh.ok("vadddomain", "other.test", "otherpw")
    with daemon(vh, mode) as srv:
        c = Client(srv)
        c.multi(b"login postmaster@yourdomain.net pmpass")
        assert c.cmd(b"add_alias info@yourdomain.net &userid@yourdomain.net") == b"+OK \r\n"
        assert c.cmd(b"add_alias info@yourdomain.net &someone@example.org") == b"+OK \r\n"
        assert c.cmd(b"add_alias sales@yourdomain.net ./Maildir/") == b"+OK \r\n"
        assert c.multi(b"list_alias yourdomain.net") == (
            b"info@yourdomain.net &userid@yourdomain.net\r\n"
            b"info@yourdomain.net &someone@example.org\r\n"
            b"sales@yourdomain.net ./Maildir/\r\n.\r\n")
        assert c.cmd(b"remove_alias info@yourdomain.net &someone@example.org") == b"+OK \r\n"
        assert c.cmd(b"delete_alias sales@yourdomain.net") == b"+OK \r\n"
        assert c.multi(b"list_alias yourdomain.net") == \
            b"info@yourdomain.net &userid@yourdomain.net\r\n.\r\n"
        # an address: a domain admin is compared with the whole argument (sic)
        assert c.cmd(b"list_alias info@yourdomain.net") == \
            b"-ERR 11.2804 Not Authorized for domain\r\n"
        assert c.cmd(b"add_alias x@other.test &a@b") == \
            b"-ERR 11.904 Not Authorized for domain\r\n"
        assert c.cmd(b"add_alias x@yourdomain.net") == b"-ERR 16.906 Alias Line Required\r\n"
        assert c.cmd(b"add_alias") == b"-ERR 14.902 Alias Name Required\r\n"
        assert c.cmd(b"add_alias ../x@yourdomain.net &a@b") == \
            b"-ERR 15.903 Invalid Alias Name Supplied\r\n"
        assert c.cmd(b"add_alias default@yourdomain.net &a@b") == \
            b"-ERR 17.907 Alias Insertion Failed\r\n"
        assert c.cmd(b"delete_alias ghost@nowhere.test") == \
            b"-ERR 11.1104 Not Authorized for domain\r\n"
        c.close()
        c = Client(srv)
        c.multi(sysadmin(vh))
        assert c.multi(b"list_alias info@yourdomain.net") == \
            b"info@yourdomain.net &userid@yourdomain.net\r\n.\r\n"
        assert c.cmd(b"list_alias nobody@yourdomain.net") == b".\r\n"     # sic: no +OK
        assert c.cmd(b"delete_alias ghost@nowhere.test") == \
            b"-ERR 19.1106 Alias Deletion Failed\r\n"
        c.close()
    assert not os.path.exists(os.path.join(vh.domdir(DOM), "..", ".qmail-x"))


def test_limits(vh, mode):
    login = sysadmin(vh)
    vh.ok("vadddomain", DOM, "pmpass")
    with open(os.path.join(vh.domdir(DOM), ".qmailadmin-limits"), "w") as f:
        f.write("maxpopaccounts: 10\ndisable_smtp\n")
    with daemon(vh, mode) as srv:
        c = Client(srv)
        c.multi(login)
        lim = c.multi(b"get_limits yourdomain.net").decode()
        assert lim.startswith("max_popaccounts 10\r\nmax_aliases -1\r\n")
        assert "disable_smtp 1\r\n" in lim and "disable_pop 0\r\n" in lim
        # vpopmaild.c writes its perm_defaultquota line twice
        assert lim.endswith("perm_quota 0\r\nperm_defaultquota 0\r\nperm_defaultquota 0\r\n.\r\n")
        assert c.cmd(b"set_limits yourdomain.net") == b"+OK \r\n"
        c.send(b"max_aliases\r\nbogus 1\r\nmax_aliases 5\r\ndisable_pop=1\r\n"
               b"disable_smtp: 0\r\nperm_alias 3\r\n.\r\n")
        assert c.line() == b"  Warning: missing value\r\n"
        assert c.line() == b"  Warning: invalid option\r\n"
        assert c.line() == b"+OK \r\n"
        lim = c.multi(b"get_limits yourdomain.net").decode()
        assert lim.startswith("max_popaccounts 10\r\nmax_aliases 5\r\n")
        assert "disable_pop 1\r\n" in lim and "disable_smtp 0\r\n" in lim
        assert c.cmd(b"set_limits nowhere.test") == b"-ERR 34.3505 Could not get limits\r\n"
        c.close()
        # the limits apply: NO_POP for the domain's users
        assert chkpw(vh, b"postmaster@yourdomain.net\0pmpass\0", ("/bin/true",),
                     mode=mode, TCPLOCALPORT="110")[0] == 1
        c = Client(srv)
        c.multi(login)
        assert c.cmd(b"del_limits yourdomain.net") == b"+OK \r\n"
        assert c.multi(b"get_limits yourdomain.net").startswith(b"max_popaccounts -1\r\n")
        c.close()


def test_limits_permissions(vh, mode):
    """perm_* as vpopmail keeps them: set_limits stores every one, get_limits
    sends perm_maillist alone and perm_quota with the list users' (<<3) and
    moderators' (<<6) bits; a .qmailadmin-limits file written by vpopmail
    (perm_maillist with all three) is read as vlimits.c reads it."""
    login = sysadmin(vh)
    vh.ok("vadddomain", DOM, "pmpass")
    limits = os.path.join(vh.domdir(DOM), ".qmailadmin-limits")
    with open(limits, "w") as f:
        f.write("maxpopaccounts: 10\nperm_account: 9\nperm_maillist: 78\nperm_quota: 2\n")
    with daemon(vh, mode) as srv:
        c = Client(srv)
        c.multi(login)
        lim = c.multi(b"get_limits yourdomain.net").decode()
        # 9 & 7 = 1; 78 = 6 | 1<<3 | 1<<6
        assert ("perm_account 1\r\nperm_alias 0\r\nperm_forward 0\r\nperm_autoresponder 0\r\n"
                "perm_maillist 6\r\nperm_quota 74\r\nperm_defaultquota 0\r\n"
                "perm_defaultquota 0\r\n.\r\n") in lim
        assert c.cmd(b"set_limits yourdomain.net") == b"+OK \r\n"
        c.send(b"perm_alias 3\r\nperm_forward 4\r\nperm_autoresponder 5\r\nperm_maillist 1\r\n"
               b"perm_maillist_users 2\r\nperm_maillist_moderators 4\r\nperm_quota 7\r\n"
               b"perm_defaultquota 6\r\n.\r\n")
        assert c.line() == b"+OK \r\n"
        lim = c.multi(b"get_limits yourdomain.net").decode()
        assert ("perm_account 1\r\nperm_alias 3\r\nperm_forward 4\r\nperm_autoresponder 5\r\n"
                "perm_maillist 1\r\nperm_quota %d\r\nperm_defaultquota 6\r\n"
                % (7 | 2 << 3 | 4 << 6)) in lim
        c.close()
    if vh.backend == "cdb":
        with open(limits) as f:
            text = f.read()
        assert text.endswith("perm_account: 1\nperm_alias: 3\nperm_forward: 4\n"
                             "perm_autoresponder: 5\nperm_maillist: %d\nperm_quota: %d\n"
                             "perm_defaultquota: 6\n" % (1 | 2 << 3 | 4 << 6, 7 | 2 << 3 | 4 << 6))
    else:
        assert vh.rows("SELECT perm_account, perm_alias, perm_maillist, perm_quota, "
                       "perm_defaultquota FROM limits WHERE domain = 'yourdomain.net'") == \
            ((1, 3, 1 | 2 << 3 | 4 << 6, 7, 6),)


# -- hostile input ---------------------------------------------------------------------------
def snapshot(top, skip):
    out = {}
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for n in files + dirs:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_hostile_input(vh, mode):
    login = sysadmin(vh)
    vh.ok("vadddomain", DOM, "pmpass")
    outside = os.path.join(vh.top, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "victim"), "w") as f:
        f.write("keep\n")
    before = snapshot(vh.top, {os.path.join(vh.vpop, "domains")})
    with daemon(vh, mode) as srv:
        c = Client(srv)
        # before login: overlong and NUL lines are one (invalid) command each
        c.send(b"login " + b"a" * 5000 + b"\r\n")
        assert c.line() == b"-ERR 4.104 Invalid Command\r\n"
        assert c.cmd(b"login\0 boss@admin.test bosspw") == b"-ERR 4.104 Invalid Command\r\n"
        assert c.multi(login).endswith(b".\r\n")
        c.send(b"help" + b" " * (MAXLINE - 6) + b"\r\n")    # 2048 bytes with CRLF: fine
        assert c.line() == b"+OK+\r\n"
        c.data()
        c.send(b"help" + b" " * (MAXLINE - 5) + b"\r\n")
        assert c.line() == b"-ERR 4.107 Invalid Command\r\n"
        c.send(b"x" * 100000 + b"\r\n")
        assert c.line() == b"-ERR 4.107 Invalid Command\r\n"
        assert c.cmd(b"domain_count\0") == b"-ERR 4.107 Invalid Command\r\n"
        for cmd, want in [
                (b"add_user ../../outside/x@yourdomain.net pw", b"-ERR 10.303 "),
                (b"add_user x@../../outside pw", b"-ERR 10.303 "),
                (b"add_user xy@.. pw", b"-ERR 0.305 Invalid domain name"),
                (b"add_domain ../outside pw", b"-ERR 0.804 Invalid domain name"),
                (b"add_domain .. pw", b"-ERR 0.804 Invalid domain name"),
                (b"add_domain " + b"a" * 200 + b".test pw", b"-ERR 0.804 domain name too long"),
                (b"del_domain ../outside", b"-ERR 0.1303 Invalid domain name"),
                (b"del_domain ..", b"-ERR 0.1303 Invalid domain name"),
                (b"add_alias_domain yourdomain.net ../x", b"-ERR 0.1204 Invalid domain name"),
                (b"user_info x@../../outside", b"-ERR 10.603 "),
                (b"del_user ../victim@yourdomain.net", b"-ERR 10.403 "),
                (b"del_limits ../outside", b"-ERR 0.3603 Invalid domain name."),
                (b"mod_user ../x@yourdomain.net", b"-ERR 10.502 "),
                (b"read_file /etc/passwd", b"-ERR 26.1510 "),
                (b"read_file yourdomain.net/../../outside/victim", b"-ERR 20.1501 "),
                (b"list_dir " + vh.top.encode() + b"/outside", b"-ERR 26.1510 "),
                (b"rm_dir " + vh.vpop.encode() + b"/domains", b"-ERR 0.1702 Permission denied"),
                (b"write_file %s/domains/../outside/victim" % vh.vpop.encode(), b"-ERR 20.1501 "),
                (b"mk_dir " + vh.vpop.encode() + b"/domains2/x", b"-ERR 26.1510 "),
                (b"list_users ../../outside", b"+OK+"),
                (b"user_count ..", b"+OK+")]:
            got = c.cmd(cmd)
            assert got.startswith(want), (cmd, got)
            if got == b"+OK+\r\n":
                c.data()
        # a symbolic link in the domain tree does not lead out of it
        os.symlink(outside, os.path.join(vh.domdir(DOM), "link"))
        assert c.cmd(b"read_file yourdomain.net/link/victim") == \
            b"-ERR 26.1510 Unauthorized Directory.\r\n"
        assert c.cmd(b"rm_file yourdomain.net/link/victim") == \
            b"-ERR 26.1510 Unauthorized Directory.\r\n"
        # inside the tree the file commands work
        # write_file answers after the data (no dot-unstuffing, as vpopmaild.c)
        assert c.cmd(b"write_file yourdomain.net/note\r\nline one\r\n..\r\n.") == b"+OK \r\n"
        assert c.multi(b"read_file yourdomain.net/note") == b"line one\r\n..\r\n.\r\n"
        assert c.multi(b"stat_file yourdomain.net/note") == b"uid: %d\n.\r\n" % SESSION_UID
        assert b"note file\r\n" in c.multi(b"list_dir yourdomain.net/")
        assert c.cmd(b"rm_file yourdomain.net/note") == b"+OK \r\n"
        assert c.cmd(b"quit") == b"+OK \r\n"
        c.close()
    os.unlink(os.path.join(vh.domdir(DOM), "link"))
    after = snapshot(vh.top, {os.path.join(vh.vpop, "domains")})
    assert after == before
    assert read(os.path.join(outside, "victim")) == "keep\n"


def test_monitor_refuses_anything_else():
    for req in (b"adddomain ../x pw", b"adddomain x.test", b"adddomain .x pw", b"adddomain a..b pw",
                b"deldomain x.test extra", b"deldomain x/y", b"shell rm -rf /",
                b"adddomain x.test pw\nmore", b"adddomain x.test p\0w", b"",
                b"adddomain " + b"a" * 97 + b" pw", b"adddomain x.test " + b"p" * 129,
                b"addaliasdomain x.test ../y", b"deldomain  x.test", b"ADDDOMAIN x.test pw"):
        assert privsep.parse(req) is None, req
        assert privsep.perform(req) == b"refused"
    assert privsep.parse(b"adddomain x.test p w") == (b"adddomain", [b"x.test", b"p w"])
    assert privsep.parse(b"deldomain x.test") == (b"deldomain", [b"x.test"])


# -- timeouts, end of file, a store that cannot answer ---------------------------------------
def test_read_timeout(vh, mode):
    setup_users(vh)
    with daemon(vh, mode, VPOPMAILD_TIMEOUT="1") as srv:
        c = Client(srv)
        assert c.rest() == err(3, 103) == b"-ERR 3.103 Read Timeout\r\n"
        c.close()
        c = Client(srv)
        c.send(b"login userid@yourdomain.net PASS WO")   # a partial line waits too
        assert c.rest() == b"-ERR 3.103 Read Timeout\r\n"
        c.close()
        c = Client(srv)
        assert c.cmd(b"slogin userid@yourdomain.net PASS WORD") == b"+OK \r\n"
        assert c.rest() == b"-ERR 3.106 Read Timeout\r\n"
        c.close()
        c = Client(srv)                             # end of file counts as a timeout
        c.sock.shutdown(socket.SHUT_WR)
        assert c.rest() == b"-ERR 3.103 Read Timeout\r\n"
        c.close()


def test_mariadb_stopped_mid_session(private_mariadb, mode):  # noqa: F811
    d = tempfile.mkdtemp(prefix="vpopmaild.", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        vh = vhome_at(d, "mysql", private_mariadb)
        setup_users(vh)
        login = sysadmin(vh)
        ctl = os.path.join(vh.qmail, "control")
        rcpthosts = read(os.path.join(ctl, "rcpthosts"))
        with daemon(vh, mode) as srv:
            c = Client(srv)
            c.multi(b"login postmaster@yourdomain.net pmpass")
            sa = Client(srv)
            sa.multi(login)
            private_mariadb.stop()
            temp = b"-ERR 1.101 %s\r\n" % ERRMSG[1].encode()
            # the monitor's work (as root, or in-process): undone, reported
            assert sa.cmd(b"add_domain down.test pw") == temp
            assert not os.path.exists(vh.domdir("down.test"))
            assert read(os.path.join(ctl, "rcpthosts")) == rcpthosts
            assert "down.test" not in read(os.path.join(vh.qmail, "users", "assign"))
            sa.close()
            assert c.cmd(b"user_info userid@yourdomain.net") == temp
            assert c.cmd(b"add_user xy@yourdomain.net pw") == temp
            assert c.cmd(b"user_count yourdomain.net") == temp
            assert c.cmd(b"mod_user userid@yourdomain.net") == temp
            # a new session: the login itself cannot be checked
            c2 = Client(srv)
            assert c2.cmd(b"login userid@yourdomain.net PASS WORD") == temp
            c2.close()
            private_mariadb.start()
            assert c.multi(b"user_count yourdomain.net") == b"count 2\r\n.\r\n"
            assert c.cmd(b"quit") == b"+OK \r\n"
            c.close()
            assert "Traceback" not in srv.log() and "internal error" not in srv.log()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def others_can_run_python():
    """Whether a non-root user can start this Python (here it may live under
    /root; tcpserver -u then cannot exec a launcher, only elide it)."""
    p = os.path.realpath(sys.base_prefix)
    while p != "/":
        if not os.stat(p).st_mode & stat.S_IXOTH:
            return False
        p = os.path.dirname(p)
    return True


@needs_root
def test_started_unprivileged_runs_in_one_process(vh, mode):
    if mode == "noelide" and not others_can_run_python():
        pytest.skip("nobody cannot run %s" % sys.executable)
    login = sysadmin(vh)
    with daemon(vh, mode, args=("-u", str(NOBODY), "-g", str(NOBODY))) as srv:
        c = Client(srv)
        c.multi(login)
        pid = session_pid(srv, c)
        assert status(pid)["Uid"].split() == [str(NOBODY)] * 4
        assert children(pid) == []
        # qmail's files are root's: the domain cannot be added, nothing is left
        assert c.cmd(b"add_domain new.test pw") == b"-ERR 0.804 Could not update file\r\n"
        assert not os.path.exists(vh.domdir("new.test"))
        assert c.cmd(b"quit") == b"+OK \r\n"
        c.close()


@needs_root
def test_service_template(vh, mode, tmp_path):
    """run/vpopmaild/run as a service directory uses it: envdir ./env, the
    seed's tcpserver line (-u 0 -g 0), vpopmaild on IP:PORT."""
    import subprocess
    from helpers import QBIN, stop
    from vpoptools import free_port
    setup_users(vh)
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    svc = tmp_path / "vpopmaild"
    shutil.copytree(os.path.join(top, "run", "vpopmaild"), svc)
    port = free_port()
    env = svc / "env"
    env.mkdir()
    for k, v in dict(IP="127.0.0.1", PORT=str(port), QMAILHOME=vh.qmail,
                     VPOPMAILHOME=vh.vpop, VPOPMAIL_AUTH=vh.backend,
                     LOGDIR=str(tmp_path / "log")).items():
        (env / k).write_text(v + "\n")
    e = vh.env(mode)
    e["PATH"] = QBIN + ":/usr/bin:/bin"
    p = subprocess.Popen(["sh", str(svc / "run")], cwd=svc, env=e, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        def up():
            try:
                return socket.create_connection(("127.0.0.1", port), 1)
            except OSError:
                return None
        sock = wait_until(up, proc=p, what="vpopmaild service")
        f = sock.makefile("rb")
        assert f.readline() == b"+OK \r\n"
        sock.sendall(b"slogin userid@yourdomain.net PASS WORD\r\nquit\r\n")
        assert f.readline() == b"+OK \r\n" and f.readline() == b"+OK \r\n"
        f.close()
        sock.close()
    finally:
        os.killpg(p.pid, 15)
        stop(p)
        p.stdout.close()


def test_man_page_and_launcher():
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(top, "bin", "vpopmaild")) as f:
        assert f.read().splitlines()[1] == "# qtools-program: qtools.vpopmail.vpopmaild"
    assert os.stat(os.path.join(top, "man", "man8", "vpopmaild.8")).st_mode & stat.S_IRUSR
