"""Keep the ONNX route quiet and offline.

TensorFlow, onnx2tf and the torch exporter print a lot (C++ logs at import, progress lines, colored op tables).
`captured_output` swallows all of it at the file-descriptor level unless the caller asked for verbose output, and
keeps the text so a failure can show its tail. `network_blocked` makes every outgoing connection fail during a
step that must never touch the network, and reports any attempt loudly even if the library swallowed the error.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterator

from bridge.errors import BridgeError

# Environment set before TensorFlow is first imported (it reads these at import time).
_TF_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
}


@dataclass
class CapturedOutput:
    """Text written to stdout/stderr (by Python or native code) while capturing; empty when verbose."""

    text: str = ""

    def tail(self, lines: int = 15) -> list[str]:
        """The last non-empty `lines` lines, for an error's details."""
        kept = [line.rstrip() for line in self.text.splitlines() if line.strip()]
        return kept[-lines:]


# Re-entrant: a captured block may import TensorFlow, which captures again (fd redirects nest fine).
_capture_lock = threading.RLock()


@contextlib.contextmanager
def captured_output(verbose: bool = False) -> Iterator[CapturedOutput]:
    """Redirect fds 1 and 2 (and `sys.stdout`/`sys.stderr`) to a temporary file unless `verbose`.

    The fd-level redirect is what silences native TensorFlow logs and subprocesses; the Python-level one catches
    writers that replaced `sys.stdout` (pytest, IDEs).
    """
    captured = CapturedOutput()
    if verbose:
        yield captured
        return
    with _capture_lock, tempfile.TemporaryFile(mode="w+b") as sink:
        _flush_std_streams()
        saved_fds = (os.dup(1), os.dup(2))
        text_sink = io.TextIOWrapper(sink, encoding="utf-8", errors="replace", write_through=True)
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(text_sink), contextlib.redirect_stderr(text_sink):
                yield captured
        finally:
            _flush_std_streams()
            text_sink.flush()
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")
            text_sink.detach()


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """No Python log record is emitted in the block: libraries such as torch log their own traceback before
    raising, and bridge reports the error itself."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def silence_library_logging() -> None:
    """Send library log records nowhere (the CLI calls this unless --verbose): without a handler, Python's
    last-resort handler would print torch's and TensorFlow's warnings and logged tracebacks on the terminal."""
    logging.getLogger().addHandler(logging.NullHandler())
    logging.lastResort = None  # type: ignore[assignment]


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def set_tf_quiet_env() -> None:
    """Set TensorFlow's logging environment defaults (a value the user already set is kept)."""
    for key, value in _TF_QUIET_ENV.items():
        os.environ.setdefault(key, value)


def import_tensorflow(verbose: bool = False) -> ModuleType:
    """Import TensorFlow with its import-time chatter hidden, and its Python logger set to errors only."""
    set_tf_quiet_env()
    with captured_output(verbose):
        import tensorflow as tf  # noqa: PLC0415 - heavy import kept lazy on purpose

        tf.get_logger().setLevel("ERROR")
        with contextlib.suppress(Exception):
            from absl import logging as absl_logging  # noqa: PLC0415

            absl_logging.set_verbosity(absl_logging.ERROR)
    return tf


def import_onnx2tf(verbose: bool = False) -> ModuleType:
    """Import onnx2tf (which imports TensorFlow, tf_keras and onnxruntime) with the chatter hidden."""
    import_tensorflow(verbose)
    from tensorflow.python.framework import config  # noqa: PLC0415

    was_deterministic = config.is_op_determinism_enabled()
    with captured_output(verbose):
        import onnx2tf  # noqa: PLC0415
    if not was_deterministic:  # onnx2tf turns op determinism on for the whole process when imported
        config.disable_op_determinism()
    return onnx2tf


class NetworkBlockedError(ConnectionError):
    """Raised inside a `network_blocked` block when code tries to open a network connection."""


@dataclass
class NetworkAttempts:
    """Every connection or name lookup that was refused inside a `network_blocked` block."""

    attempts: list[str] = field(default_factory=list)


def _is_local_family(sock: socket.socket) -> bool:
    return getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX


@contextlib.contextmanager
def network_blocked(stage: str, what: str) -> Iterator[NetworkAttempts]:
    """Refuse every non-local socket connection and DNS lookup while the block runs.

    Connections raise `NetworkBlockedError` (a `ConnectionError`, so libraries fail the usual way). If any attempt
    was made, a `BridgeError` for `stage` is raised when the block ends, even when the library swallowed the error,
    so an offline-only step that tries to download is always noticed.
    """
    record = NetworkAttempts()
    originals: dict[str, Any] = {
        "connect": socket.socket.connect,
        "connect_ex": socket.socket.connect_ex,
        "getaddrinfo": socket.getaddrinfo,
    }

    def refuse(kind: str, target: object) -> NetworkBlockedError:
        record.attempts.append(f"{kind} {target!r}")
        return NetworkBlockedError(f"network access is blocked during {what} ({kind} {target!r})")

    def connect(self: socket.socket, address: Any) -> None:
        if _is_local_family(self):
            return originals["connect"](self, address)
        raise refuse("connect", address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if _is_local_family(self):
            return originals["connect_ex"](self, address)
        raise refuse("connect", address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise refuse("name lookup", host)

    patches: dict[str, Callable[..., Any]] = {"connect": connect, "connect_ex": connect_ex}
    try:
        for name, fn in patches.items():
            setattr(socket.socket, name, fn)
        socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
        try:
            yield record
        except BaseException as exc:
            if record.attempts:
                raise _network_error(stage, what, record) from exc
            raise
    finally:
        socket.socket.connect = originals["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = originals["connect_ex"]  # type: ignore[method-assign]
        socket.getaddrinfo = originals["getaddrinfo"]
    if record.attempts:
        raise _network_error(stage, what, record)


def _network_error(stage: str, what: str, record: NetworkAttempts) -> BridgeError:
    return BridgeError(
        f"{what} tried to access the network, which bridge never allows",
        stage=stage,
        hint="this is a bug in bridge's offline set-up for this step; please report it with the details",
        details=record.attempts[:10],
    )
