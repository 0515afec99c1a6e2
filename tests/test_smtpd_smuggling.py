"""SMTP smuggling through qmail-smtpd (security-reliability 2): every bare-LF
end-of-data variant gets `451 See https://cr.yp.to/docs/smtplf.html.` and the
end of the connection with nothing queued; CR and NUL variants stay in the
body of the one message queued.  And a property test: the chunked, table-
driven DATA reader equals a plain transcription of qmail's blast()."""
import re

import pytest
from hypothesis import given, settings, strategies as st

from smtpdtools import body_of, connect, make_home, queued, server, todo

from qtools.qmail.smtpd import CONT, END, REPLY, STRAY, Blast

MODES = ("elide", "noelide", "reuse")    # conftest: the reuse mode too

SMUGGLED = (b"MAIL FROM:<spoof@x.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")


def reference_blast(data, barelf=False):
    """sagredo's blast(), one byte at a time, as written in C.  Returns
    (output, bytes consumed, END/STRAY/CONT, hops)."""
    out = bytearray()
    state = 1
    hops = 0
    inheader = True
    pos = 0
    mx = my = mz = True
    for k, ch in enumerate(data):
        c = bytes((ch,))
        if inheader:
            if pos < 9:
                if c != b"delivered"[pos:pos + 1] and c != b"DELIVERED"[pos:pos + 1]:
                    mz = False
                if mz and pos == 8:
                    hops += 1
                if pos < 8:
                    if c != b"received"[pos:pos + 1] and c != b"RECEIVED"[pos:pos + 1]:
                        mx = False
                if mx and pos == 7:
                    hops += 1
                if pos < 2 and c != b"\r\n"[pos:pos + 1]:
                    my = False
                if my and pos == 1:
                    inheader = False
                pos += 1
            if c == b"\n":
                pos = 0
                mx = my = mz = True
        if barelf:
            if state == 0:
                if c == b"\n":
                    state = 1
                elif c == b"\r":
                    state = 4
                    continue
            elif state == 1:
                if c == b".":
                    state = 2
                    continue
                if c == b"\r":
                    state = 4
                    continue
                if c != b"\n":
                    state = 0
            elif state == 2:
                if c == b"\n":
                    return bytes(out), k + 1, END, hops
                if c == b"\r":
                    state = 3
                    continue
                state = 0
            elif state == 3:
                if c == b"\n":
                    return bytes(out), k + 1, END, hops
                out += b".\r"
                if c == b"\r":
                    state = 4
                    continue
                state = 0
            elif state == 4:
                if c == b"\n":
                    state = 1
                elif c != b"\r":
                    out += b"\r"
                    state = 0
        else:
            if state == 0:
                if c == b"\n":
                    return bytes(out), k + 1, STRAY, hops
                if c == b"\r":
                    state = 4
                    continue
            elif state == 1:
                if c == b"\n":
                    return bytes(out), k + 1, STRAY, hops
                if c == b".":
                    state = 2
                    continue
                if c == b"\r":
                    state = 4
                    continue
                state = 0
            elif state == 2:
                if c == b"\n":
                    return bytes(out), k + 1, STRAY, hops
                if c == b"\r":
                    state = 3
                    continue
                state = 0
            elif state == 3:
                if c == b"\n":
                    return bytes(out), k + 1, END, hops
                out += b".\r"
                if c == b"\r":
                    state = 4
                    continue
                state = 0
            elif state == 4:
                if c == b"\n":
                    state = 1
                elif c != b"\r":
                    out += b"\r"
                    state = 0
        out += c
    return bytes(out), len(data), CONT, hops


def chunked(data, cuts, barelf=False):
    """Blast fed in pieces, as the session reads them."""
    b = Blast(barelf)
    out = []
    used = 0
    pieces = []
    last = 0
    for c in sorted(set(cuts)):
        if 0 < c < len(data):
            pieces.append(data[last:c])
            last = c
    pieces.append(data[last:])
    for p in pieces:
        o, n, act = b.feed(p)
        out.append(o)
        used += n
        if act != CONT:
            return b"".join(out), used, act, b.hops
    return b"".join(out), used, CONT, b.hops


