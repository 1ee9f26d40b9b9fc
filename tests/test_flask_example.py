"""Tests for the Flask guestbook in examples/flask_app, through Flask's test client (no FastCGI involved)."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import random
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient

REPO_ROOT = Path(__file__).resolve().parents[1]


def _import_example() -> ModuleType:
    # `examples` is not an installed package; make the repository root importable like the CLI's cwd would be.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("examples.flask_app.app")


example = _import_example()


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    db = tmp_path / "data" / "guestbook.sqlite3"
    uploads = tmp_path / "uploads"
    monkeypatch.setenv("FLASK_APP_DB", str(db))
    monkeypatch.setenv("FLASK_APP_UPLOADS", str(uploads))
    return {"db": db, "uploads": uploads}


@pytest.fixture
def app(paths: dict[str, Path]) -> Flask:
    application: Flask = example.create_app({"TESTING": True})
    return application


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


# --------------------------------------------------------------------------- configuration


def test_env_vars_configure_paths_and_nothing_is_created_until_used(app: Flask, paths: dict[str, Path]) -> None:
    assert app.config["DATABASE"] == str(paths["db"])
    assert app.config["UPLOAD_FOLDER"] == str(paths["uploads"])
    assert not paths["db"].parent.exists()
    assert not paths["uploads"].exists()


def test_config_argument_overrides_environment(paths: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    application = example.create_app({"DATABASE": str(other)})
    assert application.config["DATABASE"] == str(other)


def test_defaults_live_in_temp_dir_not_in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_APP_DB", raising=False)
    monkeypatch.delenv("FLASK_APP_UPLOADS", raising=False)
    application = example.create_app()
    tmp = Path(tempfile.gettempdir()).resolve()
    for key in ("DATABASE", "UPLOAD_FOLDER"):
        path = Path(application.config[key]).resolve()
        assert path.is_relative_to(tmp)
        assert not path.is_relative_to(REPO_ROOT)


def test_module_level_app_exists() -> None:
    assert isinstance(example.app, Flask)
    assert example.app.name == "examples.flask_app.app"
    assert not (REPO_ROOT / "instance").exists()


# --------------------------------------------------------------------------- HTML guestbook


def test_index_empty(client: FlaskClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert "No entries yet" in html
    assert 'action="/entries"' in html


def test_form_post_redirects_with_303_and_entry_is_listed(client: FlaskClient) -> None:
    resp = client.post("/entries", data={"name": "Ada", "text": "  Hello from FastCGI  "})
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/"

    html = client.get("/").get_data(as_text=True)
    assert "Hello from FastCGI" in html
    assert "Ada" in html
    assert "No entries yet" not in html


def test_form_post_without_name_uses_default(client: FlaskClient) -> None:
    assert client.post("/entries", data={"text": "anon"}).status_code == 303
    assert client.get("/api/entries").get_json()[0]["name"] == "Anonymous"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "Ada", "text": ""}, "Text must not be empty."),
        ({"name": "Ada", "text": "   \n\t "}, "Text must not be empty."),
        ({"name": "Ada"}, "Text must not be empty."),
        ({"text": "x" * 2001}, "Text must be at most 2000 characters."),
        ({"name": "n" * 81, "text": "ok"}, "Name must be at most 80 characters."),
    ],
)
def test_form_validation_errors(client: FlaskClient, data: dict[str, str], message: str) -> None:
    resp = client.post("/entries", data=data)
    assert resp.status_code == 400
    assert message in resp.get_data(as_text=True)
    assert client.get("/api/entries").get_json() == []


def test_form_error_page_keeps_input_escaped(client: FlaskClient) -> None:
    resp = client.post("/entries", data={"name": '<b>"x"</b>', "text": ""})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "&lt;b&gt;&#34;x&#34;&lt;/b&gt;" in html
    assert '<b>"x"</b>' not in html


def test_entries_are_autoescaped(client: FlaskClient) -> None:
    client.post("/entries", data={"name": "<i>mallory</i>", "text": "<script>alert(1)</script>"})
    html = client.get("/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "&lt;i&gt;mallory&lt;/i&gt;" in html


def test_get_entries_is_method_not_allowed(client: FlaskClient) -> None:
    assert client.get("/entries").status_code == 405


# --------------------------------------------------------------------------- SQLite state


def test_state_persists_across_requests_and_app_instances(client: FlaskClient, paths: dict[str, Path]) -> None:
    for i in range(3):
        assert client.post("/entries", data={"name": f"user{i}", "text": f"message {i}"}).status_code == 303
    assert paths["db"].is_file()

    texts = [e["text"] for e in client.get("/api/entries").get_json()]
    assert texts == ["message 2", "message 1", "message 0"]  # newest first

    # A brand-new app (think: another worker process) sees the same data through FLASK_APP_DB.
    with example.create_app({"TESTING": True}).test_client() as other:
        assert [e["text"] for e in other.get("/api/entries").get_json()] == texts

    with sqlite3.connect(paths["db"]) as conn:
        count = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    conn.close()
    assert count == 3


def test_connection_is_per_request_and_closed_on_teardown(app: Flask) -> None:
    with app.test_request_context("/"):
        db = example.get_db()
        assert example.get_db() is db
        db.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError):
        db.execute("SELECT 1")


def test_fresh_db_per_test_is_empty(client: FlaskClient) -> None:
    assert client.get("/api/entries").get_json() == []


# --------------------------------------------------------------------------- JSON API


def test_api_create_and_list(client: FlaskClient) -> None:
    resp = client.post("/api/entries", json={"name": " Grace ", "text": "COBOL rocks"})
    assert resp.status_code == 201
    created = resp.get_json()
    assert created["name"] == "Grace"
    assert created["text"] == "COBOL rocks"
    assert isinstance(created["id"], int)
    assert created["created_at"].endswith("Z")

    listing = client.get("/api/entries")
    assert listing.status_code == 200
    assert listing.mimetype == "application/json"
    assert listing.get_json() == [created]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ('{"text": "unterminated', 400, "not valid JSON"),
        ("", 400, "not valid JSON"),
        ('["a", "list"]', 400, "JSON object"),
        ("null", 400, "JSON object"),
        ('{"name": "no text"}', 400, "Text must not be empty."),
        ('{"text": 42}', 400, "Text must be a string."),
        ('{"text": "ok", "name": ["x"]}', 400, "Name must be a string."),
    ],
)
def test_api_rejects_bad_json(client: FlaskClient, body: str, status: int, fragment: str) -> None:
    resp = client.post("/api/entries", data=body, content_type="application/json")
    assert resp.status_code == status
    assert resp.mimetype == "application/json"
    assert fragment in resp.get_json()["error"]
    assert client.get("/api/entries").get_json() == []


def test_api_rejects_non_json_content_type(client: FlaskClient) -> None:
    resp = client.post("/api/entries", data={"text": "form data"})
    assert resp.status_code == 415
    assert "error" in resp.get_json()


def test_api_errors_are_json(client: FlaskClient) -> None:
    resp = client.put("/api/entries", json={})
    assert resp.status_code == 405
    assert resp.mimetype == "application/json"
    assert "error" in resp.get_json()

    resp = client.get("/api/nope")
    assert resp.status_code == 404
    assert "error" in resp.get_json()


# --------------------------------------------------------------------------- uploads


def _payload(size: int) -> bytes:
    return random.Random(1234).randbytes(size)


def _multipart(filename: str, content: bytes) -> tuple[bytes, str]:
    """Encode a one-file multipart/form-data body by hand.

    For big bodies the test client would spill its own encoding to a temporary file that it never closes
    (a ResourceWarning, i.e. an error here), so large uploads are sent as ready-made bytes instead.
    """
    boundary = "fcgibridge-test-boundary-7d3f"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + content + tail, f"multipart/form-data; boundary={boundary}"


def test_upload_form(client: FlaskClient) -> None:
    resp = client.get("/upload")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in html
    assert 'name="file"' in html


def test_upload_3mib_hash_and_size(client: FlaskClient, paths: dict[str, Path]) -> None:
    payload = _payload(3 * 1024 * 1024)
    body, content_type = _multipart("blob.bin", payload)
    resp = client.post("/upload", data=body, content_type=content_type)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body == {"name": "blob.bin", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

    stored = paths["uploads"] / "blob.bin"
    assert stored.read_bytes() == payload
    assert [p.name for p in paths["uploads"].iterdir()] == ["blob.bin"]  # no temp file left behind


class _RecordingStream(io.BytesIO):
    """Spool used instead of Werkzeug's, remembering how much the view asks for per read()."""

    def __init__(self) -> None:
        super().__init__()
        self.read_sizes: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.read_sizes.append(size)
        return super().read(size)


