"""Certificates: checked once per change of their files, made into contexts on first use,
picked by SNI as Host picks a tenant."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from governor.config import Config, load_config
from governor.config.model import CertPair
from governor.errors import ConfigError
from governor.tls.certificates import CertificateError, load_certificates, read_certificate
from tests.support.certs import Pair, make_ca, make_cert


def config_with(folder: Path, tenants: dict[str, tuple[list[str], Pair]]) -> Config:
    certs = folder / "certs"
    ca = make_ca(certs)
    default = make_cert(ca, certs, ["default.test", "alt.test"], stem="default")
    doc = {
        "listen": [
            "127.0.0.1:18080",
            {"address": "127.0.0.1:18443", "tls": {"certificates": [default.config()]}},
        ],
        "tenants": {
            name: {
                "hosts": hosts,
                "upstream": "http://127.0.0.1:1",
                "daily_cap": "1 GiB",
                "tls": pair.config(),
            }
            for name, (hosts, pair) in tenants.items()
        },
    }
    path = folder / "governor.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Config, Pair]:
    ca = make_ca(tmp_path / "ca")
    pair = make_cert(ca, tmp_path / "certs", ["site.test", "*.site.test"], stem="site")
    return config_with(tmp_path, {"site": (["site.test", "*.site.test"], pair)}), pair


def test_sni_picks_tenant_then_listener_names_then_the_first(site: tuple[Config, Pair]) -> None:
    config, _ = site
    certs, warnings = load_certificates(config, now=time.time())
    assert warnings == []
    listener = "127.0.0.1:18443"
    default = certs.context(listener)
    tenant = certs.pick("site.test", listener)
    assert tenant is not default
    assert certs.pick("deep.a.site.test", listener) is tenant  # a wildcard, as for Host
    assert certs.pick("alt.test", listener) is default  # a name of the listener's own
    assert certs.pick("unknown.test", listener) is default
    assert certs.pick(None, listener) is default


def test_contexts_are_made_at_first_use_and_kept_across_reloads(
    site: tuple[Config, Pair],
) -> None:
    config, pair = site
    first, _ = load_certificates(config, now=time.time())
    cert = first.by_pair[config.tenants[0].tls]  # type: ignore[index]
    assert cert._context is None  # no handshake yet: no OpenSSL context either
    context = first.pick("site.test", "127.0.0.1:18443")
    assert cert._context is context
    again, _ = load_certificates(config, now=time.time(), previous=first)
    assert again.by_pair[cert.pair] is cert  # unchanged files: not read again
    # certbot renews: new files where the config points.
    ca = make_ca(pair.cert.parent / "ca2")
    make_cert(ca, pair.cert.parent, ["site.test", "*.site.test"], stem="site")
    renewed, _ = load_certificates(config, now=time.time(), previous=again)
    assert renewed.by_pair[cert.pair] is not cert
    assert renewed.pick("site.test", "127.0.0.1:18443") is not context


def test_every_problem_names_the_key_and_the_file(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    a = make_cert(ca, tmp_path / "a", ["a.test"], stem="a")
    b = make_cert(ca, tmp_path / "b", ["b.test"], stem="b")
    mixed = Pair(a.cert, b.key)
    config = config_with(tmp_path, {"a": (["a.test"], mixed), "b": (["b.test"], b)})
    with pytest.raises(ConfigError) as caught:
        load_certificates(config, now=time.time())
    (problem,) = caught.value.problems
    assert problem.key == "tenants.a.tls"
    assert problem.line is not None
    assert problem.message == f"{b.key} is not the key of the certificate in {a.cert}"


def test_an_encrypted_key_and_an_rsa_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    rsa = make_cert(ca, tmp_path, ["rsa.test"], stem="rsa", kind="rsa")
    assert read_certificate(CertPair(rsa.cert, rsa.key)).hosts == ("rsa.test",)
    key = serialization.load_pem_private_key(rsa.key.read_bytes(), password=None)
    rsa.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CertificateError, match="is encrypted"):
        read_certificate(CertPair(rsa.cert, rsa.key))


def test_expiring_and_expired_certificates_are_warnings(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    soon = make_cert(ca, tmp_path / "s", ["soon.test"], stem="soon", days=3)
    gone = make_cert(ca, tmp_path / "g", ["gone.test"], stem="gone", days=-2)
    config = config_with(tmp_path, {"soon": (["soon.test"], soon), "gone": (["gone.test"], gone)})
    _, warnings = load_certificates(config, now=time.time())
    soon_warning, gone_warning = sorted(warnings, key=lambda w: "gone" in w)
    assert "tenants.soon.tls: " in soon_warning
    assert f"{soon.cert} expires " in soon_warning
    assert "tenants.gone.tls: " in gone_warning
    assert f"{gone.cert} expired " in gone_warning


def test_certbots_live_links_moved_to_a_renewal_are_read_again(tmp_path: Path) -> None:
    """certbot keeps archive/certN.pem and points live/cert.pem at the newest: a reload
    must see the new target, although the path in the config did not change."""
    ca = make_ca(tmp_path / "ca")
    archive, live = tmp_path / "archive", tmp_path / "live"
    live.mkdir()
    first = make_cert(ca, archive, ["site.test"], stem="cert1", days=30)
    (live / "cert.pem").symlink_to(first.cert)
    (live / "key.pem").symlink_to(first.key)
    pair = Pair(live / "cert.pem", live / "key.pem")
    config = config_with(tmp_path, {"site": (["site.test"], pair)})
    before, _ = load_certificates(config, now=time.time())
    second = make_cert(ca, archive, ["site.test"], stem="cert2", days=90)
    for name, target in (("cert.pem", second.cert), ("key.pem", second.key)):
        (live / f"{name}.new").symlink_to(target)
        (live / f"{name}.new").replace(live / name)  # as certbot swaps them: atomically
    after, _ = load_certificates(config, now=time.time(), previous=before)
    key = config.tenants[0].tls
    assert key is not None
    assert after.by_pair[key].not_after > before.by_pair[key].not_after + 50 * 86400


def test_a_listener_wildcard_covers_one_label_as_clients_check_it(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    wild = make_cert(ca, tmp_path / "w", ["*.wild.test"], stem="wild")
    config = config_with(tmp_path, {"site": (["site.test"], wild)})
    doc = yaml.safe_load(config.path.read_text())
    doc["listen"][1]["tls"]["certificates"].append(wild.config())
    doc["tenants"]["site"].pop("tls")
    config.path.write_text(yaml.safe_dump(doc))
    certs, _ = load_certificates(load_config(config.path), now=time.time())
    listener = "127.0.0.1:18443"
    default = certs.context(listener)
    assert certs.pick("www.wild.test", listener) is not default
    assert certs.pick("a.www.wild.test", listener) is default  # two labels: not covered
    assert certs.pick("wild.test", listener) is default


def test_a_certificate_that_does_not_cover_its_tenants_hosts_is_a_warning(
    tmp_path: Path,
) -> None:
    ca = make_ca(tmp_path / "ca")
    narrow = make_cert(ca, tmp_path / "n", ["site.test"], stem="narrow")
    config = config_with(tmp_path, {"site": (["site.test", "*.site.test", "b.test"], narrow)})
    _, warnings = load_certificates(config, now=time.time())
    (warning,) = warnings
    assert "tenants.site.tls: " in warning
    assert f"{narrow.cert} does not cover *.site.test, b.test" in warning
