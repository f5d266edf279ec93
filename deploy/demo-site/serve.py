"""The demo site behind `make run`: deploy/demo-site/www on 127.0.0.1, never cached.

    python deploy/demo-site/serve.py [--port 8000] [--bind 127.0.0.1] [-- COMMAND ...]

It serves the files in ``www/`` with ``Cache-Control: no-store`` and no validators
(no Last-Modified, no ETag, conditional requests ignored), so that every reload in a
browser fetches the whole page again and counts against the demo cap, as a reload of
a real dynamic site does. With ``-- COMMAND ...`` it runs COMMAND (governor) in front of
the site once the port is bound, passes it SIGINT, SIGTERM and SIGHUP (governor's reload),
and stops the site when COMMAND ends, with COMMAND's exit status.

A port it cannot bind (already in use, not allowed) is one clear line on stderr and exit
status 1, before COMMAND starts: nothing runs in front of whatever owns the port.
"""

from __future__ import annotations

import argparse
import errno
import functools
import http.server
import io
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import BinaryIO

WWW = Path(__file__).resolve().parent / "www"


class NoStoreHandler(http.server.SimpleHTTPRequestHandler):
    """Static files that no browser keeps: every request gets the whole file."""

    def version_string(self) -> str:
        return "governor-demo-site"  # the same length on every Python, so the same count

    def send_head(self) -> io.BytesIO | BinaryIO | None:
        # A browser that kept a copy anyway still gets the page, not a 304.
        for name in ("If-Modified-Since", "If-None-Match"):
            del self.headers[name]
        return super().send_head()

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "last-modified":
            super().send_header(keyword, value)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # governor's access log already shows every request that reached the site


def bind(host: str, port: int, directory: Path) -> http.server.ThreadingHTTPServer:
    """The listening server, or SystemExit(1) with a line saying why the port is unusable."""
    handler = functools.partial(NoStoreHandler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = (
                f"{host}:{port} is already in use by another program. If it is another "
                "`make run`, stop that one (it holds governor's ports too); otherwise run the "
                f"demo site on another port: make run SITE_PORT={_another(port)}"
            )
        elif exc.errno == errno.EACCES:
            reason = f"not allowed to listen on {host}:{port}; choose a port above 1023"
        else:
            reason = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        print(f"demo site: {reason}", file=sys.stderr)
        raise SystemExit(1) from None


def _another(port: int) -> int:
    return port + 1 if port < 65535 else 8001


def run_in_front(command: list[str]) -> int:
    """Run ``command`` while the site serves; its exit status (128+N for signal N)."""
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []  # a signal that came before the child did

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child is None:
            if signum != signal.SIGHUP:  # a reload of what has not started yet: nothing to do
                pending.append(signum)
        elif child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)  # a reload: `kill -HUP` this or governor, alike
    try:
        # Its own process group: Ctrl-C in the terminal reaches it once, through forward()
        # (governor takes a second SIGINT while it drains as "stop now", losing the flush).
        child = subprocess.Popen(command, process_group=0)
    except OSError as exc:
        print(f"demo site: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    for signum in pending[:1]:
        child.send_signal(signum)
    code = child.wait()
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args:
        split = args.index("--")
        args, command = args[:split], args[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (8000)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    parser.add_argument("--directory", type=Path, default=WWW, help="folder to serve (www/)")
    options = parser.parse_args(args)
    if not 1 <= options.port <= 65535:
        parser.error(f"--port {options.port}: expected a port from 1 to 65535")

    server = bind(options.bind, options.port, options.directory)
    where = f"http://{options.bind}:{server.server_address[1]}/"
    print(f"demo site: serving {options.directory} on {where}", file=sys.stderr, flush=True)
    serving = threading.Thread(target=server.serve_forever, name="demo-site", daemon=True)
    serving.start()
    try:
        if not command:
            serving.join()
            return 0
        code = run_in_front(command)
        if code not in (0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
            print(
                f"demo site: {Path(command[0]).name} exited with status {code}; "
                f"the demo site on {where} is stopped too",
                file=sys.stderr,
            )
        return code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
