"""The nginx in front of each backend: one fresh instance per backend and round.

Every instance has the same ``http`` block (1 worker process, ``access_log off``, request
bodies and responses of 64 KiB kept in memory) and differs only in how ``location /``
reaches the backend (see ``Upstream``).
"""

from __future__ import annotations

import enum
import os
import re
import subprocess
from pathlib import Path

from harness.loads import BIG_BODY, HELLO_BODY
from harness.procs import HOST

NGINX = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"


class Upstream(enum.Enum):
    STATIC = "nginx answers by itself"
    HTTP = "proxy_pass, HTTP/1.1, upstream keepalive 32"
    FASTCGI = "fastcgi_pass, fastcgi_keep_conn on, upstream keepalive 32"
    FASTCGI_CLOSE = "fastcgi_pass, fastcgi_keep_conn off (a connection per request)"


FASTCGI_PARAMS = (
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "nginx/$nginx_version"),
    ("SERVER_PROTOCOL", "$server_protocol"),
    ("REQUEST_SCHEME", "$scheme"),
    ("REQUEST_METHOD", "$request_method"),
    ("REQUEST_URI", "$request_uri"),
    ("QUERY_STRING", "$query_string"),
    ("CONTENT_TYPE", "$content_type"),
    ("CONTENT_LENGTH", "$content_length"),
    ("SCRIPT_NAME", '""'),
    ("PATH_INFO", "$uri"),
    ("DOCUMENT_URI", "$document_uri"),
    ("DOCUMENT_ROOT", "$document_root"),
    ("REMOTE_ADDR", "$remote_addr"),
    ("REMOTE_PORT", "$remote_port"),
    ("SERVER_ADDR", "$server_addr"),
    ("SERVER_PORT", "$server_port"),
    ("SERVER_NAME", "$server_name"),
)


def build_info() -> str:
    return subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=False).stderr


def static_locations(work: Path) -> str:
    """nginx by itself: /hello from ``return``, /64k a static file, /echo reads the body and sends that file.

    A POST to a static file is refused with 405 after nginx has read (and discarded) the request
    body; ``error_page 405 =200 /64k`` turns that into a GET of the same 64 KiB file.
    """
    big = work / "64k.bin"
    big.write_bytes(BIG_BODY)
    return f"""\
        location = /hello {{
            default_type text/plain;
            return 200 "{HELLO_BODY.decode()}";
        }}
        location = /64k {{
            alias {big};
            default_type application/octet-stream;
        }}
        location = /echo {{
            alias {big};
            default_type application/octet-stream;
            error_page 405 =200 /64k;
        }}
"""


def fastcgi_location(keep_conn: bool, script_dir: Path | None) -> str:
    params = [f"            fastcgi_param {name} {value};" for name, value in FASTCGI_PARAMS]
    if script_dir is not None:
        # PHP-FPM runs the script named here: /hello -> DIR/hello.php, and so on.
        params.append(f"            fastcgi_param SCRIPT_FILENAME {script_dir}$uri.php;")
    joined = "\n".join(params)
    return f"""\
        location / {{
            fastcgi_pass backend;
            fastcgi_keep_conn {"on" if keep_conn else "off"};
{joined}
        }}
"""


PROXY_LOCATION = """\
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
"""


def upstream_block(upstream: Upstream, sock: Path) -> str:
    if upstream is Upstream.STATIC:
        return ""
    keepalive = "" if upstream is Upstream.FASTCGI_CLOSE else "        keepalive 32;\n"
    return f"    upstream backend {{\n        server unix:{sock};\n{keepalive}    }}\n"


def locations(upstream: Upstream, work: Path, script_dir: Path | None) -> str:
    if upstream is Upstream.STATIC:
        return static_locations(work)
    if upstream is Upstream.HTTP:
        return PROXY_LOCATION
    return fastcgi_location(upstream is Upstream.FASTCGI, script_dir)


def config(work: Path, upstream: Upstream, sock: Path, port: int, *, build: str,
           script_dir: Path | None = None) -> str:
    """The whole nginx.conf of one run, with every path inside ``work``."""
    modules = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    temp = "\n".join(f"    {module}_temp_path {work / ('temp-' + module)};" for module in modules
                     if f"--without-http_{module}_module" not in build)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""\
# Written by bench/run.py for one backend and round.
daemon off;
master_process on;
worker_processes 1;
{user}pid {work / "nginx.pid"};
error_log {work / "nginx-error.log"} warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
    client_max_body_size 1m;
    client_body_buffer_size 128k;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    fastcgi_buffer_size 16k;
    fastcgi_buffers 8 16k;
{temp}

{upstream_block(upstream, sock)}
    server {{
        listen {HOST}:{port};
        server_name localhost;
{locations(upstream, work, script_dir)}    }}
}}
"""


def argv(conf: Path, work: Path, *extra: str) -> list[str]:
    return [NGINX, "-p", f"{work}/", "-c", str(conf), "-e", str(work / "nginx-error.log"), *extra]


ERROR_LINE = re.compile(r"\[(error|crit|alert|emerg)\]")


def error_lines(path: Path, offset: int = 0) -> list[str]:
    """The error-log lines of level error or worse written after byte ``offset``."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if ERROR_LINE.search(line)]


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
