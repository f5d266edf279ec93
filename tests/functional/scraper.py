"""A scraper in its own process: ``GET /metrics`` back to back until its stdin closes.

``python -m tests.functional.scraper PORT [PATH]`` prints one line per scrape (the body's
size) and stops when stdin reaches its end, or after :data:`MOST` scrapes. ``PATH``
(``/metrics`` unless given) lets a test run the same client against a cheap endpoint, as
a control. Being a
process of its own, reading and decoding large scrapes costs the test's event loop
nothing: a stream of requests timed by the test measures governor, not the scraper.
"""

from __future__ import annotations

import http.client
import os
import select
import sys

MOST = 10_000  # a bound on the loop, whatever happens to stdin


def main(port: int, path: str) -> None:
    for _ in range(MOST):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}")
        print(len(body), flush=True)
        readable, _, _ = select.select([sys.stdin], [], [], 0)
        if readable and not os.read(sys.stdin.fileno(), 1):
            return


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "/metrics")
