"""Configs with many tenants, written line by line (a 100,000-tenant file never sits in memory).

Tenant ``t<i>`` answers the one host ``t<i>.scale.test``; every tenant has the same upstream
(the origin serving ``/1k.bin``), the same timezone and a cap no run reaches. nginx gets the
same hosts as a ``map $host $upstream`` with one entry each, all naming one upstream block.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.configs import _nginx_main

DOMAIN = "scale.test"
CAP = "1024 TiB"  # far above anything a run sends


def host(i: int) -> str:
    """The one host of tenant ``t<i>``."""
    return f"t{i}.{DOMAIN}"


def governor_yaml(
    path: Path,
    *,
    tenants: int,
    listen: int,
    admin: int,
    upstream: int,
    store: str,
    flush_interval: str = "1s",
    store_timeout: str = "500ms",
) -> Path:
    """A governor config with ``tenants`` tenants ``t0`` .. ``t<tenants-1>``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write(
            f"listen: 127.0.0.1:{listen}\n"
            f"admin_listen: 127.0.0.1:{admin}\n"
            f"store: {store}\n"
            f"store_timeout: {store_timeout}\n"
            f"flush_interval: {flush_interval}\n"
            'access_log: "off"\n'
            "timeouts:\n  shutdown: 5s\n"
            f"defaults:\n  timezone: UTC\n  daily_cap: {CAP}\n"
            "tenants:\n"
        )
        up = f"http://127.0.0.1:{upstream}"
        for i in range(tenants):
            f.write(f"  t{i}:\n    hosts: [{host(i)}]\n    upstream: {up}\n")
    return path


def nginx_map(folder: Path, *, tenants: int, listen: int, upstream: int) -> Path:
    """nginx proxying by a generated ``map $host $upstream`` of ``tenants`` entries."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nginx.conf"
    with path.open("w") as f:
        f.write(_nginx_main(folder))
        f.write(
            f"  upstream origin {{\n    server 127.0.0.1:{upstream};\n    keepalive 64;\n  }}\n"
            "  map_hash_max_size 262144;\n  map_hash_bucket_size 128;\n"
            '  map $host $upstream {\n    default "";\n'
        )
        for i in range(tenants):
            f.write(f"    {host(i)} origin;\n")
        f.write(
            "  }\n"
            "  server {\n"
            f"    listen 127.0.0.1:{listen} default_server backlog=4096;\n"
            "    location / {\n"
            '      if ($upstream = "") { return 404; }\n'
            "      proxy_pass http://$upstream;\n"
            "      proxy_http_version 1.1;\n"
            '      proxy_set_header Connection "";\n'
            "      proxy_set_header Host $host;\n"
            "    }\n  }\n}\n"
        )
    return path


SPREAD_LUA = """\
local hosts = {}
for i = 0, %(active)d - 1 do hosts[i + 1] = "t" .. i .. ".%(domain)s" end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/1k.bin", {Host = hosts[(n %% %(active)d) + 1]})
end
"""


def spread_lua(folder: Path, active: int, done_hook: str) -> Path:
    """A wrk script sending each request to the next of ``active`` tenants' hosts."""
    path = folder / f"spread-{active}.lua"
    path.write_text(SPREAD_LUA % {"active": active, "domain": DOMAIN} + done_hook)
    return path
