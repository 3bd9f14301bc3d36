"""`bridge serve`: a small static file server for web model folders and demo pages, optionally taking uploads.

Loopback by default, CORS headers on every static answer, content types right for .json/.bin/.wasm/.js/.mjs, and
any request whose path would leave the served folder (`..` segments, encoded or not, absolute or backslash paths)
is refused with 403 before the file system is touched.

With `accept_uploads=DIR` (`bridge serve --accept-uploads DIR`) it also takes what TF.js's
``model.save(tf.io.http('/upload'))`` sends: ``POST /upload`` writes a new folder ``DIR/<id>/`` (model.json and
model.weights.bin, a layers model TF.js loads again) and answers 201 with ``{"id", "model", "files", "bytes"}``;
``GET /uploads/<id>/model.json`` serves it back, ``GET /upload`` says whether uploads are taken (for the demo
page). Refusals (see bridge/demo/uploads.py) are an HTTP status with ``{"error": message}`` and write nothing.
"""

from __future__ import annotations

import functools
import http.server
import json
import posixpath
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.demo.uploads import (DEFAULT_MAX_UPLOAD_BYTES, MODEL_PART, WEIGHTS_PART, UploadRefused, UploadSettings,
                                 check_client, check_length, check_model, check_origin, check_token, is_loopback,
                                 parse_multipart, part_bytes, upload_folder_path, write_upload)
from bridge.errors import UsageError

CONTENT_TYPES = {
    ".json": "application/json", ".bin": "application/octet-stream", ".wasm": "application/wasm",
    ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html; charset=utf-8",
    ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml", ".md": "text/markdown; charset=utf-8",
}
UPLOAD_PATH = "/upload"
UPLOADS_PREFIX = "/uploads/"
# A refused body larger than this is not read to its end before answering: the connection is closed instead.
DRAIN_LIMIT = 16 * 1024 * 1024
READ_TIMEOUT_S = 60


