"""The upload endpoint's request checks: TF.js's `model.save(tf.io.http(url))` request, parsed, validated, written.

TF.js (tfjs-core io/http.ts, `HTTPRequest.save`) sends one POST with a `multipart/form-data` body built by the
browser's FormData: a part named ``model.json`` (filename ``model.json``, type ``application/json``) holding the
model topology with a weights manifest whose one group lists ``./model.weights.bin``, and, when the model has
weights, a part named ``model.weights.bin`` (filename ``model.weights.bin``, type ``application/octet-stream``)
holding every weight's bytes in manifest order. The body is parsed with the standard library's `email` parser
(multipart is MIME), every rule below is a refusal with an HTTP status, and an accepted upload is written into a
new folder under the upload folder, atomically (a hidden temporary folder renamed into place), so a reader never
sees half an upload and a refusal leaves nothing behind.

Everything here is independent of the HTTP server, so the rules are tested on their own.
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
import ipaddress
import json
import math
import os
import secrets
import shutil
import struct
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

MODEL_PART = "model.json"
WEIGHTS_PART = "model.weights.bin"
PARTS = {MODEL_PART: "application/json", WEIGHTS_PART: "application/octet-stream"}
DEFAULT_MAX_UPLOAD_BYTES = 128 * 1024 * 1024
INCOMING_PREFIX = ".incoming-"
# Bytes per element of each TF.js weight dtype, and of the quantized storage dtypes.
DTYPE_BYTES = {"float32": 4, "int32": 4, "bool": 1, "complex64": 8, "uint8": 1, "uint16": 2, "float16": 2,
               "int8": 1, "int16": 2}
STRING_LENGTH_BYTES = 4
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class UploadRefused(Exception):
    """A refusal: `status` is the HTTP status, `message` the short reason sent back as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadSettings:
    """How the server takes uploads: into `folder`, bodies up to `max_bytes`, with `token` when set; `remote`
    says the server listens beyond loopback (then clients need not be loopback, and a token is required)."""

    folder: Path
    token: str | None = None
    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    remote: bool = False


@dataclass(frozen=True)
class Upload:
    """A checked upload: model.json's bytes (as sent) and the weight bytes."""

    model_json: bytes
    weights: bytes
    model: dict[str, Any]


# ------------------------------------------------------------------------------------------------ who may upload

def is_loopback(host: str) -> bool:
    """True for a loopback address or name (127.0.0.0/8, ::1, an IPv4-mapped loopback, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def check_client(client_ip: str, settings: UploadSettings) -> None:
    """Refuses a client that is not on loopback, unless the server was started on a non-loopback host."""
    if not settings.remote and not is_loopback(client_ip):
        raise UploadRefused(403, f"uploads are taken from loopback clients only (this one is {client_ip}); "
                                 "start the server with --host to take them from the network")


def _host_name(host_header: str) -> str:
    """The host part of a Host header (``127.0.0.1:8000``, ``[::1]:8000``, ``localhost``)."""
    value = host_header.strip()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_origin(host_header: str | None, origin: str | None, settings: UploadSettings) -> None:
    """Refuses what a page on another site could send: a request whose Origin is not this server's (a plain
    multipart POST needs no CORS preflight, so the browser would deliver it), and, on loopback, a Host that is not
    a loopback name (a DNS rebinding page makes Origin and Host agree on its own name)."""
    if not host_header:
        raise UploadRefused(400, "the request has no Host header")
    if not settings.remote and not is_loopback(_host_name(host_header)):
        raise UploadRefused(403, f"Host '{host_header}' is not this loopback server")
    if origin is not None and origin != f"http://{host_header}":
        raise UploadRefused(403, f"cross-origin upload refused (Origin {origin}); send it from a page this "
                                 "server serves")


def check_token(authorization: str | None, query: str, settings: UploadSettings) -> None:
    """With a token set, the request must carry it: ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``."""
    if settings.token is None:
        return
    given: list[str] = []
    if authorization and authorization[:7].lower() == "bearer ":
        given.append(authorization[7:].strip())
    given += urllib.parse.parse_qs(query, keep_blank_values=True).get("token", [])
    expected = settings.token.encode()
    if not any(hmac.compare_digest(value.encode(), expected) for value in given):
        raise UploadRefused(401, "a valid token is needed: send 'Authorization: Bearer TOKEN' or ?token=TOKEN")


def check_length(content_length: str | None, settings: UploadSettings) -> int:
    """The declared body size, refused when missing, malformed or over the limit (before reading anything)."""
    if content_length is None:
        raise UploadRefused(411, "the request must declare its Content-Length")
    try:
        length = int(content_length)
    except ValueError:
        raise UploadRefused(400, f"Content-Length '{content_length}' is not a number") from None
    if length < 0:
        raise UploadRefused(400, "Content-Length is negative")
    if length > settings.max_bytes:
        raise UploadRefused(413, f"the upload is {length} bytes, more than the limit of {settings.max_bytes} bytes "
                                 "(--max-upload-bytes)")
    return length


# ------------------------------------------------------------------------------------------------ the body

def parse_multipart(content_type: str | None, body: bytes) -> dict[str, Message]:
    """The form's parts by field name; refuses anything but a well-formed multipart/form-data body."""
    if not content_type or content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise UploadRefused(415, f"expected multipart/form-data (what tf.io.http sends), got "
                                 f"'{content_type or 'no Content-Type'}'")
    if "\r" in content_type or "\n" in content_type:
        raise UploadRefused(400, "malformed Content-Type")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.get_param("boundary"):
        raise UploadRefused(400, "the multipart Content-Type has no boundary")
    if message.defects or not message.is_multipart():
        names = ", ".join(type(d).__name__ for d in message.defects) or "no parts"
        raise UploadRefused(400, f"malformed multipart body ({names})")
    parts: dict[str, Message] = {}
    for part in message.iter_parts():
        name = _part_name(part)
        if name in parts:
            raise UploadRefused(400, f"the part '{name}' is sent twice")
        parts[name] = part
    return parts


