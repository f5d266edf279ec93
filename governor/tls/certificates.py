"""Certificates: read from their PEM files, checked, made into TLS contexts; SNI picks one.

:func:`load_certificates` is the one place certificate files are read: by ``governor
check``, at start-up and on every reload (SIGHUP), so a renewed certificate (certbot
replacing the files its ``live/`` links point at) is served from the next reload on,
and connections open meanwhile keep the one they began with. Every problem names the
file and the config key; a certificate that expires within :data:`EXPIRY_WARNING` is
a warning, not a problem.

Work follows what changed and what is used, not the number of sites (a host of 100,000
sites may have as many certificates): a reload reads again only the files whose inode,
size or modification time changed (a ``stat`` each for the others), and a tenant's TLS
context (1.2 ms and 23 KB of OpenSSL's) is made at its first handshake, not at start.
The check of a pair (the certificate parses, the key is its key) is ``cryptography``'s,
0.1 ms a pair.

SNI (:meth:`Certificates.pick`): a tenant's own certificate when the name is one of its
hosts (exact names, then wildcards, as for Host: :class:`~governor.core.tenants.TenantIndex`),
else the listener's certificate whose names cover it, else the listener's first.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from governor.config import Config
from governor.config.model import CertPair, ListenerTLS
from governor.core.tenants import TenantIndex
from governor.errors import ConfigError, Problem

if TYPE_CHECKING:
    from cryptography import x509

log: Final = logging.getLogger("governor.tls")

EXPIRY_WARNING: Final = 14 * 86400  # seconds: a certificate expiring sooner is warned about
ALPN: Final = ["http/1.1"]
_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
Stamp = tuple[int, int, int, int, int, int]  # inode, size, mtime of the cert, then the key


@dataclass(slots=True, eq=False)
class Certificate:
    """One checked certificate and key: the names it covers, its expiry, its context."""

    pair: CertPair
    hosts: tuple[str, ...]  # DNS names (subjectAltName, else the CN), lower case
    not_after: float  # Unix seconds
    stamp: Stamp
    not_before: float = 0.0  # Unix seconds
    settings: ListenerTLS | None = None  # a listener's (None: the defaults)
    _context: ssl.SSLContext | None = field(default=None, repr=False)

    def context(self) -> ssl.SSLContext:
        """Its TLS context, made on first use. Raises CertificateError if OpenSSL refuses
        what the check accepted (the files changed since, say)."""
        if self._context is None:
            context = make_context(self.settings)
            try:
                context.load_cert_chain(self.pair.cert, self.pair.key, password=_no_password)
            except (OSError, _EncryptedKey) as exc:
                raise CertificateError(f"{self.pair.cert}: {exc}") from None
            self._context = context
        return self._context


@dataclass(frozen=True, slots=True)
class InUse:
    """A certificate where the config uses it: a tenant's, or a listener's own."""

    cert: Certificate
    tenant: str = ""  # "" for a listener's own
    listener: str = ""  # "" for a tenant's


class CertificateError(Exception):
    """A certificate or key that cannot be used; the message names the file."""


def stamp_of(pair: CertPair) -> Stamp:
    """Changes whenever either file does (certbot's renewal points ``live/`` at new files)."""
    try:
        c, k = os.stat(pair.cert), os.stat(pair.key)
    except OSError as exc:
        raise CertificateError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
    return (c.st_ino, c.st_size, c.st_mtime_ns, k.st_ino, k.st_size, k.st_mtime_ns)


def read_certificate(pair: CertPair, settings: ListenerTLS | None = None) -> Certificate:
    """Parse ``pair`` and check that the key is the certificate's key."""
    # Imported here: 8 MiB of RSS that a config without TLS never needs.
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    stamp = stamp_of(pair)
    try:
        data = pair.cert.read_bytes()
        key_data = pair.key.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise CertificateError(f"{pair.cert} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(
            key_data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        raise CertificateError(
            f"{pair.key} is encrypted; governor needs an unencrypted key (readable by it only)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"{pair.key} holds no usable PEM private key") from None
    if key.public_key() != leaf.public_key():
        raise CertificateError(f"{pair.key} is not the key of the certificate in {pair.cert}")
    return Certificate(
        pair=pair,
        hosts=_names(leaf),
        not_after=leaf.not_valid_after_utc.timestamp(),
        not_before=leaf.not_valid_before_utc.timestamp(),
        stamp=stamp,
        settings=settings,
    )


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey("the key is encrypted")


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(dict.fromkeys(n.lower().removesuffix(".") for n in names))


def make_context(settings: ListenerTLS | None) -> ssl.SSLContext:
    """A server context with Mozilla's "intermediate" settings, or the listener's own."""
    settings = settings or _DEFAULTS
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[settings.min_version]
    context.maximum_version = _VERSIONS[settings.max_version]
    context.set_ciphers(settings.ciphers)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN)
    return context


_DEFAULTS: Final = ListenerTLS(certificates=())


@dataclass(frozen=True, slots=True)
class _Named:
    hosts: tuple[str, ...]
    cert: Certificate


class Certificates:
    """Every certificate of one config: each TLS listener's and each tenant's."""

    def __init__(self, in_use: list[InUse], config: Config) -> None:
        self.in_use = in_use
        self.by_pair = {u.cert.pair: u.cert for u in in_use}
        tenants = [_Named(t.hosts, self.by_pair[t.tls]) for t in config.tenants if t.tls]
        self._tenants = TenantIndex(tenants)
        self._listeners: dict[str, tuple[ssl.SSLContext, dict[str, Certificate]]] = {}
        for listener in config.listeners:
            if listener.tls is None:
                continue
            own = [self.by_pair[p] for p in listener.tls.certificates]
            default = own[0].context()  # made now: every connection starts with it
            default.sni_callback = self._sni(listener.address)
            names: dict[str, Certificate] = {}
            for cert in own:
                for name in cert.hosts:
                    names.setdefault(name, cert)
            self._listeners[listener.address] = (default, names)

    def context(self, listener: str) -> ssl.SSLContext:
        """The context a new connection on ``listener`` starts with."""
        return self._listeners[listener][0]

    def pick(self, server_name: str | None, listener: str) -> ssl.SSLContext:
        """The context for ``server_name`` on ``listener`` (see the module's docstring)."""
        default, names = self._listeners[listener]
        if not server_name:
            return default
        tenant = self._tenants.lookup(server_name)
        cert = tenant.cert if tenant is not None else covering(names, server_name)
        if cert is None:
            return default
        try:
            return cert.context()
        except CertificateError as exc:
            log.error("cannot serve %s's certificate: %s", server_name, exc)
            return default

    def _sni(
        self, listener: str
    ) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
        def pick(sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
            channel = getattr(sslobj, "_channel", None)
            if channel is not None:
                channel.server_name = name
            chosen = self.pick(name, listener)
            if chosen is not context:
                sslobj.context = chosen

        return pick


def covering(names: dict[str, Certificate], server_name: str) -> Certificate | None:
    """The certificate whose names cover ``server_name`` as TLS clients check it: the name
    itself, or a wildcard for exactly its first label (``*.example.org`` covers
    ``www.example.org``, not ``a.www.example.org`` nor ``example.org``)."""
    name = server_name.lower().removesuffix(".")
    found = names.get(name)
    if found is None and "." in name:
        found = names.get("*." + name.split(".", 1)[1])
    return found


def uncovered(cert: Certificate, hosts: tuple[str, ...]) -> list[str]:
    """The hosts a tenant's certificate does not cover (a client would refuse it there);
    a wildcard host needs the same wildcard name."""
    names = {name: cert for name in cert.hosts}
    return [
        h for h in hosts if (h not in names if h.startswith("*.") else covering(names, h) is None)
    ]


def load_certificates(
    config: Config, *, now: float, previous: Certificates | None = None
) -> tuple[Certificates, list[str]]:
    """Every certificate ``config`` names, checked; and the warnings (soon expiring).

    A pair whose files are as they were in ``previous`` (same inode, size and time) is
    taken from it, context and all. Raises :class:`~governor.errors.ConfigError` with
    every certificate's problem.
    """
    known = previous.by_pair if previous is not None else {}
    loaded: dict[CertPair, Certificate] = {}
    problems: list[Problem] = []
    warnings: list[str] = []
    wanted: list[tuple[CertPair, ListenerTLS | None, str, str, tuple[str, ...]]] = []
    for place in config.listeners:
        if place.tls is not None:
            wanted += [(p, place.tls, "", place.address, ()) for p in place.tls.certificates]
    wanted += [(t.tls, None, t.name, "", t.hosts) for t in config.tenants if t.tls is not None]
    in_use: list[InUse] = []
    for pair, settings, tenant, listener, hosts in wanted:
        cert = loaded.get(pair)
        if cert is None:
            try:
                cert = _reuse(known.get(pair), pair, settings) or read_certificate(pair, settings)
            except CertificateError as exc:
                problems.append(config.problem(pair.where, str(exc)))
                continue
            loaded[pair] = cert
            if cert.not_before > now:
                when = dt.datetime.fromtimestamp(cert.not_before, dt.UTC).strftime("%Y-%m-%d %H:%M")
                early = f"{pair.cert} is not valid before {when} UTC"
                warnings.append(str(config.problem(pair.where, early)))
            left = cert.not_after - now
            if left < EXPIRY_WARNING:
                when = dt.datetime.fromtimestamp(cert.not_after, dt.UTC).strftime("%Y-%m-%d %H:%M")
                state = "expired" if left <= 0 else "expires"
                warnings.append(f"{config.problem(pair.where, f'{pair.cert} {state} {when} UTC')}")
        in_use.append(InUse(cert, tenant, listener))
        if hosts:
            missed = uncovered(cert, hosts)
            if missed:
                shown = ", ".join(missed[:5]) + (" ..." if len(missed) > 5 else "")
                message = f"{pair.cert} does not cover {shown}: browsers will refuse it there"
                warnings.append(str(config.problem(pair.where, message)))
    if problems:
        raise ConfigError(problems)
    return Certificates(in_use, config), warnings


def _reuse(
    old: Certificate | None, pair: CertPair, settings: ListenerTLS | None
) -> Certificate | None:
    """``old``, when its files have not changed and its settings are the same."""
    if old is None or old.settings != settings or old.stamp != stamp_of(pair):
        return None
    return old
