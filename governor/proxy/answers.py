"""The notice as a response: the facts gathered from a request and its meter, then sent.

The notice goes out from here whether a request is blocked (its tenant is at its cap)
or its response is refused before its first byte (:func:`governor.core.policy.refusal`:
a large file late in the period, or one larger than what is left). It is never charged
to the tenant (see :mod:`governor.proxy.handler`).
"""

from __future__ import annotations

from typing import Final

from governor.config import TenantConfig
from governor.core.meter import Meter
from governor.http1.headers import Header
from governor.http1.request import SERVER, Request
from governor.proxy import notice


def send_notice(
    request: Request,
    tenant: TenantConfig,
    meter: Meter,
    *,
    variant: notice.Variant = "cap",
    response_bytes: int | None = None,
    left_bytes: int | None = None,
) -> None:
    """Answer ``request`` with ``tenant``'s notice (or its ``variant``; "admission" names
    the refused response's ``response_bytes``)."""
    facts = notice.NoticeFacts(
        tenant=tenant.name,
        host=request.head.host or "",
        used_bytes=meter.used(),
        cap_bytes=meter.cap,
        resets_at=(meter.day_period() if variant == "day" else meter.period()).resets_at(
            tenant.timezone
        ),
        period=tenant.period,
        now=meter.now(),
        response_bytes=response_bytes,
        left_bytes=left_bytes,
        topup_url=tenant.notice.topup_url,
        topup_text=tenant.notice.topup_text,
    )
    rendered = notice.render_notice(
        facts,
        status=tenant.notice.status,
        template=tenant.notice.template,
        accept=header(request.headers, "accept"),
        accept_language=header(request.headers, "accept-language"),
        method=request.method,
        variant=variant,
    )
    headers = [*rendered.headers, ("Server", SERVER)]
    request.respond(rendered.status, headers, rendered.body, send_body=request.method != "HEAD")


def header(headers: list[Header], low: str) -> str | None:
    """The first value of the header named ``low`` (lower case), or None."""
    for name, value in headers:
        if name.lower() == low:
            return value
    return None


ACME: Final = "/.well-known/acme-challenge/"  # an ACME client's HTTP-01 challenges stay on HTTP


def redirect(request: Request) -> None:
    """308 to the same URL on HTTPS: the first TLS listener's port (left out when 443)."""
    host = request.head.host or ""
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    port = request.conn.server.https_port
    authority = host if port in (None, 443) else f"{host}:{port}"
    location = f"https://{authority}{request.head.target}"
    body = f"308 Permanent Redirect: this site is served at {location}\n".encode()
    headers = [
        ("Location", location),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Server", SERVER),
    ]
    if request.method == "HEAD":
        headers.append(("Content-Length", str(len(body))))
    request.respond(308, headers, body, send_body=request.method != "HEAD")
