"""A governor with a plain and a TLS listener, certificates from a test CA: what the TLS
tests share. Tenant ``site`` (site.test, *.site.test) has its own certificate; tenant
``other`` (other.test) has none and gets the listener's (default.test)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.support import RawClient, free_port
from tests.support.certs import CA, Pair, make_ca, make_cert


@dataclass
class TLSSite:
    gov: Governor
    ca: CA
    site: Pair  # site.test and *.site.test
    default: Pair  # the listener's: default.test
    certs: Path  # the folder the certificates are in

    @property
    def plain_port(self) -> int:
        return self.gov.ports[0]

    @property
    def tls_port(self) -> int:
        return self.gov.ports[1]

    def context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client context that trusts the test CA (and only it)."""
        ctx = ssl.create_default_context(cafile=str(self.ca.path))
        for name, version in versions.items():
            setattr(ctx, name, version)
        return ctx

    async def connect(
        self, server_name: str = "site.test", port: int | None = None
    ) -> tuple[RawClient, ssl.SSLObject]:
        """A byte-counting client over TLS (its counts are plaintext: see the relay)."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port or self.tls_port,
            ssl=self.context(),
            server_hostname=server_name,
        )
        return RawClient(reader, writer), writer.get_extra_info("ssl_object")


def listen(**tls: Any) -> list[Any]:
    return [
        f"127.0.0.1:{free_port()}",
        {
            "address": f"127.0.0.1:{free_port()}",
            "tls": {"certificates": [{"cert": "certs/default.pem", "key": "certs/default.key"}]}
            | tls,
        },
    ]


async def start_tls_site(make_governor: GovernorFactory, folder: Path, **options: Any) -> TLSSite:
    """The governor above, its config in ``folder``; ``options`` as for make_governor."""
    certs = folder / "certs"
    ca = make_ca(certs)
    default = make_cert(ca, certs, ["default.test"], stem="default")
    site = make_cert(ca, certs, ["site.test", "*.site.test"], stem="site")
    tenant = {"tls": {"cert": "certs/site.pem", "key": "certs/site.key"}}
    tenant |= options.pop("tenant", {})
    listen_tls = options.pop("listen_tls", {})
    gov = await make_governor(listen=listen(**listen_tls), tenant=tenant, **options)
    return TLSSite(gov, ca, site, default, certs)
