"""Warnings before the cap (stub: the interface the app wires; the implementation follows)."""

from __future__ import annotations

from governor.runtime import Runtime


class Warner:
    """Tells operators when a tenant crosses a warn_at threshold, is blocked, or reopens."""

    def __init__(self, runtime: Runtime, *, webhook_url: str | None) -> None:
        self.runtime = runtime
        self.webhook_url = webhook_url

    def flushed(self) -> None:
        """A flush listener: compare usage with the thresholds."""

    async def start(self) -> None:
        """Start the owned task that delivers webhook events."""

    async def stop(self) -> None:
        """Deliver what is queued (bounded) and stop the task."""
