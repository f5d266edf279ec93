"""Instructions per proxied request, counted by callgrind: the one figure this shared,
noisy machine repeats (two runs of the same build back to back: 131,204 and 131,171; at
another hour, within 1%: the origin's Date line changes each second, and a head with a
line not seen before takes the long way through the parser).

    .venv/bin/python -m tests.bench.instructions                     # this checkout
    .venv/bin/python -m tests.bench.instructions --base ../other      # and another, A/B
    INSTR_FILES=64k.bin INSTR_REQUESTS=1000 .venv/bin/python -m tests.bench.instructions
    INSTR_TLS=1 .venv/bin/python -m tests.bench.instructions         # over TLS

Each checkout's ``governor serve`` runs under ``valgrind --tool=callgrind`` (its own
``.venv`` and code, compiled or not, as :mod:`tests.bench.ab` starts it) in front of make
bench's origin, twice: once for ``INSTR_REQUESTS`` (2,000) requests more than the other,
on one keep-alive connection after 200 of warm-up each. The difference of the two runs'
totals, over that many requests, is what a request costs: start-up and shut-down cancel
out, and nothing periodic runs in the window (the config's ``flush_interval`` is 60 s).
Hash randomization is off (``PYTHONHASHSEED=0``), so set and dict layouts repeat.
With ``INSTR_TLS=1`` the connection is a TLS one (make bench's certificate and listener);
its handshake is part of both runs, so it cancels out too.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import subprocess
import tempfile
from contextlib import ExitStack, suppress
from pathlib import Path

from tests.bench import configs
from tests.bench.lab import _answers, client_context, plan_cores, start_origin
from tests.bench.tools import ensure_tools
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
WARM_UP = 200
BASE_REQUESTS = 500  # the shorter run's: its total holds start-up, warm-up and these
_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.M)


def _get(port: int, name: str, n: int, tls: ssl.SSLContext | None = None) -> None:
    """``n`` requests for ``name`` on one keep-alive connection, each read to its end."""
    request = f"GET /{name} HTTP/1.1\r\nHost: {configs.HOST}\r\n\r\n".encode()
    with ExitStack() as stack:
        sock: socket.socket = stack.enter_context(
            socket.create_connection(("127.0.0.1", port), timeout=60)
        )
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=configs.HOST))
        for _ in range(n):
            sock.sendall(request)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if not head.startswith(b"HTTP/1.1 200") or length is None:
                raise RuntimeError(f"unexpected response head: {head[:200]!r}")
            left = int(length.group(1)) - len(body)
            while left > 0:
                got = sock.recv(min(left, 1 << 18))
                if not got:
                    raise RuntimeError("the connection closed mid-body")
                left -= len(got)


def _total(
    checkout: Path,
    folder: Path,
    upstream: int,
    name: str,
    requests: int,
    tls: configs.TLSFiles | None = None,
) -> int:
    """Instructions of one whole run of ``checkout``'s governor serving ``requests`` (on
    its TLS listener with ``tls``)."""
    port, tls_port = free_port(), free_port()
    conf = configs.governor(
        folder, port, upstream, tls_port=tls_port, files=tls, flush_interval="60s"
    )
    out = folder / "callgrind.out"
    argv = [
        "valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}",
        str(checkout / ".venv" / "bin" / "python"), "-P", "-m", "governor", "serve",
        "-c", str(conf),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": "0"}
    with (folder / "valgrind.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # governor under valgrind takes a few seconds to listen
            if _answers(port):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"governor exited ({proc.returncode}): see {folder}")
            _pause(proc)
        else:
            raise RuntimeError(f"governor did not answer on {port}: see {folder}")
        client = None if tls is None else client_context(tls)
        _get(port if tls is None else tls_port, name, WARM_UP + requests, client)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    m = _TOTAL.search(out.read_text(errors="replace"))
    if m is None:
        raise RuntimeError(f"no total in {out}")
    return int(m.group(1))


def _pause(proc: subprocess.Popen[bytes]) -> None:
    """Let a starting governor run a little (the wait is on the process, not the clock)."""
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)


def per_request(
    checkout: Path,
    folder: Path,
    upstream: int,
    name: str,
    extra: int,
    tls: configs.TLSFiles | None = None,
) -> float:
    short = _total(checkout, folder / "short", upstream, name, BASE_REQUESTS, tls)
    long = _total(checkout, folder / "long", upstream, name, BASE_REQUESTS + extra, tls)
    return (long - short) / extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="another checkout, measured as A")
    args = parser.parse_args()
    files = os.environ.get("INSTR_FILES", "1k.bin,64k.bin").split(",")
    extra = int(os.environ.get("INSTR_REQUESTS", "2000"))
    checkouts = {"A": args.base.resolve(), "B": ROOT} if args.base else {"B": ROOT}
    tools = ensure_tools()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="instr-") as tmp:
        folder = Path(tmp)
        origin = start_origin(stack, tools, folder, plan_cores())
        tls = configs.make_certificate(folder / "certs") if os.environ.get("INSTR_TLS") else None
        over = " over TLS" if tls else ""
        for name in files:
            counts = {}
            for key, checkout in checkouts.items():
                counts[key] = per_request(
                    checkout, folder / f"{key}-{name}", origin.port, name, extra, tls
                )
                print(
                    f"{name:>8} {key}: {counts[key]:,.0f} instructions per request{over}"
                    f" ({checkout})"
                )
            if len(counts) == 2:
                print(f"{name:>8} B/A: {counts['B'] / counts['A']:.3f}")


if __name__ == "__main__":
    main()
