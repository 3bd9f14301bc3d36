"""Attention with whole rows masked by torch.finfo(float32).min, through bridge.convert into real Chromium.

DeBERTa-style 2-D masks hide every key from the padding queries; PyTorch's softmax then weighs every key the same.
TF.js WebGL's softmax gives such a row all ones and WebGPU's gives NaN, so the writer spells those Softmax nodes
out (bridge.tfjs.masked_softmax). Tolerance: bridge's default (atol 1e-4, rtol 1e-3) in every browser stage.
Must-fail twin: the same model written without the rewrite is off in Chromium WebGL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import bridge
from bridge.runtime import browser as browser_rt
from bridge.stages.result import Status

_STATUS = browser_rt.browser_status()
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not _STATUS.ok, reason="; ".join(_STATUS.problems) or "browser ready")]


class PaddedQueryAttention(nn.Module):
    """Scores masked by a (batch, query, key) mask from a 0/1 padding input: padded queries see no key."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        keep = (pad[:, :, None] * pad[:, None, :]).bool()
        scores = (q @ k.transpose(-1, -2)).masked_fill(~keep, torch.finfo(torch.float32).min)
        return torch.softmax(scores, dim=-1) @ v


class PaddedQuerySdpa(nn.Module):
    """The same hiding with a boolean mask through scaled_dot_product_attention: padded queries get zeros (PyTorch
    2.5+); bridge adds the mask as a -1e9 bias under TF.js's own Softmax kernel and zeroes those rows."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        keep = (pad[:, :, None] * pad[:, None, :]).bool()[:, None]
        return torch.nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=keep)


def _convert(out: Path, module: nn.Module | None = None) -> bridge.ConvertResult:
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    inputs = [torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8), pad]
    return bridge.convert(module or PaddedQueryAttention(), inputs, out, node_backends=("wasm",), samples=1,
                          force=True)


def test_boolean_sdpa_mask_with_hidden_rows_matches_in_every_browser_backend(tmp_path: Path) -> None:
    result = _convert(tmp_path / "out", PaddedQuerySdpa())
    for name in ("browser-webgl", "browser-wasm", "browser-webgpu"):
        stage = result.stage(name)
        assert stage.status in (Status.PASS, Status.SKIPPED), f"{name}: {stage.status} {stage.reason}"
    assert result.stage("browser-webgl").status is Status.PASS


def test_fully_masked_rows_match_pytorch_in_every_browser_backend(tmp_path: Path) -> None:
    result = _convert(tmp_path / "out")
    for name in ("browser-webgl", "browser-wasm", "browser-webgpu"):
        stage = result.stage(name)
        assert stage.status in (Status.PASS, Status.SKIPPED), f"{name}: {stage.status} {stage.reason}"
    assert result.stage("browser-webgl").status is Status.PASS


def test_without_the_rewrite_webgl_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.tfjs.optimize as optimize

    monkeypatch.setattr(optimize, "spell_out_masked_softmax", lambda graph_def: 0)
    result = _convert(tmp_path / "out")
    assert result.stage("browser-webgl").status is not Status.PASS
