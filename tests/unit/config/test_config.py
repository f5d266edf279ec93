"""The config loader: every valid form, every problem with its exact file, line and key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governor.config import (
    Config,
    NoticeConfig,
    Timeouts,
    UpstreamURL,
    load_config,
    loader,
    parse_config,
)
from governor.errors import ConfigError, Problem
from governor.sizes import format_size

REPO = Path(__file__).resolve().parents[3]
TEMPLATE = "<p>$tenant used $used of $cap; back at $resets_at_local</p>\n"


def cfg(
    *,
    listen: str | None = "127.0.0.1:8080",
    hosts: str | None = "[demo.example]",
    upstream: str | None = "http://127.0.0.1:8000",
    daily_cap: str | None = "1 MiB",
    tail: str = "",
) -> str:
    """A config whose lines are fixed: listen 1, tenants 2, demo 3, hosts 4, upstream 5,
    daily_cap 6; ``tail`` starts at line 7. A key given as None leaves a comment line."""

    def line(indent: str, key: str, value: str | None) -> str:
        return f"{indent}# no {key}\n" if value is None else f"{indent}{key}: {value}\n"

    return (
        line("", "listen", listen)
        + "tenants:\n"
        + "  demo:\n"
        + line("    ", "hosts", hosts)
        + line("    ", "upstream", upstream)
        + line("    ", "daily_cap", daily_cap)
        + tail
    )


def block(text: str) -> str:
    return textwrap.dedent(text)


def write(tmp_path: Path, text: str, name: str = "governor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[Problem]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return info.value.problems


def where(tmp_path: Path, text: str) -> list[tuple[int | None, str]]:
    return [(p.line, p.key) for p in problems(tmp_path, text)]


def only(tmp_path: Path, text: str) -> Problem:
    found = problems(tmp_path, text)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


# --- valid configurations ------------------------------------------------------------


def test_minimal_config_takes_every_default(tmp_path: Path) -> None:
    config = load(tmp_path, cfg())
    assert config.path == tmp_path / "governor.yaml"
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    assert config.store == f"sqlite:///{tmp_path}/state/usage.db"
    assert config.flush_interval == 1.0
    assert config.history_days == 35
    assert config.trusted_proxies == ()
    assert config.timeouts == Timeouts()
    assert config.store_timeout == 0.5
    assert config.workers == 1
    assert config.spool == tmp_path / "state" / "spool.json"
    (demo,) = config.tenants
    assert demo.name == "demo"
    assert demo.hosts == ("demo.example",)
    assert demo.upstream == UpstreamURL(
        url="http://127.0.0.1:8000", scheme="http", host="127.0.0.1", port=8000, base_path=""
    )
    assert demo.daily_cap == 2**20
    assert demo.timezone == ZoneInfo("UTC")
    assert demo.reset_at == dt.time(0, 0)
    assert (demo.count, demo.at_cap) == ("egress", "finish")
    assert demo.notice == NoticeConfig(status=503, template_path=None, template=None)
    assert (demo.exempt_paths, demo.exempt_clients) == ((), ())
    assert demo.on_store_failure == "open"
    assert config.tenant("demo") is demo
    assert config.tenant("other") is None


def test_the_full_contract(tmp_path: Path) -> None:
    (tmp_path / "notice.html").write_text(TEMPLATE, encoding="utf-8")
    config = load(
        tmp_path,
        """\
        listen: "[::1]:9090"
        store: sqlite:///data/usage.db
        flush_interval: 250ms
        history_days: 7
        trusted_proxies: [10.0.0.0/8, 192.168.1.7, "::1", 172.16.5.4/12]
        timeouts:
          upstream_connect: 2s
          upstream_response: 1m
          keepalive: 500ms
          shutdown: 10
        defaults:
          timezone: Asia/Seoul
          reset_at: 00:00
          count: both
          at_cap: cut
          daily_cap: 500 MB
          exempt_paths: [/health]
          exempt_clients: [127.0.0.1]
          notice:
            status: 509
            template: notice.html
        tenants:
          usmle-korea:
            hosts: [UsmleKorea.Example., "*.usmlekorea.example"]
            upstream: https://backend.internal/app/
            daily_cap: 2 GiB
            exempt_paths: [/robots.txt, /.well-known/acme-challenge/]
            exempt_clients: [203.0.113.0/24]
            notice:
              status: 429
          blog_2.0:
            hosts: ["[2001:db8::1]", 198.51.100.7]
            upstream: http://[::1]:8001
            reset_at: 12:30
            timezone: America/New_York
            count: ingress
            at_cap: finish
        """,
    )
    assert (config.listen_host, config.listen_port) == ("::1", 9090)
    assert config.store == f"sqlite:///{tmp_path}/data/usage.db"
    assert config.flush_interval == 0.25
    assert config.history_days == 7
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("172.16.0.0/12"),
    )
    assert config.timeouts == Timeouts(
        upstream_connect=2.0, upstream_response=60.0, keepalive=0.5, shutdown=10.0
    )
    assert config.timeouts.shutdown_delay == 0.0  # the default: the drain starts at once
    korea, blog = config.tenants
    assert korea.name == "usmle-korea"
    assert korea.hosts == ("usmlekorea.example", "*.usmlekorea.example")
    assert korea.upstream == UpstreamURL(
        url="https://backend.internal/app",
        scheme="https",
        host="backend.internal",
        port=443,
        base_path="/app",
    )
    assert korea.daily_cap == 2 * 2**30
    assert korea.timezone == ZoneInfo("Asia/Seoul")
    assert korea.reset_at == dt.time(0, 0)
    assert (korea.count, korea.at_cap) == ("both", "cut")
    # notice merges key by key: the status is the tenant's, the template the default's
    assert korea.notice == NoticeConfig(
        status=429, template_path=tmp_path / "notice.html", template=TEMPLATE
    )
    assert korea.exempt_paths == ("/robots.txt", "/.well-known/acme-challenge/")
    assert korea.exempt_clients == (ipaddress.ip_network("203.0.113.0/24"),)

    assert blog.name == "blog_2.0"
    assert blog.hosts == ("2001:db8::1", "198.51.100.7")
    assert blog.upstream == UpstreamURL(
        url="http://[::1]:8001", scheme="http", host="::1", port=8001, base_path=""
    )
    assert blog.daily_cap == 500_000_000  # from defaults
    assert blog.timezone == ZoneInfo("America/New_York")
    assert blog.reset_at == dt.time(12, 30)  # unquoted: a YAML 1.1 sexagesimal int
    assert (blog.count, blog.at_cap) == ("ingress", "finish")
    assert blog.notice.status == 509
    assert blog.notice.template == TEMPLATE
    assert blog.exempt_paths == ("/health",)
    assert blog.exempt_clients == (ipaddress.ip_network("127.0.0.1/32"),)


def test_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITE_PORT", raising=False)
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(REPO / "config" / "governor.yaml", folder / "governor.yaml")
    shutil.copy(REPO / "config" / "admin.token", folder / "admin.token")
    (folder / "notice.html").write_text(TEMPLATE, encoding="utf-8")
    config = load_config(folder / "governor.yaml")
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    assert config.store == f"sqlite:///{tmp_path}/state/usage.db"
    (demo,) = config.tenants
    assert demo.name == "demo"
    assert demo.hosts == ("localhost", "127.0.0.1", "*.localhost")
    assert demo.upstream.url == "http://127.0.0.1:8000"
    assert demo.daily_cap == 200 * 1024
    assert demo.timezone == ZoneInfo("Asia/Seoul")
    assert demo.reset_at == dt.time(0, 0)
    assert demo.notice.status == 503
    assert demo.notice.template_path == folder / "notice.html"
    assert demo.exempt_paths == ("/robots.txt",)
    assert config.admin_token is not None
    assert config.admin_token.startswith("demo-")
    monkeypatch.setenv("SITE_PORT", "8123")  # what `make run SITE_PORT=8123` sets
    (demo,) = load_config(folder / "governor.yaml").tenants
    assert demo.upstream.url == "http://127.0.0.1:8123"


@pytest.mark.skipif(
    not (REPO / "config" / "notice.html").exists(), reason="config/notice.html not written yet"
)
def test_example_config_loads_in_place() -> None:
    config = load_config(str(REPO / "config" / "governor.yaml"))
    assert config.store == f"sqlite:///{REPO}/state/usage.db"


def test_parse_config_resolves_against_the_given_path(tmp_path: Path) -> None:
    config = parse_config(cfg(tail="store: sqlite:///../u.db\n"), tmp_path / "etc" / "g.yaml")
    assert config.path == tmp_path / "etc" / "g.yaml"
    assert config.store == f"sqlite:///{tmp_path}/u.db"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:1", "0.0.0.0", 1),
        ("localhost:65535", "localhost", 65535),
        ('"[::1]:8080"', "::1", 8080),
        ("'[::]:80'", "::", 80),
    ],
)
def test_listen_forms(tmp_path: Path, listen: str, host: str, port: int) -> None:
    config = load(tmp_path, cfg(listen=listen))
    assert (config.listen_host, config.listen_port) == (host, port)


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("sqlite:///usage.db", "sqlite:///{tmp}/usage.db"),
        ("sqlite:///./a/../b/usage.db", "sqlite:///{tmp}/b/usage.db"),
        ("sqlite:////var/lib/governor/usage.db", "sqlite:////var/lib/governor/usage.db"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://user:pw@cache:6380", "rediss://user:pw@cache:6380"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis+sentinel://s1:26379/mymaster", "redis+sentinel://s1:26379/mymaster"),
        ("redis+cluster://c1:7000", "redis+cluster://c1:7000"),
    ],
)
def test_store_forms(tmp_path: Path, store: str, expected: str) -> None:
    config = load(tmp_path, cfg(tail=f"store: {store}\n"))
    assert config.store == expected.format(tmp=tmp_path)


@pytest.mark.parametrize(
    ("value", "seconds"), [("1s", 1.0), ("100ms", 0.1), ("2", 2.0), ("0.5", 0.5), ("5m", 300.0)]
)
def test_flush_interval_forms(tmp_path: Path, value: str, seconds: float) -> None:
    assert load(tmp_path, cfg(tail=f"flush_interval: {value}\n")).flush_interval == seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("00:00", dt.time(0)),
        ('"00:00"', dt.time(0)),
        ("'7:05'", dt.time(7, 5)),
        ("23:59:59", dt.time(23, 59, 59)),
        ("12:30", dt.time(12, 30)),
        ("1:30:00", dt.time(1, 30)),
    ],
)
def test_reset_at_forms(tmp_path: Path, value: str, expected: dt.time) -> None:
    config = load(tmp_path, cfg(tail=f"    reset_at: {value}\n"))
    assert config.tenants[0].reset_at == expected


def test_null_sections_are_empty(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        cfg(
            tail="    exempt_paths:\n    exempt_clients:\ntrusted_proxies:\ntimeouts:\ndefaults:\n"
        ),
    )
    assert config.trusted_proxies == ()
    assert config.timeouts == Timeouts()
    assert config.tenants[0].exempt_paths == ()


def test_daily_cap_may_come_from_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, cfg(daily_cap=None, tail="defaults:\n  daily_cap: 10 KiB\n"))
    assert config.tenants[0].daily_cap == 10 * 1024


def test_tenant_overrides_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        cfg(
            tail=block("""\
                count: ingress
                exempt_paths: [/own]
            defaults:
              count: both
              exempt_paths: [/default]
              daily_cap: 5 GB
            """)
        ),
    )
    (demo,) = config.tenants
    assert (demo.count, demo.exempt_paths, demo.daily_cap) == ("ingress", ("/own",), 2**20)


def test_tenant_template_overrides_default_template(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text("A $tenant", encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.html").write_text("B $host", encoding="utf-8")
    config = load(
        tmp_path,
        cfg(
            tail=block(f"""\
                notice: {{template: {sub / "b.html"}}}
            defaults:
              notice: {{status: 402, template: a.html}}
            """)
        ),
    )
    assert config.tenants[0].notice == NoticeConfig(
        status=402, template_path=sub / "b.html", template="B $host"
    )


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("http://127.0.0.1", ("http://127.0.0.1", "http", "127.0.0.1", 80, "")),
        ("https://App.Example/", ("https://app.example", "https", "app.example", 443, "")),
        (
            "http://app:8080/base/path/",
            ("http://app:8080/base/path", "http", "app", 8080, "/base/path"),
        ),
        ("HTTP://app", ("http://app", "http", "app", 80, "")),
        ("http://[::1]:81/x", ("http://[::1]:81/x", "http", "::1", 81, "/x")),
        # a Docker Compose or Kubernetes service name
        (
            "http://my_app.my_ns:8080",
            ("http://my_app.my_ns:8080", "http", "my_app.my_ns", 8080, ""),
        ),
    ],
)
def test_upstream_forms(
    tmp_path: Path, upstream: str, expected: tuple[str, str, str, int, str]
) -> None:
    got = load(tmp_path, cfg(upstream=upstream)).tenants[0].upstream
    assert (got.url, got.scheme, got.host, got.port, got.base_path) == expected


def test_hosts_are_normalised(tmp_path: Path) -> None:
    config = load(tmp_path, cfg(hosts='[Demo.Example., "*.Demo.Example", "[::1]", 10.0.0.1, x-1]'))
    assert config.tenants[0].hosts == ("demo.example", "*.demo.example", "::1", "10.0.0.1", "x-1")


def test_a_wildcard_and_its_apex_may_belong_to_different_tenants(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        cfg(
            tail="  other:\n"
            '    hosts: ["*.demo.example"]\n'
            "    upstream: http://127.0.0.1:9000\n"
            "    daily_cap: 1 KB\n"
        ),
    )
    assert [t.hosts for t in config.tenants] == [("demo.example",), ("*.demo.example",)]


def test_double_quoted_values_take_environment_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SITE_PORT", "8123")
    monkeypatch.setenv("EMPTY", "")
    monkeypatch.delenv("UNSET", raising=False)
    config = load(
        tmp_path,
        cfg(
            listen='"127.0.0.1:${UNSET-8081}"',
            hosts='["${UNSET:-a}.example", "b${EMPTY}.example", "c${EMPTY:-c}.example"]',
            upstream='"http://127.0.0.1:${SITE_PORT}"',
            daily_cap='"${UNSET-2} MiB"',
        ),
    )
    assert config.listen_port == 8081
    (demo,) = config.tenants
    assert demo.hosts == ("a.example", "b.example", "cc.example")
    assert demo.upstream.port == 8123
    assert demo.daily_cap == 2 * 2**20


def test_environment_references_only_in_double_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIR", "x")
    tail = "    exempt_paths:\n      - '/${DIR}'\n      - \"/${DIR}\"\n      - /plain${DIR}\n"
    config = load(tmp_path, cfg(tail=tail))
    assert config.tenants[0].exempt_paths == ("/${DIR}", "/x", "/plain${DIR}")


def test_environment_reference_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET", raising=False)
    monkeypatch.setenv("SITE_PORT", "abc")
    found = problems(
        tmp_path,
        cfg(
            listen='"127.0.0.1:${UNSET}"',
            hosts='["${1BAD}.example"]',
            upstream='"http://127.0.0.1:${SITE_PORT}"',
            daily_cap='"${UNSET"',
        ),
    )
    assert [(p.line, p.key) for p in found] == [
        (1, "listen"),
        (4, "tenants.demo.hosts[0]"),
        (5, "tenants.demo.upstream"),
        (6, "tenants.demo.daily_cap"),
    ]
    assert "environment variable UNSET is not set" in found[0].message
    assert "${NAME}" in found[1].message
    assert "http://127.0.0.1:abc" in found[2].message
    assert "${NAME-default}" in found[3].message


# --- problems ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_config_path_that_is_not_a_regular_file_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    """A FIFO would block the read for ever, /dev/zero fill the memory."""
    if kind == "fifo":
        path = tmp_path / "fifo.yaml"
        os.mkfifo(path)
        says = "is not a regular file"
    elif kind == "device":
        path, says = Path("/dev/zero"), "is not a regular file"
    else:
        path, says = tmp_path, "cannot read the file: Is a directory"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert str(problem) == f"{path}: {says}"


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"listen: a\n# caf\xe9\ntenants: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.key) == (2, "")
    assert "is not valid UTF-8" in problem.message


def test_a_config_larger_than_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_CONFIG_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("listen: a\n" + "# filler\n" * 200)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert str(problem) == f"{path}: is larger than {format_size(1000)}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.key) == (str(path), None, "")
    assert "cannot read the file" in problem.message
    assert str(problem) == f"{path}: cannot read the file: No such file or directory"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)  # a directory
    assert info.value.problems[0].line is None


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_bytes(b"listen: \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8") as info:
        load_config(path)
    assert info.value.problems[0].line == 1


def test_problem_rendering(tmp_path: Path) -> None:
    path = write(tmp_path, cfg(daily_cap="lots"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:6: tenants.demo.daily_cap: 'lots' is not a size: expected a number with "
        "an optional unit B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
    )


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("listen: [\n", 2, "", "invalid YAML"),
        ("listen: a\n\tb: c\n", 2, "", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", 2, "", "expected a single document"),
        ("listen: *nope\n", 1, "", "invalid YAML"),
        ("a: 1\nb: x\x00\n", 2, "", "invalid YAML"),
        ("éééééé: 1\nb: x\x07\n", 2, "", "invalid YAML"),  # libyaml counts bytes, not characters
        ("- listen\n", 1, "", "the top level must be a mapping"),
        ("just text\n", 1, "", "top level must be a mapping (listen, tenants, ...), got a string"),
        ("a:\n  b: 1\n c: 2\n", 3, "", "invalid YAML"),  # indentation: where YAML gave up
        # Something unclosed: where it began, with its key, and where YAML gave up.
        ("listen: 'x\n", 1, "listen", "quoted scalar that begins here: found unexpected end"),
        (
            "tenants:\n  demo:\n    hosts: [a.test\n    upstream: http://x\n",
            3,
            "tenants.demo.hosts",
            "flow sequence that begins here: ",
        ),
        ("tenants:\n  - {hosts: a\n", 2, "tenants", "flow mapping that begins here"),
    ],
)
def test_yaml_problems(tmp_path: Path, text: str, line: int, key: str, fragment: str) -> None:
    problem = only(tmp_path, text)
    assert (problem.line, problem.key) == (line, key)
    assert fragment in problem.message


def test_an_unclosed_bracket_says_where_yaml_gave_up_too(tmp_path: Path) -> None:
    problem = only(tmp_path, "listen: a\ntenants:\n  demo:\n    hosts: [a.test\n    upstream: x\n")
    assert (problem.line, problem.key) == (4, "tenants.demo.hosts")
    assert problem.message.endswith("at line 5")
    assert "expected ',' or ']'" in problem.message


def test_libyaml_composes_where_pyyaml_has_it() -> None:
    from governor.config import composer

    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML was built without libyaml")
    assert composer.DEFAULT_PARSER == "libyaml"


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    problem = only(tmp_path, text)
    assert (problem.line, problem.key) == (None, "")
    assert "empty" in problem.message


# (cfg keyword arguments, line, key, message fragment)
CASES: list[tuple[dict[str, Any], int, str, str]] = [
    # listen
    ({"listen": None}, 2, "listen", "required key missing"),  # where the root mapping starts
    ({"listen": "8080"}, 1, "listen", "is not host:port"),
    ({"listen": "127.0.0.1"}, 1, "listen", "is not host:port"),
    ({"listen": ":8080"}, 1, "listen", "is not host:port"),
    ({"listen": "127.0.0.1:0"}, 1, "listen", "port must be a number from 1 to 65535"),
    ({"listen": "127.0.0.1:65536"}, 1, "listen", "port must be a number from 1 to 65535"),
    ({"listen": "127.0.0.1:http"}, 1, "listen", "port must be a number"),
    ({"listen": "::1:8080"}, 1, "listen", "an IPv6 address must be in brackets, e.g. [::1]:8080"),
    ({"listen": "'[127.0.0.1]:80'"}, 1, "listen", "is not an IPv6 address"),
    ({"listen": "bad_host:80"}, 1, "listen", "is not a valid host name or IP address"),
    ({"listen": "[a, '127.0.0.1:80']"}, 1, "listen[0]", "'a' is not host:port"),
    ({"listen": "[]"}, 1, "listen", "the list is empty"),
    ({"listen": "[{tls: {}}]"}, 1, "listen[0].address", "required key missing"),
    ({"listen": "~"}, 1, "listen", "expected host:port, got nothing (null)"),
    (
        {"listen": "[{address: '127.0.0.1:443', tls: {}}]"},
        1,
        "listen[0].tls.certificates",
        "required key missing",
    ),
    (
        {"listen": "[{address: '127.0.0.1:443', tls: {certificates: [{cert: a.pem}]}}]"},
        1,
        "listen[0].tls.certificates[0].key",
        "required key missing (a PEM file)",
    ),
    (
        {"listen": "[{address: '127.0.0.1:443', tls: {certificates: [{cert: a, key: b}], x: 1}}]"},
        1,
        "listen[0].tls.x",
        "unknown key",
    ),
    (
        {"listen": "[{address: '127.0.0.1:443', tls: {certificates: []}}]"},
        1,
        "listen[0].tls.certificates",
        "the list is empty",
    ),
    (
        {
            "listen": "[{address: '127.0.0.1:443', tls: {certificates: [{cert: a, key: b}], "
            "min_version: TLSv1.0}}]"
        },
        1,
        "listen[0].tls.min_version",
        "'TLSv1.0': expected TLSv1.2 or TLSv1.3",
    ),
    (
        {
            "listen": "[{address: '127.0.0.1:443', tls: {certificates: [{cert: a, key: b}], "
            "min_version: TLSv1.3, max_version: TLSv1.2}}]"
        },
        1,
        "listen[0].tls.min_version",
        "TLSv1.3 is above max_version TLSv1.2",
    ),
    ({"listen": "['127.0.0.1:80', '127.0.0.1:80']"}, 1, "listen[1]", "is listed twice"),
    ({"tail": "defaults:\n  tls: {cert: a, key: b}\n"}, 8, "defaults.tls", "belongs in each"),
    ({"tail": "    hsts: sometimes\n"}, 7, "tenants.demo.hsts", "expected on, off or a max-age"),
    (
        {"tail": "    https_redirect: on\n"},
        7,
        "tenants.demo.https_redirect",
        "no listener serves TLS",
    ),
    # root keys
    ({"tail": "store: postgres://db/x\n"}, 7, "store", "is not a supported store"),
    ({"tail": "store: sqlite://rel.db\n"}, 7, "store", "is not a supported store"),
    ({"tail": "store: sqlite:///\n"}, 7, "store", "is not a supported store"),
    ({"tail": "store: sqlite:///state/\n"}, 7, "store", "is not a supported store"),
    ({"tail": "store: redis://127.0.0.1:notaport/0\n"}, 7, "store", "not 'notaport'"),
    ({"tail": "store: redis://127.0.0.1:6379/abc\n"}, 7, "store", "integer, not 'abc'"),
    ({"tail": "store: redis://u:pw@h:70000/0\n"}, 7, "store", "'redis://u:***@h:70000/0'"),
    ({"tail": "store: rediss://a,b/0\n"}, 7, "store", "takes one host"),
    ({"tail": "store: unix://host/x.sock\n"}, 7, "store", "a unix socket URL has no host"),
    ({"tail": "admin_listen: 127.0.0.1:8080\n"}, 7, "admin_listen", "also an address of listen"),
    ({"tail": "admin_listen: 0.0.0.0:8080\n"}, 7, "admin_listen", "a port of its own"),
    ({"tail": "store: redis+sentinel://h:1\n"}, 7, "store", "service_name"),
    ({"tail": "store: redis+cluster://h:1/2\n"}, 7, "store", "only database 0"),
    ({"tail": "store: redis://h:1/0?x=1\n"}, 7, "store", "unsupported query parameter"),
    ({"tail": "flush_interval: 0\n"}, 7, "flush_interval", "must be greater than zero"),
    ({"tail": "flush_interval: -1s\n"}, 7, "flush_interval", "must not be negative"),
    ({"tail": "flush_interval: soon\n"}, 7, "flush_interval", "'soon' is not a duration"),
    ({"tail": "flush_interval: .inf\n"}, 7, "flush_interval", "is not a duration"),
    ({"tail": "flush_interval: [1s]\n"}, 7, "flush_interval", "expected a duration"),
    ({"tail": "history_days: 0\n"}, 7, "history_days", "not a whole number of days from 1 to"),
    ({"tail": "history_days: 800000\n"}, 7, "history_days", "days from 1 to 36600"),
    ({"tail": "history_days: 1.5\n"}, 7, "history_days", "not a whole number of days"),
    ({"tail": "history_days: yes\n"}, 7, "history_days", "not a whole number of days"),
    (
        {"tail": "trusted_proxies: 10.0.0.0/8\n"},
        7,
        "trusted_proxies",
        "expected a list of CIDR networks or IP addresses, got a string",
    ),
    (
        {"tail": "trusted_proxies: {a: b}\n"},
        7,
        "trusted_proxies",
        "expected a list of CIDR networks or IP addresses, got a mapping",
    ),
    (
        {"tail": "trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n"},
        9,
        "trusted_proxies[1]",
        "'10.0.0.0/33' is not an IP address or CIDR network",
    ),
    (
        {"tail": "trusted_proxies: [[1]]\n"},
        7,
        "trusted_proxies[0]",
        "expected a CIDR network or IP address, got a list",
    ),
    (
        {"tail": "lisen: x\n"},
        7,
        "lisen",
        "unknown key (did you mean listen?); allowed keys here: "
        "listen, store, store_timeout, spool, workers, admin_listen, admin_token_file, "
        "webhook_url, log_format, access_log, flush_interval, history_days, "
        "trusted_proxies, top_clients, timeouts, limits, defaults, tenants",
    ),
    ({"tail": "listen: 127.0.0.1:9\n"}, 7, "listen", "duplicate key (first at line 1)"),
    ({"tail": "[a]: 1\n"}, 7, "", "keys must be strings, got a list"),
    # timeouts
    ({"tail": "timeouts:\n  shutdown: 0s\n"}, 8, "timeouts.shutdown", "must be greater than zero"),
    ({"tail": "timeouts:\n  keepalive: 1y\n"}, 8, "timeouts.keepalive", "is not a duration"),
    (
        {"tail": "timeouts:\n  connect: 1s\n"},
        8,
        "timeouts.connect",
        "unknown key (did you mean upstream_connect?); allowed keys here: upstream_connect, "
        "upstream_response, keepalive, shutdown, request_header, websocket_idle, send, "
        "tls_handshake, shutdown_delay, body_min_rate",
    ),
    (
        {"tail": "timeouts:\n  shutdown_delay: -1s\n"},
        8,
        "timeouts.shutdown_delay",
        "must not be negative",
    ),
    (
        {"tail": "timeouts:\n  shutdown_delay: soon\n"},
        8,
        "timeouts.shutdown_delay",
        "is not a duration",
    ),
    ({"tail": "timeouts: [1s]\n"}, 7, "timeouts", "expected a mapping, got a list"),
    # tenants
    ({"tail": "tenants: {}\n"}, 7, "tenants", "duplicate key (first at line 2)"),
    ({"hosts": None}, 3, "tenants.demo.hosts", "required key missing"),
    ({"upstream": None}, 3, "tenants.demo.upstream", "required key missing"),
    (
        {"daily_cap": None},
        3,
        "tenants.demo.daily_cap",
        "required key missing (here or in defaults)",
    ),
    (
        {"tail": "    hosts: [x.example]\n"},
        7,
        "tenants.demo.hosts",
        "duplicate key (first at line 4)",
    ),
    (
        {"tail": "    dayly_cap: 1 KB\n"},
        7,
        "tenants.demo.dayly_cap",
        "unknown key (did you mean daily_cap?); allowed keys here: hosts, upstream, tls, "
        "daily_cap, cap, period, week_starts, timezone, reset_at, count, at_cap, notice, "
        "exempt_paths, exempt_clients",
    ),
    (
        {"tail": "  -bad:\n    hosts: [b.example]\n    upstream: http://b\n    daily_cap: 1 B\n"},
        7,
        "tenants.-bad",
        "a tenant name must be letters, digits",
    ),
    # hosts
    ({"hosts": "[]"}, 4, "tenants.demo.hosts", "at least one host is required"),
    ({"hosts": "~"}, 4, "tenants.demo.hosts", "at least one host is required"),
    (
        {"hosts": "demo.example"},
        4,
        "tenants.demo.hosts",
        "expected a list of host names, got a string",
    ),
    ({"hosts": "{a: b}"}, 4, "tenants.demo.hosts", "expected a list of host names, got a mapping"),
    (
        {"hosts": "[a.example, {b: c}]"},
        4,
        "tenants.demo.hosts[1]",
        "expected a host name, got a mapping",
    ),
    ({"hosts": "[demo.example:8080]"}, 4, "tenants.demo.hosts[0]", "a host may not carry a port"),
    ({"hosts": '["*"]'}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": '["a.*.example"]'}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": '["*.*.example"]'}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": '["w*.example"]'}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": "[under_score.example]"}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": "[-lead.example]"}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": "[a..example]"}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": "[1.2.3]"}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": "[999.1.1.1]"}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": '["a b"]'}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    ({"hosts": f"[{'a' * 64}.example]"}, 4, "tenants.demo.hosts[0]", "is not a valid host"),
    (
        {"hosts": "[demo.example, Demo.Example.]"},
        4,
        "tenants.demo.hosts[1]",
        "host 'demo.example' is listed twice (first at line 4)",
    ),
    # upstream
    ({"upstream": "ftp://x"}, 5, "tenants.demo.upstream", "expected an http:// or https:// URL"),
    ({"upstream": "127.0.0.1:8000"}, 5, "tenants.demo.upstream", "expected an http://"),
    ({"upstream": "http://x/?a=1"}, 5, "tenants.demo.upstream", "may not have a query"),
    ({"upstream": "'http://x/#top'"}, 5, "tenants.demo.upstream", "may not have a query"),
    ({"upstream": "http://u:p@x/"}, 5, "tenants.demo.upstream", "may not carry credentials"),
    ({"upstream": "http:///path"}, 5, "tenants.demo.upstream", "expected a host name"),
    ({"upstream": "http://x:99999"}, 5, "tenants.demo.upstream", "is not a valid URL"),
    ({"upstream": "http://x:0"}, 5, "tenants.demo.upstream", "port must be a number"),
    ({"upstream": "http://[::1"}, 5, "tenants.demo.upstream", "is not a valid URL"),
    ({"upstream": "'http://x/a b'"}, 5, "tenants.demo.upstream", "may not contain spaces"),
    ({"upstream": "http://-bad-host"}, 5, "tenants.demo.upstream", "expected a host name"),
    (
        {"upstream": "[http://x]"},
        5,
        "tenants.demo.upstream",
        "expected an http:// or https:// URL, got a list",
    ),
    # daily_cap
    ({"daily_cap": "0"}, 6, "tenants.demo.daily_cap", "must be greater than zero"),
    ({"daily_cap": "0 GiB"}, 6, "tenants.demo.daily_cap", "must be greater than zero"),
    ({"daily_cap": "-1 GiB"}, 6, "tenants.demo.daily_cap", "must not be negative"),
    (
        {"daily_cap": "2 GB/s"},
        6,
        "tenants.demo.daily_cap",
        "'2 GB/s' is not a size: expected a number with an optional unit B, KB, MB, GB, TB, "
        "KiB, MiB, GiB, TiB",
    ),
    ({"daily_cap": "true"}, 6, "tenants.demo.daily_cap", "'true' is not a size"),
    (
        {"daily_cap": "{a: 1}"},
        6,
        "tenants.demo.daily_cap",
        "expected a size such as 2 GiB, got a mapping",
    ),
    # per-tenant shared keys
    (
        {"tail": "    timezone: Asia/Seol\n"},
        7,
        "tenants.demo.timezone",
        "unknown time zone 'Asia/Seol'; expected an IANA name like Asia/Seoul",
    ),
    ({"tail": "    timezone: Asia\n"}, 7, "tenants.demo.timezone", "unknown time zone 'Asia'"),
    ({"tail": "    timezone: ../etc/passwd\n"}, 7, "tenants.demo.timezone", "unknown time zone"),
    ({"tail": "    timezone: ''\n"}, 7, "tenants.demo.timezone", "unknown time zone"),
    (
        {"tail": "    reset_at: 24:00\n"},
        7,
        "tenants.demo.reset_at",
        "'24:00' is not a time of day; expected HH:MM or HH:MM:SS (24-hour)",
    ),
    ({"tail": "    reset_at: '12:60'\n"}, 7, "tenants.demo.reset_at", "is not a time of day"),
    ({"tail": "    reset_at: noon\n"}, 7, "tenants.demo.reset_at", "is not a time of day"),
    ({"tail": "    reset_at: 12\n"}, 7, "tenants.demo.reset_at", "is not a time of day"),
    (
        {"tail": "    count: all\n"},
        7,
        "tenants.demo.count",
        "'all' is not allowed; expected one of egress, ingress, both",
    ),
    (
        {"tail": "    count: Egress\n"},
        7,
        "tenants.demo.count",
        "expected one of egress, ingress, both",
    ),
    (
        {"tail": "    at_cap: stop\n"},
        7,
        "tenants.demo.at_cap",
        "'stop' is not allowed; expected one of finish, cut",
    ),
    (
        {"tail": "    at_cap: [cut]\n"},
        7,
        "tenants.demo.at_cap",
        "expected one of finish, cut, got a list",
    ),
    (
        {"tail": "    exempt_paths: [robots.txt]\n"},
        7,
        "tenants.demo.exempt_paths[0]",
        "'robots.txt' must start with '/'",
    ),
    (
        {"tail": "    exempt_paths: /robots.txt\n"},
        7,
        "tenants.demo.exempt_paths",
        "expected a list of paths, got a string",
    ),
    (
        {"tail": "    exempt_clients: [300.1.1.1]\n"},
        7,
        "tenants.demo.exempt_clients[0]",
        "'300.1.1.1' is not an IP address or CIDR network",
    ),
    (
        {"tail": "    notice: {status: 500}\n"},
        7,
        "tenants.demo.notice.status",
        "'500' is not an allowed notice status; expected one of 503, 509, 429, 402",
    ),
    (
        {"tail": "    notice: {status: abc}\n"},
        7,
        "tenants.demo.notice.status",
        "'abc' is not an allowed",
    ),
    (
        {"tail": "    notice: {colour: red}\n"},
        7,
        "tenants.demo.notice.colour",
        "unknown key; allowed keys here: status, template",
    ),
    ({"tail": "    notice: [503]\n"}, 7, "tenants.demo.notice", "expected a mapping, got a list"),
    (
        {"tail": "    notice:\n      template: missing.html\n"},
        8,
        "tenants.demo.notice.template",
        "cannot read template",
    ),
    # defaults
    (
        {"tail": "defaults:\n  hosts: [x]\n"},
        8,
        "defaults.hosts",
        "hosts belongs in each tenant, not in defaults",
    ),
    ({"tail": "defaults:\n  timezone: Mars/Base\n"}, 8, "defaults.timezone", "unknown time zone"),
    ({"tail": "defaults:\n  reset_at: 7pm\n"}, 8, "defaults.reset_at", "is not a time of day"),
    ({"tail": "defaults:\n  count: some\n"}, 8, "defaults.count", "expected one of"),
    ({"tail": "defaults:\n  at_cap: drop\n"}, 8, "defaults.at_cap", "expected one of finish, cut"),
    ({"tail": "defaults:\n  daily_cap: 1 GB per day\n"}, 8, "defaults.daily_cap", "is not a size"),
    (
        {"tail": "defaults:\n  notice:\n    status: 200\n"},
        9,
        "defaults.notice.status",
        "expected one of 503, 509, 429, 402",
    ),
    (
        {"tail": "defaults:\n  notice:\n    template: nope.html\n"},
        9,
        "defaults.notice.template",
        "cannot read template",
    ),
    (
        {"tail": "defaults:\n  exempt_clients: [nope]\n"},
        8,
        "defaults.exempt_clients[0]",
        "is not an IP address or CIDR network",
    ),
    ({"tail": "defaults: [a]\n"}, 7, "defaults", "expected a mapping, got a list"),
]


@pytest.mark.parametrize(
    ("kwargs", "line", "key", "fragment"), CASES, ids=[f"{c[2]}@{i}" for i, c in enumerate(CASES)]
)
def test_single_problem(
    tmp_path: Path, kwargs: dict[str, Any], line: int, key: str, fragment: str
) -> None:
    problem = only(tmp_path, cfg(**kwargs))
    assert (problem.line, problem.key) == (line, key), str(problem)
    assert fragment in problem.message, str(problem)


def test_missing_tenants(tmp_path: Path) -> None:
    problem = only(tmp_path, "# top\nlisten: 127.0.0.1:80\n")
    assert (problem.line, problem.key) == (2, "tenants")
    assert "required key missing" in problem.message


@pytest.mark.parametrize("value", ["{}", "", "~"])
def test_empty_tenants(tmp_path: Path, value: str) -> None:
    problem = only(tmp_path, f"listen: 127.0.0.1:80\ntenants: {value}\n")
    assert (problem.line, problem.key) == (2, "tenants")
    assert problem.message == "at least one tenant is required"


@pytest.mark.parametrize(
    ("value", "message"),
    [("[demo]", "expected a mapping, got a list"), ("demo", "expected a mapping, got a string")],
)
def test_tenants_must_be_a_mapping(tmp_path: Path, value: str, message: str) -> None:
    problem = only(tmp_path, f"listen: 127.0.0.1:80\ntenants: {value}\n")
    assert (problem.line, problem.key, problem.message) == (2, "tenants", message)


def test_a_tenant_must_be_a_mapping(tmp_path: Path) -> None:
    problem = only(tmp_path, "listen: 127.0.0.1:80\ntenants:\n  demo: yes\n")
    assert (problem.line, problem.key) == (3, "tenants.demo")
    assert problem.message == "expected a mapping, got a boolean"


def test_an_empty_tenant_lacks_every_required_key(tmp_path: Path) -> None:
    assert where(tmp_path, "listen: 127.0.0.1:80\ntenants:\n  demo:\n") == [
        (3, "tenants.demo.hosts"),
        (3, "tenants.demo.upstream"),
        (3, "tenants.demo.daily_cap"),
    ]


def test_missing_keys_are_reported_at_the_tenant_name(tmp_path: Path) -> None:
    text = """\
    listen: 127.0.0.1:80
    tenants:
      # the first tenant
      first:
        upstream: http://a

        daily_cap: 1 KB
    """
    problem = only(tmp_path, text)
    assert (problem.line, problem.key) == (4, "tenants.first.hosts")


TWO_TENANTS = """\
listen: 127.0.0.1:80
tenants:
  a:
    hosts: [shared.example, "*.wild.example", a.example]
    upstream: http://a
    daily_cap: 1 KB
  b:
    hosts:
      - b.example
      - {host}
    upstream: http://b
    daily_cap: 1 KB
