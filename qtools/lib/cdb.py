"""cdb - the seam around djb's constant database format.

reader(path) -> Reader with get(key) / getall(key) / items(); make(path) ->
Maker with add(key, value) and finish() (fsync + close).  cdbx does the work
when it is installed; otherwise a small pure-Python implementation of the same
format is used.  Both produce files byte-identical to djb's cdbmake and
tcprules given the same records in the same order.
"""
import errno
import os
import struct

try:
    import cdbx as _cdbx
except ImportError:                                 # pragma: no cover - fallback
    _cdbx = None

_unpack2 = struct.Struct("<LL").unpack_from


def _format_error():
    # djb's cdb_read(): a record or table past the end of the file is EPROTO
    # ("protocol error"); a file that cannot be mapped (empty) is read with
    # read(2) and fails with EINVAL (what ucspi-tcp's tcpserver and
    # tcprulescheck print, verified)
    return OSError(errno.EPROTO, "bad cdb format")


def cdb_hash(key):
    h = 5381
    for b in key:
        h = (((h << 5) + h) ^ b) & 0xFFFFFFFF
    return h


class PyReader:
    """Pure-Python cdb reader over the whole file's bytes."""

    def __init__(self, data):
        if not data:
            raise OSError(errno.EINVAL, "empty cdb")
        if len(data) < 2048:
            raise _format_error()
        self.data = data

    def _iter(self, key):
        data = self.data
        h = cdb_hash(key)
        pos, slots = _unpack2(data, (h & 255) << 3)
        if not slots:
            return
        start = (h >> 8) % slots
        for i in range(slots):
            sp = pos + (((start + i) % slots) << 3)
            if sp + 8 > len(data):
                raise _format_error()
            rh, rp = _unpack2(data, sp)
            if rp == 0:
                return
            if rh == h:
                if rp + 8 > len(data):
                    raise _format_error()
                kl, dl = _unpack2(data, rp)
                if data[rp + 8:rp + 8 + kl] == key:
                    if rp + 8 + kl + dl > len(data):
                        raise _format_error()
                    yield data[rp + 8 + kl:rp + 8 + kl + dl]

    def get(self, key, default=None):
        for v in self._iter(key):
            return v
        return default

    def getall(self, key):
        return list(self._iter(key))

    def items(self):
        data = self.data
        end = _unpack2(data, 0)[0]
        p = 2048
        while p < end:
            kl, dl = _unpack2(data, p)
            yield data[p + 8:p + 8 + kl], data[p + 8 + kl:p + 8 + kl + dl]
            p += 8 + kl + dl

    def close(self):
        pass


class _CdbxReader:
    def __init__(self, db, fd):
        self.db = db
        self.fd = fd

    def get(self, key, default=None):
        try:
            return self.db.get(key, default)
        except OSError as e:
            raise e if e.errno else _format_error()   # cdbx: OSError("Format Error")

    def getall(self, key):
        try:
            return self.db.get(key, all=True) or []
        except OSError as e:
            raise e if e.errno else _format_error()

    def items(self):
        return self.db.items(all=True)

    def close(self):
        self.db.close()
        os.close(self.fd)                           # ours: cdbx was given close=False


def reader(path):
    """Open a cdb for reading; raises OSError if it cannot be read."""
    if _cdbx is not None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if os.fstat(fd).st_size == 0:
                raise OSError(errno.EINVAL, "empty cdb")
            return _CdbxReader(_cdbx.CDB(fd), fd)
        except OSError as e:
            os.close(fd)
            raise e if e.errno else _format_error()
        except Exception:                           # corrupt file: unreadable
            os.close(fd)
            raise _format_error()
    with open(path, "rb") as f:
        return PyReader(f.read())


class PyMaker:
    """Pure-Python cdbmake writing to an open binary file."""

    def __init__(self, f):
        self.f = f
        self.f.seek(2048)
        self.pos = 2048
        self.entries = []                           # (hash, pos)

    def add(self, key, value):
        self.f.write(struct.pack("<LL", len(key), len(value)) + key + value)
        self.entries.append((cdb_hash(key), self.pos))
        self.pos += 8 + len(key) + len(value)

    def finish(self):
        tables = [[] for _ in range(256)]
        for h, p in self.entries:
            tables[h & 255].append((h, p))
        header = []
        out = []
        pos = self.pos
        for t in tables:
            n = len(t) * 2
            slots = [(0, 0)] * n
            for h, p in t:
                i = (h >> 8) % n
                while slots[i][1]:
                    i = (i + 1) % n
                slots[i] = (h, p)
            header.append(struct.pack("<LL", pos, n))
            out.append(b"".join(struct.pack("<LL", h, p) for h, p in slots))
            pos += n * 8
        self.f.write(b"".join(out))
        self.f.seek(0)
        self.f.write(b"".join(header))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


class _CdbxMaker:
    def __init__(self, f):
        self.f = f
        self.m = _cdbx.CDB.make(f)

    def add(self, key, value):
        self.m.add(key, value)

    def finish(self):
        self.m.commit().close()                     # commit() fsyncs
        self.f.close()


def make(path):
    """Create (truncate, mode 0644) path and return a maker for it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, 0o644)
    f = os.fdopen(fd, "w+b")
    return _CdbxMaker(f) if _cdbx is not None else PyMaker(f)