ALPHABET = st.sampled_from([b"\r", b"\n", b".", b"x", b"\0", b"\r\n", b"\r\n.", b"R", b"d",
                            b"Received:", b"Delivered-To:", b"received"])


@settings(max_examples=600, deadline=None)
@given(st.lists(ALPHABET, max_size=60), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_blast_equals_reference(parts, cuts, barelf):
    data = b"".join(parts)
    assert chunked(data, cuts, barelf) == reference_blast(data, barelf)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300).map(lambda b: bytes(b"\r\n.x\0"[c % 5] for c in b)),
       st.lists(st.integers(0, 300), max_size=4))
def test_blast_random_bytes(data, cuts):
    assert chunked(data, cuts) == reference_blast(data)


def test_blast_large_wellformed():
    body = b"".join(b"line %d with some text .\r\n" % i for i in range(20000))
    data = b"Subject: big\r\n\r\n" + body + b"..dot\r\n.\r\nQUIT\r\n"
    assert chunked(data, range(0, len(data), 65536)) == reference_blast(data)


# -- through a real server -------------------------------------------------------

BARE_LF = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\n", b"\n.\r", b"\n", b"x\nfoo"]
STAYS = [b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n.\r\r\n"]


@pytest.mark.parametrize("eod", BARE_LF)
def test_bare_lf_variants(mode, tmp_path, eod):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        c.cmd(b"EHLO x")
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        assert c.cmd(b"DATA") == REPLY["data"]
        c.send(b"Subject: t\r\n\r\nbody" + eod + SMUGGLED)
        assert c.rest() == b"451 See https://cr.yp.to/docs/smtplf.html.\r\n"
        c.close()
    assert todo(home) == []


@pytest.mark.parametrize("eod", STAYS)
def test_cr_and_nul_variants_stay_in_body(mode, tmp_path, eod):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        c.cmd(b"DATA")
        c.send(b"Subject: t\r\n\r\nbody" + eod + SMUGGLED + b"QUIT\r\n")
        out = c.rest()
        c.close()
    assert len(re.findall(rb"250 ok \d+ qp \d+", out)) == 1, out
    assert out.endswith(b"221 mx.example.test\r\n")
    (msg, env), = queued(home)
    assert env.endswith(b"Fa@b.test\0Tu@example.test\0")
    body = body_of(msg)
    assert b"MAIL FROM:<spoof@x.test>" in body
    expect, _, act, _ = reference_blast(b"Subject: t\r\n\r\nbody" + eod + SMUGGLED)
    assert act == END and body == expect


def test_allow_barelf(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path, ALLOW_BARELF="1") as srv:
        c = connect(srv)
        c.cmd(b"MAIL FROM:<a@b.test>")
        c.cmd(b"RCPT TO:<u@example.test>")
        c.cmd(b"DATA")
        c.send(b"Subject: t\n\nbody\n.\n")
        assert c.reply().startswith(b"250 ok ")
        c.close()
    (msg, _), = queued(home)
    assert body_of(msg) == b"Subject: t\n\nbody\n"


def test_pipelined_second_transaction_is_legal(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path) as srv:
        c = connect(srv)
        c.send(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n"
               b"Subject: one\r\n\r\nbody\r\n.\r\n" + SMUGGLED + b"QUIT\r\n")
        out = c.rest()
        c.close()
    assert len(re.findall(rb"250 ok \d+ qp \d+", out)) == 2
    assert len(todo(home)) == 2


def test_pre_greet_data(mode, tmp_path):
    home = make_home(tmp_path)
    with server(mode, home, tmp_path, SMTPD_GREETDELAY="1", DROP_PRE_GREET="1") as srv:
        c = srv.connect()
        c.sendall(b"EHLO early\r\n")
        out = b""
        while True:
            d = c.recv(1000)
            if not d:
                break
            out += d
        c.close()
        assert out == b"554 SMTP protocol violation\r\n"
        assert "client sent data before greeting" in srv.log()
