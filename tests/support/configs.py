"""Governor config files for tests that run governor (in-process, as ``governor serve``, in
benchmarks and the soak): one tenant ``site`` on its own free port, SQLite in ``state/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port


def write_config(
    folder: Path,
    *,
    upstream: str,
    cap: str = "1 GiB",
    listen: str | list[Any] | None = None,
    tenant: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    others: dict[str, dict[str, Any]] | None = None,
    **top: Any,
) -> Path:
    """A governor config with one tenant ``site`` on hosts site.test and *.site.test."""
    site: dict[str, Any] = {
        "hosts": ["site.test", "*.site.test"],
        "upstream": upstream,
        "daily_cap": cap,
    }
    site.update(tenant or {})
    doc: dict[str, Any] = {
        "listen": listen or f"127.0.0.1:{free_port()}",
        "store": "sqlite:///state/usage.db",
        "flush_interval": "50ms",
        # admission off: these configs drive tenants to their cap with downloads that
        # cross it, the behaviour admission (on by default) exists to stop; the tests of
        # admission turn it on (tests/functional/test_admission.py).
        "defaults": {
            "timezone": "Asia/Seoul",
            "reset_at": "00:00",
            "admission": "off",
            **(defaults or {}),
        },
        "tenants": {"site": site, **(others or {})},
    }
    doc.update(top)
    path = folder / "governor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
