"""An accept-style script mounted beside a Flask app, in one WSGI app.

``AcceptApp`` makes the script a plain WSGI app, so any WSGI middleware composes it:
here werkzeug's dispatcher sends ``/legacy`` to the script and everything else to Flask.

    fcgibridge examples.accept_app.app:application -b 127.0.0.1:9000

The server calls the script's hooks (start, restart on SIGHUP, stop on SIGTERM) only
when the script is the app itself; mounted like this, call them yourself, as
``create_app`` does for ``start``.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from fcgibridge import AcceptApp

from . import legacy


def create_app() -> DispatcherMiddleware:
    flask_app = Flask(__name__)

    @flask_app.get("/")
    def index() -> str:
        return '<h1>Flask</h1><p>The old notes script lives at <a href="/legacy">/legacy</a>.</p>'

    script = AcceptApp(legacy)
    if script.start() != 0:
        raise RuntimeError("the legacy script's start() failed")
    return DispatcherMiddleware(flask_app, {"/legacy": script})


application = create_app()
