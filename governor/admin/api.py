"""The admin application: health, readiness, the tenant API (auth, audit), and its routes.

The page at ``/status`` is :mod:`governor.admin.status_page`; the socket it is all served
on is :mod:`governor.admin.listener`.

Routes (all on ``admin_listen``, loopback by default):

* ``GET /healthz`` (the process is alive), ``GET /readyz`` (listeners up, config
  loaded; reports the store state), ``GET /metrics`` and ``GET /status`` (an HTML page
  for people) are open.
* ``GET /api/v1/tenants`` (a page at a time: ``?limit=&after=``), ``GET /api/v1/tenants/{tenant}``,
  ``POST /api/v1/tenants/{tenant}/reset`` and ``POST /api/v1/tenants/{tenant}/grant``
  need ``Authorization: Bearer <token>`` when ``admin_token_file`` is set.

Resets and grants go through :class:`~governor.accounts.runtime.Runtime`, which keeps them in
the store, so every instance and worker sees them within one flush interval and they
survive restarts. Every reset and grant, and every refused API call, writes one line
to the ``governor.audit`` logger: when, who (client address, whether a token was
presented), what, the tenant, and the result. The token itself is never logged.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import hdrs, web

from governor.accounts.runtime import Runtime, TenantUsage
from governor.accounts.top import MAX_LIMIT, top_document
from governor.admin.status_page import STATUS_REFRESH_SECONDS, Names, StatusPage
from governor.core.top import DIMENSIONS, Dimension
from governor.errors import StoreError
from governor.observe.metrics import Metrics
from governor.sizes import parse_size

__all__ = ["STATUS_REFRESH_SECONDS", "create_admin_app"]

audit = logging.getLogger("governor.audit")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PLAIN: Final = re.compile(r"[A-Za-z0-9_.:/@+\-]+")
_GRANT_EXAMPLE: Final = '{"bytes": "500 MB"}'
LIST_LIMIT: Final = 500
"""Tenants per page of ``GET /api/v1/tenants`` (the default ``limit``, and its most)."""


def create_admin_app(
    runtime: Runtime,
    *,
    metrics: Metrics,
    ready: Callable[[], bool],
) -> web.Application:
    """The admin application: /metrics, /healthz, /readyz, /api/v1/..., /status.

    The token is the live config's (``runtime.snapshot``), read per request: a reload
    that rotates ``admin_token_file`` refuses the old token from the next request on.
    """
    names = Names()  # one index of the tenant names, for the API's cursors and /status
    admin = _Admin(runtime, ready=ready, names=names)
    app = web.Application()
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_get("/healthz", admin.healthz)
    app.router.add_get("/readyz", admin.readyz)

    def forecast(name: str, period: str) -> float | None:
        """When the tenant runs out; +inf when forecast to last; None when not forecast."""
        forecasts = metrics.forecasts
        if forecasts is None or not forecasts.forecast_known(name, period):
            return None
        at = forecasts.of(name, period)
        return math.inf if at is None else at

    status = StatusPage(runtime, metrics.activity, names, metrics.refusals, forecast)
    app.router.add_get("/status", status.handle)
    app.router.add_get("/api/v1/tenants", admin.guard("list", admin.list_tenants))
    app.router.add_get("/api/v1/tenants/{tenant}", admin.guard("show", admin.show_tenant))
    app.router.add_get("/api/v1/tenants/{tenant}/top", admin.guard("top", admin.top))
    app.router.add_post("/api/v1/tenants/{tenant}/reset", admin.guard("reset", admin.reset))
    app.router.add_post("/api/v1/tenants/{tenant}/grant", admin.guard("grant", admin.grant))
    return app


class _BadRequest(Exception):
    """A request body the API cannot use; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Admin:
    """The handlers, sharing the runtime (the live config, the token) and the readiness probe."""

    def __init__(self, runtime: Runtime, *, ready: Callable[[], bool], names: Names) -> None:
        self.runtime = runtime
        self.ready = ready
        self._names = names

    # -- access ---------------------------------------------------------------------------

    def guard(self, action: str, handler: _Handler) -> _Handler:
        """``handler`` behind the bearer token (when one is configured)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            presented, valid = self._credentials(request)
            if not valid:
                reason = "wrong token" if presented else "no token"
                _audit(
                    request,
                    presented=presented,
                    action=action,
                    tenant=request.match_info.get("tenant"),
                    result=f"denied ({reason})",
                )
                return _error(
                    401,
                    "unauthorized: this API needs the header 'Authorization: Bearer <token>' "
                    "with the token in admin_token_file",
                    headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="governor"'},
                )
            return await handler(request)

        return guarded

    def _credentials(self, request: web.Request) -> tuple[bool, bool]:
        """(a token was presented, the request may proceed)."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        presented = header is not None
        token = self.runtime.snapshot.config.admin_token  # the live one: a reload rotates it
        if token is None:
            return presented, True
        if header is None:
            return False, False
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return True, False
        ok = hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
        )
        return True, ok

    # -- probes ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n", headers={hdrs.CACHE_CONTROL: "no-store"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        ready = self.ready()
        body = {
            "ready": ready,
            "store": "ok" if self.runtime.store_ok else "degraded",
            "tenants": len(self.runtime.snapshot.tenants),
            # Counts not reaching the store: since when (Unix time, None when they do), how many.
            "unflushed_since": self.runtime.unflushed_since,
            "pending_bytes": self.runtime.ledger.pending_bytes(),
        }
        return web.json_response(
            body, status=200 if ready else 503, headers={hdrs.CACHE_CONTROL: "no-store"}
        )

    # -- the API --------------------------------------------------------------------------

    async def list_tenants(self, request: web.Request) -> web.StreamResponse:
        """Tenants in config order, ``?limit=`` (default and most :data:`LIST_LIMIT`) at a
        time from after the tenant ``?after=``; ``next`` names the cursor of the next page
        and is absent on the last one. The cost follows the page, not the config."""
        snap = self.runtime.snapshot
        try:
            limit = _limit(request.query.get("limit"))
        except _BadRequest as exc:
            return _error(400, exc.message, field=exc.field)
        await self._names.ready(snap)
        names = self._names.names(snap)
        start = 0
        after = request.query.get("after")
        if after is not None:
            at = self._names.position(snap, after)
            if at is None:
                problem = f"after: no tenant {after!r} in the running config"
                return _error(400, problem, field="after")
            start = at + 1
        rows = []
        for name in names[start : start + limit]:
            usage = self.runtime.usage(name)
            if usage is not None:
                rows.append(self._usage_json(usage))
        body: dict[str, Any] = {
            "tenants": rows,
            "store": "ok" if self.runtime.store_ok else "degraded",
        }
        if start + limit < len(names):
            body["next"] = names[start + limit - 1]
        return _json(body)

    async def show_tenant(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["tenant"]
        usage = await self.runtime.lookup(name)  # asked by name: the fleet's total
        if usage is None:
            return _unknown_tenant(name)
        doc = self._usage_json(usage)
        if usage.would_block:
            since = await self.runtime.would_block_since(usage)
            doc["would_block_since"] = None if since is None else since.isoformat()
        return _json(doc)

    async def top(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/tenants/T/top?by=client|path|agent|referrer&period=&limit=``."""
        name = request.match_info["tenant"]
        usage = await self.runtime.lookup(name)
        if usage is None:
            return _unknown_tenant(name)
        try:
            by, period, limit = _top_query(request.query, usage.period)
        except _BadRequest as exc:
            return _error(400, exc.message, field=exc.field)
        store = self.runtime.store
        try:
            if period == usage.period:
                total = usage.used_bytes
            else:
                total = (await store.totals([(name, period)]))[(name, period)]
            doc = await top_document(store, name, period, by, limit, total)
        except StoreError as exc:
            return _error(503, f"the store did not answer: {exc}")
        return _json(doc)

    async def reset(self, request: web.Request) -> web.StreamResponse:
        async def act(name: str) -> tuple[TenantUsage | None, dict[str, object]]:
            usage = await self.runtime.reset(name)
            return usage, {} if usage is None else {
                "period": usage.period,
                "used_bytes": usage.used_bytes,
            }

        return await self._act(request, "reset", act)

    async def grant(self, request: web.Request) -> web.StreamResponse:
        try:
            nbytes = _grant_bytes(await request.read()) if self._known(request) else 0
        except _BadRequest as exc:
            self._audit(request, "grant", result=f"bad request: {exc.message}")
            return _error(400, exc.message, field=exc.field)

        async def act(name: str) -> tuple[TenantUsage | None, dict[str, object]]:
            usage = await self.runtime.grant(name, nbytes)
            return usage, {"bytes": nbytes} if usage is None else {
                "bytes": nbytes,
                "period": usage.period,
                "granted_bytes": usage.granted_bytes,
                "cap_bytes": usage.cap_bytes,
            }

        return await self._act(request, "grant", act)

    def _known(self, request: web.Request) -> bool:
        return self.runtime.usage(request.match_info["tenant"]) is not None

    def _audit(self, request: web.Request, action: str, **fields: object) -> None:
        _audit(
            request,
            presented=hdrs.AUTHORIZATION in request.headers,
            action=action,
            tenant=request.match_info["tenant"],
            **fields,  # type: ignore[arg-type]
        )

    async def _act(
        self,
        request: web.Request,
        action: str,
        act: Callable[[str], Awaitable[tuple[TenantUsage | None, dict[str, object]]]],
    ) -> web.StreamResponse:
        """Run a change on a tenant, audit it whatever happens, and answer with its usage."""
        name = request.match_info["tenant"]
        if not self._known(request):
            self._audit(request, action, result="no such tenant")
            return _unknown_tenant(name)
        try:
            usage, facts = await act(name)
        except StoreError as exc:
            self._audit(request, action, result=f"failed: {exc}")
            return _error(503, f"the store did not take the {action}: {exc}")
        if usage is None:  # the tenant went away in a reload meanwhile
            self._audit(request, action, result="no such tenant")
            return _unknown_tenant(name)
        self._audit(request, action, result="ok", **facts)
        return _json(self._usage_json(usage))

    def _usage_json(self, usage: TenantUsage) -> dict[str, Any]:
        tenant = self.runtime.snapshot.tenants.get(usage.tenant)
        now = self.runtime.clock()
        return {
            "tenant": usage.tenant,
            "period": usage.period,
            "used_bytes": usage.used_bytes,
            "cap_bytes": usage.cap_bytes,
            "daily_cap_bytes": usage.daily_cap_bytes,
            "granted_bytes": usage.granted_bytes,
            "resets_at": usage.resets_at.isoformat(),
            "resets_in": max(0, math.ceil(usage.resets_at.timestamp() - now)),
            "timezone": tenant.config.timezone.key if tenant is not None else None,
            "period_kind": tenant.config.period if tenant is not None else None,
            "blocked": usage.blocked,
            "enforced": usage.enforced,
            "would_block": usage.would_block,
        }


# -- helpers ----------------------------------------------------------------------------------


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={hdrs.CACHE_CONTROL: "no-store"})


def _error(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(
        body, status=status, headers={hdrs.CACHE_CONTROL: "no-store", **(headers or {})}
    )


def _unknown_tenant(name: str) -> web.Response:
    return _error(404, f"no tenant {name!r} in the running config")


def _limit(raw: str | None) -> int:
    """``?limit=``: 1 to :data:`LIST_LIMIT` tenants per page."""
    if raw is None:
        return LIST_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIST_LIMIT:
        raise _BadRequest("limit", f"limit: a whole number from 1 to {LIST_LIMIT}, not {raw!r}")
    return limit


def _top_query(query: Mapping[str, str], current: str) -> tuple[Dimension, str, int]:
    """``by`` (default client), ``period`` (default the current one), ``limit`` (10)."""
    by = query.get("by", "client")
    if by not in DIMENSIONS:
        raise _BadRequest("by", f"by: one of {', '.join(DIMENSIONS)}, not {by!r}")
    period = query.get("period", current)
    try:
        dt.date.fromisoformat(period)
    except ValueError:
        raise _BadRequest("period", f"period: a date like 2026-03-10, not {period!r}") from None
    raw = query.get("limit", "10")
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadRequest("limit", f"limit: a whole number from 1 to {MAX_LIMIT}, not {raw!r}")
    return by, period, limit


def _grant_bytes(raw: bytes) -> int:
    """The bytes a grant body asks for: ``{"bytes": "500 MB"}`` or ``{"bytes": 500000000}``."""
    usage = f"the body must be a JSON object like {_GRANT_EXAMPLE}"
    if not raw.strip():
        raise _BadRequest("bytes", f"the body is empty: {usage}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _BadRequest("bytes", f"the body is not valid JSON ({exc}): {usage}") from None
    if not isinstance(doc, dict):
        raise _BadRequest("bytes", usage)
    unknown = sorted(str(k) for k in doc if k != "bytes")
    if unknown:
        raise _BadRequest(unknown[0], f"unknown field {unknown[0]!r}: {usage}")
    if "bytes" not in doc:
        raise _BadRequest("bytes", f"the field 'bytes' is missing: {usage}")
    try:
        nbytes = parse_size(doc["bytes"])
    except ValueError as exc:
        raise _BadRequest("bytes", f"bytes: {exc}") from None
    if nbytes <= 0:
        raise _BadRequest("bytes", "bytes: a grant must be more than 0 bytes")
    return nbytes


def _audit(
    request: web.Request,
    *,
    presented: bool,
    action: str,
    tenant: str | None,
    result: str,
    **facts: object,
) -> None:
    """One audit line: when, who, what, which tenant, the result (and the facts)."""
    fields: dict[str, object] = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "client": request.remote or "unknown",
        "token": "presented" if presented else "absent",
        "action": action,
        "tenant": tenant if tenant is not None else "-",
        **facts,
        "result": result,
    }
    audit.info(" ".join(f"{key}={_logged(value)}" for key, value in fields.items()))


def _logged(value: object) -> str:
    """``value`` for a key=value log line: quoted when it holds spaces or anything odd."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=True)
