"""dns - lookups through dnspython, pointed at $DNSCACHEIP when it is set.

DNSCACHEIP=ip[:port][,ip[:port]...] names the resolvers (as djbdns's
DNSCACHEIP names dnscache); unset, the system's resolv.conf is used.
dnspython costs ~60 ms to import: this module imports it only when a lookup
is made, and long-lived parents call warm() before they fork.

Every lookup returns a result or raises TempFail (try later) / PermFail
(the name does not exist); "no data" is an empty list.
"""
import os

_resolver = None


class TempFail(Exception):
    pass


class PermFail(Exception):
    pass


def _servers(spec):
    out = []
    for item in spec.replace(" ", ",").split(","):
        if not item:
            continue
        host, _, port = item.partition(":") if item.count(":") == 1 else (item, "", "")
        out.append((host, int(port) if port.isdigit() else 53))
    return out


def resolver():
    """The resolver for $DNSCACHEIP as it is now (a reusing tcpserver child
    can serve clients whose rules set it apart)."""
    global _resolver
    spec = os.environ.get("DNSCACHEIP")
    if _resolver is None or _resolver[0] != spec:
        import dns.resolver
        if spec:
            r = dns.resolver.Resolver(configure=False)
            servers = _servers(spec)
            r.nameservers = [h for h, _ in servers]
            if servers:
                r.port = servers[0][1]
        else:
            r = dns.resolver.Resolver()
        r.timeout = float(os.environ.get("QTOOLS_DNSTIMEOUT", "2"))
        r.lifetime = r.timeout * 2
        r.cache = None
        _resolver = (spec, r)
    return _resolver[1]


def warm():
    """Import the DNS machinery now (in a parent, before forking)."""
    import dns.resolver        # noqa: F401
    import dns.reversename     # noqa: F401
    import dns.rdtypes.ANY.PTR  # noqa: F401
    import dns.rdtypes.IN.A    # noqa: F401
    import dns.rdtypes.ANY.TXT  # noqa: F401
    import dns.rdtypes.ANY.MX  # noqa: F401
    resolver()


def _query(name, rdtype):
    import dns.exception
    import dns.resolver
    try:
        return resolver().resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        raise PermFail(name)
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
        raise TempFail(str(e))
    except dns.exception.DNSException as e:
        raise TempFail(str(e))


def ptr(ip):
    """The first PTR name of an IPv4/IPv6 address (no trailing dot), or None."""
    import dns.reversename
    try:
        ans = _query(dns.reversename.from_address(ip), "PTR")
    except PermFail:
        return None
    for rr in ans:
        return rr.target.to_text(omit_final_dot=True)
    return None


def a(name):
    """IPv4 addresses of name (list of dotted quads)."""
    ans = _query(name, "A")
    return [rr.address for rr in ans]


def mx(name):
    """[(preference, exchange)] of name, unsorted."""
    ans = _query(name, "MX")
    return [(rr.preference, rr.exchange.to_text(omit_final_dot=True)) for rr in ans]


def txt(name):
    """TXT records of name, each joined from its character-strings."""
    ans = _query(name, "TXT")
    return [b"".join(rr.strings) for rr in ans]
