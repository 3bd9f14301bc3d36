"""The stage plan: every stage bridge runs, declared once (`STAGES`), and the plans the entry points take from it.

A stage is one entry: its name, the runtime and backend it runs on, what it judges, how each route produces what it
writes, how its tolerance is derived, whether it shares a session with other stages (the Node processes, the one
Chromium), how bisection observes its layers, and when an option turns it off. `bridge convert`, `bridge parity`,
`bridge.testing.assert_parity` and the bisection all take their stages from `build_plan`, so a new backend or
output format is one more entry here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bridge.options import ConvertOptions
from bridge.stages import browser, node, route_layers, route_native, route_onnx, route_tf, tensorflow
from bridge.stages.artifacts import Artifact, Produced
from bridge.stages.context import StageEnv, TolerancePolicy
from bridge.stages.result import StageResult

ROUTES = ("native", "onnx")  # the routes from PyTorch; "tf" is `bridge tfjs`, whose model is TensorFlow already
TF_ROUTE = "tf"
LAYERS_ROUTE = "layers"  # a layers model alone, built from the PyTorch module (no graph model, so no route ran)


class Entry(str, enum.Enum):
    """Who runs a plan."""

    CONVERT = "convert"  # produce every artifact, then judge it
    PARITY = "parity"  # judge the artifacts of an existing output folder
    ASSERT = "assert-parity"  # judge a web model the user ships, from their own test suite


class Runtime(str, enum.Enum):
    """Where a stage runs."""

    TORCH_EXPORT = "torch.export"
    ONNXRUNTIME = "onnxruntime"
    TENSORFLOW = "tensorflow"
    TFJS_NODE = "tfjs-node"
    CHROMIUM = "chromium"


class LayerSource(str, enum.Enum):
    """How bisection reads a stage's intermediate tensors."""

    ONNX = "onnx"  # onnxruntime with extra graph outputs
    SAVED_MODEL = "savedmodel"  # the SavedModel's frozen serving graph
    WEB_REPLAY = "tfjs-replay"  # the written graph replayed in TensorFlow
    TFJS_NODE = "tfjs-node"  # model.execute(inputs, names) in Node
    CHROMIUM = "chromium"  # the same in Chromium


class Phase(str, enum.Enum):
    """Which part of a conversion a stage belongs to: making the TF model (where `--route auto` falls back to the
    ONNX route when the native route fails) or writing and judging the web models."""

    ROUTE = "route"
    WEB = "web"


class Selection(str, enum.Enum):
    """Whether a stage is part of a plan."""

    RUN = "run"
    OFF = "off"  # turned off by an option: listed as skipped (left out of assert_parity)
    OMIT = "omit"  # not part of this run at all


@dataclass(frozen=True)
class PlanRequest:
    """What an entry point asks a plan for."""

    entry: Entry
    route: str | None  # None: no route stages (assert_parity)
    options: ConvertOptions
    replay: bool = True  # assert_parity(replay=...): the tfjs-graph replay


@dataclass(frozen=True)
class Producer:
    """How a route makes a stage's artifacts (`bridge convert` only)."""

    make: Callable[[StageEnv], Produced]
    needs: tuple[Artifact, ...]
    produces: tuple[Artifact, ...]


ANY_ROUTE = "*"


def _always(request: PlanRequest) -> tuple[Selection, str | None]:
    return Selection.RUN, None


@dataclass(frozen=True)
class Stage:
    """One declared stage (see the module docstring)."""

    name: str
    runtime: Runtime
    judges: tuple[Artifact, ...] = ()
    check: Callable[[StageEnv], StageResult] | None = None  # None: passes when produced (or run by its session)
    produce: Mapping[str, Producer] = field(default_factory=dict)  # by route, or ANY_ROUTE
    routes: tuple[str, ...] | None = None  # None: a stage of every route
    phase: Phase = Phase.WEB
    backend: str | None = None
    session: str | None = None  # stages of one session run together (see SESSIONS)
    store: str | None = None  # a storage round trip this stage checks (browser-indexeddb)
    tolerance: TolerancePolicy = TolerancePolicy.REFERENCE
    layers: LayerSource | None = None
    select: Callable[[PlanRequest], tuple[Selection, str | None]] = _always

    def producer(self, route: str | None) -> Producer | None:
        """How `route` produces this stage's artifacts, if it does."""
        return self.produce.get(route or "") or self.produce.get(ANY_ROUTE)


def _node_backend(backend: str) -> Callable[[PlanRequest], tuple[Selection, str | None]]:
    def select(request: PlanRequest) -> tuple[Selection, str | None]:
        return (Selection.RUN, None) if backend in request.options.node_backends else (Selection.OMIT, None)
    return select


