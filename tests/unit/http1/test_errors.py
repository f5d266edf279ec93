"""The HTTP/1.1 engine's errors in governor's tree, and the one upstream mapping."""

from __future__ import annotations

import pytest

from governor.errors import (
    BadMessage,
    GovernorError,
    ProtocolError,
    UpstreamBroken,
    UpstreamError,
    UpstreamTimeout,
    upstream_error,
)


def test_a_bad_message_is_a_protocol_error_with_its_own_status() -> None:
    exc = BadMessage(431, "too many header fields")
    assert isinstance(exc, ProtocolError)
    assert isinstance(exc, GovernorError)
    assert (exc.status, exc.reason, str(exc)) == (431, "too many header fields", exc.reason)


def test_a_broken_upstream_is_an_upstream_error_and_a_connection_error() -> None:
    exc = UpstreamBroken("gone")
    assert isinstance(exc, UpstreamError)
    assert isinstance(exc, ConnectionError)  # code that stops on a broken socket stops on it
    assert exc.status == 502
    assert UpstreamTimeout("late").status == 504


@pytest.mark.parametrize(
    ("exc", "stage", "kind", "message"),
    [
        (TimeoutError(), "connect", UpstreamError, "connecting to the upstream timed out"),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "connect",
            UpstreamError,
            "cannot connect to the upstream: [Errno 111] Connection refused",
        ),
        (BadMessage(502, "a malformed status line"), "head", UpstreamError, "a malformed status"),
        (BadMessage(502, "a bare CR"), "body", UpstreamBroken, "a bare CR"),
        (None, "lost", UpstreamBroken, "the upstream closed the connection (EOF)"),
        (
            ConnectionResetError(104, "reset"),
            "lost",
            UpstreamBroken,
            "the upstream closed the connection ([Errno 104] reset)",
        ),
    ],
)
def test_upstream_failures_map_once(
    exc: BaseException | None, stage: str, kind: type[UpstreamError], message: str
) -> None:
    mapped = upstream_error(exc, stage)  # type: ignore[arg-type]
    assert type(mapped) is kind
    assert str(mapped).startswith(message)


def test_a_governor_error_passes_as_it_is() -> None:
    timeout = UpstreamTimeout("the upstream sent no response headers in time")
    assert upstream_error(timeout, "lost") is timeout
