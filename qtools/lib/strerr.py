"""strerr - djb-style messages on stderr: `prog: fatal: text: errstr`.

The errno texts are djb's error_str(), not strerror(): scripts and operators
grep for "file does not exist", "temporary failure", "device not configured".
"""
import errno as _e
import os

_TEXTS = (
    ("EINTR", "interrupted system call"), ("ENOMEM", "out of memory"),
    ("ENOENT", "file does not exist"), ("ETXTBSY", "text busy"),
    ("EIO", "input/output error"), ("EEXIST", "file already exists"),
    ("ETIMEDOUT", "timed out"), ("EINPROGRESS", "operation in progress"),
    ("EAGAIN", "temporary failure"), ("EWOULDBLOCK", "input/output would block"),
    ("EPIPE", "broken pipe"), ("EPERM", "permission denied"),
    ("EACCES", "access denied"), ("ESRCH", "no such process"),
    ("ENXIO", "device not configured"), ("E2BIG", "argument list too long"),
    ("ENOEXEC", "exec format error"), ("EBADF", "file descriptor not open"),
    ("ECHILD", "no child processes"), ("EDEADLK", "operation would cause deadlock"),
    ("EFAULT", "bad address"), ("ENOTBLK", "not a block device"),
    ("EBUSY", "device busy"), ("EXDEV", "cross-device link"),
    ("ENODEV", "device does not support operation"), ("ENOTDIR", "not a directory"),
    ("EISDIR", "is a directory"), ("EINVAL", "invalid argument"),
    ("ENFILE", "system cannot open more files"), ("EMFILE", "process cannot open more files"),
    ("ENOTTY", "not a tty"), ("EFBIG", "file too big"),
    ("ENOSPC", "out of disk space"), ("ESPIPE", "unseekable descriptor"),
    ("EROFS", "read-only file system"), ("EMLINK", "too many links"),
    ("EDOM", "input out of range"), ("ERANGE", "output out of range"),
    ("EALREADY", "operation already in progress"), ("ENOTSOCK", "not a socket"),
    ("EDESTADDRREQ", "destination address required"), ("EMSGSIZE", "message too long"),
    ("EPROTOTYPE", "incorrect protocol type"), ("ENOPROTOOPT", "protocol not available"),
    ("EPROTONOSUPPORT", "protocol not supported"),
    ("ESOCKTNOSUPPORT", "socket type not supported"),
    ("EOPNOTSUPP", "operation not supported"),
    ("EPFNOSUPPORT", "protocol family not supported"),
    ("EAFNOSUPPORT", "address family not supported"),
    ("EADDRINUSE", "address already used"), ("EADDRNOTAVAIL", "address not available"),
    ("ENETDOWN", "network down"), ("ENETUNREACH", "network unreachable"),
    ("ENETRESET", "network reset"), ("ECONNABORTED", "connection aborted"),
    ("ECONNRESET", "connection reset"), ("ENOBUFS", "out of buffer space"),
    ("EISCONN", "already connected"), ("ENOTCONN", "not connected"),
    ("ESHUTDOWN", "socket shut down"), ("ETOOMANYREFS", "too many references"),
    ("ECONNREFUSED", "connection refused"), ("ELOOP", "symbolic link loop"),
    ("ENAMETOOLONG", "file name too long"), ("EHOSTDOWN", "host down"),
    ("EHOSTUNREACH", "host unreachable"), ("ENOTEMPTY", "directory not empty"),
    ("EUSERS", "too many users"), ("EDQUOT", "disk quota exceeded"),
    ("ESTALE", "stale NFS file handle"), ("EREMOTE", "too many levels of remote in path"),
    ("ENOLCK", "no locks available"), ("ENOSYS", "system call not available"),
    ("ENOSTR", "not a stream device"), ("ETIME", "timer expired"),
    ("ENOSR", "out of stream resources"), ("ENOMSG", "no message of desired type"),
    ("EBADMSG", "bad message type"), ("EIDRM", "identifier removed"),
    ("ENONET", "machine not on network"), ("ENOLINK", "link severed"),
    ("EADV", "advertise error"), ("ESRMNT", "srmount error"),
    ("ECOMM", "communication error"), ("EPROTO", "protocol error"),
    ("EMULTIHOP", "multihop attempt"), ("EREMCHG", "remote address changed"),
)
ERRSTR = {}
for _name, _text in _TEXTS:
    _n = getattr(_e, _name, None)
    if _n is not None:
        ERRSTR.setdefault(_n, _text)        # first match wins, as in error_str.c


def errstr(err):
    """djb's text for an errno number or an OSError."""
    if isinstance(err, BaseException):
        err = getattr(err, "errno", None)
    return ERRSTR.get(err, "unknown error")


def _text(parts):
    out = []
    for p in parts:
        if p is None:
            continue
        if isinstance(p, BaseException):
            p = errstr(p) if isinstance(p, OSError) else str(p)
        if isinstance(p, bytes):
            out.append(p)
        else:
            out.append(str(p).encode("utf-8", "surrogateescape"))
    return b"".join(out)


def write(*parts):
    """Write the pieces to fd 2 in one write (so log lines never interleave)."""
    data = _text(parts)
    try:
        os.write(2, data)
    except OSError:
        pass


def warn(prog, *parts):
    write(prog, ": warning: ", *parts, "\n")


def die(code, prog, *parts):
    """`prog: fatal: parts`, then exit with code."""
    write(prog, ": fatal: ", *parts, "\n")
    raise SystemExit(code)


def die_usage(prog, usage, code=100):
    write(prog, ": usage: ", usage, "\n")
    raise SystemExit(code)


usage = die_usage
die_sys = die
