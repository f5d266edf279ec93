"""Telling systemd (``Type=notify``) that governor is ready, reloading or stopping.

The sd_notify protocol with the standard library: one datagram of ``KEY=VALUE`` lines to
the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract name written with
a leading ``@``). Without ``$NOTIFY_SOCKET`` (not started by systemd, or a worker of the
supervisor, which removes it from its workers' environment) every call does nothing.

Invariant: a notification never fails the process. A service manager that went away or
a socket that refuses is logged at debug level and ignored, as ``sd_notify(3)`` callers do.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Final

log: Final = logging.getLogger("governor.sdnotify")

NOTIFY_ENV: Final = "NOTIFY_SOCKET"


def _address(name: str) -> str:
    """The socket address for ``$NOTIFY_SOCKET``: ``@name`` is the abstract ``\\0name``."""
    return "\0" + name[1:] if name.startswith("@") else name


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ...) as one message; True if it was sent.

    False when ``$NOTIFY_SOCKET`` is unset or empty, or the message could not be sent.
    """
    name = os.environ.get(NOTIFY_ENV)
    if not name:
        return False
    if not name.startswith(("/", "@")):  # e.g. vsock: addresses, which we do not speak
        log.debug("unsupported %s=%r; not notifying", NOTIFY_ENV, name)
        return False
    message = "\n".join(fields).encode()
    try:
        # Non-blocking: a service manager that stopped reading must not stall the event loop.
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        with socket.socket(socket.AF_UNIX, kind) as sock:
            sock.sendto(message, _address(name))
    except OSError as exc:
        log.debug("could not notify the service manager at %s: %s", name, exc)
        return False
    return True


def ready() -> bool:
    """Start-up (or a reload) is complete: the listeners accept and the config is loaded."""
    return notify("READY=1", "STATUS=serving")


def reloading() -> bool:
    """A reload begins; :func:`ready` must follow once it is done (or rejected)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")


def stopping() -> bool:
    """A graceful stop begins: in-flight requests drain, then a last flush."""
    return notify("STOPPING=1", "STATUS=draining and flushing")
