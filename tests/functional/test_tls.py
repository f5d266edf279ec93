"""TLS termination: SNI picks the certificate, versions and ALPN, redirects and HSTS, the
forwarded scheme, certificate reloads and checks, metrics, and the hardening promises on a
TLS listener. Certificates come from a test CA (:mod:`tests.support.certs`), no network.
(Byte-exact counting over TLS: tests/functional/test_tls_counting.py.)"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import Served, governor, listen_port, spawn_serve
from tests.functional.tls_site import TLSSite, start_tls_site
from tests.support import RawClient, eventually, free_port, request, write_config
from tests.support.certs import make_ca, make_cert


@pytest.fixture
async def tls(make_governor: GovernorFactory, tmp_path: Path) -> TLSSite:
    return await start_tls_site(make_governor, tmp_path)


def served_certificate(port: int, server_name: str | None, ca: Path) -> x509.Certificate:
    """The certificate the listener on ``port`` serves for ``server_name`` (None: no SNI)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=server_name) as tls_sock,
    ):
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.rfc4514_string())


async def test_sni_picks_the_tenants_certificate_else_the_listeners(tls: TLSSite) -> None:
    port, ca = tls.tls_port, tls.ca.path
    names = {
        name: common_name(await asyncio.to_thread(served_certificate, port, name, ca))
        for name in ("site.test", "www.site.test", "SITE.TEST", "other.test", "nowhere.test")
    }
    assert names == {
        "site.test": "CN=site.test",
        "www.site.test": "CN=site.test",  # a wildcard host, as for Host
        "SITE.TEST": "CN=site.test",
        "other.test": "CN=default.test",  # a tenant without a certificate of its own
        "nowhere.test": "CN=default.test",
    }
    no_sni = await asyncio.to_thread(served_certificate, port, None, ca)
    assert common_name(no_sni) == "CN=default.test"


async def test_a_request_over_tls_with_alpn_and_the_forwarded_scheme(tls: TLSSite) -> None:
    ctx = tls.context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tls.tls_port, ssl=ctx, server_hostname="site.test"
    )
    sslobj = writer.get_extra_info("ssl_object")
    assert sslobj.selected_alpn_protocol() == "http/1.1"
    assert sslobj.version() == "TLSv1.3"
    client = RawClient(reader, writer)
    await client.send(request("GET", "/headers", "site.test"))
    resp = await client.response()
    await client.close()
    seen = dict(json.loads(resp.body)["headers"])
    assert seen["X-Forwarded-Proto"] == "https"
    plain = await RawClient.connect(tls.plain_port)
    await plain.send(request("GET", "/headers", "site.test"))
    seen = dict(json.loads((await plain.response()).body)["headers"])
    await plain.close()
    assert seen["X-Forwarded-Proto"] == "http"


