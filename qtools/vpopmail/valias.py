"""valias - show, add and delete vpopmail's virtual aliases.

usage: valias [-v] [-s | -n | -d | -i alias_line | -r alias_line] email_address|domain

Actions (the last one given wins; -s is the default):
  -s  show: `alias@domain -> line` for each line of the alias; given a
      domain alone (no '@'), every alias of the domain, sorted by name
  -n  names: the domain's alias names, one per line (domain only)
  -d  delete the alias with all its lines
  -i alias_line   add a line (`&addr` or `addr` forwards, `|program`,
      `/path/Maildir/`); an exact duplicate is refused
  -r alias_line   remove that one line (qtools; the alias goes with its
      last line)
  -v  print the version first
Options and the operand may come in any order (glibc getopt permutes), so
`valias -i fred@example.com bob@example.com` and
`valias bob@example.com -i fred@example.com` both make bob@ forward to fred@.

The store is the configured one (store.py): `.qmail-<alias>` files in the
domain directory, or the MySQL `valias` table.  An alias domain stands for
its real domain.

Output and exit codes, as vpopmail's valias.c: `No aliases x@d found` /
`No aliases found for domain d` (stdout) exit 255; `Error: alias x@d -> line
already exists.` (stderr) 255; `Please enter domain name only.` (stderr)
255 for -n with an address; a bad address `Error: <verror>` (stderr) with
the VA_* code modulo 256 (e.g. 255 `Illegal username`, 231 `user name too
long`); an unknown domain `invalid domain, not in qmail assign file` (then
255 for -s/-n, `Error: Domain does not exist` and 245 for changes, where
vpopmail printed the first line and still exited 0); a bad line
`Error: alias line too long (max=160)` 224 or `Error: bad character` 236.
100 for usage (`valias: usage: ...` on stderr; vpopmail prints its usage on
stdout and exits 254), 111 when the store cannot answer (`Error: no
authentication database connection`).
"""
import os
import sys

from qtools.vpopmail import tool, store as S

PROG = "valias"
USAGE = "valias [-v] [-s | -n | -d | -i alias_line | -r alias_line] email_address|domain"

SELECT, NAMES, DELETE, INSERT, REMOVE = "s", "n", "d", "i", "r"


def getopt(argv):
    """glibc-style: options may follow operands; `--` ends options.
    Returns (version, action, line, operands) or None on a usage error."""
    version, action, line, operands = False, SELECT, None, []
    i, n = 1, len(argv)
    while i < n:
        a = argv[i]
        i += 1
        if a == "--":
            operands += argv[i:]
            break
        if not a.startswith("-") or a == "-":
            operands.append(a)
            continue
        j = 1
        while j < len(a):
            c = a[j]
            j += 1
            if c == "v":
                version = True
            elif c in "snd":
                action = c
            elif c in "ir":
                if j < len(a):
                    line = a[j:]
                elif i < n:
                    line = argv[i]
                    i += 1
                else:
                    os.write(2, ("%s: option requires an argument -- %s\n" % (PROG, c)).encode())
                    return None
                action = c
                break
            else:
                os.write(2, ("%s: illegal option -- %s\n" % (PROG, c)).encode(
                    "utf-8", "surrogateescape"))
                return None
    return version, action, line, operands


def err(code, text=None):
    """`Error: text` on stderr (valias.c's fprintf(stderr, ...)), exit
    with the code modulo 256."""
    sys.stdout.flush()
    os.write(2, ("Error: %s\n" % (text or S.verror(code))).encode("utf-8", "surrogateescape"))
    raise SystemExit(code & 0xFF)


def no_domain():
    print("invalid domain, not in qmail assign file")


def main(argv):
    from qtools.lib import strerr
    parsed = getopt(argv)
    if parsed is None:
        strerr.die_usage(PROG, USAGE)
    version, action, line, operands = parsed
    if version:
        print("version: %s" % tool.version())
    if not operands or not operands[0]:
        os.write(2, b"must supply alias email address\n")
        strerr.die_usage(PROG, USAGE)
    email = operands[0]
    try:
        alias, domain = S.parse_email(email)
    except S.StoreError as e:
        err(e.code)
    except S.TempFail:
        alias, domain = S.split_email(email)
    if len(alias) > S.MAX_PW_NAME:
        err(S.VA_USER_NAME_TOO_LONG)
    if len(domain) > S.MAX_PW_DOMAIN:
        err(S.VA_DOMAIN_NAME_TOO_LONG)
    whole_domain = "@" not in email
    st = tool.store()

    def real(d):
        a = S.get_assign(d) if d else None
        return a.domain if a else None

    def work():
        if action == SELECT and whole_domain:
            d = email.lower()
            r = real(d) if S.domain_valid(d) else None
            if r is None:
                no_domain()
            rows = st.valias_select_all(r) if r else []
            if not rows:
                print("No aliases found for domain %s" % d)
                return 255
            for a, x in rows:
                print("%s@%s -> %s" % (a, d, x))
            return 0
        if action == NAMES:
            if not whole_domain:
                sys.stdout.flush()
                os.write(2, b"Please enter domain name only.\n")
                return 255
            d = email.lower()
            r = real(d) if S.domain_valid(d) else None
            if r is None:
                no_domain()
                return 255
            names = _names(st, r)
            if not names:
                return 255
            for a in names:
                print(a)
            return 0
        r = real(domain)
        if action == SELECT:
            if r is None:
                no_domain()
            lines = st.valias_select(alias, r) if r else []
            if not lines:
                print("No aliases %s@%s found" % (alias, domain))
                return 255
            for x in lines:
                print("%s@%s -> %s" % (alias, domain, x))
            return 0
        if r is None:
            no_domain()
            err(S.VA_DOMAIN_DOES_NOT_EXIST)
        if action == INSERT:
            want = S.valias_line(line)
            S.check_valias(alias, r, want)
            if want in st.valias_select(alias, r):
                err(-1, "alias %s@%s -> %s already exists." % (alias, domain, line))
            st.valias_insert(alias, r, line)
        elif action == REMOVE:
            st.valias_remove(alias, r, line)
        else:
            st.valias_delete(alias, r)
        return 0

    try:
        return tool.run(PROG, lambda: _errors_to_stderr(work))
    finally:
        st.close()


def _names(st, domain):
    names = getattr(st, "valias_names", None)
    if names is not None:
        return names(domain)
    out = []
    for a, _ in st.valias_select_all(domain):
        if a not in out:
            out.append(a)
    return out


def _errors_to_stderr(work):
    try:
        return work()
    except S.StoreError as e:
        err(e.code, str(e))
