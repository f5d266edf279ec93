"""The access log: one line per answered request, plain or JSON, written off the event loop.

:meth:`AccessLog.request_done` (a request sink, on the event loop) formats the line and
puts it on a bounded queue; a writer thread takes lines off the queue and writes them
in batches, flushing whenever the queue runs dry. The event loop never waits for the
disk or a pipe: when the queue is full (the writer cannot keep up) the line is dropped
and counted in :attr:`AccessLog.dropped`. :meth:`AccessLog.close` writes what is
queued, flushes, and closes the file.

A file target is reopened when it is moved or deleted (as logrotate does), like
:class:`logging.handlers.WatchedFileHandler`.

The plain format, one space-separated line per request::

    TIME TENANT CLIENT METHOD "PATH" STATUS BYTES_OUT BYTES_IN DURATION OUTCOME UPSTREAM "AGENT"
    LISTENER

(all on one line).
``TIME`` is the start of the request, ISO 8601 in UTC with milliseconds; ``TENANT`` is
``-`` for a host no tenant claims; ``BYTES_OUT``/``BYTES_IN`` are the bytes written to
and received from the client for this request (status line and headers included);
``DURATION`` and ``UPSTREAM`` (until the upstream's response headers; ``-`` when there
was no upstream response) are seconds with three decimals; ``AGENT`` is the User-Agent
(``"-"`` when there was none, or no tenant); ``LISTENER`` is the listener the request
came in on, ``scheme://address`` (``https://0.0.0.0:443``; ``-`` for a request refused
before it was read). On TLS, both byte counts are of the TLS records: what crossed the
wire (the handshake is charged apart, to the tenant its SNI names). The JSON format has the
same fields under the names of :class:`~governor.observe.events.RequestRecord`.

No log injection: in the plain format, backslash, the double quote, control and other
non-printable characters are written as backslash escapes (``\\\\``, ``\\"``, ``\\n``,
``\\xHH``, ``\\uHHHH``), and a space too outside the quoted path; the JSON format is
ASCII-only JSON. Either way a line is always exactly one line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import IO, Any, Final

from governor.config import Config, LogFormat
from governor.observe.events import RequestRecord

log: Final = logging.getLogger("governor.accesslog")

QUEUE_SIZE: Final = 10_000  # lines waiting for the writer; beyond it lines are dropped
BATCH: Final = 512  # lines written per write call at most
CLOSE_TIMEOUT: Final = 5.0  # close() waits at most this long for the writer to finish
_STOP: Final = object()  # the writer finishes the queue and returns
_WAKE: Final = object()  # the writer looks at its retargets (a reload)
_STREAMS: Final = ("off", "stderr", "stdout")

_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str, *, quoted: bool) -> str:
    """``text`` with backslash, '"', non-printable characters (and outside quotes, spaces)
    escaped, so that it cannot end the field or the line."""
    if text.isprintable() and '"' not in text and "\\" not in text and (quoted or " " not in text):
        return text
    out: list[str] = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c == " ":
            out.append(" " if quoted else "\\x20")
        elif c.isprintable():
            out.append(c)
        else:
            n = ord(c)
            out.append(
                f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
            )
    return "".join(out)


def _time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def format_plain(r: RequestRecord) -> str:
    """One request in the plain format (no newline)."""
    upstream = "-" if r.upstream_seconds is None else f"{r.upstream_seconds:.3f}"
    return (
        f"{_time(r.time)} {_escape(r.tenant or '-', quoted=False)} "
        f"{_escape(r.client or '-', quoted=False)} {_escape(r.method, quoted=False)} "
        f'"{_escape(r.path, quoted=True)}" {r.status} {r.bytes_out} {r.bytes_in} '
        f'{r.duration:.3f} {r.outcome} {upstream} "{_escape(r.agent or "-", quoted=True)}" '
        f"{r.listener or '-'}"
    )


def format_json(r: RequestRecord) -> str:
    """One request as a JSON object on one line (ASCII only)."""
    doc: dict[str, Any] = {
        "time": _time(r.time),
        "tenant": r.tenant,
        "client": r.client,
        "method": r.method,
        "path": r.path,
        "status": r.status,
        "bytes_out": r.bytes_out,
        "bytes_in": r.bytes_in,
        "duration": round(r.duration, 6),
        "outcome": r.outcome,
        "upstream_seconds": None if r.upstream_seconds is None else round(r.upstream_seconds, 6),
        "agent": r.agent,
        "listener": r.listener or None,
    }
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":"))


_FORMATS: Final = {"plain": format_plain, "json": format_json}


class AccessLog:
    """One line per answered request, plain or JSON, written off the event loop.

    ``target`` is ``off``, ``stderr``, ``stdout`` or an absolute file path (appended to,
    created when missing). :attr:`written` and :attr:`dropped` count lines.

    :meth:`reconfigure` (a reload) takes a new target and format: lines of requests
    answered before it go where the log went then, later ones to the new target in the
    new format. A file target is reopened on every reload, even at the same path, as
    nginx reopens its logs (``nginx -s reopen``; a reload does it too): a rotation that
    copies or moves the file is taken at once. Retargets are numbered by the line they
    take effect at, so the writer thread switches exactly there.
    """

    def __init__(
        self, target: str = "off", *, log_format: LogFormat = "plain", queue_size: int = QUEUE_SIZE
    ) -> None:
        self.target = target
        self.log_format: LogFormat = log_format
        self._format = _FORMATS[log_format]
        self.written = 0  # by the writer thread
        self._dropped_full = 0  # by the event loop: the queue was full, or closed
        self._dropped_failed = 0  # by the writer thread: the write failed
        self._queue: queue.Queue[str | object] = queue.Queue(queue_size)
        self._queued = 0  # lines put on the queue (event loop)
        self._taken = 0  # lines taken off it (writer thread)
        # (number of the first line that goes there, target), appended by the event loop,
        # taken by the writer thread when it reaches that line.
        self._retargets: deque[tuple[int, str]] = deque()
        self._writing = target  # where the writer thread writes now
        self._file: IO[str] | None = None
        self._file_id: tuple[int, int] | None = None
        self._closed = False
        self._failing = False
        self._writer: threading.Thread | None = None
        # Where the writer thread puts each batch of lines (tests hold it to fill the queue).
        self.write_out: Callable[[str, int], None] = self._write
        if target not in _STREAMS:
            self._open_file()  # fail at start-up, not at the first request
        if target != "off":
            self._start_writer()

    @property
    def dropped(self) -> int:
        """Lines lost: not queued (the writer was behind, or the log closed) or not written."""
        return self._dropped_full + self._dropped_failed

    def request_done(self, record: RequestRecord) -> None:
        """A request sink: queue the line; drop it (counted) when the writer is behind."""
        if self.target == "off":
            return
        if self._closed:
            self._dropped_full += 1
            return
        try:
            self._queue.put_nowait(self._format(record))
        except queue.Full:
            self._dropped_full += 1
            if self._dropped_full == 1 or self._dropped_full % 10_000 == 0:
                log.error(
                    "the access log writer is behind: %d line(s) dropped so far",
                    self._dropped_full,
                )
        else:
            self._queued += 1

    def reconfigure(self, config: Config) -> None:
        """A reload: ``access_log`` and ``log_format`` from the next request on."""
        if self._closed:
            return
        self.log_format = config.log_format
        self._format = _FORMATS[config.log_format]
        self.target = config.access_log
        if self._writer is None and self.target == "off":
            return  # it never wrote: nothing to release
        self._retargets.append((self._queued, self.target))
        self._start_writer()
        # Wake the writer, so that it releases the old file now; with a full queue it is
        # busy anyway, and takes the retarget on its way.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)

    def close(self) -> None:
        """Write what is queued (waiting at most :data:`CLOSE_TIMEOUT`), flush, release."""
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            self._close_file()
            return
        try:
            self._queue.put(_STOP, timeout=CLOSE_TIMEOUT)
        except queue.Full:
            log.error("the access log writer is stuck; %d line(s) lost", self._queue.qsize())
        self._writer.join(CLOSE_TIMEOUT)
        if self._writer.is_alive():
            log.error("the access log writer did not finish within %gs", CLOSE_TIMEOUT)
            return  # it still owns the file; the daemon thread dies with the process
        self._close_file()
        if self.dropped:
            log.warning("the access log dropped %d line(s)", self.dropped)

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name="governor-access-log", daemon=True
            )
            self._writer.start()

    # --- the writer thread ------------------------------------------------------------

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            lines: list[str] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, str):
                    lines.append(item)
                if len(lines) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write_lines(lines)

    def _write_lines(self, lines: list[str]) -> None:
        """Write ``lines`` (the next ones in order), switching targets where a reload did."""
        first = self._taken
        self._taken += len(lines)
        start = 0
        while True:
            while self._retargets and self._retargets[0][0] <= first + start:
                self._retarget(self._retargets.popleft()[1])
            end = len(lines)
            if self._retargets:
                end = min(end, self._retargets[0][0] - first)
            if end > start and self._writing != "off":
                self.write_out("".join(line + "\n" for line in lines[start:end]), end - start)
            if end >= len(lines):
                return
            start = end

    def _retarget(self, target: str) -> None:
        """Close the file and open ``target`` (the same path too: a reopen)."""
        self._close_file()
        self._writing = target
        self._failing = False
        if target in _STREAMS:
            return
        try:
            self._open_file()  # now, as at start-up: created, and a problem logged at once
        except OSError as exc:  # the next write tries again
            log.error("cannot open the access log %s: %s", target, exc)
            self._failing = True

    def _write(self, text: str, count: int) -> None:
        # Counted before the lines become visible, so a reader who sees them sees the count.
        self.written += count
        try:
            stream = self._stream()
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as exc:
            self.written -= count
            self._dropped_failed += count
            if not self._failing:
                log.error("cannot write the access log %s: %s", self._writing, exc)
            self._failing = True
            return
        if self._failing:
            log.warning("writing the access log %s works again", self._writing)
            self._failing = False

    def _stream(self) -> IO[str]:
        if self._writing == "stderr":
            return sys.stderr
        if self._writing == "stdout":
            return sys.stdout
        try:
            st = os.stat(self._writing)
            moved = (st.st_dev, st.st_ino) != self._file_id
        except FileNotFoundError:
            moved = True
        if moved or self._file is None:
            self._open_file()
        assert self._file is not None
        return self._file

    def _open_file(self) -> None:
        self._close_file()
        f = open(self._writing, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        st = os.fstat(f.fileno())
        self._file, self._file_id = f, (st.st_dev, st.st_ino)

    def _close_file(self) -> None:
        f, self._file, self._file_id = self._file, None, None
        if f is not None:
            try:
                f.close()
            except OSError as exc:  # a final flush that failed: those lines are lost
                log.error("closing the access log %s: %s", self._writing, exc)


def open_access_log(config: Config) -> AccessLog:
    """The access log the config asks for (``off``: one that writes nothing until a reload)."""
    return AccessLog(config.access_log, log_format=config.log_format)