def test_upload_is_read_in_bounded_chunks(app: Flask) -> None:
    streams: list[_RecordingStream] = []

    class RecordingRequest(Request):
        def _get_file_stream(
            self,
            total_content_length: int | None,
            content_type: str | None,
            filename: str | None = None,
            content_length: int | None = None,
        ) -> IO[bytes]:
            stream = _RecordingStream()
            streams.append(stream)
            return stream

    app.request_class = RecordingRequest
    payload = _payload(3 * 1024 * 1024)
    body, content_type = _multipart("big.bin", payload)
    with app.test_client() as c:
        resp = c.post("/upload", data=body, content_type=content_type)
    assert resp.status_code == 200
    assert resp.get_json()["sha256"] == hashlib.sha256(payload).hexdigest()

    (stream,) = streams
    sizes = stream.read_sizes
    assert len(sizes) > 10
    assert all(size is not None and 0 < size <= 1024 * 1024 for size in sizes), sizes


def test_upload_filename_is_sanitized(client: FlaskClient, paths: dict[str, Path], tmp_path: Path) -> None:
    resp = client.post(
        "/upload",
        data={"file": (io.BytesIO(b"pwned"), "../../evil.txt")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200
    assert resp.get_json()["name"] == "evil.txt"
    assert (paths["uploads"] / "evil.txt").read_bytes() == b"pwned"
    assert not (tmp_path.parent / "evil.txt").exists()


def test_upload_empty_file(client: FlaskClient) -> None:
    resp = client.post("/upload", data={"file": (io.BytesIO(b""), "empty")}, content_type="multipart/form-data")
    assert resp.get_json() == {"name": "empty", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"other": "field"},
        {"file": (io.BytesIO(b"data"), "")},
    ],
)
def test_upload_without_file_is_400_json(client: FlaskClient, data: dict[str, Any], paths: dict[str, Path]) -> None:
    resp = client.post("/upload", data=data, content_type="multipart/form-data")
    assert resp.status_code == 400
    assert "error" in resp.get_json()
    assert not paths["uploads"].exists()


