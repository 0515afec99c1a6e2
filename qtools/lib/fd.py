"""fd - descriptor moves that survive exec (PEP 446 makes new fds non-inheritable)."""
import os


def move(src, dst):
    """Make dst refer to src's file, inheritable, and close src (djb fd_move)."""
    if src == dst:
        os.set_inheritable(dst, True)
        return
    os.dup2(src, dst)
    os.close(src)


def copy(src, dst):
    """dst := dup of src, inheritable (djb fd_copy)."""
    if src == dst:
        os.set_inheritable(dst, True)
        return
    os.dup2(src, dst)


def drain(fd):
    """Read a non-blocking descriptor (a self-pipe) until it is empty."""
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass


def fsync_dir(path, dir_fd=None):
    """fsync(2) a directory, so the names just made or removed in it last."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeall(fd, data):
    """os.write until everything is written (pipes may take partial writes)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def open_fds():
    """The descriptors open in this process (not the one the listing itself
    used), from /proc/self/fd; without /proc, those of 0..1023 that are open."""
    try:
        names = [int(f) for f in os.listdir("/proc/self/fd")]
    except OSError:
        names = range(1024)
    out = []
    for fd in names:
        try:
            os.fstat(fd)                        # the listing's own is closed by now
        except OSError:
            continue
        out.append(fd)
    return out
