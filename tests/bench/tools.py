"""The programs the benchmark drives (found, or installed with apt-get as root) and the machine."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# program -> the Debian package that ships it
PACKAGES: dict[str, str] = {
    "nginx": "nginx",
    "haproxy": "haproxy",
    "wrk": "wrk",
    "redis-server": "redis-server",
    "curl": "curl",
    "openssl": "openssl",  # s_time: new TLS connections per second
}
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"]
)


@dataclass(frozen=True)
class Tools:
    nginx: str
    haproxy: str
    wrk: str
    redis_server: str
    curl: str
    openssl: str


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def _missing() -> list[str]:
    return [name for name in PACKAGES if _which(name) is None]


def _install(packages: list[str]) -> None:
    """apt-get install ``packages`` when we are root; otherwise say what to run and exit."""
    command = "apt-get install -y --no-install-recommends " + " ".join(packages)
    if os.geteuid() != 0 or _which("apt-get") is None:
        raise SystemExit(
            f"bench: missing {', '.join(packages)}; install them (Debian/Ubuntu) with:\n"
            f"  sudo apt-get update && sudo {command}"
        )
    print(f"bench: installing {' '.join(packages)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(command.split(), check=True, env=env)


def ensure_tools() -> Tools:
    """Every program the benchmark needs, installing the missing ones if we may."""
    missing = _missing()
    if missing:
        _install(sorted({PACKAGES[name] for name in missing}))
        still = _missing()
        if still:
            raise SystemExit(f"bench: still missing after apt-get: {', '.join(still)}")
    found = {name: _which(name) or name for name in PACKAGES}
    return Tools(
        nginx=found["nginx"],
        haproxy=found["haproxy"],
        wrk=found["wrk"],
        redis_server=found["redis-server"],
        curl=found["curl"],
        openssl=found["openssl"],
    )


def _first_line(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "?"


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "?"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine(tools: Tools) -> dict[str, str]:
    """What the numbers were measured on."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "governor": _package_version("governor"),
        # The build the governors under test run (they inherit this environment).
        "build": _first_line([sys.executable, "-m", "governor", "--version"]),
        "aiohttp": _package_version("aiohttp"),
        "uvloop": _package_version("uvloop"),
        "nginx": _first_line([tools.nginx, "-v"]),
        "haproxy": _first_line([tools.haproxy, "-v"]),
        "wrk": _first_line([tools.wrk, "-v"]),
        "redis": _first_line([tools.redis_server, "--version"]),
        "curl": _first_line([tools.curl, "--version"]),
        "openssl": _first_line([tools.openssl, "version"]),
    }
