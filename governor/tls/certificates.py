"""Certificates: read from their PEM files, checked, made into TLS contexts; SNI picks one.

:func:`load_certificates` is the one place certificate files are read: by ``governor
check``, at start-up and on every reload (SIGHUP), so a renewed certificate (certbot
replacing the files its ``live/`` links point at) is served from the next reload on,
and connections open meanwhile keep the one they began with. Every problem names the
file and the config key; a certificate that expires within :data:`EXPIRY_WARNING` is
a warning, not a problem.

SNI (:meth:`Certificates.pick`): a tenant's own certificate when the name is one of its
hosts (exact names, then wildcards, as for Host: :class:`~governor.core.tenants.TenantIndex`),
else the listener's certificate whose names cover it, else the listener's first.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from governor.config import Config
from governor.config.model import CertPair, ListenerTLS
from governor.core.tenants import TenantIndex
from governor.errors import ConfigError, Problem

EXPIRY_WARNING = 14 * 86400  # seconds: a certificate expiring sooner is warned about
ALPN = ["http/1.1"]
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class Certificate:
    """One loaded certificate: its context, the names it covers and when it expires."""

    pair: CertPair
    context: ssl.SSLContext
    hosts: tuple[str, ...]  # DNS names (subjectAltName, else the CN), lower case
    not_after: float  # Unix seconds
    tenant: str = ""  # the tenant it is for ("" for a listener's own)
    listener: str = ""  # the listener it belongs to ("" for a tenant's)


class CertificateError(Exception):
    """A certificate or key that cannot be used; the message names the file."""


def read_certificate(pair: CertPair, settings: ListenerTLS | None) -> Certificate:
    """Parse ``pair``, check that the key matches, and make its TLS context."""
    try:
        data = pair.cert.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {pair.cert}: {exc.strerror or exc}") from None
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{pair.cert} holds no PEM certificate") from None
    leaf = chain[0]
    context = make_context(settings)
    try:
        context.load_cert_chain(pair.cert, pair.key, password=_no_password)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise CertificateError(_ssl_problem(pair, exc)) from None
        raise CertificateError(f"cannot read {pair.key}: {exc.strerror or exc}") from None
    except _EncryptedKey:
        raise CertificateError(
            f"{pair.key} is encrypted; governor needs an unencrypted key (readable by it only)"
        ) from None
    return Certificate(
        pair=pair,
        context=context,
        hosts=_names(leaf),
        not_after=leaf.not_valid_after_utc.timestamp(),
    )


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey


def _ssl_problem(pair: CertPair, exc: ssl.SSLError) -> str:
    reason = exc.reason or str(exc)
    if reason == "KEY_VALUES_MISMATCH":
        return f"{pair.key} is not the key of the certificate in {pair.cert}"
    return f"{pair.key} holds no usable private key for {pair.cert} ({reason})"


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(dict.fromkeys(n.lower().removesuffix(".") for n in names))


def make_context(settings: ListenerTLS | None) -> ssl.SSLContext:
    """A server context with Mozilla's "intermediate" settings, or the listener's own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    low = settings.min_version if settings is not None else "TLSv1.2"
    high = settings.max_version if settings is not None else "TLSv1.3"
    context.minimum_version = _VERSIONS[low]
    context.maximum_version = _VERSIONS[high]
    if settings is not None:
        context.set_ciphers(settings.ciphers)
    else:
        context.set_ciphers(ListenerTLS(certificates=()).ciphers)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN)
    return context


@dataclass(frozen=True, slots=True)
class _Named:
    hosts: tuple[str, ...]
    context: ssl.SSLContext


class Certificates:
    """Every certificate of one config: each TLS listener's and each tenant's."""

    def __init__(self, certificates: list[Certificate], config: Config) -> None:
        self.all = certificates
        by_pair = {c.pair: c for c in certificates}
        tenants = [
            _Named(t.hosts, by_pair[t.tls].context) for t in config.tenants if t.tls is not None
        ]
        self._tenants = TenantIndex(tenants)
        self._listeners: dict[str, tuple[ssl.SSLContext, TenantIndex[_Named]]] = {}
        for listener in config.listeners:
            if listener.tls is None:
                continue
            own = [by_pair[p] for p in listener.tls.certificates]
            default = own[0].context
            names = TenantIndex([_Named(c.hosts, c.context) for c in own])
            self._listeners[listener.address] = (default, names)
            default.sni_callback = self._sni(listener.address)

    def context(self, listener: str) -> ssl.SSLContext:
        """The context a new connection on ``listener`` starts with."""
        return self._listeners[listener][0]

    def pick(self, server_name: str | None, listener: str) -> ssl.SSLContext:
        """The context for ``server_name`` on ``listener`` (see the module's docstring)."""
        default, names = self._listeners[listener]
        if not server_name:
            return default
        found = self._tenants.lookup(server_name) or names.lookup(server_name)
        return default if found is None else found.context

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


def load_certificates(config: Config, *, now: float) -> tuple[Certificates, list[str]]:
    """Every certificate ``config`` names, loaded; and the warnings (soon expiring).

    Raises :class:`~governor.errors.ConfigError` with every certificate's problem.
    """
    loaded: dict[CertPair, Certificate] = {}
    problems: list[Problem] = []
    warnings: list[str] = []
    wanted: list[tuple[CertPair, ListenerTLS | None, str, str]] = []
    for place in config.listeners:
        if place.tls is not None:
            wanted += [(p, place.tls, "", place.address) for p in place.tls.certificates]
    wanted += [(t.tls, None, t.name, "") for t in config.tenants if t.tls is not None]
    rows: list[Certificate] = []
    for pair, settings, tenant, listener in wanted:
        cert = loaded.get(pair)
        if cert is None:
            try:
                cert = read_certificate(pair, settings)
            except CertificateError as exc:
                problems.append(config.problem(pair.where, str(exc)))
                continue
            loaded[pair] = cert
            left = cert.not_after - now
            if left < EXPIRY_WARNING:
                when = dt.datetime.fromtimestamp(cert.not_after, dt.UTC).strftime("%Y-%m-%d %H:%M")
                state = "expired" if left <= 0 else "expires"
                warnings.append(f"{config.problem(pair.where, f'{pair.cert} {state} {when} UTC')}")
        rows.append(
            Certificate(cert.pair, cert.context, cert.hosts, cert.not_after, tenant, listener)
        )
    if problems:
        raise ConfigError(problems)
    return Certificates(rows, config), warnings
