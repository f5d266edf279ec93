"""Headless Chromium for the functional tests: a DOM dump, or a page driven over DevTools.

The tests that use it are skipped when Chromium (Debian package ``chromium``) is not
installed. Chromium runs in its own session with a fresh profile, and is stopped (its
whole process group, if it does not exit) when the test is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium); "
    "pages are checked in a real headless browser",
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOW = (1200, 900)
BROWSER_TIMEOUT = 30.0


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: chromium and its helpers
            await proc.wait()


async def dump_dom(url: str, profile: Path, extra: list[str] | None = None) -> str:
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *CHROMIUM_FLAGS,
        *(extra or []),
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(BROWSER_TIMEOUT):
            out, _ = await proc.communicate()
    finally:
        await stop(proc)
    assert proc.returncode == 0
    return out.decode()


class DevTools:
    """A page in headless Chromium, driven over the DevTools protocol (a WebSocket)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        async with asyncio.timeout(BROWSER_TIMEOUT):
            while True:
                msg = json.loads(await self.ws.receive_str())
                if msg.get("id") == self._id:
                    assert "error" not in msg, msg
                    result: dict[str, Any] = msg["result"]
                    return result

    async def event(self, method: str, *, within: float) -> dict[str, Any]:
        """The next event ``method`` (enable its domain first)."""
        async with asyncio.timeout(within):
            while True:
                msg = json.loads(await self.ws.receive_str())
                if msg.get("method") == method:
                    params: dict[str, Any] = msg.get("params", {})
                    return params

    async def load(self, method: str, **params: Any) -> None:
        """Call ``method`` (Page.navigate, Page.reload) and wait for the page's load event.

        The event may come before the reply to the call, so both are awaited in one pass.
        """
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        replied = loaded = False
        async with asyncio.timeout(BROWSER_TIMEOUT):
            while not (replied and loaded):
                msg = json.loads(await self.ws.receive_str())
                if msg.get("id") == self._id:
                    assert "error" not in msg, msg
                    replied = True
                loaded = loaded or msg.get("method") == "Page.loadEventFired"

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def browser(url: str, profile: Path) -> AsyncIterator[DevTools]:
    """Chromium showing ``url`` (loaded), with its DevTools endpoint connected."""
    assert CHROMIUM is not None
    profile.mkdir()
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        async with asyncio.timeout(BROWSER_TIMEOUT):
            while not active.exists() or not active.read_text().strip():
                assert proc.returncode is None, "chromium exited at start"
                await asyncio.sleep(0.05)  # the browser writes it when up: no event
            port = int(active.read_text().split()[0])
            async with aiohttp.ClientSession() as session:
                while True:
                    async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                        targets = await resp.json()
                    pages = [t for t in targets if t["type"] == "page"]
                    if pages:
                        break
                    await asyncio.sleep(0.05)  # its first page: no event
                async with session.ws_connect(
                    pages[0]["webSocketDebuggerUrl"], max_msg_size=0
                ) as ws:
                    page = DevTools(ws)
                    await page.call("Page.enable")
                    await page.load("Page.navigate", url=url)
                    yield page
    finally:
        await stop(proc)


def png_pixel(png: bytes, x: int, y: int) -> tuple[int, int, int]:
    """The RGB of one pixel of an 8-bit, non-interlaced RGB or RGBA PNG (Chromium's
    screenshots); pure Python, so meant for small clips."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, header = 8, bytearray(), b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            idat += data
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), (depth, interlace)
    assert color in (2, 6), color
    assert 0 <= x < width, (x, width)
    assert 0 <= y < height, (y, height)
    bpp = 4 if color == 6 else 3
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    previous = bytearray(stride)
    for row in range(y + 1):
        kind, line = (
            raw[row * (stride + 1)],
            bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + predictor) & 0xFF
        previous = line
    r, g, b_ = previous[x * bpp : x * bpp + 3]
    return r, g, b_