def is_safe_request_path(raw_path: str) -> bool:
    """True when the URL path stays inside the served folder."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
    if not path.startswith("/") or path.startswith("//") or "\\" in path or "\x00" in path:
        return False
    parts = path.split("/")
    return ".." not in parts and posixpath.normpath(path).startswith("/")


class StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with CORS, explicit content types and traversal refusal; quiet unless asked. With
    `uploads` set, also the upload endpoint and the uploaded folders under /uploads/."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **CONTENT_TYPES}
    log_requests = False
    log_uploads = False
    uploads: UploadSettings | None = None
    timeout = READ_TIMEOUT_S

    def _route(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(getattr(self, "path", "")).path)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not is_safe_request_path(self.path):
            self.send_error(403, "path leaves the served folder")
            return
        if self.uploads is not None and self._route() == UPLOAD_PATH:
            self._send_json(200, upload_info(self.uploads))
            return
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if not is_safe_request_path(self.path):
            self.send_error(403, "path leaves the served folder")
            return
        super().do_HEAD()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.send_response(204)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        self._body_read = False
        if self._route() != UPLOAD_PATH:
            self._refuse(UploadRefused(404, f"nothing takes POST at {self._route()[:80]}; uploads go to "
                                            f"{UPLOAD_PATH}"))
            return
        if self.uploads is None:
            self._refuse(UploadRefused(404, "this server takes no uploads (start it with --accept-uploads DIR)"))
            return
        try:
            answer = self._take_upload(self.uploads)
        except UploadRefused as refused:
            self._refuse(refused)
            return
        self._send_json(201, answer, location=answer["model"])

    def _take_upload(self, settings: UploadSettings) -> dict[str, Any]:
        """Every check in order (who, where from, token, size, body, model), then the atomic write."""
        check_client(self.client_address[0], settings)
        check_origin(self.headers.get("Host"), self.headers.get("Origin"), settings)
        check_token(self.headers.get("Authorization"), urllib.parse.urlsplit(self.path).query, settings)
        if self.headers.get("Transfer-Encoding"):
            raise UploadRefused(411, "chunked bodies are not taken: send a Content-Length")
        length = check_length(self.headers.get("Content-Length"), settings)
        body = self._read_body(length)
        parts = parse_multipart(self.headers.get("Content-Type"), body)
        model_json = part_bytes(parts, MODEL_PART, required=True)
        assert model_json is not None
        upload = check_model(model_json, part_bytes(parts, WEIGHTS_PART, required=False))
        try:
            upload_id = write_upload(settings.folder, upload)
        except OSError as exc:
            raise UploadRefused(507, f"cannot write the upload: {exc.strerror or exc}") from None
        self._announce(f"upload saved: {settings.folder / upload_id} ({len(upload.weights)} weight bytes)")
        return {"id": upload_id, "model": f"{UPLOADS_PREFIX}{upload_id}/{MODEL_PART}",
                "files": {MODEL_PART: len(upload.model_json), WEIGHTS_PART: len(upload.weights)},
                "bytes": len(upload.model_json) + len(upload.weights)}

    def _read_body(self, length: int) -> bytes:
        chunks, left = [], length
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                raise UploadRefused(400, f"the body ended after {length - left} of {length} bytes")
            chunks.append(chunk)
            left -= len(chunk)
        self._body_read = True
        return b"".join(chunks)

    def _refuse(self, refused: UploadRefused) -> None:
        """Answers a refusal; an unread body is drained first (up to DRAIN_LIMIT) so the client gets to read
        the answer instead of a reset connection."""
        if not getattr(self, "_body_read", False):
            self._drain()
        self.close_connection = True
        self._send_json(refused.status, {"error": refused.message},
                        extra={"WWW-Authenticate": "Bearer"} if refused.status == 401 else None)
        self._announce(f"upload refused ({refused.status}): {refused.message}")

    def _drain(self) -> None:
        try:
            left = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if left > DRAIN_LIMIT:
            return
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)

    def _send_json(self, status: int, data: Any, location: str | None = None,
                   extra: dict[str, str] | None = None) -> None:
        body = (json.dumps(data) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def translate_path(self, path: str) -> str:
        """/uploads/... maps into the upload folder (hidden and staging entries are not served)."""
        route = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        if self.uploads is not None and route.startswith(UPLOADS_PREFIX):
            target = upload_folder_path(self.uploads.folder, route[len(UPLOADS_PREFIX):])
            return str(target) if target is not None else str(self.uploads.folder / ".refused")
        return super().translate_path(path)

    def list_directory(self, path: str) -> Any:
        if self.uploads is not None and self._route().startswith(UPLOADS_PREFIX):
            self.send_error(404, "uploaded folders are not listed; GET /upload lists them")
            return None
        return super().list_directory(path)

    def end_headers(self) -> None:
        # Static answers are for any origin (a page elsewhere may load a model); the upload endpoint's are not,
        # so a page on another site cannot read what it says.
        if getattr(self, "command", None) != "POST" and self._route() != UPLOAD_PATH:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def _announce(self, line: str) -> None:
        if self.log_requests or self.log_uploads:
            sys.stderr.write(f"{self.address_string()} {line}\n")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        if self.log_requests:
            super().log_message(format, *args)


def upload_info(settings: UploadSettings) -> dict[str, Any]:
    """What GET /upload answers: that uploads are taken, the limit, whether a token is needed, and the
    uploaded folders (newest last)."""
    folder = settings.folder
    uploads = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    return {"accepts": True, "endpoint": UPLOAD_PATH, "maxBytes": settings.max_bytes,
            "tokenRequired": settings.token is not None, "parts": [MODEL_PART, WEIGHTS_PART],
            "uploads": [f"{UPLOADS_PREFIX}{name}/{MODEL_PART}" for name in uploads]}


def upload_settings(accept_uploads: Path | None, host: str, token: str | None,
                    max_upload_bytes: int) -> UploadSettings | None:
    """The checked upload settings (None without an upload folder); a UsageError for a bad combination."""
    if accept_uploads is None:
        if token is not None:
            raise UsageError("--token only applies with --accept-uploads DIR", stage="serve")
        return None
    if max_upload_bytes <= 0:
        raise UsageError(f"--max-upload-bytes must be positive, got {max_upload_bytes}", stage="serve")
    if token is not None and (not token.strip() or any(c.isspace() for c in token)):
        raise UsageError("--token must be a non-empty word without spaces", stage="serve")
    remote = not is_loopback(host)
    if remote and token is None:
        raise UsageError(f"uploads on a non-loopback host ({host}) need a token", stage="serve",
                         hint="add --token T (then send 'Authorization: Bearer T'), or serve on 127.0.0.1")
    folder = Path(accept_uploads).resolve()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"the upload folder {accept_uploads} is not a folder", stage="serve")
    folder.mkdir(parents=True, exist_ok=True)
    return UploadSettings(folder=folder, token=token, max_bytes=int(max_upload_bytes), remote=remote)


def make_server(folder: Path, host: str = "127.0.0.1", port: int = 0, verbose: bool = False, *,
                accept_uploads: Path | None = None, token: str | None = None,
                max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                log_uploads: bool = False) -> http.server.ThreadingHTTPServer:
    """A threaded server for `folder` on host:port (port 0 picks a free one).

    With `accept_uploads`, ``POST /upload`` takes TF.js's http save into new folders under that folder (created
    if missing), bodies up to `max_upload_bytes`, and requests carrying `token` when one is given (required on a
    non-loopback `host`). `log_uploads` prints one line per upload taken or refused to stderr (`verbose` prints
    every request)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", stage="serve", hint="give the conversion's output folder")
    settings = upload_settings(accept_uploads, host, token, max_upload_bytes)
    handler_class = type("Handler", (StaticHandler,), {"log_requests": verbose, "log_uploads": log_uploads,
                                                       "uploads": settings})
    handler = functools.partial(handler_class, directory=str(folder.resolve()))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}", stage="serve",
                         hint="choose another --port") from exc


@contextmanager
def serving(folder: Path, host: str = "127.0.0.1", **options: Any) -> Iterator[str]:
    """Serve `folder` in a background thread for the duration of the block; yields the base URL. `options` are
    `make_server`'s keywords (``accept_uploads``, ``token``, ``max_upload_bytes``, ``verbose``, ``log_uploads``)."""
    server = make_server(folder, host, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bridge-serve",
                              daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
