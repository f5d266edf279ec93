"""What each tenant refused this period, by why: for the status page.

Fed with every answered request of a tenant's (a request sink, through
:class:`~governor.observe.metrics.Metrics`); costs a dict update per refusal and nothing
per request served. Bounded by the tenants with a refusal: a tenant's tally starts over
with its period, and tallies of tenants no longer configured are dropped at the next one
of theirs that is looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from governor.observe.events import RequestRecord

# The outcomes that are a refusal (or a slowing), as the status page words them.
REFUSED: Final[dict[str, str]] = {
    "blocked": "at the cap",
    "large": "large files paused",
    "admission": "larger than what was left",
    "client_share": "over a visitor's share",
    "crawler": "crawlers paused",
    "paced": "paced",
}


class Refusals:
    """Per tenant: its current period's key and the refusals in it, by outcome."""

    def __init__(self, period_of: Callable[[str], str | None]) -> None:
        self._period_of = period_of  # tenant -> its period now (the meters' clock), None: unknown
        self._tally: dict[str, tuple[str, dict[str, int]]] = {}

    def note(self, record: RequestRecord) -> None:
        """Count ``record`` if it is a tenant's refusal."""
        name = record.tenant
        if name is None or record.outcome not in REFUSED:
            return
        period = self._period_of(name)
        if period is None:
            return
        entry = self._tally.get(name)
        if entry is None or entry[0] != period:
            entry = self._tally[name] = (period, {})
        counts = entry[1]
        counts[record.outcome] = counts.get(record.outcome, 0) + 1

    def of(self, name: str, period: str) -> dict[str, int]:
        """The tenant's refusals in ``period`` (empty when none, or another period's)."""
        entry = self._tally.get(name)
        if entry is None or entry[0] != period:
            return {}
        return dict(entry[1])
