"""bigdir - vpopmail's hashed directories ("big dir", bigdir.c).

vpopmail built with USERS_BIG_DIR (the default) keeps a counter per domain
(for its users) and one per owner uid, named `dom_<uid>` (for the domains
themselves).  Every 100th addition moves the counter's directory on:
users 1-99 go to the top level, the 100th to `0`, the 200th to `1`, ...,
the 6200th to `z`, then `0/0`, `0/1`, ... `z/z`, then a third level.
VDir is struct vdir_type with inc_dir_control(), inc_dir() and next_char()
ported as they are (their quirks included: level_index runs one ahead of
the character on a level's first pass, a deletion only decrements the
count).  Where the state is stored is the store's business
(read_dir_control/write_dir_control/del_dir_control: `.dir-control` files
for cdb, the `dir_control` table for MySQL); the text format and the
checks on what is read are here.

qtools is stricter than vpopmail: the read-increment-write runs under an
flock on the directory the hash is made in (locked()), what is read is
checked (check()) before it can name a path, and the count never goes
below 0 (vpopmail's unsigned long wraps to 18446744073709551615).
"""
import os

DIRLIST = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MAX_USERS_PER_LEVEL = 100
MAX_DIR_LEVELS = 3
MAX_DIR_LIST = 62
MAX_DIR_NAME = 300
MAX_THE_DIR = 160           # the MySQL column is char(160); vpopmail's own never pass 5
ULONG_MOD = 1 << 64
LONG_MAX = (1 << 63) - 1
DIR_MODE = 0o750            # VPOPMAIL_DIR_MODE


class Corrupt(ValueError):
    """A stored state that cannot be used."""


