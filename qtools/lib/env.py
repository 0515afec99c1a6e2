"""env - the process environment as bytes, without os.environ's Mapping code.

os.environ.get() is Python code several calls deep (Mapping.get ->
__getitem__ -> encodekey -> KeyError when unset).  In a per-connection child
forked from a long-lived parent, every object and code page such a call
touches is a copy-on-write fault (~40 of them for one unset variable here),
so the hot paths read and write the bytes dict that os.environ and
os.environb share, and putenv()/unsetenv() the C environment with it, which
is exactly what os.environ's own __setitem__/__delitem__ do.
"""
import os

_data = getattr(os.environ, "_data", None)
if not isinstance(_data, dict) or any(not isinstance(k, bytes) for k in list(_data)[:1]):
    _data = None                                # not CPython's layout: go the slow way
_putenv, _unsetenv = os.putenv, os.unsetenv


def getb(name, default=None):
    """The value of name (bytes) as bytes, or default."""
    if _data is None:
        return os.environb.get(name, default)
    return _data.get(name, default)


def setb(name, value):
    """Set name to value (both bytes); value None removes it."""
    if _data is None:
        if value is None:
            os.environb.pop(name, None)
        else:
            os.environb[name] = value
    elif value is None:
        if name in _data:
            _unsetenv(name)
            del _data[name]
    else:
        _putenv(name, value)
        _data[name] = value



def items():
    """(name, value) pairs of the environment, as bytes."""
    if _data is None:
        return os.environb.items()
    return _data.items()
