"""cdb - the seam around djb's constant database format.

reader(path) -> Reader with get(key) / getall(key) / items(), by pread(2);
bulk_reader(path) the same through cdbx's mmap; make(path) -> Maker with
add(key, value) and finish() (fsync + close).  cdbx makes the files when it is
installed; otherwise a small pure-Python implementation of the same format is
used.  Both produce files byte-identical to djb's cdbmake and tcprules given
the same records in the same order.
"""
import errno
import os
import struct

_cdbx = False                                       # not looked for yet


def _load_cdbx():
    # imported on first use: lookups never need it, and a per-connection
    # parent (tcpserver) should not carry an extension it does not use
    global _cdbx
    if _cdbx is False:
        try:
            import cdbx
            _cdbx = cdbx
        except ImportError:                         # pragma: no cover - fallback
            _cdbx = None
    return _cdbx

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
    """Pure-Python cdb reader.  PyReader(data) reads from bytes in memory;
    FdReader(fd) reads the same way with pread(2), touching only the header
    slot, the hash slots and the record a lookup needs."""

    def __init__(self, data):
        if not data:
            raise OSError(errno.EINVAL, "empty cdb")
        if len(data) < 2048:
            raise _format_error()
        self.data = data

    def _read(self, pos, n):
        d = self.data[pos:pos + n]
        if len(d) != n:
            raise _format_error()
        return d

    def _iter(self, key):
        read = self._read
        h = cdb_hash(key)
        pos, slots = _unpack2(read((h & 255) << 3, 8))
        if not slots:
            return
        start = (h >> 8) % slots
        for i in range(slots):
            rh, rp = _unpack2(read(pos + (((start + i) % slots) << 3), 8))
            if rp == 0:
                return
            if rh == h:
                kl, dl = _unpack2(read(rp, 8))
                if read(rp + 8, kl) == key:
                    yield read(rp + 8 + kl, dl)

    def get(self, key, default=None):
        for v in self._iter(key):
            return v
        return default

    def getall(self, key):
        return list(self._iter(key))

    def items(self):
        read = self._read
        end = _unpack2(read(0, 8))[0]
        p = 2048
        while p < end:
            kl, dl = _unpack2(read(p, 8))
            yield read(p + 8, kl), read(p + 8 + kl, dl)
            p += 8 + kl + dl

    def close(self):
        pass


class FdReader(PyReader):
    # Lookups in a forked per-connection child go through here rather than
    # cdbx: cdbx's first use in a fresh fork costs ~190 copy-on-write page
    # faults (~0.6 ms), a pread lookup about 30.
    def __init__(self, fd):
        self.fd = fd
        if not os.pread(fd, 1, 0):
            raise OSError(errno.EINVAL, "empty cdb")

    def _read(self, pos, n):
        d = os.pread(self.fd, n, pos) if n else b""
        if len(d) != n:
            raise _format_error()
        return d

    def get(self, key, default=None):
        k, v = _find(self.fd, (key,))
        return default if k is None else v

    def close(self):
        os.close(self.fd)


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


def first(path, keys):
    """(key, data) of the first of keys (bytes) present in the cdb at path, or
    (None, None).  One function with pread(2), for a per-connection child:
    every extra object or code page it touches is a copy-on-write fault."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not os.pread(fd, 1, 0):
            raise OSError(errno.EINVAL, "empty cdb")
        return _find(fd, keys)
    finally:
        os.close(fd)


def _find(fd, keys):
    """first()'s search on an open cdb: (key, data) or (None, None)."""
    pread = os.pread
    for key in keys:
        h = 5381
        for b in key:
            h = (((h << 5) + h) ^ b) & 0xFFFFFFFF
        d = pread(fd, 8, (h & 255) << 3)
        if len(d) != 8:
            raise _format_error()
        pos, slots = _unpack2(d)
        if not slots:
            continue
        start = (h >> 8) % slots
        for i in range(slots):
            d = pread(fd, 8, pos + (((start + i) % slots) << 3))
            if len(d) != 8:
                raise _format_error()
            rh, rp = _unpack2(d)
            if rp == 0:
                break
            if rh == h:
                d = pread(fd, 8, rp)
                if len(d) != 8:
                    raise _format_error()
                kl, dl = _unpack2(d)
                if pread(fd, kl, rp + 8) == key:
                    d = pread(fd, dl, rp + 8 + kl) if dl else b""
                    if len(d) != dl:
                        raise _format_error()
                    return key, d
    return None, None


def reader(path):
    """Open a cdb for lookups; raises OSError if it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return FdReader(fd)
    except BaseException:
        os.close(fd)
        raise


def bulk_reader(path):
    """Open a cdb for many lookups or a full scan (cdbx, memory-mapped)."""
    if _load_cdbx() is None:
        return reader(path)
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
    return _CdbxMaker(f) if _load_cdbx() is not None else PyMaker(f)
