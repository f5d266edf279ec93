"""The channel's engine: what it calls OpenSSL through for each request's reads and writes.

It is the ``_ssl`` object under an :class:`ssl.SSLObject` where CPython keeps one (the
SSLObject's methods only pass the call on), else the SSLObject itself. Either way, what
one side writes the other reads, byte for byte, and a read with nothing to read raises
:class:`ssl.SSLWantReadError`, as the channel expects.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from governor.tls.channel import Engine, engine
from tests.support.certs import make_ca, make_cert


class Bare:
    """An SSLObject's methods, without its ``_sslobj``."""

    def __init__(self, sslobj: ssl.SSLObject) -> None:
        self.read, self.write, self.pending = sslobj.read, sslobj.write, sslobj.pending


def _shuttle(a: ssl.MemoryBIO, b: ssl.MemoryBIO) -> None:
    if a.pending:
        b.write(a.read())


Pipes = tuple[ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO]


def _connected(tmp_path: Path) -> tuple[ssl.SSLObject, ssl.SSLObject, Pipes]:
    """A server and a client SSLObject over memory BIOs, handshaken, and the BIOs (the
    server's in and out, the client's in and out)."""
    ca = make_ca(tmp_path)
    pair = make_cert(ca, tmp_path, ["example.test"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pair.cert, pair.key)
    client_ctx = ssl.create_default_context(cafile=str(ca.path))
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="example.test")
    done = {"server": False, "client": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            _shuttle(c_out, s_in)
            _shuttle(s_out, c_in)
        if all(done.values()):
            break
    assert all(done.values()), done
    return server, client, (s_in, s_out, c_in, c_out)


@pytest.mark.parametrize("bare", [False, True], ids=["inner", "bare"])
def test_what_one_side_writes_the_other_reads(tmp_path: Path, bare: bool) -> None:
    server, client, (s_in, s_out, c_in, c_out) = _connected(tmp_path)
    wrapped: Any = Bare(server) if bare else server
    eng: Engine = engine(wrapped)
    if bare:
        assert eng is wrapped  # no _sslobj: the object itself
    with pytest.raises(ssl.SSLWantReadError):
        eng.read(2**14)  # nothing sent yet
    client.write(b"GET / HTTP/1.1\r\n\r\n")
    _shuttle(c_out, s_in)
    assert eng.read(2**14) == b"GET / HTTP/1.1\r\n\r\n"
    assert eng.pending() == 0
    assert eng.write(b"x" * 5000) == 5000
    _shuttle(s_out, c_in)
    got = b""
    while len(got) < 5000:
        got += client.read(2**14)
    assert got == b"x" * 5000
