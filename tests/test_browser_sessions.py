"""Which browser stages share a Chromium session: WebGPU always runs apart (a lost WebGPU device takes the page's
WebGL context down with it), a storage stage rides with the first group that runs a backend."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bridge.stages.browser import _session_groups


@dataclass
class FakeEnv:
    name: str
    backend: str | None
    store: str | None = None


WEBGL, WASM, WEBGPU = FakeEnv("browser-webgl", "webgl"), FakeEnv("browser-wasm", "wasm"), FakeEnv("browser-webgpu", "webgpu")
IDB = FakeEnv("browser-indexeddb", None, "indexeddb")


@pytest.mark.parametrize("envs,groups", [
    ([WEBGL, WASM, WEBGPU, IDB], [["browser-webgl", "browser-wasm", "browser-indexeddb"], ["browser-webgpu"]]),
    ([WEBGL, WASM, IDB], [["browser-webgl", "browser-wasm", "browser-indexeddb"]]),
    ([WEBGPU, IDB], [["browser-webgpu", "browser-indexeddb"]]),
    ([WEBGPU], [["browser-webgpu"]]),
    ([WASM, WEBGPU], [["browser-wasm"], ["browser-webgpu"]]),
])
def test_session_groups(envs: list[FakeEnv], groups: list[list[str]]) -> None:
    assert [[env.name for env in group] for group in _session_groups(envs)] == groups  # type: ignore[arg-type]


def test_session_groups_keep_webgpu_apart_even_when_listed_first() -> None:
    got = _session_groups([WEBGPU, WEBGL, IDB])  # type: ignore[list-item]
    assert all(not (any(e.backend == "webgpu" for e in g) and any(e.backend == "webgl" for e in g)) for g in got)