def _part_name(part: Message) -> str:
    if part.defects:
        raise UploadRefused(400, f"malformed part ({', '.join(type(d).__name__ for d in part.defects)})")
    if part.get_content_disposition() != "form-data":
        raise UploadRefused(400, "every part must be 'Content-Disposition: form-data'")
    name = part.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise UploadRefused(400, "a part has no name")
    if name not in PARTS:
        raise UploadRefused(400, f"unexpected part '{name[:80]}': tf.io.http sends only "
                                 f"'{MODEL_PART}' and '{WEIGHTS_PART}'")
    return name


def _is_plain_file_name(name: str) -> bool:
    return not ("/" in name or "\\" in name or "\x00" in name or name in (".", "..") or name.startswith(".")
                or ":" in name)


def part_bytes(parts: Mapping[str, Message], name: str, required: bool) -> bytes | None:
    """The bytes of part `name` after checking its file name and content type (None when absent, not required)."""
    part = parts.get(name)
    if part is None:
        if required:
            raise UploadRefused(400, f"the '{name}' part is missing")
        return None
    filename = part.get_filename()
    if filename is not None and not _is_plain_file_name(filename):
        raise UploadRefused(400, f"the '{name}' part's filename '{filename[:80]}' is a path; only a plain "
                                 "file name is taken")
    if filename is not None and filename != name:
        raise UploadRefused(400, f"the '{name}' part's filename must be '{name}' (got '{filename[:80]}')")
    if part.get_content_type() != PARTS[name]:
        raise UploadRefused(400, f"the '{name}' part must be {PARTS[name]} (got {part.get_content_type()})")
    encoding = str(part.get("Content-Transfer-Encoding", "binary")).strip().lower()
    if encoding not in ("binary", "8bit", "7bit"):
        raise UploadRefused(400, f"the '{name}' part uses Content-Transfer-Encoding {encoding}; send raw bytes")
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


# ------------------------------------------------------------------------------------------------ model.json

def _manifest_path(path: Any) -> str:
    text = str(path)
    return text[2:] if text.startswith("./") else text


