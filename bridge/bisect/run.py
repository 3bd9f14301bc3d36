"""Bisection's orchestration: which stages to look at (from the plan: each stage declares how its layers are
read), and one stage at a time, the layer map of its graph and the comparison of every linked module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.bisect.compare import Bisection, StageLayers, compare_layers
from bridge.bisect.graph import FrozenModel, GraphTensors, onnx_fetch, web_graph_tensors
from bridge.bisect.layer_map import (
    LayerLink,
    align_layers,
    metadata_layer_map,
    onnx_layer_map,
    output_links,
)
from bridge.bisect.torch_layers import TorchLayers, capture_torch_layers
from bridge.errors import BridgeError, ConversionError
from bridge.parity.metrics import Tolerance
from bridge.source.ports import Interface
from bridge.stages.artifacts import Artifacts
from bridge.stages.context import RunInputs, stage_tolerance
from bridge.stages.plan import LayerSource, Planned, Stage
from bridge.stages.result import StageResult, Status

STAGE = "bisect"
BAD = (Status.INACCURATE, Status.FAIL)


@dataclass(frozen=True)
class BisectInputs:
    """Everything bisection needs, for `bridge convert`, `bridge parity` and `assert_parity` alike: the run's inputs
    (samples and reference in PyTorch's layout) and its artifacts (the module, the files, the interface)."""

    run: RunInputs
    artifacts: Artifacts

    @property
    def interface(self) -> Interface:
        """The model's interface."""
        assert self.artifacts.interface is not None
        return self.artifacts.interface

    def web_samples(self, count: int) -> list[dict[str, np.ndarray]]:
        """The first `count` samples in the web model's layout and dtypes."""
        return self.interface.web_inputs(list(self.run.samples)[:count])

    def web_model_path(self) -> Any:
        """The web model folder (ConversionError when there is none to look into)."""
        if self.artifacts.web_model is None:
            raise ConversionError("there is no web model to look into", stage=STAGE)
        return self.artifacts.web_model.path


def needs_bisection(stages: Sequence[StageResult]) -> bool:
    """True when some stage was inaccurate or failed after producing outputs (or without any)."""
    return any(s.status in BAD for s in stages)


def stages_to_bisect(plan: Sequence[Planned], results: Sequence[StageResult], force: bool) -> list[Stage]:
    """The stages to look at, in pipeline order: every one that ran and exposes its layers; Chromium stages only
    when one of them did not pass, unless `force`. (The route's TF model is looked into through the SavedModel
    written from it: `tf` declares no layer source; a storage round trip runs the graph its backend runs.)"""
    stages = {p.stage.name: p.stage for p in plan}
    ran = [(stages[r.name], r) for r in results if r.name in stages and r.status is not Status.SKIPPED]
    chromium_bad = any(s.layers is LayerSource.CHROMIUM and r.status in BAD for s, r in ran)
    return [s for s, _ in ran if s.layers is not None
            and (s.layers is not LayerSource.CHROMIUM or chromium_bad or force)]


def bisect_run(inputs: BisectInputs, plan: Sequence[Planned], results: Sequence[StageResult], *, force: bool = False,
               torch_layers: TorchLayers | None = None) -> Bisection | None:
    """Bisect a run when a stage was inaccurate or failed (or always with `force`, i.e. ``--layers``); None when
    there is nothing to look for. Never raises for a stage that cannot be bisected: its `StageLayers.error` says
    why."""
    if not force and not needs_bisection(results):
        return None
    with inputs.run.progress.running("layers"):
        return bisect(inputs, stages_to_bisect(plan, results, force), torch_layers)


def bisect(inputs: BisectInputs, stages: Sequence[Stage], torch_layers: TorchLayers | None = None) -> Bisection:
    """Capture PyTorch's layers (or use `torch_layers`, stored earlier), link them in each graph, and compare them
    stage by stage, in the given order."""
    run, module = inputs.run, inputs.artifacts.module
    if torch_layers is None:
        if module is None:
            return Bisection([], [], 0, note="per-layer bisection needs the PyTorch model's layer outputs (none "
                                             "were stored, or the reference is onnxruntime on a given .onnx file)")
        torch_layers = capture_torch_layers(module, run.samples, run.specs, run.reference)
    count = min(len(torch_layers.values[0]) if torch_layers.values else 0, len(run.samples))
    if not torch_layers.points or count == 0:
        return Bisection([], [], count, note="no module outputs could be captured (hooks need an nn.Module with "
                                             "submodules; TorchScript and torch.export programs have none)")
    from bridge.util.quiet import captured_output

    runner = _StageRunner(inputs, torch_layers, count)
    with captured_output():  # TensorFlow's native logs (grappler while freezing) would reach the terminal
        results = [runner.run(stage) for stage in stages]
    return Bisection(torch_layers.points, [r for r in results if r is not None], count, torch=torch_layers)


class _StageRunner:
    """Runs the per-layer comparison of one stage at a time, sharing the web graph's layer map between stages."""

    def __init__(self, inputs: BisectInputs, torch_layers: TorchLayers, count: int) -> None:
        self.inputs = inputs
        self.torch = torch_layers
        self.count = count
        self._web: tuple[list[LayerLink], str, GraphTensors | None] | None = None

    def run(self, stage: Stage) -> StageLayers | None:
        """One stage's curve; None for stages whose artifact is absent."""
        readers = {LayerSource.ONNX: self._onnx, LayerSource.SAVED_MODEL: self._saved_model,
                   LayerSource.WEB_REPLAY: self._tfjs_graph, LayerSource.TFJS_NODE: self._node,
                   LayerSource.CHROMIUM: self._browser}
        try:
            return readers[stage.layers](stage) if stage.layers is not None else None
        except BridgeError as exc:
            return StageLayers(stage.name, "aligned", error=str(exc).splitlines()[0])

    def _tol(self, stage: Stage) -> Tolerance:
        return stage_tolerance(stage.tolerance, self.inputs.run, self.inputs.artifacts)

    def _onnx(self, stage: Stage) -> StageLayers | None:
        import onnx

        if self.inputs.artifacts.onnx is None:
            return None
        model = onnx.load(str(self.inputs.artifacts.onnx))
        links = onnx_layer_map(model, self.torch.points)
        values = onnx_fetch(model, list(self.inputs.run.samples)[:self.count], [link.node for link in links])
        return compare_layers(stage.name, "onnx-metadata", links, self.torch, values, self._tol(stage))

    def _output_links(self, outputs: Mapping[str, str]) -> list[LayerLink]:
        perms = {p.name: p.perm for p in self.inputs.interface.outputs}
        return output_links(self.torch.points, outputs, perms)

    def _saved_model(self, stage: Stage) -> StageLayers | None:
        if self.inputs.artifacts.saved_model is None:
            return None
        frozen = FrozenModel.load(self.inputs.artifacts.saved_model)
        samples = self.inputs.web_samples(self.count)
        graph = frozen.tensors(samples[0])
        links = self._merge(align_layers(self.torch.points, [v[0] for v in self.torch.values], graph),
                            self._output_links(frozen.outputs))
        names = [link.node for link in links]
        actual = [frozen.fetch(s, names) for s in samples]
        return compare_layers(stage.name, "aligned", links, self.torch, actual, self._tol(stage), graph)

    def web_map(self) -> tuple[list[LayerLink], str, GraphTensors | None]:
        """The TF.js graph's layer map: the route's own from model.json, else aligned on the replayed graph."""
        if self._web is None:
            from bridge.tfjs.reader import read_web_model

            model = read_web_model(self.inputs.web_model_path())
            outputs = {key: value["name"] for key, value in model.signature.get("outputs", {}).items()}
            graph = web_graph_tensors(model, self.inputs.web_samples(1)[0])
            given = metadata_layer_map(model.model_json)
            if given is not None:
                self._web = (self._merge(given, self._output_links(outputs)), "metadata", graph)
            else:
                aligned = align_layers(self.torch.points, [v[0] for v in self.torch.values], graph)
                self._web = (self._merge(aligned, self._output_links(outputs)), "aligned", graph)
        return self._web

    @staticmethod
    def _merge(links: list[LayerLink], outputs: list[LayerLink]) -> list[LayerLink]:
        taken = {link.path for link in links}
        return links + [o for o in outputs if o.path not in taken]

    def _tfjs_graph(self, stage: Stage) -> StageLayers:
        from bridge.tfjs.reader import read_web_model, signature_infos
        from bridge.tfjs.replay import replay_graph

        links, mapping, graph = self.web_map()
        model = read_web_model(self.inputs.web_model_path())
        infos_in, infos_out = signature_infos(model.signature)
        names = [link.node for link in links]
        actual = [replay_graph(model.graph_def, model.weights, s, infos_in, infos_out, fetch=names)
                  for s in self.inputs.web_samples(self.count)]
        return compare_layers(stage.name, mapping, links, self.torch, actual, self._tol(stage), graph)

    def _node(self, stage: Stage) -> StageLayers:
        from bridge.runtime.node import run_graph_model

        links, mapping, graph = self.web_map()
        backend = str(stage.backend)
        run = run_graph_model(self.inputs.web_model_path(), self.inputs.web_samples(self.count), backends=[backend],
                              fetch=[link.node for link in links], warmup=0, repeats=0)[backend]
        if run.error:
            return StageLayers(stage.name, mapping, error=run.error)
        return compare_layers(stage.name, mapping, links, self.torch, run.fetched, self._tol(stage), graph)

    def _browser(self, stage: Stage) -> StageLayers:
        from bridge.runtime.browser import run_in_browser

        links, mapping, graph = self.web_map()
        backend = str(stage.backend)
        run = run_in_browser(self.inputs.web_model_path(), self.inputs.web_samples(self.count), backends=[backend],
                             fetch=[link.node for link in links], warmup=0, repeats=0, indexeddb_roundtrip=False)
        result = run.backends.get(backend)
        if result is None or result.error:
            return StageLayers(stage.name, mapping, error=result.error if result else "the backend did not run")
        return compare_layers(stage.name, mapping, links, self.torch, result.fetched, self._tol(stage), graph)
