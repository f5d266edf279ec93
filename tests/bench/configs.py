"""The files the benchmark serves and the configs of the servers it starts."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path
from typing import Any

from tests.support import write_config

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


def nginx_upstream(folder: Path, port: int, www: Path) -> Path:
    """The origin: static files with sendfile."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = (
        _nginx_main(folder)
        + f"""\
  sendfile on;
  tcp_nopush on;
  server {{
    listen 127.0.0.1:{port} default_server backlog=4096;
    root {www};
  }}
}}
"""
    )
    path = folder / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_proxy(folder: Path, port: int, upstream: int) -> Path:
    """nginx as a streaming reverse proxy with a keep-alive upstream pool.

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


def haproxy(folder: Path, port: int, upstream: int) -> Path:
    """HAProxy metering bytes per Host in a stick table, denying above a (huge) cap."""
    folder.mkdir(parents=True, exist_ok=True)
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
  bind 127.0.0.1:{port}
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


def governor(folder: Path, port: int, upstream: int, **top: Any) -> Path:
    """A governor config: tenant ``site`` on ``HOST`` with a 1 PiB cap, no access log."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(
        folder,
        upstream=f"http://127.0.0.1:{upstream}",
        cap=f"{HUGE_CAP_KIB} KiB",
        listen=f"127.0.0.1:{port}",
        defaults={"timezone": "UTC"},
        flush_interval=f"{int(FLUSH_INTERVAL * 1000)}ms",
        access_log="off",
        timeouts={"shutdown": "5s"},
        **top,
    )