def manifest_weight_bytes(weights: Sequence[Mapping[str, Any]], data: bytes) -> int:
    """How many bytes the manifest's weights take, read in order from `data` (string weights carry their
    lengths in the data); an UploadRefused when an entry is malformed."""
    offset = 0
    for entry in weights:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise UploadRefused(422, "a weights manifest entry has no name")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise UploadRefused(422, f"weight '{entry['name']}' has no valid shape")
        count = math.prod(shape)
        quantization = entry.get("quantization")
        dtype = quantization.get("dtype") if isinstance(quantization, Mapping) else entry.get("dtype")
        if dtype == "string":
            offset = _skip_strings(data, offset, count, entry["name"])
        elif dtype in DTYPE_BYTES:
            offset += count * DTYPE_BYTES[dtype]
        else:
            raise UploadRefused(422, f"weight '{entry['name']}' has unknown dtype {dtype!r}")
    return offset


def _skip_strings(data: bytes, offset: int, count: int, name: str) -> int:
    for _ in range(count):
        if offset + STRING_LENGTH_BYTES > len(data):
            raise UploadRefused(422, f"the weight bytes end inside the string weight '{name}'")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += STRING_LENGTH_BYTES + length
    return offset


def check_model(model_json: bytes, weights: bytes | None) -> Upload:
    """Refuses a model.json that is not a TF.js model whose manifest names the one weights file and adds up to
    exactly the weight bytes sent; returns the checked upload."""
    try:
        model = json.loads(model_json.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UploadRefused(400, f"model.json is not JSON: {str(exc)[:120]}") from None
    if not isinstance(model, dict) or model.get("modelTopology") is None:
        raise UploadRefused(422, "model.json holds no modelTopology")
    if model.get("format") not in (None, "layers-model", "graph-model"):
        raise UploadRefused(422, f"model.json has format {str(model.get('format'))[:40]!r}, not a TF.js model")
    manifest = model.get("weightsManifest", [])
    if not isinstance(manifest, list) or not all(isinstance(g, dict) for g in manifest):
        raise UploadRefused(422, "model.json's weightsManifest is not a list of groups")
    if not all(isinstance(g.get("paths", []), list) and all(isinstance(p, str) for p in g.get("paths", []))
               and isinstance(g.get("weights", []), list) for g in manifest):
        raise UploadRefused(422, "each weights manifest group needs 'paths', a list of file names, and 'weights', "
                                 "a list")
    paths = [_manifest_path(p) for g in manifest for p in (g.get("paths") or [])]
    entries = [w for g in manifest for w in (g.get("weights") or [])]
    data = weights or b""
    if paths and paths != [WEIGHTS_PART]:
        raise UploadRefused(422, f"the weights manifest must name the one file '{WEIGHTS_PART}' (it names "
                                 f"{', '.join(p[:60] for p in paths[:4])})")
    expected = manifest_weight_bytes(entries, data)
    if expected != len(data):
        raise UploadRefused(422, f"the weights manifest describes {expected} bytes but {len(data)} were sent")
    if data and not paths:
        raise UploadRefused(422, "weight bytes were sent but the manifest names no weights file")
    return Upload(model_json=model_json, weights=data, model=model)


# ------------------------------------------------------------------------------------------------ writing

def new_upload_id() -> str:
    """A fresh folder name: UTC time (sortable) and random hex (unguessable, no clashes)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def write_upload(folder: Path, upload: Upload) -> str:
    """Writes model.json and model.weights.bin into a new folder under `folder`, atomically; returns its name.

    The files go into a hidden temporary folder first, are flushed, then the folder is renamed into place, so
    the new folder appears complete or not at all. Files are readable by others (a separate web server may
    serve them)."""
    folder.mkdir(parents=True, exist_ok=True)
    upload_id = new_upload_id()
    staging = folder / f"{INCOMING_PREFIX}{upload_id}"
    staging.mkdir(mode=0o755)
    try:
        for name, data in ((MODEL_PART, upload.model_json), (WEIGHTS_PART, upload.weights)):
            with open(staging / name, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(staging / name, 0o644)
        os.chmod(staging, 0o755)
        os.rename(staging, folder / upload_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return upload_id


def upload_folder_path(folder: Path, rest: str) -> Path | None:
    """The file under the upload folder a ``/uploads/<rest>`` URL names, or None when it names a hidden or
    staging entry, or leaves the folder."""
    parts = [p for p in rest.split("/") if p and p != "."]
    if any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None
    path = folder.joinpath(*parts) if parts else folder
    root = folder.resolve()
    resolved = path.resolve()
    return path if resolved == root or root in resolved.parents else None