async def test_versions_below_the_listeners_minimum_are_refused(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    site = await start_tls_site(make_governor, tmp_path, listen_tls={"min_version": "TLSv1.3"})
    old = site.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        await asyncio.open_connection(
            "127.0.0.1", site.tls_port, ssl=old, server_hostname="site.test"
        )
    client, sslobj = await site.connect()
    assert sslobj.version() == "TLSv1.3"
    await client.close()


async def test_default_settings_accept_tls_1_2_with_an_intermediate_cipher(tls: TLSSite) -> None:
    twelve = tls.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    _, writer = await asyncio.open_connection(
        "127.0.0.1", tls.tls_port, ssl=twelve, server_hostname="site.test"
    )
    sslobj = writer.get_extra_info("ssl_object")
    assert sslobj.version() == "TLSv1.2"
    assert sslobj.cipher()[0].startswith("ECDHE-ECDSA-AES128-GCM")  # Mozilla intermediate
    writer.close()


async def test_https_redirect_spares_acme_challenges_and_hsts_is_sent_on_https(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    tls = await start_tls_site(
        make_governor, tmp_path, tenant={"https_redirect": "on", "hsts": "365d"}
    )
    plain = await RawClient.connect(tls.plain_port)
    await plain.send(request("GET", "/a/b?c=d", "www.site.test:8080"))
    moved = await plain.response()
    await plain.send(request("HEAD", "/x", "site.test"))
    moved_head = await plain.response(method="HEAD")
    await plain.send(request("GET", "/.well-known/acme-challenge/token123", "site.test"))
    acme = await plain.response()
    await plain.close()
    assert moved.status == 308
    assert moved.header("Location") == f"https://www.site.test:{tls.tls_port}/a/b?c=d"
    assert moved_head.status == 308
    assert moved_head.body == b""
    assert acme.status == 200  # proxied to the site over plain HTTP, as ACME needs
    assert json.loads(acme.body) == {"path": "/.well-known/acme-challenge/token123"}
    assert acme.header("Strict-Transport-Security") is None  # never on plain HTTP
    client, _ = await tls.connect()
    await client.send(request("GET", "/bytes/10", "site.test"))
    secure = await client.response()
    await client.close()
    assert secure.status == 200
    assert secure.header("Strict-Transport-Security") == f"max-age={365 * 86400}"


def serial_served(port: int, ca: Path) -> int:
    return served_certificate(port, "site.test", ca).serial_number


async def test_a_reload_serves_a_renewed_certificate_and_keeps_open_connections(
    tls: TLSSite,
) -> None:
    before = await asyncio.to_thread(serial_served, tls.tls_port, tls.ca.path)
    client, _ = await tls.connect()
    await client.send(request("GET", "/bytes/10", "site.test"))
    assert (await client.response()).status == 200
    # certbot renews: new files where the config points.
    renewed = make_cert(tls.ca, tls.certs, ["site.test", "*.site.test"], stem="site", days=60)
    assert await tls.gov.reload()
    after = await asyncio.to_thread(serial_served, tls.tls_port, tls.ca.path)
    assert after != before
    assert after == x509.load_pem_x509_certificates(renewed.cert.read_bytes())[0].serial_number
    await client.send(request("GET", "/bytes/20", "site.test"))  # the old connection goes on
    assert (await client.response()).status == 200
    await client.close()
    expiry = tls.gov.metrics.registry.get_sample_value(
        "governor_certificate_expiry_timestamp_seconds",
        {"tenant": "site", "listener": "", "cert": str(renewed.cert)},
    )
    leaf = x509.load_pem_x509_certificates(renewed.cert.read_bytes())[0]
    assert expiry == leaf.not_valid_after_utc.timestamp()


async def test_a_reload_with_a_broken_certificate_is_rejected(tls: TLSSite) -> None:
    before = await asyncio.to_thread(serial_served, tls.tls_port, tls.ca.path)
    tls.site.key.write_text(tls.default.key.read_text())  # not the certificate's key
    assert not await tls.gov.reload()
    assert await asyncio.to_thread(serial_served, tls.tls_port, tls.ca.path) == before


async def test_metrics_name_listeners_handshakes_and_certificates(tls: TLSSite) -> None:
    client, _ = await tls.connect()
    await client.send(request("GET", "/bytes/10", "site.test"))
    assert (await client.response()).status == 200
    await client.close()
    garbage = await RawClient.connect(tls.tls_port)
    await garbage.send(b"\x00" * 64)
    assert await closed_without_answer(garbage)
    registry = tls.gov.metrics.registry
    address = f"127.0.0.1:{tls.tls_port}"
    sample = registry.get_sample_value
    await eventually(
        lambda: (
            sample("governor_tls_handshakes_total", {"listener": address, "result": "failed"}) == 1
        )
    )
    assert sample("governor_tls_handshakes_total", {"listener": address, "result": "ok"}) == 1
    await eventually(  # published at each flush
        lambda: (
            sample("governor_listener_requests_total", {"listener": address, "scheme": "https"})
            == 1
        )
    )
    leaf = x509.load_pem_x509_certificates(tls.default.cert.read_bytes())[0]
    assert (
        sample(
            "governor_certificate_expiry_timestamp_seconds",
            {"tenant": "", "listener": address, "cert": str(tls.default.cert)},
        )
        == leaf.not_valid_after_utc.timestamp()
    )


# --- hardening ------------------------------------------------------------------------


async def closed_without_answer(client: RawClient) -> bool:
    """The connection was closed with nothing but a TLS alert record, if that."""
    try:
        got = await asyncio.wait_for(client.reader.read(), timeout=5)
    except ConnectionResetError:
        got = b""
    finally:
        await client.close()
    return got == b"" or (got[0] == 0x15 and len(got) == 5 + got[4])


async def test_garbage_instead_of_a_client_hello_is_closed(tls: TLSSite) -> None:
    client = await RawClient.connect(tls.tls_port)
    await client.send(b"\x16\x03\x01\x00\x05hello")  # a record header, then no ClientHello
    assert await closed_without_answer(client)
    other = await RawClient.connect(tls.tls_port)
    await other.send(b"\x01\x02\x03 not tls at all")
    assert await closed_without_answer(other)


async def test_plain_http_on_the_tls_port_gets_a_400(tls: TLSSite) -> None:
    client = await RawClient.connect(tls.tls_port)
    await client.send(request("GET", "/", "site.test"))
    resp = await client.response()
    assert resp.status == 400
    assert b"plain HTTP request on an HTTPS port" in resp.body
    assert await closed_without_answer(client)


async def test_a_slow_handshake_is_closed_at_its_deadline(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    tls = await start_tls_site(make_governor, tmp_path, timeouts={"tls_handshake": "300ms"})
    silent = await RawClient.connect(tls.tls_port)
    partial = await RawClient.connect(tls.tls_port)
    await partial.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await closed_without_answer(silent)
    assert await closed_without_answer(partial)
    assert loop.time() - started < 4


async def test_a_slow_head_over_tls_gets_its_408(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    tls = await start_tls_site(make_governor, tmp_path, timeouts={"request_header": "300ms"})
    client, _ = await tls.connect()
    await client.send(b"GET / HTTP/1.1\r\nHost: site.test\r\n")  # never ends
    resp = await asyncio.wait_for(client.response(), timeout=5)
    assert resp.status == 408
    await client.close()


async def test_connection_limits_hold_on_tls(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    tls = await start_tls_site(make_governor, tmp_path, limits={"connections_per_client": 2})
    first, _ = await tls.connect()
    second, _ = await tls.connect()
    third, _ = await tls.connect()  # the handshake completes, then the refusal
    resp = await asyncio.wait_for(third.response(), timeout=5)
    assert resp.status == 503
    await third.close()
    await first.send(request("GET", "/bytes/10", "site.test"))
    assert (await first.response()).status == 200
    for client in (first, second):
        await client.close()


async def test_a_client_that_reads_nothing_is_dropped_on_tls(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    tls = await start_tls_site(make_governor, tmp_path, timeouts={"send": "500ms"})

    def stalled_client() -> ssl.SSLSocket:  # a blocking handshake: off the loop
        sock = socket.create_connection(("127.0.0.1", tls.tls_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        tls_sock = tls.context().wrap_socket(sock, server_hostname="site.test")
        tls_sock.sendall(request("GET", "/bytes/50000000", "site.test"))
        return tls_sock

    tls_sock = await asyncio.to_thread(stalled_client)
    server = tls.gov._server
    assert server is not None
    await eventually(lambda: len(server.connections) == 0, timeout=10, what="the reset")
    tls_sock.close()


# --- check and serve ------------------------------------------------------------------


async def test_check_names_file_and_key_of_every_certificate_problem(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ca = make_ca(certs)
    good = make_cert(ca, certs, ["default.test"], stem="default")
    other = make_cert(ca, certs, ["other.test"], stem="other")
    soon = make_cert(ca, certs, ["site.test", "*.site.test"], stem="soon", days=5)
    (certs / "notpem.pem").write_text("hello\n")
    path = write_config(
        tmp_path,
        upstream="http://127.0.0.1:1",
        listen=[
            "127.0.0.1:18080",
            {
                "address": "127.0.0.1:18443",
                "tls": {"certificates": [{"cert": str(good.cert), "key": str(good.key)}]},
            },
        ],
        tenant={"tls": {"cert": str(good.cert), "key": str(other.key)}},
        others={
            "missing": {
                "hosts": ["missing.test"],
                "upstream": "http://127.0.0.1:1",
                "daily_cap": "1 GiB",
                "tls": {"cert": "certs/nope.pem", "key": "certs/nope.key"},
            },
            "notpem": {
                "hosts": ["notpem.test"],
                "upstream": "http://127.0.0.1:1",
                "daily_cap": "1 GiB",
                "tls": {"cert": "certs/notpem.pem", "key": str(good.key)},
            },
        },
    )
    code, _, err = await governor("check", "-c", str(path))
    assert code == 1
    lines = err.strip().splitlines()
    text = path.read_text().splitlines()

    def at(key: str) -> str:
        return f"{path}:{line_for(text, key)}: {key}: "

    assert lines == [
        at("tenants.site.tls") + f"{other.key} is not the key of the certificate in {good.cert}",
        at("tenants.missing.tls") + f"cannot read {certs / 'nope.pem'}: No such file or directory",
        at("tenants.notpem.tls") + f"{certs / 'notpem.pem'} holds no PEM certificate",
    ]
    # Fixed, with a certificate that expires in 5 days: a warning, and the check passes.
    doc = yaml.safe_load(path.read_text())
    doc["tenants"] = {"site": doc["tenants"]["site"]}
    doc["tenants"]["site"]["tls"] = {"cert": str(soon.cert), "key": str(soon.key)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out, err = await governor("check", "-c", str(path))
    assert code == 0, err
    assert "ok (1 tenant)" in out
    (warning,) = err.strip().splitlines()
    assert warning.startswith("warning: ")
    assert "tenants.site.tls: " in warning
    assert f"{soon.cert} expires " in warning


def line_for(text: list[str], key: str) -> int:
    """The line of a tenant's ``tls:`` key in a file written by yaml.safe_dump."""
    tenant = key.split(".")[1]
    start = next(i for i, line in enumerate(text) if line.strip() == f"{tenant}:")
    return next(i for i, line in enumerate(text[start:], start) if line.strip() == "tls:") + 2


async def test_a_tenant_tls_without_a_tls_listener_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", tenant={"https_redirect": "on"})
    code, _, err = await governor("check", "-c", str(path))
    assert code == 1
    assert "tenants.site.https_redirect: no listener serves TLS" in err


DEFAULT_PAIR = {"cert": "certs/default.pem", "key": "certs/default.key"}


def expired_pair(folder: Path) -> tuple[Path, Path]:
    ca = make_ca(folder)
    pair = make_cert(ca, folder, ["old.test"], stem="old", days=-1)
    return pair.cert, pair.key


async def test_serve_starts_with_an_expired_certificate_and_says_so(
    make_governor: GovernorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = expired_pair(tmp_path / "old")
    gov: Governor = await make_governor(
        listen=[
            f"127.0.0.1:{free_port()}",
            {
                "address": f"127.0.0.1:{free_port()}",
                "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]},
            },
        ]
    )
    assert len(gov.ports) == 2
    assert any(f"{cert} expired" in r.getMessage() for r in caplog.records)


async def test_workers_serve_tls_and_reload_certificates_on_sighup(
    tmp_path: Path, upstream_url: str
) -> None:
    """Two worker processes share the TLS port; SIGHUP to the supervisor reaches both, and
    each serves the renewed certificate from then on."""
    certs = tmp_path / "certs"
    ca = make_ca(certs)
    make_cert(ca, certs, ["default.test"], stem="default")
    make_cert(ca, certs, ["site.test"], stem="site")
    tls_port = free_port()
    path = write_config(
        tmp_path,
        upstream=upstream_url,
        workers=2,
        listen=[
            f"127.0.0.1:{free_port()}",
            {
                "address": f"127.0.0.1:{tls_port}",
                "tls": {
                    "certificates": [{"cert": "certs/default.pem", "key": "certs/default.key"}]
                },
            },
        ],
        tenant={"tls": {"cert": "certs/site.pem", "key": "certs/site.key"}},
    )
    proc = await spawn_serve(path)
    served = Served(proc, listen_port(path))
    try:
        await served.wait_for("supervising 2 workers")
        for _ in range(2):
            await served.wait_for(" ready (pid ")
        first = await asyncio.to_thread(serial_served, tls_port, ca.path)
        renewed = make_cert(ca, certs, ["site.test"], stem="site")
        serial = x509.load_pem_x509_certificates(renewed.cert.read_bytes())[0].serial_number
        proc.send_signal(signal.SIGHUP)
        for _ in range(2):
            await served.wait_for("reloaded")

        async def every_worker_serves_the_new_one() -> bool:
            serials = [await asyncio.to_thread(serial_served, tls_port, ca.path) for _ in range(8)]
            return set(serials) == {serial}

        await eventually(every_worker_serves_the_new_one, what="the renewed certificate")
        assert first != serial
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await proc.wait()


async def test_a_redirect_is_charged_like_an_answer_and_not_once_the_site_is_blocked(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    tls = await start_tls_site(
        make_governor, tmp_path, cap="2 KiB", tenant={"https_redirect": "on"}
    )
    gov = tls.gov
    plain = await RawClient.connect(tls.plain_port)
    await plain.send(request("GET", "/a", "site.test"))
    assert (await plain.response()).status == 308
    charged = used(gov)
    assert charged == plain.received  # egress: the 308, as governor's own answers are
    client, _ = await tls.connect()
    await client.send(request("GET", "/bytes/4000", "site.test"))  # over the cap
    assert (await client.response()).status == 200
    await client.close()
    server = gov._server
    assert server is not None
    await eventually(lambda: len(server.connections) == 1, what="the TLS connection gone")
    at_cap = used(gov)  # its close_notify included
    await plain.send(request("GET", "/b", "site.test"))
    assert (await plain.response()).status == 308
    await plain.close()
    assert used(gov) == at_cap  # blocked: the redirect is nobody's, as the notice is


def used(gov: Governor) -> int:
    site = gov.runtime.snapshot.tenants["site"]
    return gov.runtime.ledger.used(("site", site.periods.current(gov.runtime.clock()).key))
