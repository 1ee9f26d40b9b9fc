"""A small guestbook written with Flask, meant to be served by fcgibridge behind nginx.

Run it with either of::

    fcgibridge examples.flask_app.app:app -b 127.0.0.1:9000
    fcgibridge examples/flask_app/app.py:app -b 127.0.0.1:9000

Configuration comes from the environment when ``create_app()`` is called:

``FLASK_APP_DB``
    Path of the SQLite database (default: ``<tmpdir>/fcgibridge-flask-example/guestbook.sqlite3``).
``FLASK_APP_UPLOADS``
    Directory where ``/upload`` stores files (default: ``<tmpdir>/fcgibridge-flask-example/uploads``).

Nothing is written to disk until a request needs it, so importing this module is side-effect free.
This file only uses absolute imports so that it also works when loaded by file path.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.utils import secure_filename

__all__ = ["app", "create_app"]

HERE = os.path.dirname(os.path.abspath(__file__))

MAX_NAME_LENGTH = 80
MAX_TEXT_LENGTH = 2000
DEFAULT_NAME = "Anonymous"
LIST_LIMIT = 100
STREAM_MAX_LINES = 10_000
STREAM_MAX_DELAY = 1.0
UPLOAD_CHUNK_SIZE = 64 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)
"""


def _default_data_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "fcgibridge-flask-example")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application; ``config`` overrides the defaults and the environment."""
    # root_path is explicit so templates are found however the module was imported.
    app = Flask(__name__, root_path=HERE)
    app.config.update(
        DATABASE=os.environ.get("FLASK_APP_DB") or os.path.join(_default_data_dir(), "guestbook.sqlite3"),
        UPLOAD_FOLDER=os.environ.get("FLASK_APP_UPLOADS") or os.path.join(_default_data_dir(), "uploads"),
        MAX_CONTENT_LENGTH=32 * 1024 * 1024,
    )
    if config is not None:
        app.config.update(config)

    app.teardown_appcontext(_close_db)
    app.register_error_handler(HTTPException, _handle_http_error)
    _register_routes(app)
    return app


# --------------------------------------------------------------------------- database


def get_db() -> sqlite3.Connection:
    """Return this request's connection, opening it (and creating the schema) on first use."""
    db: sqlite3.Connection | None = g.get("db")
    if db is None:
        path: str = current_app.config["DATABASE"]
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        db = sqlite3.connect(path, timeout=10.0)
        db.row_factory = sqlite3.Row
        with db:
            db.execute(SCHEMA)
        g.db = db
    return db


def _close_db(exc: BaseException | None) -> None:
    db: sqlite3.Connection | None = g.pop("db", None)
    if db is not None:
        db.close()


def _entry_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "text": row["text"], "created_at": row["created_at"]}


