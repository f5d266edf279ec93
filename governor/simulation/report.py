"""What a simulation found, as a table for people or a JSON document for programs.

For each run (the tenant as configured, and with the cap only): the bytes served against
the cap, when the cap was reached, and for pages, large files, crawlers and the heaviest
visitor, the minutes in which one of their requests was refused (or cut): *dark minutes*.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final
from zoneinfo import ZoneInfo

from governor.simulation.replay import CATEGORIES, Category, Run
from governor.sizes import format_size

_REASONS: Final = {
    "cap": "the cap",
    "store": "the store",
    "client_share": "its share (client_share)",
    "crawler": "crawlers paused",
    "large": "large files first",
    "admission": "admission",
}


def _clock(unix: float, zone: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(unix, zone).strftime("%H:%M")


def _span(category: Category, zone: ZoneInfo) -> str:
    """``"0 min"`` or ``"420 min (17:02-23:59)"``."""
    minutes = category.minutes
    if not minutes:
        return "0 min"
    first, last = min(minutes) * 60, max(minutes) * 60
    return f"{len(minutes)} min ({_clock(first, zone)}-{_clock(last, zone)})"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def table(runs: tuple[Run, Run], *, title: str) -> str:
    """The runs side by side, then who was refused what in each."""
    configured, bare = runs
    zone = configured.tenant.timezone
    rows: list[tuple[str, str, str]] = [
        (
            "served",
            f"{format_size(configured.served)} ({_share(configured.served, configured.cap)})",
            f"{format_size(bare.served)} ({_share(bare.served, bare.cap)})",
        ),
        ("cap", format_size(configured.cap), format_size(bare.cap)),
        (
            "cap reached at",
            "-" if configured.capped_at is None else _clock(configured.capped_at, zone),
            "-" if bare.capped_at is None else _clock(bare.capped_at, zone),
        ),
    ]
    for name in CATEGORIES:
        rows.append(
            (
                f"{name} dark",
                _span(configured.categories[name], zone),
                _span(bare.categories[name], zone),
            )
        )
    width = max(len(r[0]) for r in rows) + 2
    middle = max(len(r[1]) for r in rows) + 2
    lines = [title, "", f"{'':<{width}}{configured.label:<{middle}}{bare.label}"]
    lines += [f"{a:<{width}}{b:<{middle}}{c}" for a, b, c in rows]
    for run in runs:
        lines += ["", f"Who was refused what ({run.label}):"]
        lines += [f"  {_who(run.categories[name])}" for name in CATEGORIES]
    return "\n".join(lines)


def _who(c: Category) -> str:
    head = (
        f"{c.name}: {c.requests:,} requests, {format_size(c.asked)} asked, "
        f"{format_size(c.served)} served"
    )
    parts = []
    if c.refused:
        why = ", ".join(f"{_REASONS.get(r, r)} {n:,}" for r, n in c.reasons.most_common())
        parts.append(f"{c.refused:,} refused ({why})")
    if c.cut:
        parts.append(f"{c.cut:,} cut at the cap")
    if c.paced:
        parts.append(f"{c.paced:,} paced")
    return head + ("; " + "; ".join(parts) if parts else "; none refused")


def document(runs: tuple[Run, Run], *, tenant: str, requests: int) -> dict[str, Any]:
    """The runs as JSON-ready data."""
    zone = runs[0].tenant.timezone

    def run_doc(run: Run) -> dict[str, Any]:
        return {
            "served_bytes": run.served,
            "cap_bytes": run.cap,
            "cap_reached_at": None
            if run.capped_at is None
            else dt.datetime.fromtimestamp(run.capped_at, zone).isoformat(timespec="seconds"),
            "categories": {
                name: {
                    "requests": c.requests,
                    "asked_bytes": c.asked,
                    "served_bytes": c.served,
                    "refused": c.refused,
                    "cut": c.cut,
                    "paced": c.paced,
                    "reasons": dict(c.reasons),
                    "dark_minutes": len(c.minutes),
                }
                for name, c in run.categories.items()
            },
        }

    return {
        "tenant": tenant,
        "requests": requests,
        "as_configured": run_doc(runs[0]),
        "cap_only": run_doc(runs[1]),
    }
