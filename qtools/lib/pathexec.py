"""pathexec - run a program like djb's pathexec_run, with exec elision.

pathexec_run(argv) resolves argv[0] through $PATH exactly like execvp (a name
with a '/' is used as is; an empty PATH element means '.'; EACCES, EPERM and
EISDIR are remembered and the search goes on).  When the file found is a qtools
launcher and QTOOLS_NOELIDE is not set, the program is not exec'd: its module
is imported (usually preloaded by a long-lived parent) and its main(argv) runs
in this process, which then _exits with its status.  Before that the process is
put into the state an execve would give: close-on-exec fds closed, caught
signals back to SIG_DFL (ignored ones stay ignored, the mask is kept), sys.argv
replaced.  So a forked child pays a fork instead of a Python start-up.

Env edits queued with env() are applied at exec time (value None = remove).
"""
import os
import sys

import _signal

from qtools.lib import env as _env, fd as fdio, proctitle, run as _run, sig

_SIG_DFL, _SIG_IGN = _signal.SIG_DFL, _signal.SIG_IGN
_SIGPIPE, _SIGXFSZ, _SIGINT = _signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT

MARKER = b"\n# qtools-program: "
_cache = {}             # path -> (st_ino, st_mtime_ns, module or None)
_edits = []
_resolved = {}          # name -> ($PATH, path, module): what preload() found


def env(name, value):
    """Queue an environment change for the next pathexec_run (None removes)."""
    _edits.append((name, value))


def _apply_env():
    if _edits:
        fsencode = os.fsencode
        for name, value in _edits:
            _env.setb(fsencode(name), None if value is None else fsencode(value))
        del _edits[:]


def discard_env():
    """Drop the env() changes queued and not applied."""
    del _edits[:]


def elision_enabled():
    return not _env.getb(b"QTOOLS_NOELIDE")