def list_entries(limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    rows = (
        get_db().execute("SELECT id, name, text, created_at FROM entries ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    )
    return [_entry_dict(row) for row in rows]


def add_entry(name: str, text: str) -> dict[str, Any]:
    db = get_db()
    with db:
        cur = db.execute("INSERT INTO entries (name, text) VALUES (?, ?)", (name, text))
        row = db.execute("SELECT id, name, text, created_at FROM entries WHERE id = ?", (cur.lastrowid,)).fetchone()
    return _entry_dict(row)


def validate_entry(name: object, text: object) -> tuple[str, str, str | None]:
    """Clean up user input; returns ``(name, text, error)`` with ``error`` None when valid."""
    clean_name = name.strip() if isinstance(name, str) else ""
    clean_text = text.strip() if isinstance(text, str) else ""
    if name is not None and not isinstance(name, str):
        return clean_name, clean_text, "Name must be a string."
    if text is not None and not isinstance(text, str):
        return clean_name, clean_text, "Text must be a string."
    if not clean_text:
        return clean_name, clean_text, "Text must not be empty."
    if len(clean_text) > MAX_TEXT_LENGTH:
        return clean_name, clean_text, f"Text must be at most {MAX_TEXT_LENGTH} characters."
    if len(clean_name) > MAX_NAME_LENGTH:
        return clean_name, clean_text, f"Name must be at most {MAX_NAME_LENGTH} characters."
    return clean_name or DEFAULT_NAME, clean_text, None


# --------------------------------------------------------------------------- errors


def _wants_json() -> bool:
    return request.path.startswith("/api/") or (request.endpoint == "upload" and request.method == "POST")


def _json_error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status


def _handle_http_error(exc: HTTPException) -> Response | HTTPException | tuple[Response, int]:
    if _wants_json() and exc.code is not None:
        return _json_error(exc.description or exc.name, exc.code)
    return exc


# --------------------------------------------------------------------------- views


def _register_routes(app: Flask) -> None:
    app.add_url_rule("/", "index", index, methods=["GET"])
    app.add_url_rule("/entries", "create_entry", create_entry, methods=["POST"])
    app.add_url_rule("/upload", "upload", upload, methods=["GET", "POST"])
    app.add_url_rule("/stream", "stream", stream, methods=["GET"])
    app.add_url_rule("/api/entries", "api_entries", api_entries, methods=["GET", "POST"])
    app.add_url_rule("/hello", "hello", hello, methods=["GET"])
    app.add_url_rule("/env", "env", env, methods=["GET", "POST"])


def index() -> ResponseReturnValue:
    return render_template("index.html", entries=list_entries(), error=None, form={})


def create_entry() -> ResponseReturnValue:
    name, text, error = validate_entry(request.form.get("name"), request.form.get("text"))
    if error is not None:
        form = {"name": request.form.get("name", ""), "text": request.form.get("text", "")}
        return render_template("index.html", entries=list_entries(), error=error, form=form), 400
    add_entry(name, text)
    return redirect(url_for("index"), code=303)


def upload() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("upload.html")

    storage = request.files.get("file")
    if storage is None or not storage.filename:
        return _json_error("No file was sent in the 'file' field.", 400)
    filename = secure_filename(storage.filename) or "upload.bin"

    folder: str = current_app.config["UPLOAD_FOLDER"]
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    # Write to a temporary name in the same directory, then rename: readers never see a partial file.
    fd, tmp_path = tempfile.mkstemp(prefix=".upload-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := storage.stream.read(UPLOAD_CHUNK_SIZE):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        os.replace(tmp_path, os.path.join(folder, filename))
    except BaseException:
        os.unlink(tmp_path)
        raise
    return jsonify(name=filename, size=size, sha256=digest.hexdigest())


def stream() -> ResponseReturnValue:
    try:
        count = int(request.args.get("n", "5"))
        delay = float(request.args.get("delay", "0"))
    except ValueError:
        return _json_error("'n' must be an integer and 'delay' a number.", 400)
    if not 0 <= count <= STREAM_MAX_LINES:
        return _json_error(f"'n' must be between 0 and {STREAM_MAX_LINES}.", 400)
    if not 0.0 <= delay <= STREAM_MAX_DELAY:  # also rejects nan
        return _json_error(f"'delay' must be between 0 and {STREAM_MAX_DELAY} seconds.", 400)

    def generate() -> Iterator[str]:
        for i in range(1, count + 1):
            if delay and i > 1:
                time.sleep(delay)
            yield f"line {i} of {count}\n"

    response = Response(generate(), mimetype="text/plain")
    # Ask nginx not to buffer this response so lines reach the client as they are produced.
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-store"
    return response


def api_entries() -> ResponseReturnValue:
    if request.method == "GET":
        return jsonify(list_entries())

    if not request.is_json:
        return _json_error("Expected a JSON body (Content-Type: application/json).", 415)
    try:
        payload = request.get_json()
    except BadRequest:
        return _json_error("Request body is not valid JSON.", 400)
    if not isinstance(payload, dict):
        return _json_error("Expected a JSON object.", 400)
    name, text, error = validate_entry(payload.get("name"), payload.get("text"))
    if error is not None:
        return _json_error(error, 400)
    entry = add_entry(name, text)
    return jsonify(entry), 201


def hello() -> ResponseReturnValue:
    return Response(b"Hello, World!", mimetype="text/plain")


def env() -> ResponseReturnValue:
    return jsonify(
        method=request.method,
        path=request.path,
        script_root=request.script_root,
        query_string=request.query_string.decode("latin-1"),
        args=request.args.to_dict(flat=False),
        remote_addr=request.remote_addr,
        scheme=request.scheme,
        host=request.host,
        url=request.url,
        url_for_index=url_for("index"),
    )


app = create_app()