class VDir:
    """struct vdir_type; the_dir is kept as vpopmail's zero-filled
    MAX_DIR_NAME buffer (inc_dir writes at level_mod, strcat appends)."""
    __slots__ = ("cur_users", "level_cur", "level_max", "level_start", "level_end",
                 "level_mod", "level_index", "buf")

    def __init__(self):
        """The state vread_dir_control() sets up when nothing is stored."""
        self.cur_users = 0
        self.level_cur = 0
        self.level_max = MAX_DIR_LEVELS
        self.level_start = [0, 0, 0]
        self.level_end = [MAX_DIR_LIST - 1] * 3
        self.level_mod = [0, 2, 4]
        self.level_index = [0, 0, 0]
        self.buf = bytearray(MAX_DIR_NAME)

    @property
    def the_dir(self):
        n = self.buf.find(0)
        return self.buf[:n if n >= 0 else len(self.buf)].decode("ascii")

    def set_dir(self, s):
        b = s.encode("ascii", "replace")[:MAX_DIR_NAME - 1]
        self.buf = bytearray(b) + bytearray(MAX_DIR_NAME - len(b))

    def copy(self):
        v = VDir()
        v.cur_users, v.level_cur, v.level_max = self.cur_users, self.level_cur, self.level_max
        v.level_start, v.level_end = list(self.level_start), list(self.level_end)
        v.level_mod, v.level_index = list(self.level_mod), list(self.level_index)
        v.buf = bytearray(self.buf)
        return v

    def fields(self):
        """(cur_users, level_cur, level_max, start0..2, end0..2, mod0..2,
        index0..2, the_dir): the dir_control row's order."""
        return ((self.cur_users, self.level_cur, self.level_max) + tuple(self.level_start)
                + tuple(self.level_end) + tuple(self.level_mod) + tuple(self.level_index)
                + (self.the_dir,))

    def __eq__(self, other):
        return isinstance(other, VDir) and self.fields() == other.fields()

    def __repr__(self):
        return "VDir%r" % (self.fields(),)

    # -- bigdir.c
    @staticmethod
    def next_char(c, start, end):
        i = start
        while i < end + 1 and DIRLIST[i] != c:
            i += 1
        i += 1
        if i >= end + 1:
            i = start
        return DIRLIST[i]

    def inc_dir(self, level):
        while True:
            pos = self.level_mod[level]
            if self.buf[pos] == DIRLIST[self.level_end[level]]:
                self.buf[pos] = DIRLIST[self.level_start[level]]
                self.level_index[level] = self.level_start[level]
                if level > 0:
                    level -= 1
                    continue
            else:
                self.buf[pos] = self.next_char(self.buf[pos], self.level_start[level],
                                               self.level_end[level])
                self.level_index[level] += 1
            return

    def _strcat_slash(self):
        n = self.buf.find(0)
        self.buf[n] = 0x2f
        self.buf[n + 1] = 0

    def inc(self):
        """inc_dir_control(); the new the_dir."""
        self.cur_users = (self.cur_users + 1) % ULONG_MOD
        if self.cur_users % MAX_USERS_PER_LEVEL == 0:
            if self.buf[0] == 0:
                self.buf[0] = DIRLIST[self.level_start[0]]
                self.buf[1] = 0
                return self.the_dir
            cur = self.level_cur
            if self.level_index[cur] == self.level_end[cur]:
                if cur == 0:
                    self.inc_dir(cur)
                    self.level_cur += 1
                    self._strcat_slash()
                elif cur == 1:
                    if self.level_index[0] == self.level_end[0] and \
                            self.level_index[1] == self.level_end[1]:
                        self.inc_dir(cur)
                        self.level_cur += 1
                        self._strcat_slash()
            self.inc_dir(self.level_cur)
        return self.the_dir

    def dec(self):
        """dec_dir_control()'s step (stopping at 0, see the docstring)."""
        if self.cur_users > 0:
            self.cur_users -= 1

    # -- checks on what was read
    def check(self):
        """Corrupt unless the state can only name a directory below the
        one it hashes: levels 0..2, starts and ends within the list, each
        mod inside the buffer, the_dir of dirlist characters and '/'."""
        if not 0 <= self.cur_users < ULONG_MOD:
            raise Corrupt("cur_users %r out of range" % self.cur_users)
        if not 0 <= self.level_cur < MAX_DIR_LEVELS:
            raise Corrupt("level_cur %d out of range" % self.level_cur)
        if not 0 <= self.level_max <= MAX_DIR_LEVELS:
            raise Corrupt("level_max %d out of range" % self.level_max)
        for i in range(MAX_DIR_LEVELS):
            s, e = self.level_start[i], self.level_end[i]
            if not (0 <= s < MAX_DIR_LIST and 0 <= e < MAX_DIR_LIST and s <= e):
                raise Corrupt("level %d range %d..%d out of range" % (i, s, e))
            if not 0 <= self.level_mod[i] <= MAX_THE_DIR:
                raise Corrupt("level_mod %d out of range" % self.level_mod[i])
            if not 0 <= self.level_index[i] <= MAX_DIR_LIST:
                raise Corrupt("level_index %d out of range" % self.level_index[i])
        d = self.the_dir
        if len(d) > MAX_THE_DIR:
            raise Corrupt("the_dir too long")
        if any(c not in DIRLIST and c != 0x2f for c in d.encode("ascii")):
            raise Corrupt("the_dir %r has characters outside the list" % d)
        if d.startswith("/") or "//" in d or ".." in d:
            raise Corrupt("the_dir %r is not a relative path" % d)
        return self


# -- C number parsing (glibc atol/atoi) -------------------------------------
def _strtol(b):
    i = 0
    while i < len(b) and b[i] in b" \t\n\v\f\r":
        i += 1
    neg = False
    if i < len(b) and b[i] in b"+-":
        neg = b[i] == 0x2d
        i += 1
    j = i
    while j < len(b) and 0x30 <= b[j] <= 0x39:
        j += 1
    v = int(b[i:j]) if j > i else 0
    v = -v if neg else v
    return max(-LONG_MAX - 1, min(LONG_MAX, v))


def atol_ulong(b):
    """vdir->cur_users = atol(line): a long stored in an unsigned long."""
    return _strtol(b) % ULONG_MOD


def atoi(b):
    v = _strtol(b) & 0xffffffff
    return v - (1 << 32) if v >= 1 << 31 else v