def launcher_module(path):
    """The module name if path is an executable qtools launcher, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    hit = _cache.get(path)
    if hit and hit[0] == st.st_ino and hit[1] == st.st_mtime_ns:
        return hit[2]
    mod = None
    if st.st_mode & 0o111 and os.access(path, os.X_OK):
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                head = os.read(fd, 256)
            finally:
                os.close(fd)
        except OSError:
            head = b""
        if head.startswith(b"#!"):
            i = head.find(MARKER)
            if i >= 0:
                j = head.find(b"\n", i + len(MARKER))
                if j > 0:
                    mod = head[i + len(MARKER):j].strip().decode("ascii", "replace") or None
    _cache[path] = (st.st_ino, st.st_mtime_ns, mod)
    return mod


def candidates(name):
    """The paths execvp would try for name, in order (a generator: the first
    one usually wins, and a forked child should not build the whole list)."""
    if "/" in name:
        yield name
        return
    path = os.environ.get("PATH")
    if path is None:
        path = "/bin:/usr/bin"
    for d in path.split(":"):
        yield d + "/" + name if d else name


def resolve(name):
    """First candidate that exists and is executable (for preloading), or None."""
    for p in candidates(name):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def preload(argv):
    """In a long-lived parent: import the module argv[0] would run, so forked
    children share it.  Calls the module's optional preload(argv) hook, which
    may import what the program will need lazily (ssl, dns, ...).  Returns the
    module name or None."""
    if not elision_enabled() or not argv:
        return None
    p = resolve(argv[0])
    mod = launcher_module(p) if p else None
    _resolved[argv[0]] = (_env.getb(b"PATH"), p, mod)
    if mod:
        try:
            __import__(mod)
        except ImportError:
            return None             # a broken install fails per connection, as an exec would
        hook = getattr(sys.modules[mod], "preload", None)
        if hook:
            hook(argv)
    return mod


def freeze():
    """In a long-lived parent, just before it starts forking children that
    run preloaded code: collect, make what is left immortal where the
    interpreter knows immortal objects (CPython >= 3.12, PEP 683), and
    gc.freeze().  Every Python object a child touches gets its reference
    count written, and a write to a page shared with the parent costs a
    copy-on-write fault (~1.4 us here, and a private page of memory):
    immortal objects are not counted, so a child copies only what it really
    changes.  What is immortalized here is never freed: it is the parent's
    own lifetime state (modules, the preloaded programs), made once.
    Returns how many objects were made immortal."""
    import gc
    gc.collect()
    n = _immortalize()
    gc.freeze()
    return n


def _immortalize():
    # only where the layout is the one of PEP 683 on 64 bits: the low 32
    # bits of ob_refcnt at offset 0, negative as an int32 = immortal
    # (3.12/3.13 write 0xFFFFFFFF; 3.14 checks the sign).  Not the
    # free-threaded build ("t"), whose header differs.
    if (sys.implementation.name != "cpython" or sys.version_info < (3, 12)
            or sys.maxsize < 2 ** 32 or "t" in getattr(sys, "abiflags", "")
            or _env.getb(b"QTOOLS_NOIMMORTAL")):
        return 0
    import gc
    todo = gc.get_objects()
    seen = set()                # after get_objects(): it must stay mortal
    mark, done = _refcount_writer()
    if mark is None:
        return 0
    getrefcount = sys.getrefcount
    n = 0
    try:
        while todo:
            more = []
            for o in todo:
                i = id(o)
                if i in seen:
                    continue
                seen.add(i)
                if getrefcount(o) < 0x80000000:     # not immortal yet
                    mark(i)
                    n += 1
                more.extend(gc.get_referents(o))
            todo = more
    finally:
        done()
    return n


def _refcount_writer():
    """(mark(address), done()): writes 0xFFFFFFFF into the low half of the
    reference count at address.  Through /proc/self/mem where the kernel
    allows it (no ctypes: its library and modules would make every fork
    of the parent copy ~0.8 MB and 12 mappings more), else ctypes."""
    off = 0 if sys.byteorder == "little" else 4
    imm = b"\xff\xff\xff\xff"
    try:
        fd = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        probe = [None]              # stays alive (immortal) if the write works
        try:
            ok = os.pwrite(fd, imm, id(probe) + off) == 4 and sys.getrefcount(probe) >= 0x80000000
        except OSError:
            ok = False
        if ok:
            pwrite = os.pwrite
            return (lambda i: pwrite(fd, imm, i + off)), (lambda: os.close(fd))
        os.close(fd)
    return _ctypes_writer()


def _ctypes_writer():
    try:
        import ctypes
    except ImportError:
        return None, None
    low32 = ctypes.c_uint32.from_address

    def mark(i):
        low32(i).value = 0xFFFFFFFF
    return mark, (lambda: None)


def refresh():
    """In a long-lived parent: check what preload() resolved against the
    files now (a launcher replaced by an upgrade), so children that fork
    later need no PATH walk of their own."""
    for name, (path, p, mod) in list(_resolved.items()):
        q = resolve(name)
        _resolved[name] = (_env.getb(b"PATH"), q, launcher_module(q) if q else None)


def rehearse(argv):
    """In a forked child that will run argv later: do the side-effect-free
    part of the work now (path search, the program's own warm-up hook), so
    the pages it touches are copied before the work is urgent."""
    if not elision_enabled():
        return
    for p in candidates(argv[0]):
        mod = launcher_module(p)
        if mod:
            m = sys.modules.get(mod)
            hook = getattr(m, "rehearse", None) if m else None
            if hook:
                hook(argv)
            break
        if os.path.exists(p):
            break
    for s in sig.caught.union(_USUAL):
        _signal.getsignal(s)


def chain_preload(first):
    """The preload hook of a chain-loading program (`prog ARGS child...`,
    child at argv[first]): a parent that preloads prog (or setuidgid, before
    it drops privileges) loads the child's program too."""
    def hook(argv):
        if len(argv) > first:
            preload(argv[first:])
    return hook


def chain_rehearse(first):
    """The rehearse hook of a chain-loading program: the rehearsal is passed
    on to the child's program."""
    def hook(argv):
        if len(argv) > first:
            rehearse(argv[first:])
    return hook


def pathexec_run(argv, file=None):
    """Exec (or elide into) argv.  Returns only by raising OSError.  As in
    djb's pathexec_run(file, argv, envp), the program searched for may be
    named apart from argv[0] (argv0 needs that); by default it is argv[0]."""
    _apply_env()
    elide = elision_enabled()
    if elide and file is None:
        # what the parent resolved, if $PATH is still the same: a forked
        # child need not walk it (each stat() is objects and page faults)
        hit = _resolved.get(argv[0])
        if hit is not None and hit[2] and hit[0] == _env.getb(b"PATH"):
            run_elided(hit[2], [hit[1]] + list(argv[1:]), title=argv)   # never returns
    saved = None
    restored = False
    for p in candidates(argv[0] if file is None else file):
        if elide:
            mod = launcher_module(p)
            if mod:
                # an exec'd launcher sees the resolved path as argv[0] (the
                # kernel's #! handling): give the elided program the same
                run_elided(mod, [p] + list(argv[1:]), title=argv)   # never returns
        if not restored:
            # Python ignores SIGPIPE and SIGXFSZ; a C program must get the
            # defaults back (what subprocess's restore_signals does)
            _signal.signal(_SIGPIPE, _SIG_DFL)
            _signal.signal(_SIGXFSZ, _SIG_DFL)
            restored = True
        try:
            os.execv(p, argv)
        except OSError as e:
            if e.errno != 2:                    # ENOENT: keep looking
                saved = e
                if e.errno not in (13, 1, 21):  # EACCES, EPERM, EISDIR
                    raise
    raise saved if saved else FileNotFoundError(2, "No such file or directory",
                                                argv[0] if file is None else file)


_cloexec = None
_reset = None           # signals to put back to SIG_DFL, as of snapshot(signals=True)
# signals commonly caught by code that does not go through qtools.lib.sig
_USUAL = frozenset((
    _signal.SIGHUP, _signal.SIGTERM, _signal.SIGCHLD, _signal.SIGALRM, _signal.SIGUSR1,
    _signal.SIGUSR2, _signal.SIGQUIT, _signal.SIGCONT, _signal.SIGWINCH))


def snapshot(signals=False, closed=()):
    """In a parent about to fork children that will elide: remember which
    close-on-exec fds are open now, so a child closes exactly those instead
    of scanning /proc/self/fd (cheaper: a fork pays a page fault per first
    touch of the parent's memory).  Fds a child opens itself are its own
    business to close.  signals=True also remembers which signals have
    handlers now: a parent whose children install none of their own before
    they elide says so, and a child resets just those.  closed: fds every
    child closes itself before it elides (not looked at again there: a
    closed fd costs an exception to find out)."""
    global _cloexec, _reset
    _cloexec = [fd for fd in fdio.open_fds() if fd not in closed and not _inheritable(fd)]
    if signals:
        _reset = (len(sig.caught), [s for s in sig.caught.union(_USUAL) if _handled(s)])


def close_cloexec(but=()):
    """Close the close-on-exec descriptors snapshot() found, but those named
    (what every elided program and every exec would close first)."""
    for fd in _cloexec or ():
        if fd not in but:
            try:
                os.close(fd)
            except OSError:
                pass


def _handled(s):
    h = _signal.getsignal(s)
    return h != _SIG_DFL and h != _SIG_IGN


def _inheritable(fd):
    try:
        return os.get_inheritable(fd)
    except OSError:
        return True                         # not open: nothing to close


def exec_state(keep_own=False):
    """Put this process into the state execve would leave a fresh Python in:
    close-on-exec fds closed, caught signals back to SIG_DFL (ignored ones
    stay ignored, the mask is kept), SIGPIPE/SIGXFSZ ignored and SIGINT on
    KeyboardInterrupt as Python's start-up sets them.  keep_own: a reusing
    process (reusing()) keeps its own descriptors; without it, they are
    closed and the process no longer takes programs' ends back."""
    global _reuser
    fds = _cloexec if _cloexec is not None else fdio.open_fds()
    if _hidden:
        if keep_own and os.getpid() == _reuser:
            fds = [fd for fd in fds if fd not in _hidden]
        else:
            fds = list(fds) + list(_hidden)
            _reuser = 0
    for fd in fds:
        if not _inheritable(fd):
            try:
                os.close(fd)
            except OSError:
                pass
    sig.no_wakeup()
    if _reset is not None and len(sig.caught) == _reset[0]:
        for s in _reset[1]:
            _signal.signal(s, _SIG_DFL)
    else:
        for s in sig.caught.union(_USUAL):
            if _handled(s):
                _signal.signal(s, _SIG_DFL)
    _signal.signal(_SIGPIPE, _SIG_IGN)
    _signal.signal(_SIGXFSZ, _SIG_IGN)
    h = _signal.getsignal(_SIGINT)
    if h == _SIG_DFL or (h != _SIG_IGN and h is not _signal.default_int_handler):
        _signal.signal(_SIGINT, _signal.default_int_handler)


def run_elided(modname, argv, title=None):
    """Run a qtools program in this process as if exec'd, then _exit.  In a
    process that takes ends back (reusing()), a program whose module says
    REUSABLE = True does not _exit: its status is raised as run.Exited for
    that process to go on with (an outer elided program passes an inner
    one's end on only if it is REUSABLE too, else it _exits with it)."""
    code = 111
    mod = sys.modules.get(modname)          # preloaded: no import machinery
    # a reusing process goes on after a REUSABLE program it preloaded; any
    # other program ends it, and must not see its descriptors
    back = bool(_reuser) and getattr(mod, "REUSABLE", False) and os.getpid() == _reuser
    try:
        exec_state(keep_own=back)
        sys.argv = list(argv)
        if proctitle.loaded():
            proctitle.set(" ".join(title or argv))
        try:
            if mod is None:
                __import__(modname)
                mod = sys.modules[modname]
        except BaseException as e:               # noqa: BLE001 - said, not raised
            back = False
            name = os.path.basename((title or argv)[0])
            os.write(2, ("%s: fatal: unable to load %s: %s: %s\n"
                         % (name, modname, type(e).__name__, e)).encode("utf-8", "replace"))
        else:
            code = _run.guard(mod, list(argv))
    except _run.Exited as e:                # an inner elided program's end
        code = e.code
    except BaseException:                   # noqa: BLE001 - exit 111, as before an exec
        pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
    if back and _reuser == os.getpid():     # (an inner program may have ended that)
        raise _run.Exited(code)
    os._exit(code)


_reuser = 0             # the pid that takes REUSABLE programs' ends back (reusing())
_hidden = ()            # its own descriptors: closed by whatever it elides further


def reusing(pid, hidden=()):
    """This process (pid) runs programs one after another by elision and
    takes a REUSABLE program's end back as run.Exited (qtools.lib.reuse).
    hidden: its own close-on-exec descriptors, which it keeps across the
    programs it runs, but which any process forked from it closes when it
    elides, as an execve would close them."""
    global _reuser, _hidden
    _reuser = pid
    _hidden = tuple(hidden)
