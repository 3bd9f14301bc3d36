"""`bridge serve`: a small static file server for web model folders and demo pages.

Loopback by default, CORS headers on every answer, content types right for .json/.bin/.wasm/.js/.mjs, and any
request whose path would leave the served folder (`..` segments, encoded or not, absolute or backslash paths) is
refused with 403 before the file system is touched.
"""

from __future__ import annotations

import functools
import http.server
import posixpath
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.errors import UsageError

CONTENT_TYPES = {
    ".json": "application/json", ".bin": "application/octet-stream", ".wasm": "application/wasm",
    ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html; charset=utf-8",
    ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml", ".md": "text/markdown; charset=utf-8",
}


def is_safe_request_path(raw_path: str) -> bool:
    """True when the URL path stays inside the served folder."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
    if not path.startswith("/") or path.startswith("//") or "\\" in path or "\x00" in path:
        return False
    parts = path.split("/")
    return ".." not in parts and posixpath.normpath(path).startswith("/")


class StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with CORS, explicit content types and traversal refusal; quiet unless asked."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **CONTENT_TYPES}
    log_requests = False

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not is_safe_request_path(self.path):
            self.send_error(403, "path leaves the served folder")
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

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        if self.log_requests:
            super().log_message(format, *args)


def make_server(folder: Path, host: str = "127.0.0.1", port: int = 0,
                verbose: bool = False) -> http.server.ThreadingHTTPServer:
    """A threaded server for `folder` on host:port (port 0 picks a free one)."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", stage="serve", hint="give the conversion's output folder")
    handler = functools.partial(type("Handler", (StaticHandler,), {"log_requests": verbose}),
                                directory=str(folder.resolve()))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}", stage="serve",
                         hint="choose another --port") from exc


@contextmanager
def serving(folder: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `folder` in a background thread for the duration of the block; yields the base URL."""
    server = make_server(folder, host)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bridge-serve",
                              daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
