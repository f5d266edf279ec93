"""The top consumers as they happen: each answered request tallied, written at each flush.

A request sink (:meth:`TopTally.request_done`): a tenant's request adds the bytes it was
charged, and one request, to its visitor, path, User-Agent and referring host in that
tenant's current period (see :mod:`governor.core.top` for what each item is, the tables
and their error). After each flush, :meth:`TopTally.write` adds what was tallied since to
the store's top lists and starts over, so an instance holds at most one flush interval's
tables, for the tenants that had requests in it.

A request refused with a notice that was not charged (``blocked``, ``client_share``,
``crawler``) used nothing and is not tallied.
"""

from __future__ import annotations

import logging
from typing import Final

from governor.accounts.runtime import Runtime
from governor.core.top import (
    DIMENSIONS,
    TopTable,
    agent_item,
    client_item,
    path_item,
    referrer_item,
)
from governor.errors import StoreError
from governor.observe.events import RequestRecord
from governor.store.base import Store, TopEntry

log: Final = logging.getLogger("governor.top")

_NOT_CHARGED: Final = frozenset({"blocked", "client_share", "crawler", "unknown_host"})
_NOTICE_ONLY: Final = frozenset({"large", "admission"})  # the request was charged, the notice not
# A tenant's tables for one period, one per dimension, in DIMENSIONS' order.
Tables = tuple[TopTable, TopTable, TopTable, TopTable]


class TopTally:
    """Per (tenant, period), a table per dimension, until the next write."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._tables: dict[tuple[str, str], Tables] = {}
        self._last: tuple[str, str, Tables] | None = None  # the tables last tallied to
        self.written = 0  # entries the store took
        self.failed = 0  # writes that failed (their entries are tallied again)

    def request_done(self, record: RequestRecord) -> None:
        """A request sink: tally a tenant's request by what it was charged."""
        name = record.tenant
        if name is None or record.outcome in _NOT_CHARGED:
            return
        snap = self.runtime.snapshot
        tenant = snap.tenants.get(name)
        if tenant is None:
            return
        count = tenant.config.count
        n = record.bytes_in if count != "egress" else 0
        if count != "ingress" and record.outcome not in _NOTICE_ONLY:
            n += record.bytes_out
        period = tenant.periods.current(self.runtime.clock()).key
        clients, paths, agents, referrers = self._tables_of(name, period)
        form = snap.config.top_clients
        salt = name + "/" + period if form == "hashed" else ""  # only a digest takes one
        clients.add(client_item(record.client, form, salt), n)
        paths.add(path_item(record.path), n)
        agents.add(agent_item(record.agent), n)
        referrers.add(referrer_item(record.referer), n)

    def take(self) -> list[TopEntry]:
        """Everything tallied since the last take, as entries for the store; starts over."""
        tables, self._tables = self._tables, {}
        self._last = None  # its tables are taken: the next request makes new ones
        return [
            (name, period, dimension, item, nbytes, requests)
            for (name, period), by_dimension in tables.items()
            for dimension, table in zip(DIMENSIONS, by_dimension, strict=True)
            for item, nbytes, requests in table.items()
        ]

    def give_back(self, entries: list[TopEntry]) -> None:
        """Tally again what a failed write took (bounded: the tables keep their size)."""
        for name, period, dimension, item, nbytes, requests in entries:
            if dimension in DIMENSIONS:
                self._tables_of(name, period)[DIMENSIONS.index(dimension)].add(
                    item, nbytes, requests
                )

    def _tables_of(self, name: str, period: str) -> Tables:
        """The tenant's tables for ``period`` (in :data:`DIMENSIONS`' order), made on first use."""
        last = self._last
        if last is not None and last[0] == name and last[1] == period:
            return last[2]  # a busy tenant's next request: no tuple to hash
        tables = self._tables.get((name, period))
        if tables is None:
            tables = self._tables[name, period] = (TopTable(), TopTable(), TopTable(), TopTable())
        self._last = (name, period, tables)
        return tables

    async def write(self, store: Store) -> None:
        """Add what was tallied to the store's top lists (after a flush)."""
        entries = self.take()
        if not entries:
            return
        try:
            await store.add_top(entries)
        except StoreError as exc:
            self.failed += 1
            log.warning("top consumers not written, tallied again for the next flush: %s", exc)
            self.give_back(entries)
            return
        self.written += len(entries)
