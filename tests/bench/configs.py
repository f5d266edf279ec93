"""The files the benchmark serves and the configs of the servers it starts."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import write_config
from tests.support.certs import make_ca, make_cert

HOST = "site.test"  # the Host every client sends; governor's tenant "site" claims it
TENANT = "site"
HUGE_CAP_KIB = 2**40  # 1 PiB: far above anything a run transfers
FLUSH_INTERVAL = 0.25  # seconds; governor's default is 1 s (see README "Performance")

# name -> size; the 1 GiB file is sparse (nginx sends its zero pages with sendfile)
FILES: dict[str, int] = {
    "1k.bin": 1024,
    "64k.bin": 64 * 1024,
    "10m.bin": 10 * 2**20,
    "1g.bin": 2**30,
}


def make_files(www: Path) -> None:
    www.mkdir(parents=True, exist_ok=True)
    for name, size in FILES.items():
        path = www / name
        if size > 64 * 2**20:
            with path.open("wb") as f:
                f.truncate(size)
        else:
            path.write_bytes(os.urandom(size))


@dataclass(frozen=True)
class TLSFiles:
    """The run's one certificate, which every server terminating TLS presents."""

    ca: Path  # the test CA's certificate: what curl trusts
    cert: Path  # the leaf (ECDSA P-256, for HOST and 127.0.0.1), PEM
    key: Path  # its key, PEM (PKCS #8)
    combined: Path  # cert then key in one PEM file: HAProxy's ``crt``


def make_certificate(folder: Path) -> TLSFiles:
    """A test CA and a leaf certificate signed by it, made afresh for this run in ``folder``."""
    ca = make_ca(folder, "governor bench CA")
    pair = make_cert(ca, folder, [HOST, "127.0.0.1"], stem="site", chain=False)
    combined = folder / "combined.pem"
    combined.write_bytes(pair.cert.read_bytes() + pair.key.read_bytes())
    return TLSFiles(ca=ca.path, cert=pair.cert, key=pair.key, combined=combined)


def _nginx_tls(port: int, files: TLSFiles | None) -> str:
    """A server block's TLS listener, if ``files``; nginx's defaults otherwise (ciphers,
    session cache)."""
    if files is None:
        return ""
    return f"""\
    listen 127.0.0.1:{port} ssl backlog=4096;
    ssl_certificate {files.cert};
    ssl_certificate_key {files.key};
    ssl_protocols TLSv1.2 TLSv1.3;
"""


def _nginx_main(folder: Path) -> str:
    """What both nginx instances share: one worker, paths of their own, no logs but errors."""
    user = ""
    if os.geteuid() == 0:  # workers would otherwise drop to nobody and not read the files
        group = grp.getgrgid(os.getgid()).gr_name
        user = f"user {pwd.getpwuid(os.getuid()).pw_name} {group};"
    temp = "\n".join(
        f"  {kind}_temp_path {folder}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
{user}
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  default_type application/octet-stream;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
"""


def nginx_upstream(
    folder: Path, port: int, www: Path, *, tls_port: int = 0, files: TLSFiles | None = None
) -> Path:
    """The origin: static files with sendfile. The proxies reach it over plain HTTP on
    ``port``; ``tls_port`` (with ``files``) is only for the TLS rows' "no proxy" ceiling."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = (
        _nginx_main(folder)
        + f"""\
  sendfile on;
  tcp_nopush on;
  server {{
    listen 127.0.0.1:{port} default_server backlog=4096;
{_nginx_tls(tls_port, files)}\
    root {www};
  }}
}}
"""
    )
    path = folder / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_proxy(
    folder: Path, port: int, upstream: int, *, tls_port: int = 0, files: TLSFiles | None = None
) -> Path:
    """nginx as a streaming reverse proxy with a keep-alive upstream pool, on plain HTTP
    (``port``) and, with ``files``, terminating TLS (``tls_port``); to the origin over
    plain HTTP.

    ``proxy_buffering off``: like governor, it passes each read from the upstream on
    at once instead of buffering the response (or spooling it to temp files).
    """
    folder.mkdir(parents=True, exist_ok=True)
    conf = (
        _nginx_main(folder)
        + f"""\
  upstream origin {{
    server 127.0.0.1:{upstream};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port} default_server backlog=4096;
{_nginx_tls(tls_port, files)}\
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
    }}
  }}
}}
"""
    )
    path = folder / "nginx.conf"
    path.write_text(conf)
    return path


def haproxy(
    folder: Path, port: int, upstream: int, *, tls_port: int = 0, files: TLSFiles | None = None
) -> Path:
    """HAProxy metering bytes per Host in a stick table, denying above a (huge) cap; on
    plain HTTP (``port``) and, with ``files``, terminating TLS (``tls_port``) in the same
    frontend (HAProxy takes the certificate and its key in one file)."""
    folder.mkdir(parents=True, exist_ok=True)
    binds = f"  bind 127.0.0.1:{port}\n"
    if files is not None:
        binds += f"  bind 127.0.0.1:{tls_port} ssl crt {files.combined} ssl-min-ver TLSv1.2\n"
    conf = f"""\
global
  nbthread 1
  maxconn 4096
  stats socket {folder}/admin.sock mode 600 level admin

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 75s
  timeout server 75s
  timeout http-keep-alive 75s

frontend bench
{binds}\
  stick-table type string len 128 size 1k store bytes_out_cnt
  http-request track-sc0 req.hdr(host)
  http-request deny deny_status 503 if {{ sc_kbytes_out(0) gt {HUGE_CAP_KIB} }}
  default_backend origin

backend origin
  http-reuse always
  server origin 127.0.0.1:{upstream}
"""
    path = folder / "haproxy.cfg"
    path.write_text(conf)
    return path


def governor(
    folder: Path,
    port: int,
    upstream: int,
    *,
    tls_port: int = 0,
    files: TLSFiles | None = None,
    **top: Any,
) -> Path:
    """A governor config: tenant ``site`` on ``HOST`` with a 1 PiB cap, no access log; a
    plain listener on ``port`` and, with ``files``, a TLS one on ``tls_port`` with the
    listener certificate (TLS 1.2 to 1.3, governor's default ciphers)."""
    folder.mkdir(parents=True, exist_ok=True)
    listen: str | list[Any] = f"127.0.0.1:{port}"  # one address, as any governor takes it
    if files is not None:
        pair = {"cert": str(files.cert), "key": str(files.key)}
        tls = {"address": f"127.0.0.1:{tls_port}", "tls": {"certificates": [pair]}}
        listen = [listen, tls]
    return write_config(
        folder,
        upstream=f"http://127.0.0.1:{upstream}",
        cap=f"{HUGE_CAP_KIB} KiB",
        listen=listen,
        defaults={"timezone": "UTC"},
        **{
            "flush_interval": f"{int(FLUSH_INTERVAL * 1000)}ms",
            "access_log": "off",
            "timeouts": {"shutdown": "5s"},
            **top,  # may set any of these three too
        },
    )
