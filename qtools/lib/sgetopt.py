"""sgetopt - djb's option parser (sgetopt.c/subgetopt.c), messages included.

No GNU permutation: parsing stops at the first operand; `--` ends options; a
lone `-` is an operand; flags cluster (`-vHR`); an option argument may be
attached or separate (`-c5`, `-c 5`).  Errors print
`prog: illegal option -- X` or `prog: option requires an argument -- X` and
raise UsageError so the program can print its usage line.
"""
import os

from qtools.lib import strerr


class UsageError(Exception):
    pass


_memo = {}              # (optstring, argv[1:]) -> a successful parse


def getopt(argv, optstring, prog=None):
    """Return ([(letter, arg or None), ...], operands).  Successful parses
    are remembered (a few): a parent that preloads a program and parses its
    argv once spares every forked child the parse.  Callers must not change
    the lists they get."""
    key = (optstring, tuple(argv[1:]))
    hit = _memo.get(key)
    if hit is not None:
        return hit
    hit = _getopt(argv, optstring, prog)
    if len(_memo) < 16:
        _memo[key] = hit
    return hit


def _getopt(argv, optstring, prog):
    prog = prog or os.path.basename(argv[0]) if argv else "?"
    opts = []
    i = 1
    n = len(argv)
    while i < n:
        a = argv[i]
        if a.startswith("--"):                  # subgetopt.c: "--anything" ends options
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        j = 1
        while j < len(a):
            c = a[j]
            k = optstring.find(c)
            if c == ":" or k < 0:
                strerr.write(prog, ": illegal option -- ", c, "\n")
                raise UsageError(c)
            if k + 1 < len(optstring) and optstring[k + 1] == ":":
                if j + 1 < len(a):
                    opts.append((c, a[j + 1:]))
                elif i + 1 < n:
                    i += 1
                    opts.append((c, argv[i]))
                else:
                    strerr.write(prog, ": option requires an argument -- ", c, "\n")
                    raise UsageError(c)
                break
            opts.append((c, None))
            j += 1
        i += 1
    return opts, argv[i:]


def scan_ulong(s):
    """djb scan_ulong: the leading decimal digits, 0 if none."""
    v = 0
    for ch in s:
        if "0" <= ch <= "9":
            v = v * 10 + ord(ch) - 48
        else:
            break
    return v


def apply(opts, cfg, table):
    """Set cfg's attributes from parsed options through a table, as djb's
    `switch (opt)` blocks do: letter -> (attribute, value) for a flag, or
    (attribute, convert) for an option with an argument (convert(arg) is
    stored: str, scan_ulong, ...).  Returns the [(letter, arg)] the table does
    not cover, in order, for the program's own handling."""
    left = []
    for o, a in opts:
        t = table.get(o)
        if t is None:
            left.append((o, a))
        else:
            setattr(cfg, t[0], t[1] if a is None else t[1](a))
    return left