def _browser(request: PlanRequest) -> tuple[Selection, str | None]:
    if not request.options.browser:
        return Selection.OFF, "browser stages turned off (--no-browser)"
    return Selection.RUN, None


def _replay(request: PlanRequest) -> tuple[Selection, str | None]:
    omit = request.entry is Entry.ASSERT and not request.replay
    return (Selection.OMIT, None) if omit else _web_format("graph")(request)


def _web_format(fmt: str) -> Callable[[PlanRequest], tuple[Selection, str | None]]:
    """Stages of one web format run only when that format is written (`--web-format`, `--output_format`)."""
    def select(request: PlanRequest) -> tuple[Selection, str | None]:
        return (Selection.RUN, None) if fmt in request.options.web_formats else (Selection.OMIT, None)
    return select


def _all(*selects: Callable[[PlanRequest], tuple[Selection, str | None]]
         ) -> Callable[[PlanRequest], tuple[Selection, str | None]]:
    """A stage selected by every one of `selects` (the first that does not run decides)."""
    def select(request: PlanRequest) -> tuple[Selection, str | None]:
        for one in selects:
            chosen = one(request)
            if chosen[0] is not Selection.RUN:
                return chosen
        return Selection.RUN, None
    return select


def _node_stage(backend: str) -> Stage:
    return Stage(f"tfjs-node-{backend}", Runtime.TFJS_NODE, judges=(Artifact.WEB_MODEL,), backend=backend,
                 session="tfjs-node", tolerance=TolerancePolicy.WEB, layers=LayerSource.TFJS_NODE,
                 select=_all(_web_format("graph"), _node_backend(backend)))


def _browser_stage(backend: str) -> Stage:
    return Stage(f"browser-{backend}", Runtime.CHROMIUM, judges=(Artifact.WEB_MODEL,), backend=backend,
                 session="chromium", tolerance=TolerancePolicy.WEB, layers=LayerSource.CHROMIUM,
                 select=_all(_web_format("graph"), _browser))


def _layers_node_stage(backend: str) -> Stage:
    return Stage(f"tfjs-layers-node-{backend}", Runtime.TFJS_NODE, judges=(Artifact.LAYERS_MODEL,), backend=backend,
                 session="tfjs-layers-node", tolerance=TolerancePolicy.WEB,
                 select=_all(_web_format("layers"), _node_backend(backend)))


def _layers_browser_stage(backend: str) -> Stage:
    return Stage(f"browser-layers-{backend}", Runtime.CHROMIUM, judges=(Artifact.LAYERS_MODEL,), backend=backend,
                 session="chromium-layers", tolerance=TolerancePolicy.WEB,
                 select=_all(_web_format("layers"), _browser))