# -- the .dir-control file (vcdb.c) -------------------------------------------
def format_file(v):
    """vwrite_dir_control()'s text."""
    return ("%d\n%d\n%d\n%d %d %d\n%d %d %d\n%d %d %d\n%d %d %d\n%s\n" % v.fields()).encode()


def parse_file(data):
    """vread_dir_control() of the file's bytes, then check().  As vcdb.c
    reads a `a b c` line, the third number is taken after the FIRST space
    again (its scan restarts at 0), so it repeats the second: a file of
    `0 2 4` gives level_mod 0 2 2."""
    lines = data.split(b"\n")
    if len(lines) < 8:
        raise Corrupt("not 8 lines")
    v = VDir()
    v.cur_users = atol_ulong(lines[0])
    v.level_cur = atoi(lines[1])
    v.level_max = atoi(lines[2])
    triples = []
    for line in lines[3:7]:
        i = line.find(b" ")
        if i < 0 or line.find(b" ", i + 1) < 0:
            raise Corrupt("a line without its three numbers")
        second = atoi(line[i + 1:])
        triples.append([atoi(line), second, second])
    v.level_start, v.level_end, v.level_mod, v.level_index = triples
    d = lines[7]
    try:
        v.set_dir(d.decode("ascii"))
    except UnicodeDecodeError:
        raise Corrupt("the_dir is not ASCII")
    if len(d) >= MAX_DIR_NAME or b"\0" in d:
        raise Corrupt("the_dir too long")
    return v.check()


def from_row(row):
    """A VDir from a dir_control row (vmysql.c reads each column)."""
    v = VDir()

    def num(x):
        if isinstance(x, (bytes, bytearray)):
            return atoi(bytes(x))
        if x is None:
            return 0
        return int(x)
    v.cur_users = num(row[0]) % ULONG_MOD
    v.level_cur, v.level_max = num(row[1]), num(row[2])
    n = [num(x) for x in row[3:15]]
    v.level_start, v.level_end, v.level_mod, v.level_index = n[0:3], n[3:6], n[6:9], n[9:12]
    d = row[15]
    if isinstance(d, (bytes, bytearray)):
        d = bytes(d).decode("ascii", "replace")
    d = d or ""
    if any(ord(c) > 127 for c in d):
        raise Corrupt("the_dir is not ASCII")
    v.set_dir(d)
    return v.check()


# -- making the next directory ------------------------------------------------
class locked:
    """An exclusive flock on a directory, for one read-increment-write."""

    def __init__(self, path):
        self.path = path
        self.fd = -1

    def __enter__(self):
        import fcntl
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc):
        os.close(self.fd)                   # releases the lock
        return False


def r_mkdir(top, rel, uid, gid, chown):
    """r_mkdir(): each component of rel below top, mode 0750, owned by
    uid/gid (existing ones are left as they are)."""
    path = top
    for part in rel.split("/"):
        if not part:
            continue
        path = os.path.join(path, part)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue
        chown(path, uid, gid)


def next_big_dir(st, key, top, uid, gid, chown):
    """open_big_dir + next_big_dir + close_big_dir for counter key, under
    the lock of top (the directory the hash is made in); the hash
    ("" for the top level).  A corrupt state raises before anything is
    written."""
    with locked(top):
        v = st.read_dir_control(key, uid, gid)
        d = v.inc()
        if d:
            r_mkdir(top, d, uid, gid, chown)
        st.write_dir_control(key, v, uid, gid)
    return d


def dec_dir_control(st, key, top, uid, gid):
    """dec_dir_control() under the lock of top."""
    with locked(top):
        v = st.read_dir_control(key, uid, gid)
        v.dec()
        st.write_dir_control(key, v, uid, gid)


def join(top, hashdir, name):
    """vpopmail's "%s/%s/%s" (the hash as stored, no slash when empty)."""
    if hashdir:
        return "%s/%s/%s" % (top, hashdir, name)
    return "%s/%s" % (top, name)
