"""``governor simulate``: which traffic, which tenant, then the replay and its report."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Final

from governor.config import Config, TenantConfig
from governor.errors import ConfigError, GovernorError, Problem
from governor.simulation.replay import simulate
from governor.simulation.report import document, table
from governor.simulation.traffic import expand, read_access_log, read_profile

SEED_PROFILE: Final = Path(__file__).with_name("seed-day.yaml")


class SimulationError(GovernorError):
    """The simulation cannot run as asked; the message says why."""


def simulate_command(
    config: Config, traffic: str | None, tenant_name: str | None, *, as_json: bool
) -> str:
    """Replay ``traffic`` (a profile, an access log, or the seed profile) for one tenant."""
    tenant = _tenant(config, tenant_name)
    path = SEED_PROFILE if traffic is None else Path(traffic)
    started = time.monotonic()
    if path.suffix in (".yaml", ".yml"):
        hits = expand(read_profile(path), tenant.timezone)
    else:
        hits = read_access_log(path, tenant.name)
    if not hits:
        raise ConfigError([Problem(str(path), None, "", f"no request of tenant {tenant.name!r}")])
    runs = simulate(tenant, hits)
    took = time.monotonic() - started
    if as_json:
        doc = document(runs, tenant=tenant.name, requests=len(hits))
        doc["seconds"] = round(took, 3)
        return json.dumps(doc, indent=2)
    day = dt.datetime.fromtimestamp(hits[0].time, tenant.timezone).date().isoformat()
    title = (
        f"governor simulate: tenant {tenant.name}, {len(hits):,} requests from {path} "
        f"(from {day}, {tenant.timezone.key}), replayed in {took:.1f} s"
    )
    return table(runs, title=title)


def _tenant(config: Config, name: str | None) -> TenantConfig:
    if name is not None:
        tenant = config.tenant(name)
        if tenant is None:
            names = ", ".join(t.name for t in config.tenants[:10])
            raise SimulationError(f"no tenant {name!r} in {config.path} (it has: {names})")
        return tenant
    if len(config.tenants) == 1:
        return config.tenants[0]
    raise SimulationError(
        f"{config.path} has {len(config.tenants)} tenants: name one with --tenant"
    )
