"""`bridge serve`: CORS headers, content types, requests that would leave the folder refused, and the upload
endpoint (`accept_uploads`): TF.js's multipart save taken into a new folder, every malformed or unwelcome request
refused with its status and nothing written."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.demo.server import is_safe_request_path, make_server, serving
from bridge.demo.uploads import (UploadRefused, UploadSettings, check_client, check_origin, is_loopback,
                                 manifest_weight_bytes)
from bridge.errors import UsageError

FILES = {"model.json": b"{}", "group1-shard1of1.bin": b"\x00\x01", "tfjs.wasm": b"\x00asm", "tf.min.js": b"//",
         "index.html": b"<html></html>"}
TYPES = [("model.json", "application/json"), ("group1-shard1of1.bin", "application/octet-stream"),
         ("tfjs.wasm", "application/wasm"), ("tf.min.js", "text/javascript"), ("index.html", "text/html")]
REFUSED = ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "//etc/passwd", "/..%2fsecret.txt",
           "/a\\..\\secret.txt"]
BOUNDARY = "----WebKitFormBoundaryBr1dgeT3stB0und"
TOKEN = "s3cret-token"
LIMIT = 64 * 1024


def _request(base: str, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def _get(base: str, path: str) -> tuple[int, dict[str, str], bytes]:
    return _request(base, "GET", path)


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


# ------------------------------------------------------------------------------------------------ uploads

def _weights() -> bytes:
    # Bytes that look like line ends and boundaries (a browser picks a boundary the data does not hold, so not
    # the boundary itself) must come through untouched.
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    return values.tobytes() + b"\r\n--" + BOUNDARY[:-2].encode() + b"\r\n\r\n--\r" + bytes(range(256))


def _model(weights: bytes, paths: Sequence[str] = ("./model.weights.bin",),
           entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A model.json as tf.io.http writes it (one group naming ./model.weights.bin)."""
    entries = entries if entries is not None else [
        {"name": "dense/kernel", "shape": [3, 4], "dtype": "float32"},
        {"name": "tail", "shape": [len(weights) - 48], "dtype": "bool"}]
    return {"modelTopology": {"class_name": "Sequential", "config": {"layers": []}}, "format": "layers-model",
            "generatedBy": "test", "convertedBy": None,
            "weightsManifest": [{"paths": list(paths), "weights": entries}]}


