"""`bridge serve`: CORS headers, content types, and requests that would leave the folder refused."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from bridge.demo.server import is_safe_request_path, serving

FILES = {"model.json": b"{}", "group1-shard1of1.bin": b"\x00\x01", "tfjs.wasm": b"\x00asm", "tf.min.js": b"//",
         "index.html": b"<html></html>"}
TYPES = [("model.json", "application/json"), ("group1-shard1of1.bin", "application/octet-stream"),
         ("tfjs.wasm", "application/wasm"), ("tf.min.js", "text/javascript"), ("index.html", "text/html")]
REFUSED = ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "//etc/passwd", "/..%2fsecret.txt",
           "/a\\..\\secret.txt"]


def _get(base: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture()
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    with serving(root) as base:
        yield base


@pytest.mark.parametrize("name, content_type", TYPES)
def test_content_types_and_cors(served: str, name: str, content_type: str) -> None:
    status, headers, body = _get(served, f"/{name}")
    assert status == 200 and body == FILES[name]
    assert headers["content-type"].startswith(content_type)
    assert headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", REFUSED)
def test_paths_outside_are_refused(served: str, path: str) -> None:
    status, _, body = _get(served, path)
    assert status in (400, 403, 404)
    assert b"secret" not in body


def test_safe_path_check_can_say_yes_and_no() -> None:
    assert is_safe_request_path("/web_model/model.json?v=1")
    assert not is_safe_request_path("/web_model/../../x")
