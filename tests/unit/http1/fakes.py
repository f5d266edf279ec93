"""In-tree fakes for the HTTP/1.1 engine's unit tests: a transport that records calls."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeTransport(asyncio.Transport):
    """A transport that records what it was told: pauses, resumes, writes, closes.

    With ``holding`` it holds what is written until :meth:`accept` says the socket
    took it, and calls the protocol's pause_writing/resume_writing at its limits, as
    asyncio's own do; without, the socket takes every write at once.
    """

    def __init__(self, protocol: asyncio.BaseProtocol | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.calls: list[str] = []
        self.written = bytearray()
        self.held = 0
        self.high = 65536
        self.low = 16384
        self.closing = False
        self.aborted = False
        self.write_paused = False
        self.holding = False
        self.extra: dict[str, Any] = {"peername": ("127.0.0.1", 40000), "socket": None}

    # Reading.
    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")

    def is_reading(self) -> bool:
        return self.calls.count("pause_reading") == self.calls.count("resume_reading")

    # Writing.
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = 65536 if high is None else high
        self.low = self.high // 4 if low is None else low
        self._check_limits()

    def get_write_buffer_size(self) -> int:
        return self.held

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            return
        self.written += data
        if self.holding:
            self.held += len(data)
            self._check_limits()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def accept(self, n: int) -> None:
        """The socket took ``n`` more bytes."""
        self.held -= min(n, self.held)
        self._check_limits()

    def _check_limits(self) -> None:
        proto = self.protocol
        if not self.write_paused and self.held > self.high:
            self.write_paused = True
            if isinstance(proto, asyncio.Protocol | asyncio.BufferedProtocol):
                proto.pause_writing()
        elif self.write_paused and self.held <= self.low:
            self.write_paused = False
            if isinstance(proto, asyncio.Protocol | asyncio.BufferedProtocol):
                proto.resume_writing()

    # Closing.
    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True

    def abort(self) -> None:
        self.calls.append("abort")
        self.closing = True
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)