STAGES: tuple[Stage, ...] = (
    Stage("capture", Runtime.TORCH_EXPORT, routes=("native",), phase=Phase.ROUTE,
          produce={"native": Producer(route_native.capture, (Artifact.MODULE,),
                                      (Artifact.TF_MODEL, Artifact.SAVED_MODEL))}, select=_web_format("graph")),
    Stage("onnx", Runtime.ONNXRUNTIME, judges=(Artifact.ONNX,), check=route_onnx.check_onnx, routes=("onnx",),
          phase=Phase.ROUTE, produce={"onnx": Producer(route_onnx.export, (), (Artifact.ONNX,))},
          layers=LayerSource.ONNX, select=_web_format("graph")),
    Stage("tf", Runtime.TENSORFLOW, judges=(Artifact.TF_MODEL,), check=tensorflow.check_tf_model, routes=ROUTES,
          phase=Phase.ROUTE, produce={"onnx": Producer(route_onnx.onnx_to_tf, (Artifact.ONNX,),
                                                       (Artifact.TF_MODEL, Artifact.SAVED_MODEL))},
          select=_web_format("graph")),
    Stage("savedmodel", Runtime.TENSORFLOW, judges=(Artifact.SAVED_MODEL,), check=tensorflow.check_saved_model,
          routes=ROUTES, phase=Phase.ROUTE, layers=LayerSource.SAVED_MODEL, select=_web_format("graph")),
    # The graph model (inference): written from the SavedModel (or from a TF source), replayed, run in TF.js.
    Stage("tfjs-graph", Runtime.TENSORFLOW, judges=(Artifact.WEB_MODEL,), check=tensorflow.check_web_graph,
          produce={ANY_ROUTE: Producer(tensorflow.write_web_model, (Artifact.SAVED_MODEL,), (Artifact.WEB_MODEL,)),
                   TF_ROUTE: Producer(route_tf.write_graph, (Artifact.TF_SOURCE,), (Artifact.WEB_MODEL,))},
          tolerance=TolerancePolicy.WEB, layers=LayerSource.WEB_REPLAY, select=_replay),
    _node_stage("wasm"),
    _node_stage("cpu"),
    _browser_stage("webgl"),
    _browser_stage("wasm"),
    _browser_stage("webgpu"),
    Stage("browser-indexeddb", Runtime.CHROMIUM, judges=(Artifact.WEB_MODEL,), session="chromium",
          store="indexeddb", tolerance=TolerancePolicy.EXACT, select=_all(_web_format("graph"), _browser)),
    # The layers model (trainable): written from a Keras model, rebuilt in Keras, run and fitted in TF.js.
    Stage("tfjs-layers", Runtime.TENSORFLOW, judges=(Artifact.LAYERS_MODEL,), check=route_tf.check_layers_in_keras,
          produce={TF_ROUTE: Producer(route_tf.write_layers, (Artifact.TF_SOURCE,), (Artifact.LAYERS_MODEL,)),
                   ANY_ROUTE: Producer(route_layers.write_layers_from_torch, (Artifact.MODULE,),
                                       (Artifact.LAYERS_MODEL,))},
          tolerance=TolerancePolicy.WEB, select=_web_format("layers")),
    _layers_node_stage("wasm"),
    _layers_node_stage("cpu"),
    Stage("tfjs-layers-fit", Runtime.TFJS_NODE, judges=(Artifact.LAYERS_MODEL,), check=node.check_layers_fit,
          backend="cpu", select=_web_format("layers")),
    Stage("train-step", Runtime.TFJS_NODE, judges=(Artifact.LAYERS_MODEL, Artifact.MODULE),
          check=route_layers.check_train_step, routes=(*ROUTES, LAYERS_ROUTE), backend="cpu",
          select=_web_format("layers")),
    _layers_browser_stage("webgl"),
    _layers_browser_stage("wasm"),
    Stage("browser-layers-indexeddb", Runtime.CHROMIUM, judges=(Artifact.LAYERS_MODEL,), session="chromium-layers",
          store="indexeddb", tolerance=TolerancePolicy.EXACT, select=_all(_web_format("layers"), _browser)),
)

# Stages that share a session are run together by one function: one Node process per backend side by side, or one
# Chromium for every browser backend and storage round trip.
SESSIONS: dict[str, Callable[[list[StageEnv]], list[StageResult]]] = {
    "tfjs-node": node.run_node_session,
    "chromium": browser.run_browser_session,
    "tfjs-layers-node": node.run_layers_node_session,
    "chromium-layers": browser.run_layers_browser_session,
}


@dataclass(frozen=True)
class Planned:
    """A stage in a plan: whether it runs (or why it is skipped), how the route makes its artifacts, and whether
    this plan makes them (`bridge convert`) or only judges them (`bridge parity`, `assert_parity`)."""

    stage: Stage
    selection: Selection
    reason: str | None
    producer: Producer | None
    produce: bool


def build_plan(request: PlanRequest, stages: tuple[Stage, ...] | None = None) -> list[Planned]:
    """The stages `request` runs, in pipeline order (from `STAGES` unless `stages` is given)."""
    plan = []
    for stage in STAGES if stages is None else stages:
        if stage.routes is not None and request.route not in stage.routes:
            continue
        selection, reason = stage.select(request)
        if selection is Selection.OMIT or (selection is Selection.OFF and request.entry is Entry.ASSERT):
            continue
        plan.append(Planned(stage, selection, reason, stage.producer(request.route), request.entry is Entry.CONVERT))
    return plan


def stage_table() -> str:
    """The declared stages as a Markdown table (docs/architecture.md holds it; a test keeps it current)."""
    rows = ["| stage | runs on | routes | made by (route: needs -> produces) | judges | tolerance | session |",
            "|---|---|---|---|---|---|---|"]
    for stage in STAGES:
        made = "; ".join(f"{'every route' if route == ANY_ROUTE else route}: {', '.join(a.value for a in p.needs) or 'the model'} -> "
                         f"{', '.join(a.value for a in p.produces)}" for route, p in stage.produce.items())
        runtime = stage.runtime.value + (f" ({stage.backend})" if stage.backend else "")
        rows.append(f"| `{stage.name}` | {runtime} | {', '.join(stage.routes or ('every',))} | {made or '–'} | "
                    f"{', '.join(a.value for a in stage.judges) or '–'} | {stage.tolerance.value} | "
                    f"{stage.session or '–'} |")
    return "\n".join(rows)
