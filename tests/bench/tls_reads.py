"""What one ``SSLObject.read`` costs by the size asked: why the TLS channel asks 16 KiB.

    .venv/bin/python -m tests.bench.tls_reads

Two ``SSLObject`` over memory BIOs (as :mod:`governor.tls.channel` runs them), TLS 1.3
with an ECDSA P-256 certificate, no sockets: the client side writes a request, the server
side reads it back with each size, as the channel does for every record it receives. The
ssl module allocates a bytes object of the size asked for each read and shrinks it to what
came. Above glibc's mmap threshold (128 KiB at first) that allocation maps and unmaps
memory each time (on the machine of 2026-12-06: 23 µs a read at 256 KiB, against 3 µs at
16 or 64 KiB). glibc raises the threshold once a larger mapped block is freed, which had
happened in governor's own process (strace showed no mmap per request at 256 KiB either),
so there the smaller size guards against the cost rather than removing one. A record
carries at most 16 KiB of plaintext, and one read returns one record's, so asking more
gains nothing: a 64 KiB message takes four reads at any size. Sizes interleave and each
figure is the median of the rounds.
"""

from __future__ import annotations

import contextlib
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.certs import make_ca, make_cert

SIZES = (2**14, 2**16, 2**18)
ROUNDS = 5
REQUEST = b"GET /1k.bin HTTP/1.1\r\nHost: bench.test\r\n\r\n"
UPLOAD = b"x" * 65536


def _pair(folder: Path) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO]:
    """(client, its outgoing BIO, server, its incoming BIO), handshake done."""
    pair = make_cert(make_ca(folder), folder, ["bench.test"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pair.cert, pair.key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="bench.test")
    for _ in range(10):  # a bounded exchange of flights until both sides are done
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return client, c_out, server, s_in


def _per_message(pair: tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO],
                 message: bytes, size: int, n: int) -> tuple[float, float]:  # fmt: skip
    """µs per message written by the client and read back by the server, reads per message."""
    client, c_out, server, s_in = pair
    reads = 0
    start = time.perf_counter()
    for _ in range(n):
        client.write(message)
        s_in.write(c_out.read())
        got = 0
        while got < len(message):
            got += len(server.read(size))
            reads += 1
    return (time.perf_counter() - start) / n * 1e6, reads / n


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tls-reads-") as tmp:
        pair = _pair(Path(tmp))
        for label, message, n in (("1 KiB request", REQUEST, 20_000), ("64 KiB", UPLOAD, 2_000)):
            times: dict[int, list[float]] = {size: [] for size in SIZES}
            reads: dict[int, float] = {}
            for _ in range(ROUNDS):
                for size in SIZES:
                    us, reads[size] = _per_message(pair, message, size, n)
                    times[size].append(us)
            for size in SIZES:
                print(
                    f"{label:>14}, read({size // 1024:>3} KiB): "
                    f"{statistics.median(times[size]):7.2f} µs a message, "
                    f"{reads[size]:.0f} read(s) each"
                )


if __name__ == "__main__":
    main()
