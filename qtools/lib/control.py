"""control - qmail's control files: one value per file.

A missing file gives the default; an unreadable one is a temporary error
(OSError propagates, the caller answers 4xx / exits 111).  Paths are relative
to $QMAILHOME (default /var/qmail).
"""
import os


def qmailhome():
    return os.environ.get("QMAILHOME") or "/var/qmail"


def vpopmailhome():
    return os.environ.get("VPOPMAILHOME") or "/home/vpopmail"


def path(name):
    return os.path.join(qmailhome(), "control", name)


def readfile(name, default=None):
    """Lines of control/name with trailing blanks stripped, empty lines and
    #-comments dropped (qmail's control_readfile); default if missing."""
    try:
        with open(path(name), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return default
    out = []
    for line in data.split(b"\n"):
        line = line.rstrip(b" \t\r")
        if line and not line.startswith(b"#"):
            out.append(line.decode("utf-8", "surrogateescape"))
    return out


def readline(name, default=None):
    """First line of control/name, trailing blanks stripped; default if missing."""
    try:
        with open(path(name), "rb") as f:
            data = f.read(65536)
    except FileNotFoundError:
        return default
    return data.split(b"\n", 1)[0].rstrip(b" \t\r").decode("utf-8", "surrogateescape")


def readint(name, default):
    """control_readint: the leading integer of the first line."""
    v = readline(name)
    if v is None:
        return default
    v = v.strip()
    sign = -1 if v.startswith("-") else 1
    digits = ""
    for ch in v.lstrip("+-"):
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0
