"""pfinstance - a private Postfix on 127.0.0.1 for the benchmarks.

Postfix is not installed (that would start an MTA on port 25): `apt-get
download postfix` + `dpkg -x` into a cache dir (QTOOLS_BENCH_CACHE, default
~/.cache/qtools-bench) gives the binaries; their RUNPATH is /usr/lib/postfix,
hence LD_LIBRARY_PATH, which master passes on to its daemons through
import_environment.  The instance (the anchors' pf_setup.sh) accepts mail for
test.example from 127.0.0.0/8 and delivers it with virtual(8) into
<dir>/vmail/b/ (a Maildir): smtpd -> cleanup (fsync'd queue file) -> qmgr ->
virtual (fsync'd Maildir file).  No DNS, no system /etc/postfix, nothing
outside 127.0.0.1.  Needs root (master) and the users/groups postfix,
postfix and postdrop, which ensure_users() creates (--system) if missing.

master runs in the foreground (-d) as our child, in its own session, and is
stopped by its pid (SIGTERM: master terminates its daemons).
"""
import os
import shutil
import signal
import subprocess
import time

CACHE = os.environ.get("QTOOLS_BENCH_CACHE") or os.path.expanduser("~/.cache/qtools-bench")


def root():
    """The dpkg -x tree of Debian's postfix package; downloaded once."""
    d = os.path.join(CACHE, "postfix")
    r = os.path.join(d, "root")
    if os.path.exists(os.path.join(r, "usr", "sbin", "smtp-source")):
        return r
    os.makedirs(d, exist_ok=True)
    debs = [f for f in os.listdir(d) if f.startswith("postfix_") and f.endswith(".deb")]
    if not debs:
        subprocess.run(["apt-get", "download", "postfix"], cwd=d, check=True, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        debs = [f for f in os.listdir(d) if f.startswith("postfix_") and f.endswith(".deb")]
    tmp = r + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg", "-x", os.path.join(d, sorted(debs)[-1]), tmp], check=True, timeout=120)
    os.rename(tmp, r)
    return r


def libenv(pfroot):
    return dict(os.environ, LD_LIBRARY_PATH=os.path.join(pfroot, "usr/lib/postfix"))


def tool(pfroot, name):
    return os.path.join(pfroot, "usr/sbin", name)


def ensure_users():
    """postfix:postfix and postdrop, as the package's postinst makes them."""
    made = []
    for g in ("postfix", "postdrop"):
        if subprocess.run(["getent", "group", g], stdout=subprocess.DEVNULL).returncode:
            subprocess.run(["groupadd", "--system", g], check=True)
            made.append("group " + g)
    if subprocess.run(["getent", "passwd", "postfix"], stdout=subprocess.DEVNULL).returncode:
        subprocess.run(["useradd", "--system", "-g", "postfix", "-d", "/nonexistent",
                        "-s", "/usr/sbin/nologin", "postfix"], check=True)
        made.append("user postfix")
    return made


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
virtual    unix  - n n -  - virtual
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
command_directory = {r}/usr/sbin
daemon_directory = {r}/usr/lib/postfix/sbin
meta_directory = {r}/etc/postfix
shlib_directory = {r}/usr/lib/postfix
sample_directory = no
manpage_directory = {d}/man
html_directory = no
readme_directory = no
sendmail_path = {r}/usr/sbin/sendmail
newaliases_path = {r}/usr/bin/newaliases
mailq_path = {r}/usr/bin/mailq
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH={r}/usr/lib/postfix
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pf.test.example
mydomain = test.example
myorigin = test.example
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:no local delivery
default_transport = error:no remote delivery
relay_transport = error:no remote delivery
virtual_mailbox_domains = test.example
virtual_mailbox_base = {d}/vmail
virtual_mailbox_maps = static:b/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 100
disable_dns_lookups = yes
smtp_dns_support_level = disabled
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
biff = no
"""


class Instance:
    def __init__(self, pfroot, d, port):
        self.r = pfroot
        self.d = d                  # must be searchable by postfix and nobody
        self.port = port
        self.etc = os.path.join(d, "etc")
        self.proc = None
        self.maildir = os.path.join(d, "vmail", "b", "new")

    def write_conf(self):
        for sub in ("etc", "spool", "data", "vmail", "man"):
            os.makedirs(os.path.join(self.d, sub), exist_ok=True)
        shutil.chown(os.path.join(self.d, "data"), "postfix", "postfix")
        shutil.chown(os.path.join(self.d, "vmail"), "nobody", "nogroup")
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(r=self.r, d=self.d))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port))

    def start(self):
        self.write_conf()
        env = libenv(self.r)
        env["MAIL_CONFIG"] = self.etc
        # creates the queue's directories with their owners (post-install)
        subprocess.run([tool(self.r, "postfix"), "-c", self.etc, "check"], env=env, check=True,
                       timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.errlog = open(os.path.join(self.d, "master.stderr"), "wb")
        self.proc = subprocess.Popen(
            [os.path.join(self.r, "usr/lib/postfix/sbin/master"), "-c", self.etc, "-d"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.errlog, stderr=self.errlog,
            start_new_session=True)
        return self.proc

    def stop(self, timeout=20):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # master's daemons are in its process group; wait for them to go
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(p.pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        p.wait()
        self.errlog.close()

    def delivered(self):
        try:
            return len(os.listdir(self.maildir))
        except FileNotFoundError:
            return 0

    def queued(self):
        n = 0
        for q in ("incoming", "active", "deferred", "maildrop"):
            for _, _, files in os.walk(os.path.join(self.d, "spool", q)):
                n += len(files)
        return n

    def drain(self, expect, timeout=120):
        """Wait until `expect` messages are in the Maildir and the queue is
        empty; returns the Maildir count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.delivered()
            if n >= expect and self.queued() == 0:
                return n
            time.sleep(0.05)
        return self.delivered()