@dataclass
class Part:
    """One multipart part as a browser's FormData writes it."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None
    headers: list[str] = field(default_factory=list)


def _model_part(model: Any) -> Part:
    data = model if isinstance(model, bytes) else json.dumps(model).encode()
    return Part("model.json", data, "model.json", "application/json")


def _weights_part(data: bytes) -> Part:
    return Part("model.weights.bin", data, "model.weights.bin", "application/octet-stream")


def multipart(parts: Sequence[Part], boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """A multipart/form-data body as Chromium sends it for FormData."""
    out = b""
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        lines = [f"Content-Disposition: {disposition}", *part.headers]
        if part.content_type is not None:
            lines.append(f"Content-Type: {part.content_type}")
        out += f"--{boundary}\r\n".encode() + "\r\n".join(lines).encode() + b"\r\n\r\n" + part.data + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def _valid_parts() -> list[Part]:
    weights = _weights()
    return [_model_part(_model(weights)), _weights_part(weights)]


def _form_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class BadUpload:
    """A request the endpoint must refuse with `status`, its message naming `says`."""

    name: str
    status: int
    says: str
    body: bytes = b""
    content_type: str | None = _form_type()
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/upload"


def _replace(parts: list[Part], index: int, **changes: Any) -> list[Part]:
    copy = list(parts)
    old = copy[index]
    copy[index] = Part(**{**old.__dict__, **changes})
    return copy


_W = _weights()
_OK = _valid_parts()
BAD_UPLOADS = [
    BadUpload("not multipart", 415, "multipart/form-data", json.dumps(_model(_W)).encode(), "application/json"),
    BadUpload("no content type", 415, "multipart/form-data", multipart(_OK), None),
    BadUpload("no boundary", 400, "boundary", multipart(_OK), "multipart/form-data"),
    BadUpload("other boundary", 400, "malformed", multipart(_OK), _form_type("elsewhere")),
    BadUpload("no closing boundary", 400, "malformed", multipart(_OK, close=False)),
    BadUpload("empty body", 400, "malformed", b""),
    BadUpload("model.json missing", 400, "'model.json' part is missing", multipart(_OK[1:])),
    BadUpload("extra part", 400, "unexpected part", multipart([*_OK, Part("notes.txt", b"x", "notes.txt",
                                                                          "text/plain")])),
    BadUpload("model.json twice", 400, "twice", multipart([_OK[0], *_OK])),
    BadUpload("not form-data", 400, "form-data", multipart(_OK).replace(b"form-data; name=", b"attachment; name=")),
    BadUpload("filename climbs out", 400, "is a path", multipart(_replace(_OK, 1, filename="../../model.weights.bin"))),
    BadUpload("absolute filename", 400, "is a path", multipart(_replace(_OK, 0, filename="/etc/model.json"))),
    BadUpload("backslash filename", 400, "is a path", multipart(_replace(_OK, 1, filename="..\\model.weights.bin"))),
    BadUpload("hidden filename", 400, "is a path", multipart(_replace(_OK, 1, filename=".model.weights.bin"))),
    BadUpload("other filename", 400, "filename must be", multipart(_replace(_OK, 1, filename="evil.sh"))),
    BadUpload("weights as text", 400, "application/octet-stream",
              multipart(_replace(_OK, 1, content_type="text/plain"))),
    BadUpload("model.json as octets", 400, "application/json",
              multipart(_replace(_OK, 0, content_type="application/octet-stream"))),
    BadUpload("base64 transfer encoding", 400, "Content-Transfer-Encoding",
              multipart(_replace(_OK, 1, headers=["Content-Transfer-Encoding: base64"]))),
    BadUpload("model.json not JSON", 400, "not JSON", multipart([_model_part(b"{'not': json"), _OK[1]])),
    BadUpload("model.json not UTF-8", 400, "not JSON", multipart([_model_part(b"\xff\xfe{}"), _OK[1]])),
    BadUpload("no modelTopology", 422, "modelTopology",
              multipart([_model_part({"weightsManifest": []}), _OK[1]])),
    BadUpload("JSON list", 422, "modelTopology", multipart([_model_part([1, 2]), _OK[1]])),
    BadUpload("unknown format", 422, "format", multipart([_model_part({**_model(_W), "format": "onnx"}), _OK[1]])),
    BadUpload("weights shorter than manifest", 422, "describes", multipart([_OK[0], _weights_part(_W[:-3])])),
    BadUpload("weights longer than manifest", 422, "describes", multipart([_OK[0], _weights_part(_W + b"x")])),
    BadUpload("weights part missing", 422, "describes", multipart(_OK[:1])),
    BadUpload("manifest names a path outside", 422, "must name the one file",
              multipart([_model_part(_model(_W, paths=["../../etc/model.weights.bin"])), _OK[1]])),
    BadUpload("manifest names two files", 422, "must name the one file",
              multipart([_model_part(_model(_W, paths=["model.weights.bin", "b.bin"])), _OK[1]])),
    BadUpload("manifest paths not a list", 422, "list of file names",
              multipart([_model_part({**_model(_W), "weightsManifest": [{"paths": "model.weights.bin",
                                                                           "weights": []}]}), _OK[1]])),
    BadUpload("unknown weight dtype", 422, "unknown dtype",
              multipart([_model_part(_model(_W, entries=[{"name": "w", "shape": [2], "dtype": "int64"}])),
                         _OK[1]])),
    BadUpload("bad weight shape", 422, "valid shape",
              multipart([_model_part(_model(_W, entries=[{"name": "w", "shape": [-1], "dtype": "float32"}])),
                         _OK[1]])),
    BadUpload("over the size limit", 413, "limit", multipart([_OK[0], _weights_part(b"\x00" * (LIMIT + 1))])),
    BadUpload("no token", 401, "token", multipart(_OK), path="/upload?"),
    BadUpload("wrong token", 401, "token", multipart(_OK), headers={"Authorization": "Bearer nope"}),
    BadUpload("token in the wrong scheme", 401, "token", multipart(_OK), headers={"Authorization": f"Basic {TOKEN}"}),
    BadUpload("cross-origin page", 403, "cross-origin", multipart(_OK), headers={"Origin": "http://evil.example"}),
    BadUpload("file page (null origin)", 403, "cross-origin", multipart(_OK), headers={"Origin": "null"}),
    BadUpload("rebound host name", 403, "not this loopback server", multipart(_OK),
              headers={"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}),
    BadUpload("POST elsewhere", 404, "uploads go to", multipart(_OK), path="/model.json"),
]


@dataclass
class UploadServer:
    """A server taking uploads into `folder`, with the token `TOKEN` and the size limit `LIMIT`."""

    base: str
    folder: Path
    site: Path

    def post(self, body: bytes, content_type: str | None = _form_type(), headers: dict[str, str] | None = None,
             path: str = "/upload", token: bool = True) -> tuple[int, dict[str, Any]]:
        """POSTs `body`; returns the status and the JSON answer."""
        sent = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        if content_type is not None:
            sent["Content-Type"] = content_type
        sent.update(headers or {})
        status, response_headers, data = _request(self.base, "POST", path, body, sent)
        assert response_headers["content-type"] == "application/json"
        assert "access-control-allow-origin" not in response_headers
        return status, json.loads(data)

    def entries(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())


@pytest.fixture()
def uploads(tmp_path: Path) -> Iterator[UploadServer]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html></html>")
    folder = tmp_path / "uploads"
    with serving(site, accept_uploads=folder, token=TOKEN, max_upload_bytes=LIMIT) as base:
        yield UploadServer(base=base, folder=folder, site=site)


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=[c.name for c in BAD_UPLOADS])
def test_bad_uploads_are_refused_and_write_nothing(uploads: UploadServer, case: BadUpload) -> None:
    token = case.name not in ("no token", "wrong token", "token in the wrong scheme")
    status, answer = uploads.post(case.body, case.content_type, case.headers, case.path, token=token)
    assert status == case.status, answer
    assert case.says in answer["error"]
    assert uploads.entries() == []


def test_valid_upload_is_written_and_served_back(uploads: UploadServer) -> None:
    weights = _weights()
    model_json = json.dumps(_model(weights)).encode()
    status, answer = uploads.post(multipart([_model_part(model_json), _weights_part(weights)]),
                                  headers={"Origin": uploads.base})
    assert status == 201, answer
    folder = uploads.folder / answer["id"]
    assert uploads.entries() == [answer["id"]]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.weights.bin"]
    assert (folder / "model.json").read_bytes() == model_json
    assert (folder / "model.weights.bin").read_bytes() == weights
    assert answer["files"] == {"model.json": len(model_json), "model.weights.bin": len(weights)}
    assert (folder.stat().st_mode & 0o777, (folder / "model.json").stat().st_mode & 0o777) == (0o755, 0o644)
    served, _, data = _get(uploads.base, answer["model"])
    assert served == 200 and data == model_json
    assert _get(uploads.base, f"/uploads/{answer['id']}/./model.weights.bin")[2] == weights
    status, _, data = _get(uploads.base, "/upload")
    assert status == 200 and json.loads(data)["uploads"] == [answer["model"]]
    assert json.loads(data)["tokenRequired"] is True
    assert _get(uploads.base, "/uploads/")[0] == 404  # no listing
    status, answer2 = uploads.post(multipart(_valid_parts()), path=f"/upload?token={TOKEN}", token=False)
    assert status == 201 and answer2["id"] != answer["id"] and len(uploads.entries()) == 2


def test_a_model_without_weights_is_taken(uploads: UploadServer) -> None:
    """tf.io.http leaves the weights part out when the model has no weights; the manifest must then be empty."""
    status, answer = uploads.post(multipart([_model_part(_model(b"", entries=[]))]))
    assert status == 201, answer
    assert (uploads.folder / answer["id"] / "model.weights.bin").read_bytes() == b""


def test_truncated_body_is_refused(uploads: UploadServer) -> None:
    """A client that stops sending before Content-Length: refused once its side closes, nothing written."""
    body = multipart(_valid_parts())
    host, port = uploads.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        head = (f"POST /upload HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: {_form_type()}\r\nContent-Length: {len(body) + 100}\r\n\r\n").encode()
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 400") and b"the body ended" in answer
    assert uploads.entries() == []


@pytest.mark.parametrize("declared, status", [("Content-Length: 12x", 400), ("Content-Length: -5", 400), ("", 411),
                                              ("Transfer-Encoding: chunked", 411)])
def test_bad_content_length(uploads: UploadServer, declared: str, status: int) -> None:
    host, port = uploads.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        declared = f"{declared}\r\n" if declared else ""
        sock.sendall((f"POST /upload HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"Content-Type: {_form_type()}\r\n{declared}\r\n").encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(f"HTTP/1.0 {status}".encode()), answer[:200]
    assert uploads.entries() == []


def test_no_uploads_without_the_option(served: str) -> None:
    status, headers, data = _request(served, "POST", "/upload", multipart(_valid_parts()),
                                     {"Content-Type": _form_type()})
    assert status == 404 and "--accept-uploads" in json.loads(data)["error"]
    assert _get(served, "/upload")[0] == 404


LOOPBACK = [("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
            ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False),
            ("10.0.0.1", False), ("example.com", False), ("", False), ("::ffff:10.0.0.1", False)]


@pytest.mark.parametrize("host, expected", LOOPBACK)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_non_loopback_clients_need_a_non_loopback_host(tmp_path: Path) -> None:
    local = UploadSettings(folder=tmp_path)
    with pytest.raises(UploadRefused) as refused:
        check_client("192.168.1.20", local)
    assert refused.value.status == 403 and "--host" in refused.value.message
    check_client("127.0.0.1", local)
    check_client("192.168.1.20", UploadSettings(folder=tmp_path, token="t", remote=True))
    # On a network host, a LAN name in Host is fine; a foreign Origin still is not.
    check_origin("box.lan:8000", "http://box.lan:8000", UploadSettings(folder=tmp_path, token="t", remote=True))
    with pytest.raises(UploadRefused):
        check_origin("box.lan:8000", "http://evil.example", UploadSettings(folder=tmp_path, token="t", remote=True))


def test_upload_from_a_non_loopback_client_is_refused(tmp_path: Path) -> None:
    """The handler itself, seeing a client from the network on a loopback server: 403, nothing written."""
    import threading

    folder = tmp_path / "uploads"
    server = make_server(tmp_path, accept_uploads=folder)
    handler_class = server.RequestHandlerClass

    def remote_client(request: Any, client_address: Any, srv: Any) -> Any:
        return handler_class(request, ("192.168.7.7", client_address[1]), srv)

    server.RequestHandlerClass = remote_client  # type: ignore[assignment]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        status, _, data = _request(f"http://127.0.0.1:{server.server_address[1]}", "POST", "/upload",
                                   multipart(_valid_parts()), {"Content-Type": _form_type()})
    finally:
        server.shutdown()
        server.server_close()
    assert status == 403 and "loopback clients only" in json.loads(data)["error"]
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("kwargs, says", [
    ({"token": "t"}, "--accept-uploads"),
    ({"accept_uploads": "u", "host": "0.0.0.0"}, "need a token"),
    ({"accept_uploads": "u", "max_upload_bytes": 0}, "positive"),
    ({"accept_uploads": "u", "token": "two words"}, "without spaces"),
    ({"accept_uploads": "file.txt"}, "not a folder"),
])
def test_bad_server_options(tmp_path: Path, kwargs: dict[str, Any], says: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    if "accept_uploads" in kwargs:
        kwargs = {**kwargs, "accept_uploads": tmp_path / kwargs["accept_uploads"]}
    with pytest.raises(UsageError, match=says):
        make_server(tmp_path, **kwargs)


def test_manifest_bytes_follow_dtypes_and_strings() -> None:
    strings = b"".join(len(s).to_bytes(4, "little") + s for s in (b"ab", b"", b"xyz"))
    entries = [{"name": "a", "shape": [2, 3], "dtype": "float32"}, {"name": "b", "shape": [3], "dtype": "string"},
               {"name": "c", "shape": [5], "dtype": "float32", "quantization": {"dtype": "uint8", "min": 0,
                                                                                 "scale": 1}},
               {"name": "d", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
               {"name": "e", "shape": [4], "dtype": "bool"}]
    data = b"\x00" * 24 + strings + b"\x00" * (5 + 4 + 4)
    assert manifest_weight_bytes(entries, data) == len(data)
    with pytest.raises(UploadRefused, match="end inside"):
        manifest_weight_bytes(entries[1:2], strings[:-2][:6])


def test_uploads_are_logged_when_asked(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`bridge serve` shows one line per upload taken or refused (log_uploads), and nothing else."""
    with serving(tmp_path, accept_uploads=tmp_path / "up", log_uploads=True) as base:
        assert _request(base, "POST", "/upload", multipart(_valid_parts()), {"Content-Type": _form_type()})[0] == 201
        assert _request(base, "POST", "/upload", b"{}", {"Content-Type": "application/json"})[0] == 415
        assert _get(base, "/upload")[0] == 200
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "upload saved: " in lines[0] and str(tmp_path / "up") in lines[0]
    assert "upload refused (415): expected multipart/form-data" in lines[1]
