"""The ``governor`` command: argument parsing → config → action.

The only module that exits the process or prints to a terminal. Every expected
failure (bad arguments, an invalid config, an unreachable store) ends with a
clear message on stderr and a non-zero status, never a traceback.

``check`` and ``serve`` agree: both load the file and run the preflight (what the
file names on this machine, see :mod:`governor.process.preflight`), so ``check`` passes what
``serve`` accepts, and both print problems as ``FILE:LINE: key: what``. What only
the start itself can find (a port in use, a store that refuses) is a
:class:`~governor.errors.StartError` in the same form.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from governor.accounts import spool
from governor.accounts.runtime import cap_reached_at
from governor.accounts.top import MAX_LIMIT, top_document
from governor.config import Config, load_config
from governor.core.ledger import is_blocked
from governor.core.periods import period_at
from governor.core.top import DIMENSIONS
from governor.errors import ConfigError, GovernorError, StartError
from governor.process.preflight import preflight
from governor.sizes import format_size, parse_size
from governor.store import open_store


class AdminCallError(GovernorError):
    """``governor reset`` / ``grant`` could not do what was asked; the message says why."""


class _Version(argparse.Action):
    """``--version``: the version and the build (compiled or not), and exits. An action of
    its own: telling the build imports the hot modules, which no other command needs first."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from governor.build import governor_version, running

        print(f"governor {governor_version()} ({running().describe()})")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="governor",
        description="A reverse proxy that meters each site's daily data transfer "
        "and serves a notice once its cap is reached.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="say which governor this is")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "-c", "--config", required=True, type=_path, metavar="PATH", help="the YAML config file"
        )
        p.set_defaults(subparser=p)  # what a misused command prints its own usage with
        return p

    serve = with_config("serve", "run the proxy")
    # Internal: how the supervisor (workers > 1) starts each worker (process/supervisor.py).
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--worker-channel", type=int, default=None, help=argparse.SUPPRESS)
    with_config("check", "validate the config file and exit (0: valid, 1: problems listed)")
    usage = with_config("usage", "show today's usage per tenant, read from the store")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    reset = with_config(
        "reset", "set a tenant's count for today back to zero, through the running governor"
    )
    reset.add_argument("tenant", metavar="TENANT", help="the tenant's name in the config")
    reset.add_argument("--json", action="store_true", help="print the new usage as JSON")
    grant = with_config(
        "grant", "give a tenant SIZE more transfer for today, through the running governor"
    )
    grant.add_argument("tenant", metavar="TENANT", help="the tenant's name in the config")
    grant.add_argument("size", metavar="SIZE", help='how much more, e.g. "500 MB" or 1GiB')
    grant.add_argument("--json", action="store_true", help="print the new usage as JSON")
    top = with_config("top", "show what used a tenant's allowance, read from the store")
    top.add_argument("tenant", metavar="TENANT", help="the tenant's name in the config")
    top.add_argument(
        "--by",
        choices=("client", "path", "agent", "referrer"),
        action="append",
        help="one dimension (repeat for more; default: all four)",
    )
    top.add_argument("--period", metavar="YYYY-MM-DD", help="a past period (default: the current)")
    top.add_argument("--limit", type=int, default=10, metavar="N", help="items per list (1-100)")
    top.add_argument("--json", action="store_true", help="print JSON instead of tables")
    simulate = with_config(
        "simulate",
        "replay a day of traffic through the decision code, with and without the features "
        "that keep a site up, and report who was refused what (no sockets, no store)",
    )
    simulate.add_argument(
        "--traffic",
        metavar="FILE",
        help="governor's access log (plain or JSON), or a traffic profile (.yaml); "
        "default: the built-in profile of the seed story",
    )
    simulate.add_argument("--tenant", metavar="TENANT", help="the tenant to replay")
    simulate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (130 after Ctrl-C before
    serving, as a shell reports SIGINT, and without a traceback)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 130


def _path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return text


