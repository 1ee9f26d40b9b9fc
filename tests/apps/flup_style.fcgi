#!/usr/bin/env python3
"""A flup-style FastCGI script, as web servers run them (tests/e2e/test_flup_compat.py).

It was a flup script: the import line below is the one line changed (the test checks it).
The environment variables are the test's knobs: FLUP_BIND (HOST:PORT or a unix socket
path; unset: the socket on fd 0), FLUP_UMASK (octal), FLUP_DEBUG=1, and FLUP_RESULT (a
file to write what run() returned to).
"""

import hashlib
import json
import os
import sys

from fcgibridge.compat.flup import WSGIServer


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.endswith("/boom"):
        raise RuntimeError("the app broke on purpose")
    if path.endswith("/post"):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        answer = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "text": body[:64].decode()}
    else:
        answer = {
            "hello": "from a flup-style script",
            "app_name": environ.get("APP_NAME"),
            "method": environ["REQUEST_METHOD"],
            "query": environ.get("QUERY_STRING", ""),
            "multithread": environ["wsgi.multithread"],
            "pid": os.getpid(),
        }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


def bind_address():
    text = os.environ.get("FLUP_BIND")
    if not text:
        return None
    host, _, port = text.rpartition(":")
    return (host, int(port)) if port.isdigit() else text


if __name__ == "__main__":
    umask = os.environ.get("FLUP_UMASK")
    server = WSGIServer(application, environ={"APP_NAME": "flup-style"}, bindAddress=bind_address(),
                        umask=int(umask, 8) if umask else None, debug=os.environ.get("FLUP_DEBUG") == "1")
    result = server.run()
    if os.environ.get("FLUP_RESULT"):
        with open(os.environ["FLUP_RESULT"], "w") as file:
            file.write(repr(result))
    sys.exit(0)