def test_upload_too_large_is_413_json(paths: dict[str, Path]) -> None:
    application = example.create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 1024})
    with application.test_client() as c:
        resp = c.post(
            "/upload", data={"file": (io.BytesIO(b"x" * 4096), "big.bin")}, content_type="multipart/form-data"
        )
    assert resp.status_code == 413
    assert "error" in resp.get_json()


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("n", [0, 1, 5, 50])
def test_stream_yields_n_lines(client: FlaskClient, n: int) -> None:
    with client.get(f"/stream?n={n}") as resp:
        assert resp.status_code == 200
        assert resp.is_streamed
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.mimetype == "text/plain"
        assert "Content-Length" not in resp.headers
        chunks = list(resp.iter_encoded())
    assert len(chunks) == n  # one chunk per line, produced lazily
    lines = b"".join(chunks).decode().splitlines()
    assert lines == [f"line {i} of {n}" for i in range(1, n + 1)]


def test_stream_default_is_5_lines(client: FlaskClient) -> None:
    assert len(client.get("/stream").get_data(as_text=True).splitlines()) == 5


def test_stream_with_delay(client: FlaskClient) -> None:
    assert client.get("/stream?n=2&delay=0.01").get_data(as_text=True) == "line 1 of 2\nline 2 of 2\n"


@pytest.mark.parametrize("query", ["n=abc", "n=-1", "n=10001", "n=2&delay=5", "n=2&delay=nan", "n=1.5"])
def test_stream_rejects_bad_parameters(client: FlaskClient, query: str) -> None:
    resp = client.get(f"/stream?{query}")
    assert resp.status_code == 400
    assert "error" in resp.get_json()


# --------------------------------------------------------------------------- /hello and /env


def test_hello_is_exactly_13_bytes(client: FlaskClient) -> None:
    resp = client.get("/hello")
    assert resp.status_code == 200
    assert resp.data == b"Hello, World!"
    assert resp.headers["Content-Length"] == "13"
    assert resp.mimetype == "text/plain"


def test_hello_head(client: FlaskClient) -> None:
    resp = client.head("/hello")
    assert resp.status_code == 200
    assert resp.data == b""
    assert resp.headers["Content-Length"] == "13"


def test_env_reports_request_facts(client: FlaskClient) -> None:
    resp = client.get("/env?a=1&a=2&b=%C3%A9", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert resp.status_code == 200
    data = resp.get_json()
    assert data["method"] == "GET"
    assert data["path"] == "/env"
    assert data["script_root"] == ""
    assert data["query_string"] == "a=1&a=2&b=%C3%A9"
    assert data["args"] == {"a": ["1", "2"], "b": ["é"]}
    assert data["remote_addr"] == "203.0.113.7"
    assert data["scheme"] == "http"
    assert data["url_for_index"] == "/"


def test_env_under_script_name_prefix(client: FlaskClient) -> None:
    # What a server should produce for SCRIPT_NAME=/guestbook, PATH_INFO=/env over HTTPS.
    resp = client.post("/env", base_url="https://example.test/guestbook/")
    data = resp.get_json()
    assert data["method"] == "POST"
    assert data["script_root"] == "/guestbook"
    assert data["path"] == "/env"
    assert data["scheme"] == "https"
    assert data["host"] == "example.test"
    assert data["url"] == "https://example.test/guestbook/env"
    assert data["url_for_index"] == "/guestbook/"


def test_redirect_and_links_respect_script_name(client: FlaskClient) -> None:
    base = "http://localhost/guestbook/"
    resp = client.post("/entries", data={"text": "prefixed"}, base_url=base)
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/guestbook/"
    html = client.get("/", base_url=base).get_data(as_text=True)
    assert 'action="/guestbook/entries"' in html
    assert "prefixed" in html


def test_env_with_raw_environ(app: Flask) -> None:
    """Drive the WSGI app with a hand-written environ, as a FastCGI server would build from params."""
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/app",
        "PATH_INFO": "/env",
        "QUERY_STRING": "x=1",
        "SERVER_NAME": "example.test",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "198.51.100.1",
        "HTTP_HOST": "example.test:8080",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    result = app.wsgi_app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    assert statuses == ["200 OK"]
    data = json.loads(body)
    assert data["script_root"] == "/app"
    assert data["path"] == "/env"
    assert data["query_string"] == "x=1"
    assert data["remote_addr"] == "198.51.100.1"
    assert data["url"] == "http://example.test:8080/app/env?x=1"