def _main(argv: Sequence[str] | None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if extra:  # the command's own usage, not governor's (argparse gives the top level's)
        subparser: argparse.ArgumentParser = args.subparser
        subparser.error(f"unrecognized arguments: {' '.join(extra)}")
    worker: int | None = getattr(args, "worker_index", None)
    prefix = "" if worker is None else f"worker {worker} "
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    # A worker's supervisor ran it already, before any worker started.
    if args.command in ("check", "serve") and worker is None:
        warnings: list[str] = []
        problems = preflight(config, warnings=warnings)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        if args.command == "check":
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
    try:
        if args.command == "check":
            n = len(config.tenants)
            print(f"{config.path}: ok ({n} tenant{'s' if n != 1 else ''})")
            for note in spool.in_use(config.spool, config.workers) if config.spool else []:
                print(f"{config.path}: note: {note}")
            return 0
        if args.command == "usage":
            rows = asyncio.run(usage_rows(config, now=time.time()))
            print(json.dumps(rows, indent=2) if args.json else _usage_table(rows))
            return 0
        if args.command == "top":
            docs = asyncio.run(top_lists(config, args, now=time.time()))
            print(json.dumps(docs, indent=2) if args.json else _top_tables(docs))
            return 0
        if args.command == "simulate":
            from governor.simulation.command import simulate_command

            print(simulate_command(config, args.traffic, args.tenant, as_json=args.json))
            return 0
        if args.command in ("reset", "grant"):
            size = getattr(args, "size", None)
            row = asyncio.run(admin_command(config, args.command, args.tenant, size))
            print(json.dumps(row, indent=2) if args.json else _admin_line(args.command, row))
            return 0
        if worker is None and config.workers > 1:
            from governor.process.supervisor import supervise

            return supervise(config)
        from governor.process.lifeline import Lifeline, join
        from governor.process.serve import run

        lifeline: Lifeline | None = None
        if args.worker_channel is not None:
            config, lifeline = join(args.worker_channel, config)
        run(config, worker=worker, lifeline=lifeline)
        return 0
    except StartError as exc:
        print(exc.problem, file=sys.stderr)
        return 1
    except GovernorError as exc:
        print(f"governor: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # not expected: every known one is a StartError; still no traceback
        print(f"governor: {_os_error(exc)}", file=sys.stderr)
        return 1


def _os_error(exc: OSError) -> str:
    """An OS error with the file it was about, if any: ``No such file or directory: '/x'``."""
    what = exc.strerror or str(exc)
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    return f"{what}: {' -> '.join(repr(str(n)) for n in names)}" if names else what


async def usage_rows(config: Config, *, now: float) -> list[dict[str, Any]]:
    """Today's usage per tenant, straight from the store."""
    store = open_store(config.store, timeout=config.store_timeout, history_days=config.history_days)
    await store.open()
    try:
        periods = {
            t.name: period_at(now, t.timezone, t.reset_at, t.period, t.week_starts)
            for t in config.tenants
        }
        keys = [(name, p.key) for name, p in periods.items()]
        totals = await store.totals(keys)
        grants = await store.grants(keys)
        since: dict[str, str | None] = {}
        for tenant in config.tenants:  # shadow mode at the cap: since when (buckets)
            key = (tenant.name, periods[tenant.name].key)
            cap = tenant.daily_cap + grants.get(key, 0)
            if not tenant.enforce and is_blocked(totals.get(key, 0), cap):
                when = await cap_reached_at(store, key[0], key[1], cap, tenant.timezone)
                since[tenant.name] = None if when is None else when.isoformat()
    finally:
        await store.close()
    rows = []
    for tenant in config.tenants:
        period = periods[tenant.name]
        used = totals.get((tenant.name, period.key), 0)
        granted = grants.get((tenant.name, period.key), 0)
        cap = tenant.daily_cap + granted
        at_cap = is_blocked(used, cap)
        shadow: dict[str, object] = {} if tenant.enforce else {"would_block": at_cap}
        if tenant.name in since:
            shadow["would_block_since"] = since[tenant.name]
        rows.append(
            {
                "tenant": tenant.name,
                "period": period.key,
                "used_bytes": used,
                "cap_bytes": cap,
                "daily_cap_bytes": tenant.daily_cap,
                "granted_bytes": granted,
                "resets_at": period.resets_at(tenant.timezone).isoformat(),
                "timezone": tenant.timezone.key,
                "period_kind": tenant.period,
                "blocked": at_cap and tenant.enforce,
                "enforced": tenant.enforce,
                **shadow,
            }
        )
    return rows


async def top_lists(
    config: Config, args: argparse.Namespace, *, now: float
) -> list[dict[str, Any]]:
    """The tenant's top lists for a period, straight from the store."""
    tenant = config.tenant(args.tenant)
    if tenant is None:
        raise AdminCallError(f"no tenant {args.tenant!r} in {config.path}")
    if not 1 <= args.limit <= MAX_LIMIT:
        raise AdminCallError(f"--limit: a whole number from 1 to {MAX_LIMIT}, not {args.limit}")
    period = (
        args.period
        or period_at(now, tenant.timezone, tenant.reset_at, tenant.period, tenant.week_starts).key
    )
    try:
        dt.date.fromisoformat(period)
    except ValueError:
        raise AdminCallError(f"--period: a date like 2026-03-10, not {period!r}") from None
    store = open_store(config.store, timeout=config.store_timeout, history_days=config.history_days)
    await store.open()
    try:
        total = (await store.totals([(tenant.name, period)]))[(tenant.name, period)]
        return [
            await top_document(store, tenant.name, period, by, args.limit, total)
            for by in args.by or DIMENSIONS
        ]
    finally:
        await store.close()


def _top_tables(docs: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for doc in docs:
        total = doc["total_bytes"]
        out.append(
            f"{doc['tenant']} {doc['period']}: top by {doc['by']} of {format_size(total)} "
            f"(each within {format_size(doc['error_bytes'])})"
        )
        if not doc["items"]:
            out.append("  (nothing recorded)")
        for row in doc["items"]:
            out.append(
                f"  {100 * row['share']:5.1f}%  {format_size(row['bytes']):>10}  "
                f"{row['requests']:>8,} req  {row['item']}"
            )
        out.append("")
    return "\n".join(out).rstrip()


def _usage_table(rows: list[dict[str, Any]]) -> str:
    head = ("TENANT", "PERIOD", "USED", "CAP", "USED%", "RESETS AT", "STATE")
    lines = [head]
    for r in rows:
        pct = 100.0 * r["used_bytes"] / r["cap_bytes"] if r["cap_bytes"] else 0.0
        when = dt.datetime.fromisoformat(r["resets_at"]).astimezone(ZoneInfo(r["timezone"]))
        resets = when.strftime("%Y-%m-%d %H:%M %Z")
        lines.append(
            (
                r["tenant"],
                r["period"],
                format_size(r["used_bytes"]),
                format_size(r["cap_bytes"]),
                f"{pct:.1f}%",
                resets,
                "BLOCKED" if r["blocked"] else "would block" if r.get("would_block") else "open",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


ADMIN_TIMEOUT: Final = 10.0  # seconds for one admin API call from the command line


def admin_url(config: Config) -> str:
    """The base URL of the running governor's admin listener, from ``admin_listen``."""
    if config.admin_listen is None:
        raise AdminCallError(
            f"no admin_listen in {config.path}: reset and grant talk to the running "
            "governor's admin API, so set admin_listen (e.g. 127.0.0.1:9090) and restart it"
        )
    host, port = config.admin_listen
    # A wildcard listener is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def admin_command(
    config: Config, command: str, tenant: str, size: str | None = None
) -> dict[str, Any]:
    """``reset`` or ``grant`` (``size`` more) through the running governor's admin API.

    Returns the tenant's usage afterwards, as the API reports it; every failure raises
    :class:`AdminCallError` with a one-line message.
    """
    import aiohttp

    base = admin_url(config)
    body: dict[str, Any] | None = None
    if command == "grant":
        try:
            nbytes = parse_size(size)
        except ValueError as exc:
            raise AdminCallError(f"bad size: {exc}") from None
        if nbytes <= 0:
            raise AdminCallError(f"bad size: {size!r}: a grant must be more than 0 bytes")
        body = {"bytes": nbytes}
    url = f"{base}/api/v1/tenants/{urllib.parse.quote(tenant, safe='')}/{command}"
    headers = {}
    if config.admin_token is not None:
        headers["Authorization"] = f"Bearer {config.admin_token}"
    timeout = aiohttp.ClientTimeout(total=ADMIN_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json=body, headers=headers) as resp,
        ):
            status = resp.status
            text = await resp.text(errors="replace")
    except aiohttp.ClientConnectorError:
        raise AdminCallError(
            f"nothing listens on {base} (admin_listen in {config.path}): is governor running?"
        ) from None
    except TimeoutError:
        raise AdminCallError(
            f"the admin API at {base} did not answer within {ADMIN_TIMEOUT:g} s"
        ) from None
    except aiohttp.ClientError as exc:
        raise AdminCallError(
            f"the admin API at {base} failed: {exc or type(exc).__name__}"
        ) from None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    if status == 200 and isinstance(doc, dict):
        return doc
    if status == 401:
        hint = (
            f"{config.path} sets no admin_token_file"
            if config.admin_token is None
            else f"check admin_token_file in {config.path}"
        )
        raise AdminCallError(f"the admin token was refused by {base} ({hint})")
    if status == 404:
        raise AdminCallError(f"no tenant {tenant!r} in the running governor's config")
    if isinstance(error, str):
        raise AdminCallError(f"{command} refused ({status}): {error}")
    raise AdminCallError(
        f"unexpected answer {status} from {base}: is admin_listen governor's admin listener?"
    )


def _admin_line(command: str, row: dict[str, Any]) -> str:
    """One line for people: what was done and the tenant's usage now."""
    used, cap = int(row["used_bytes"]), int(row["cap_bytes"])
    pct = 100.0 * used / cap if cap else 0.0
    when = dt.datetime.fromisoformat(str(row["resets_at"]))
    zone = row.get("timezone")
    if isinstance(zone, str):
        when = when.astimezone(ZoneInfo(zone))
    done = "count reset" if command == "reset" else "granted"
    granted = int(row.get("granted_bytes", 0))
    extra = f", {format_size(granted)} granted today" if granted else ""
    state = "BLOCKED" if row["blocked"] else "open"
    return (
        f"{row['tenant']}: {done}; now {format_size(used)} of {format_size(cap)} used "
        f"({pct:.1f}%){extra}, {state}; resets at {when.strftime('%Y-%m-%d %H:%M %Z')}"
    )
