"""The native route's model table: each model (random weights, defined in benchmarks/models.py or here) goes
through `bridge.convert(..., route="native", strict=True)` with every stage passing: capture, the generated TF
model, the SavedModel, the written web model replayed in TF, TF.js in Node (wasm and cpu) and in Chromium (webgl,
wasm, IndexedDB). Strict mode turns a skipped stage into a failure, so a stage that did not run cannot pass.
Tolerances are the pipeline's own policy (bridge/context.py); the report's figures are checked below it too, and
the web model's weights must be within 1% (or 4 KiB) of the parameter bytes (an unrolled RNN must not store a
weight per step).
Sizes are reduced from the benchmark's (same layers, smaller inputs and widths) to keep the suite quick; the
benchmark (`make bench`) runs the full-size ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn as nn

import bridge
from benchmarks.models import LSTMClassifier, MobileNetV2, ResNet18, TransformerEncoder, UNet, seeded
from bridge.stages.result import Status

NATIVE_STAGES = ["capture", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu", "browser-webgl",
                 "browser-wasm", "browser-webgpu", "browser-indexeddb"]
MAX_ABS = 1e-3  # whole networks in float32; webgl's float16-ish textures are the loosest (context.py policy)


class GRUTagger(nn.Module):
    """Embedding, a bidirectional 2-layer GRU (batch first), a per-step linear head."""

    def __init__(self, vocab: int = 50, embed: int = 16, hidden: int = 24, tags: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(hidden * 2, tags)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(ids))
        return self.head(out)


@dataclass(frozen=True)
class ModelCase:
    """A model of the table: how to build it and its input specs (bridge --input syntax)."""

    id: str
    build: Callable[[], nn.Module]
    inputs: tuple[str, ...]
    max_transposes: int | None = None  # in the written web model


MODELS = [
    ModelCase("mobilenet_v2", seeded(lambda: MobileNetV2(classes=10)), ("x:1x3x64x64",), max_transposes=0),
    ModelCase("resnet18", seeded(lambda: ResNet18(classes=10)), ("x:1x3x64x64",), max_transposes=0),
    ModelCase("unet", seeded(lambda: UNet(width=8)), ("x:1x3x32x32",), max_transposes=0),
    # attention mask: random 0/1 values (0 = padding), so the mask changes the numbers
    ModelCase("transformer_masked", seeded(lambda: TransformerEncoder(vocab=100, hidden=32, heads=4, layers=2,
                                                                      seq=16)),
              ("ids:1x16:int64:0..99", "mask:1x16:int64:0..1")),
    ModelCase("lstm_classifier", seeded(lambda: LSTMClassifier(vocab=100, embed=16, hidden=24)),
              ("ids:1x12:int64:0..99",)),
    ModelCase("gru_tagger", seeded(GRUTagger), ("ids:2x10:int64:0..49",)),
]


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.parametrize("case", MODELS, ids=[m.id for m in MODELS])
def test_model_converts_natively_with_every_stage_passing(case: ModelCase, tmp_path: Path) -> None:
    module = case.build()
    result = bridge.convert(module, list(case.inputs), tmp_path / "out", route="native", strict=True)
    report = result.report
    assert report["route"] == "native" and report["notes"] == [], report["notes"]
    assert [s.name for s in result.stages] == NATIVE_STAGES
    failed = [(s.name, s.status.value, s.reason) for s in result.stages if s.status is not Status.PASS]
    assert not failed, failed
    for stage in result.stages[1:]:
        assert stage.max_abs is not None and stage.max_abs < MAX_ABS, (stage.name, stage.max_abs)
    parameter_bytes = _distinct_parameter_bytes(module)
    weight_bytes = result.stage("tfjs-graph").extra["weightBytes"]
    slack = max(0.01 * parameter_bytes, 4096)  # small models: a few KiB of shape and index constants
    assert abs(weight_bytes - parameter_bytes) <= slack, (weight_bytes, parameter_bytes)
    if case.max_transposes is not None:
        ops = result.stage("tfjs-graph").extra["opHistogram"]
        assert ops.get("Transpose", 0) <= case.max_transposes, ops


def _distinct_parameter_bytes(module: nn.Module) -> int:
    """Bytes of the module's parameters, each distinct value counted once (nn.TransformerEncoder clones one layer,
    so untrained layers hold equal weights, which the web model stores once)."""
    return sum(len(b) for b in {p.detach().numpy().tobytes() for p in module.parameters()})
