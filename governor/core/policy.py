"""The allow / exempt / block decision for one request, pure: values in, a Decision out.

It is the one place that says whether a request reaches the upstream, so that the
rules (the cap, the store's health, exemptions) are read and tested together, and
the pacing and fair-share rules to come (issue 14) extend one function rather
than a handler. Invariant: a request is blocked only when it is not exempt and its
tenant is at its cap, or its store is down under ``on_store_failure: closed``; an
upgrade (a WebSocket tunnel) is never exempt. See ``docs/decision.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from governor.config import TenantConfig
from governor.core.exemption import is_exempt
from governor.core.ledger import is_blocked

NEAR_CAP: Final = 0.9  # from this share of its cap on, a tenant's requests nudge the flusher


# What happens to a request: "allow" (proxied and charged, under the tenant's cap),
# "exempt" (proxied and charged, whatever the cap: an exempt path or client), "block"
# (the notice instead; the upstream never sees it). Strings, not an Enum: compared
# on every request, and an Enum member lookup costs more than the rest of decide().
Verdict = Literal["allow", "exempt", "block"]

# "cap": the tenant is at its cap; "store": its store is down under on_store_failure: closed;
# "client_share": this visitor used its share (429); "crawler": crawlers used theirs, or
# the tenant is past large.from, where crawlers go before people (503).
# "day": a weekly or monthly tenant used its day_guard (daily_cap) today.
BlockReason = Literal["cap", "store", "client_share", "crawler", "day"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision on one request, and what it asks of the proxy."""

    verdict: Verdict
    reason: BlockReason | None = None  # why a request is blocked
    # Near the cap: ask the flusher for fresh fleet totals now, rather than at its tick.
    nudge: bool = False
    # The response (and an upload) stops where the cap is reached (``at_cap: cut``);
    # otherwise a response that began under the cap is finished.
    cut: bool = False
    # Shadow mode (``enforce: false``): the request is allowed, but would have been blocked
    # for this reason; nothing refuses it, nothing cuts or paces it.
    would_block: BlockReason | None = None


def decide(
    tenant: TenantConfig,
    *,
    used: int,
    cap: int,
    store_ok: bool = True,
    target: str = "/",
    client: str = "",
    upgrade: bool = False,
    visitor_used: int = 0,
    crawler: bool = False,
    crawlers_used: int = 0,
    day_used: int = 0,
) -> Decision:
    """Decide one request of ``tenant``'s, which has used ``used`` bytes of ``cap``.

    ``store_ok`` is the usage store's health, ``target`` the request target (for
    exempt paths), ``client`` the visitor's address (for exempt clients; after
    trusted proxies), ``upgrade`` whether it asks for a tunnel. ``visitor_used`` is
    what this visitor used this period (``client_share``), ``crawler`` whether the
    request is a crawler's and ``crawlers_used`` what all crawlers used (``crawlers``).

    The rules, the first that applies: exempt; the cap; the store; the visitor's share;
    the crawlers' share, and crawlers from ``large.from`` on.
    """
    if is_exempt(tenant, target, client, upgrade=upgrade):
        return _EXEMPT[used >= cap * NEAR_CAP]
    blocked: Decision | None = None
    if is_blocked(used, cap):
        blocked = _BLOCKED_CAP
    elif tenant.day_guard is not None and day_used >= tenant.day_guard:
        blocked = _BLOCKED_DAY
    elif tenant.on_store_failure == "closed" and not store_ok:
        blocked = _BLOCKED_STORE
    elif tenant.client_share is not None and visitor_used >= cap * tenant.client_share:
        blocked = _BLOCKED_CLIENT
    elif crawler and _crawlers_out(tenant, used, cap, crawlers_used):
        blocked = _BLOCKED_CRAWLER
    if blocked is None:
        return _ALLOW[used >= cap * NEAR_CAP][tenant.at_cap == "cut" and tenant.enforce]
    if not tenant.enforce:  # shadow mode: reported, never refused
        return _SHADOW[blocked.reason or "cap"]
    return blocked