"""


@pytest.mark.parametrize(
    ("host", "normalised"),
    [
        ("shared.example", "shared.example"),
        ("SHARED.example.", "shared.example"),
        ('"*.wild.example"', "*.wild.example"),
        ('"*.WILD.example"', "*.wild.example"),
    ],
)
def test_a_host_claimed_by_two_tenants(tmp_path: Path, host: str, normalised: str) -> None:
    problem = only(tmp_path, TWO_TENANTS.format(host=host))
    assert (problem.line, problem.key) == (10, "tenants.b.hosts[1]")
    assert problem.message == f"host {normalised!r} is already claimed by tenant 'a' (line 4)"


def test_a_host_claimed_by_two_tenants_even_if_the_first_is_broken(tmp_path: Path) -> None:
    text = TWO_TENANTS.format(host="a.example").replace("upstream: http://a", "upstream: ftp://a")
    assert where(tmp_path, text) == [(5, "tenants.a.upstream"), (10, "tenants.b.hosts[1]")]


def test_every_problem_is_collected_and_sorted_by_line(tmp_path: Path) -> None:
    text = """\
    tenants:
      demo:
        hosts: [ok.example, "bad host"]
        upstream: gopher://x
        daily_cap: 2 GB/s
        count: sideways
    timeouts:
      keepalive: -1s
    listen: nowhere
    history_days: 0
    colour: blue
    """
    assert where(tmp_path, text) == [
        (3, "tenants.demo.hosts[1]"),
        (4, "tenants.demo.upstream"),
        (5, "tenants.demo.daily_cap"),
        (6, "tenants.demo.count"),
        (8, "timeouts.keepalive"),
        (9, "listen"),
        (10, "history_days"),
        (11, "colour"),
    ]


def test_template_problems(tmp_path: Path) -> None:
    (tmp_path / "latin1.html").write_bytes(b"caf\xe9")
    (tmp_path / "typo.html").write_text("$tenant $usd $capp $$literal", encoding="utf-8")
    text = cfg(
        tail="    notice:\n"
        "      template: latin1.html\n"
        "  other:\n"
        "    hosts: [other.example]\n"
        "    upstream: http://o\n"
        "    daily_cap: 1 KB\n"
        "    notice:\n"
        "      template: typo.html\n"
        "  third:\n"
        "    hosts: [third.example]\n"
        "    upstream: http://t\n"
        "    daily_cap: 1 KB\n"
        "    notice:\n"
        "      template: .\n"
    )
    found = problems(tmp_path, text)
    assert [(p.line, p.key) for p in found] == [
        (8, "tenants.demo.notice.template"),
        (14, "tenants.other.notice.template"),
        (20, "tenants.third.notice.template"),
    ]
    assert "is not valid UTF-8" in found[0].message
    assert "unknown placeholders $usd, $capp" in found[1].message
    assert "cannot read template" in found[2].message


def test_alias_cycles_do_not_hang(tmp_path: Path) -> None:
    found = problems(tmp_path, "listen: &a [*a]\ntenants: &t {x: *t}\n")
    assert (1, "listen[0]") in [(p.line, p.key) for p in found]


# --- fuzz ----------------------------------------------------------------------------

FUZZ_PATH = Path("/nonexistent-governor-dir/governor.yaml")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_parse_config_on_any_text(text: str) -> None:
    try:
        config = parse_config(text, FUZZ_PATH)
    except ConfigError as exc:
        assert exc.problems
        return
    assert isinstance(config, Config)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["1s", "0", "2 GiB", "12:30", "00:00", "[::1]:80", "*.x", "http://x", "UTC"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
_BASE: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "store": "sqlite:////tmp/x.db",
    "flush_interval": "1s",
    "history_days": 3,
    "trusted_proxies": ["10.0.0.0/8"],
    "timeouts": {"keepalive": "5s"},
    "defaults": {"timezone": "UTC", "reset_at": "00:00", "notice": {"status": 503}},
    "tenants": {
        "demo": {
            "hosts": ["demo.example"],
            "upstream": "http://127.0.0.1:8000",
            "daily_cap": "1 MiB",
            "exempt_paths": ["/x"],
            "exempt_clients": ["::1"],
            "count": "egress",
            "at_cap": "cut",
        }
    },
}
_SLOTS = [
    ("listen",),
    ("store",),
    ("flush_interval",),
    ("history_days",),
    ("trusted_proxies",),
    ("timeouts",),
    ("timeouts", "keepalive"),
    ("defaults",),
    ("defaults", "timezone"),
    ("defaults", "reset_at"),
    ("defaults", "notice"),
    ("defaults", "notice", "status"),
    ("tenants",),
    ("tenants", "demo"),
    ("tenants", "demo", "hosts"),
    ("tenants", "demo", "upstream"),
    ("tenants", "demo", "daily_cap"),
    ("tenants", "demo", "exempt_paths"),
    ("tenants", "demo", "exempt_clients"),
    ("tenants", "demo", "count"),
    ("tenants", "demo", "at_cap"),
]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SLOTS), _VALUES)
def test_parse_config_on_any_value_in_any_slot(slot: tuple[str, ...], value: object) -> None:
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(_BASE))
    target = data
    for key in slot[:-1]:
        target = target[key]
    target[slot[-1]] = value
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        config = parse_config(text, FUZZ_PATH)
    except ConfigError as exc:
        assert exc.problems
        assert all(p.line is None or 1 <= p.line <= text.count("\n") + 1 for p in exc.problems)
        return
    assert isinstance(config, Config)


# --- several instances: store timeout, workers, spool, on_store_failure -----------------


def test_scale_out_keys(tmp_path: Path) -> None:
    tail = "store_timeout: 250ms\nworkers: 4\nspool: spool/pending.json\n"
    tail += "defaults:\n  on_store_failure: closed\n"
    config = load(tmp_path, cfg(tail=tail))
    assert config.store_timeout == 0.25
    assert config.workers == 4
    assert config.spool == tmp_path / "spool" / "pending.json"
    assert config.tenants[0].on_store_failure == "closed"


def test_workers_auto_is_the_cpu_count(tmp_path: Path) -> None:
    import os

    config = load(tmp_path, cfg(tail="workers: auto\n"))
    assert config.workers == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("tail", "key", "fragment"),
    [
        ("workers: 0\n", "workers", "from 1 to 256, or auto"),
        ("workers: many\n", "workers", "from 1 to 256, or auto"),
        ("store_timeout: soon\n", "store_timeout", "soon"),
        ("defaults:\n  on_store_failure: maybe\n", "defaults.on_store_failure", "open"),
    ],
)
def test_scale_out_key_problems(tmp_path: Path, tail: str, key: str, fragment: str) -> None:
    problem = only(tmp_path, cfg(tail=tail))
    assert (problem.line, problem.key) == (tail.count("\n") + 6, key)
    assert fragment in problem.message


def test_operator_surface_keys(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token-0123456789\n")
    tail = (
        "admin_listen: 127.0.0.1:9090\nadmin_token_file: token\n"
        "webhook_url: https://hooks.example/governor\nlog_format: json\n"
        "access_log: logs/access.log\ndefaults:\n  warn_at: [95%, 0.8]\n"
    )
    config = load(tmp_path, cfg(tail=tail))
    assert config.admin_listen == ("127.0.0.1", 9090)
    assert config.admin_token == "s3cret-token-0123456789"
    assert config.webhook_url == "https://hooks.example/governor"
    assert config.log_format == "json"
    assert config.access_log == str(tmp_path / "logs" / "access.log")
    assert config.tenants[0].warn_at == (0.8, 0.95)


@pytest.mark.parametrize(
    ("tail", "key", "fragment"),
    [
        ("admin_token_file: missing\n", "admin_token_file", "cannot read the token file"),
        ("defaults:\n  warn_at: [120%]\n", "defaults.warn_at[0]", "like 80% or 0.8"),
        ("log_format: xml\n", "log_format", "plain"),
        ("webhook_url: ftp://x\n", "webhook_url", "ftp"),
    ],
)
def test_operator_surface_problems(tmp_path: Path, tail: str, key: str, fragment: str) -> None:
    problem = only(tmp_path, cfg(tail=tail))
    assert problem.key == key
    assert fragment in problem.message


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0.0), ("0s", 0.0), ("5s", 5.0), ("250ms", 0.25)]
)
def test_shutdown_delay_is_a_duration_or_zero(tmp_path: Path, text: str, seconds: float) -> None:
    config = load(tmp_path, cfg(tail=f"timeouts:\n  shutdown_delay: {text}\n"))
    assert config.timeouts.shutdown_delay == seconds


def test_a_config_places_its_keys_for_later_messages(tmp_path: Path) -> None:
    """A port in use or a file that cannot be opened is reported like a loader problem."""
    config = load(tmp_path, cfg(tail="access_log: a.log\ntimeouts:\n  keepalive: 5s\n"))
    path = tmp_path / "governor.yaml"
    assert str(config.problem("access_log", "x")) == f"{path}:7: access_log: x"
    assert str(config.problem("listen", "y")) == f"{path}:1: listen: y"
    assert config.lines["timeouts.keepalive"] == 9
    # Not a tenant's keys: only the top level's are named after the load, and a line per
    # tenant key would cost a large config about 200 bytes a tenant.
    assert "tenants.demo.upstream" not in config.lines
    assert str(config.problem("spool", "z")) == f"{path}: spool: z"  # the default: no line


# --- admission (on unless turned off, in defaults or per tenant) ----------------------------


@pytest.mark.parametrize(
    ("tail", "admission"),
    [
        ("", True),
        ("defaults:\n  admission: off\n", False),
        ("defaults:\n  admission: false\n", False),
        ("defaults:\n  admission: on\n", True),
        ("defaults:\n  admission: true\n", True),
        ('defaults:\n  admission: "off"\n', False),
    ],
)
def test_admission_is_on_unless_turned_off(tmp_path: Path, tail: str, admission: bool) -> None:
    assert load(tmp_path, cfg(tail=tail)).tenants[0].admission is admission


def test_a_tenants_admission_overrides_the_defaults(tmp_path: Path) -> None:
    text = cfg(tail="    admission: on\ndefaults:\n  admission: off\n")
    assert load(tmp_path, text).tenants[0].admission is True
    text = cfg(tail="    admission: off\n")
    assert load(tmp_path, text).tenants[0].admission is False


def test_admission_takes_on_or_off_only(tmp_path: Path) -> None:
    problem = only(tmp_path, cfg(tail="defaults:\n  admission: maybe\n"))
    assert (problem.line, problem.key) == (8, "defaults.admission")
    assert "'maybe' is not allowed; expected one of on, off, true, false" in problem.message


# --- large (off unless set; size required, from 90% by default) ----------------------------


def test_large_is_off_unless_set(tmp_path: Path) -> None:
    assert load(tmp_path, cfg()).tenants[0].large is None


def test_large_takes_a_size_and_a_share_per_key_over_the_defaults(tmp_path: Path) -> None:
    tail = "    large: {from: 50%}\ndefaults:\n  large:\n    size: 1 MiB\n"
    large = load(tmp_path, cfg(tail=tail)).tenants[0].large
    assert large is not None
    assert (large.size, large.share) == (2**20, 0.5)
    large = load(tmp_path, cfg(tail="defaults:\n  large: {size: 5 MB}\n")).tenants[0].large
    assert large is not None
    assert (large.size, large.share) == (5_000_000, 0.9)  # from: 90% by default


@pytest.mark.parametrize(
    ("tail", "line", "key", "fragment"),
    [
        ("defaults:\n  large: {size: 1 MiB, from: 100%}\n", 8, "defaults.large.from", "below 100%"),
        ("defaults:\n  large: {size: big}\n", 8, "defaults.large.size", "size"),
        ("defaults:\n  large: {sise: 1 MiB}\n", 8, "defaults.large.sise", "did you mean size"),
        ("    large: {from: 50%}\n", 3, "tenants.demo.large.size", "required key missing"),
    ],
)
def test_large_problems_name_the_key_and_line(
    tmp_path: Path, tail: str, line: int, key: str, fragment: str
) -> None:
    problem = only(tmp_path, cfg(tail=tail))
    assert (problem.line, problem.key) == (line, key)
    assert fragment in problem.message


# --- pacing, client_share, crawlers (off unless set) -----------------------------------------


def test_pacing_client_share_and_crawlers_are_off_unless_set(tmp_path: Path) -> None:
    t = load(tmp_path, cfg()).tenants[0]
    assert (t.pacing, t.client_share, t.crawlers) == (None, None, None)


def test_pacing_client_share_and_crawlers_merge_over_the_defaults(tmp_path: Path) -> None:
    tail = (
        "    pacing: {floor: 32 KiB/s}\n"
        "    crawlers: {agents: [MyBot]}\n"
        "defaults:\n"
        "  pacing: {from: 40%}\n"
        "  client_share: 5%\n"
        "  crawlers: {share: 20%, clients: [10.0.0.0/8]}\n"
    )
    t = load(tmp_path, cfg(tail=tail)).tenants[0]
    assert t.pacing is not None
    assert (t.pacing.share, t.pacing.floor) == (0.4, 32 * 1024)
    assert t.client_share == 0.05
    assert t.crawlers is not None
    assert (t.crawlers.share, t.crawlers.agents) == (0.2, ("mybot",))
    assert [str(n) for n in t.crawlers.clients] == ["10.0.0.0/8"]
    plain = load(tmp_path, cfg(tail="    pacing: {}\n    crawlers: {}\n")).tenants[0]
    assert plain.pacing is not None
    assert (plain.pacing.share, plain.pacing.floor) == (0.5, 64 * 1024)
    assert plain.crawlers is not None
    assert plain.crawlers.share is None
    assert "googlebot" in plain.crawlers.agents
    assert "gptbot" in plain.crawlers.agents


@pytest.mark.parametrize(
    ("tail", "line", "key", "fragment"),
    [
        ("    client_share: 0%\n", 7, "tenants.demo.client_share", "above 0"),
        ("    client_share: lots\n", 7, "tenants.demo.client_share", "share of the cap"),
        ("    pacing: {floor: 0}\n", 7, "tenants.demo.pacing.floor", "above zero"),
        (
            "    pacing: {rate: 1 MiB}\n",
            7,
            "tenants.demo.pacing.rate",
            "allowed keys here: from, floor",
        ),
        ("    crawlers: {share: 150%}\n", 7, "tenants.demo.crawlers.share", "below 100%"),
        ("    crawlers: {agents: ['']}\n", 7, "tenants.demo.crawlers.agents[0]", "every request"),
        ("    crawlers: {clients: [10.0.0.300/8]}\n", 7, "tenants.demo.crawlers.clients[0]", ""),
    ],
)
def test_share_problems_name_the_key_and_line(
    tmp_path: Path, tail: str, line: int, key: str, fragment: str
) -> None:
    problem = only(tmp_path, cfg(tail=tail))
    assert (problem.line, problem.key) == (line, key)
    assert fragment in problem.message


# --- periods: day (daily_cap or cap), week and month (cap; daily_cap a guard) ------------------


def test_a_monthly_tenant_takes_cap_and_a_daily_guard(tmp_path: Path) -> None:
    tail = "    period: month\n    cap: 30 GiB\n    week_starts: sunday\n"
    t = load(tmp_path, cfg(tail=tail)).tenants[0]
    assert (t.period, t.daily_cap, t.day_guard, t.week_starts) == ("month", 30 * 2**30, 2**20, 6)
    plain = load(tmp_path, cfg(daily_cap=None, tail="    cap: 2 GiB\n")).tenants[0]
    assert (plain.period, plain.daily_cap, plain.day_guard) == ("day", 2 * 2**30, None)


@pytest.mark.parametrize(
    ("tail", "key", "fragment"),
    [
        ("    cap: 2 GiB\n", "tenants.demo.cap", "daily_cap is the day's spelling"),
        ("    period: month\n", "tenants.demo.cap", "required for a monthly period"),
        ("    period: fortnight\n", "tenants.demo.period", "day, week, month"),
        (
            "    period: week\n    cap: 1 GiB\n    week_starts: someday\n",
            "tenants.demo.week_starts",
            "monday",
        ),
    ],
)
def test_period_problems_name_the_key(tmp_path: Path, tail: str, key: str, fragment: str) -> None:
    problem = only(tmp_path, cfg(tail=tail))
    assert problem.key == key
    assert fragment in problem.message


@pytest.mark.parametrize("flow", [False, True])
def test_a_file_nested_a_thousand_deep_is_one_problem_not_a_traceback(
    tmp_path: Path, flow: bool
) -> None:
    depth = 1000
    if flow:
        text = "listen: a\nx: " + "{a: " * depth + "1" + "}" * depth + "\n"
    else:
        text = "listen: a\nx:\n" + "\n".join("  " * (i + 1) + "a:" for i in range(depth)) + " 1\n"
    problem = only(tmp_path, text)
    assert problem.key == ""
    assert problem.line is not None
    assert problem.line <= 2 + 65
    assert "invalid YAML" in problem.message