def _crawlers_out(tenant: TenantConfig, used: int, cap: int, crawlers_used: int) -> bool:
    """Whether crawlers are refused: their share is used, or the tenant is past large.from."""
    budget = None if tenant.crawlers is None else tenant.crawlers.share
    if budget is not None and crawlers_used >= cap * budget:
        return True
    return tenant.large is not None and used >= cap * tenant.large.share


def left_for(
    tenant: TenantConfig,
    *,
    used: int,
    cap: int,
    visitor_used: int | None = None,
    crawlers_used: int | None = None,
    day_used: int | None = None,
) -> int:
    """What a response may still take: what is left of the cap, or of the visitor's or the
    crawlers' share when that is smaller (None: not counted for this request)."""
    left = cap - used
    if day_used is not None and tenant.day_guard is not None:
        left = min(left, tenant.day_guard - day_used)
    if visitor_used is not None and tenant.client_share is not None:
        left = min(left, int(cap * tenant.client_share) - visitor_used)
    crawlers = tenant.crawlers
    if crawlers_used is not None and crawlers is not None and crawlers.share is not None:
        left = min(left, int(cap * crawlers.share) - crawlers_used)
    return left


# Why a response of an allowed request is refused before its first byte (see refusal()).
ResponseRefusal = Literal["large", "admission"]


def refusal(
    tenant: TenantConfig, *, declared: int | None, used: int, cap: int, left: int | None = None
) -> ResponseRefusal | None:
    """Whether a response of an allowed request may start: None, or why it may not.

    ``declared`` is the body size its head declares (None: chunked or until close, not
    known in advance). Two rules, the first that applies:

    * ``large`` (off unless set): from ``large.from`` of ``cap`` on, a response larger
      than ``large.size`` is refused, so that pages and small files last to the cap.
    * ``admission`` (on by default): a response declaring more than is left of ``cap``
      would be cut at the cap (``at_cap: cut``) or finished far past it (``finish``);
      it is refused instead. ``left`` (see :func:`left_for`) is what it may take, when
      the visitor's or the crawlers' share leaves less than the cap does.

    A tenant counting ingress only is not charged for responses at all: none is refused.
    """
    if declared is None or tenant.count == "ingress":
        return None
    large = tenant.large
    if large is not None and declared > large.size and used >= cap * large.share:
        return "large"
    if tenant.admission and declared > (cap - used if left is None else left):
        return "admission"
    return None


AS_GOOD_AS_OUT: Final = 0.9
"""From this share of the cap on, a response refused by admission gets the tenant's own
notice ("daily limit reached"): the site is as good as out (a page or two are left). Below
it, the visitor is told that this file is larger than what is left, and that smaller
pages and files still load."""


def as_good_as_out(used: int, cap: int) -> bool:
    """Whether a response refused by admission gets the tenant's own notice."""
    return used >= cap * AS_GOOD_AS_OUT


def large_limit(tenant: TenantConfig, *, used: int, cap: int) -> int | None:
    """The most body bytes a response of undeclared length may pass on, or None: no limit.

    From ``large.from`` on, a response that did not declare its length is cut once it
    passes ``large.size`` (it is large, found out late).
    """
    large = tenant.large
    if large is None or tenant.count == "ingress" or used < cap * large.share:
        return None
    return large.size


# Every decision there is, made once: decide() runs on every request and allocates nothing.
_EXEMPT: Final = (Decision("exempt"), Decision("exempt", nudge=True))
_ALLOW: Final = (
    (Decision("allow"), Decision("allow", cut=True)),
    (Decision("allow", nudge=True), Decision("allow", nudge=True, cut=True)),
)
_BLOCKED_CAP: Final = Decision("block", reason="cap")
_BLOCKED_STORE: Final = Decision("block", reason="store")
_BLOCKED_CLIENT: Final = Decision("block", reason="client_share")
_BLOCKED_DAY: Final = Decision("block", reason="day")
_BLOCKED_CRAWLER: Final = Decision("block", reason="crawler")
_SHADOW: Final[dict[BlockReason, Decision]] = {
    reason: Decision("allow", nudge=True, would_block=reason)
    for reason in ("cap", "store", "client_share", "crawler", "day")
}
