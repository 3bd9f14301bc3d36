"""SavedModel signature -> optimized GraphDef the TF.js 4.22.0 graph-model runtime executes.

The pipeline (doc tfjs-graph-model.md section 3, plus hardening): freeze; check ops; splits of constant weights
stored as their pieces (bridge.tfjs.const_splits, on the real values); grappler pass 1; fold batch norms;
Add->BiasAdd (also out of grappler's regrouped residual sums); pin contractions to CPU and grappler pass 2 (remap,
keeping layer norms' epsilon); transposed activation operands of matmuls as explicit Transposes
(bridge.tfjs.explicit_transposes); row lookups in weight tables as GatherNd (bridge.tfjs.gather_rows); SAME
padding the wasm backend gets wrong; drop unused control-flow placeholders; PReLU; depthwise fusion; activations
(PReLU, ...) into fused contractions; the un-fuse guard; large Tanhs as sigmoids (bridge.tfjs.tanh_as_sigmoid);
zero Pads into the convolutions reading them (bridge.tfjs.pads_into_convs); rewrites (ops JS lacks or gets
wrong, softmax over float32-minimum masks, Switch control edges, control inputs on list-input ops); prune; clear
devices and debug info; canonical function names; check ops and graph integrity again; then, on the real
weights, weights with large zero blocks are stored without them (bridge.tfjs.zero_blocks).
Const nodes keep their values: the weights half (bridge.tfjs.weights) extracts them.

Large weights do not travel through the passes: they are swapped for few-byte stand-ins first and put back at the
end (bridge.tfjs.weight_stubs, which explains why and how that is checked); the passes run once per stand-in
probe. If a check finds a stand-in was computed with, the real graph is optimized instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import ConversionError
from bridge.tfjs import fusions
from bridge.tfjs.const_splits import fold_const_splits, has_const_splits
from bridge.tfjs.explicit_transposes import explicit_transposes
from bridge.tfjs.gather_rows import gathers_to_gather_nd
from bridge.tfjs.freeze import TensorInfo, freeze_signature
from bridge.tfjs.graph_names import (NodeRef, canonicalize_functions, copy_graph, format_ref, iter_all_nodes,
                                     node_name, parse_ref, remove_nodes)
from bridge.tfjs.grappler import PASS1_OPTIMIZERS, PASS2_OPTIMIZERS, run_grappler
from bridge.tfjs.op_list import DEBUG_OPS, check_ops, needs_async
from bridge.tfjs.masked_softmax import spell_out_masked_softmax
from bridge.tfjs.layer_norm import layer_norm_epsilons, restore_layer_norm_epsilons
from bridge.tfjs.pads_into_convs import fold_pads_into_convs
from bridge.tfjs.same_padding import spell_out_risky_same_padding
from bridge.tfjs.tanh_as_sigmoid import large_tanhs, tanhs_as_sigmoids
from bridge.tfjs.rewrites import (RENAMES, REWRITES, apply_rewrites, reroute_switch_control_inputs,
                                  route_variadic_control_inputs, split_strided_slice_shrink)
from bridge.tfjs.weight_stubs import PROBES, StubsConsumed, WeightStubs
from bridge.tfjs.zero_blocks import unstore_zero_blocks

__all__ = ["OptimizedGraph", "TensorInfo", "optimize_for_tfjs", "optimize_graph_def"]
STAGE = "tfjs-write"


@dataclass(frozen=True)
class OptimizedGraph:
    """The optimized graph for TF.js: Consts still carry values; outputs in the concrete function's order."""

    graph_def: Any  # tensorflow.core.framework.graph_pb2.GraphDef
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    needs_async: bool
    tf_version: str
    op_histogram: dict[str, int]
    weight_stubs: str = ""  # how large weights went through the passes (see `optimize_with_stubs`)


def optimize_for_tfjs(saved_model_dir: Path, *, signature: str = "serving_default",
                      control_flow_v2: bool = False, strip_debug_ops: bool = True) -> OptimizedGraph:
    """Freeze `signature` of the SavedModel at `saved_model_dir` and optimize it for the TF.js runtime.

    Raises `BridgeError` (missing signature, naming the available ones), `ModelLoadError`, `UnsupportedOpsError`
    (stage ``tfjs-write``, every offending op with its nodes) or `ConversionError`."""
    frozen = freeze_signature(Path(saved_model_dir), signature, lower_control_flow=not control_flow_v2)
    inputs, outputs, tf_version = list(frozen.inputs), list(frozen.outputs), frozen.tf_version
    check_ops(frozen.graph_def, when="in the frozen graph", allow=_first_allow(strip_debug_ops))
    graph_def, how = optimize_with_stubs(frozen.graph_def, inputs, outputs, strip_debug_ops=strip_debug_ops)
    del frozen  # the frozen graph's weights are released once the optimized graph holds its own
    return OptimizedGraph(graph_def=graph_def, inputs=inputs, outputs=outputs, needs_async=needs_async(graph_def),
                          tf_version=tf_version, op_histogram=op_histogram(graph_def), weight_stubs=how)


def optimize_graph_def(graph_def: Any, inputs: list[TensorInfo], outputs: list[TensorInfo], *,
                       strip_debug_ops: bool = True) -> Any:
    """Run every optimization step on a frozen GraphDef (a new GraphDef is returned; the argument is not
    changed)."""
    check_ops(graph_def, when="in the frozen graph", allow=_first_allow(strip_debug_ops))
    return optimize_with_stubs(graph_def, inputs, outputs, strip_debug_ops=strip_debug_ops)[0]


def optimize_with_stubs(graph_def: Any, inputs: list[TensorInfo], outputs: list[TensorInfo], *,
                        strip_debug_ops: bool = True) -> tuple[Any, str]:
    """Optimize with large weights replaced by stand-ins (bridge.tfjs.weight_stubs), falling back to the real
    graph when a check fails; then, on the real values, weights with large zero blocks are rebuilt at run time
    instead of stored (bridge.tfjs.zero_blocks). Returns the optimized GraphDef (real values in every Const) and
    how it was done: ``"no large weights"``, ``"stubbed N weight(s)"`` or ``"real weights (...reason...)"``."""
    if has_const_splits(graph_def):
        graph_def = copy_graph(graph_def)
        fold_const_splits(graph_def, _protected(inputs, outputs))
    optimized, how = _optimize(graph_def, inputs, outputs, strip_debug_ops)
    unstore_zero_blocks(optimized, _protected(inputs, outputs))
    return optimized, how


def _optimize(graph_def: Any, inputs: list[TensorInfo], outputs: list[TensorInfo],
              strip_debug_ops: bool) -> tuple[Any, str]:
    stubs = WeightStubs()
    count = stubs.collect(graph_def)
    if not count:
        return _run_passes(graph_def, inputs, outputs, strip_debug_ops, None), "no large weights"
    try:
        return _optimize_stubbed(graph_def, inputs, outputs, strip_debug_ops, stubs), f"stubbed {count} weight(s)"
    except StubsConsumed as exc:
        reason = exc.message
    del stubs
    return _run_passes(graph_def, inputs, outputs, strip_debug_ops, None), f"real weights ({reason})"


def _optimize_stubbed(graph_def: Any, inputs: list[TensorInfo], outputs: list[TensorInfo], strip_debug_ops: bool,
                      stubs: WeightStubs) -> Any:
    """The passes once per stand-in probe; the results must agree (StubsConsumed otherwise), then the first one
    gets its real values back."""
    results = []
    for probe in PROBES:
        stubs.probe = probe
        with stubs.activated():
            results.append(_run_passes(stubs.stubbed_copy(graph_def), inputs, outputs, strip_debug_ops, stubs))
    first, *others = results
    for probe, other in zip(PROBES[1:], others):
        stubs.canonical(other, probe)
        stubs.check_same(first, other)
    del results, others
    stubs.restore(first)
    return first


def _first_allow(strip_debug_ops: bool) -> set[str]:
    """Ops allowed in the frozen graph because a pass removes or rewrites them."""
    return set(REWRITES) | set(RENAMES) | (set(DEBUG_OPS) if strip_debug_ops else set())


def _run_passes(graph_def: Any, inputs: list[TensorInfo], outputs: list[TensorInfo], strip_debug_ops: bool,
                stubs: WeightStubs | None) -> Any:
    """The optimization steps (module doc) on `graph_def`, which is not changed. With `stubs`, large Consts the
    first passes create are stubbed before grappler's second pass."""
    protected = _protected(inputs, outputs)
    first = ("debug_stripper", *PASS1_OPTIMIZERS) if strip_debug_ops else PASS1_OPTIMIZERS
    graph_def = run_grappler(graph_def, first, inputs, outputs)
    fusions.fold_batch_norms(graph_def, protected)
    fusions.adds_to_bias_add(graph_def)
    fusions.regroup_bias_adds(graph_def, protected)
    fusions.pin_contractions_to_cpu(graph_def)
    if stubs is not None:
        stubs.stub_in_place(graph_def)
    epsilons = layer_norm_epsilons(graph_def)
    graph_def = run_grappler(graph_def, PASS2_OPTIMIZERS, inputs, outputs)
    restore_layer_norm_epsilons(graph_def, epsilons)
    explicit_transposes(graph_def)
    gathers_to_gather_nd(graph_def)
    spell_out_risky_same_padding(graph_def)
    tanhs = large_tanhs(graph_def)

    fusions.drop_unused_control_flow_inputs(graph_def)
    fusions.fuse_prelu(graph_def, protected)
    fusions.fuse_depthwise(graph_def, protected)
    fusions.fuse_activations_into_contractions(graph_def, protected)
    fusions.unfuse_unsupported(graph_def)
    tanhs_as_sigmoids(graph_def, tanhs)
    fold_pads_into_convs(graph_def)
    apply_rewrites(graph_def)
    spell_out_masked_softmax(graph_def)
    split_strided_slice_shrink(graph_def)
    reroute_switch_control_inputs(graph_def)
    route_variadic_control_inputs(graph_def)
    share_small_constants(graph_def, protected)
    prune_dead_nodes(graph_def, protected)
    fusions.clear_devices(graph_def)
    canonicalize_functions(graph_def)
    check_ops(graph_def, when="after optimization")
    check_integrity(graph_def, inputs, outputs)
    return graph_def


def _protected(inputs: list[TensorInfo], outputs: list[TensorInfo]) -> set[str]:
    """The nodes no pass may rename or replace: the fed inputs and the fetched outputs."""
    return _fetch_nodes(outputs) | {node_name(i.name) for i in inputs}


def _fetch_nodes(outputs: list[TensorInfo]) -> set[str]:
    return {node_name(o.name) for o in outputs}


SMALL_CONSTANT_ELEMENTS = 4096


def share_small_constants(graph_def: Any, protected: set[str]) -> int:
    """Point readers of main-graph Consts of at most SMALL_CONSTANT_ELEMENTS elements at one Const per value and
    reader role (slice bounds and shapes repeat once per step of an unrolled RNN; grappler leaves them apart).
    Returns how many readers were rewired; the orphans are pruned after.

    A role is the reader's op type and input index. One Const never serves two roles, because TF.js reads some
    inputs on the CPU (a Range's bounds, an axis, a shape) and uploads others to the GPU: on the WebGPU backend a
    Const that was uploaded for one reader and then read on the CPU for another reads back as zeros (measured:
    RoBERTa with a dynamic length, "Cannot have a step of zero" in its Range ops). A Const already shared across
    roles is copied, one copy per extra role."""
    nodes = {n.name: n for n in graph_def.node}
    keys = _small_const_keys(graph_def, protected)
    owner: dict[str, tuple[str, int]] = {}  # Const -> the role it serves
    chosen: dict[tuple[bytes, str, int], str] = {}
    rewired = 0
    for reader in list(graph_def.node):
        for k, ref in enumerate(reader.input):
            parsed = parse_ref(ref)
            if parsed.control or parsed.node not in keys:
                continue
            role = (reader.op, k)
            target = chosen.get((keys[parsed.node], *role))
            if target is None:
                target = _const_for_role(graph_def, nodes, parsed.node, role, owner)
                chosen[(keys[parsed.node], *role)] = target
            if target != parsed.node:
                reader.input[k] = format_ref(NodeRef(target, parsed.index, parsed.control))
                rewired += 1
    return rewired


def _small_const_keys(graph_def: Any, protected: set[str]) -> dict[str, bytes]:
    """Main-graph Consts that may be shared, each with a key equal for equal dtype, shape and value."""
    keys: dict[str, bytes] = {}
    for node in graph_def.node:
        if node.op != "Const" or node.name in protected or node.input:  # control inputs pin it to a loop frame
            continue
        tensor = node.attr["value"].tensor
        if math.prod(d.size for d in tensor.tensor_shape.dim) > SMALL_CONSTANT_ELEMENTS:
            continue
        keys[node.name] = node.attr["dtype"].SerializeToString() + tensor.SerializeToString(deterministic=True)
    return keys


def _const_for_role(graph_def: Any, nodes: dict[str, Any], name: str, role: tuple[str, int],
                    owner: dict[str, tuple[str, int]]) -> str:
    """`name` itself if it serves no other role yet, else a new copy of it that serves `role`."""
    if owner.setdefault(name, role) == role:
        return name
    copy_name = f"{name}/for_{role[0]}_{role[1]}"
    suffix = 0
    while copy_name in nodes:
        suffix += 1
        copy_name = f"{name}/for_{role[0]}_{role[1]}_{suffix}"
    copy = graph_def.node.add()
    copy.CopyFrom(nodes[name])
    copy.name = copy_name
    nodes[copy_name] = copy
    owner[copy_name] = role
    return copy_name


def prune_dead_nodes(graph_def: Any, keep: set[str]) -> int:
    """Remove main-graph nodes from which no node in `keep` is reachable (data or control edges).
    Returns how many were removed."""
    nodes = {n.name: n for n in graph_def.node}
    live: set[str] = set()
    stack = sorted(k for k in keep if k in nodes)
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        stack.extend(parse_ref(s).node for s in nodes[name].input if parse_ref(s).node in nodes)
    dead = [n.name for n in graph_def.node if n.name not in live]
    remove_nodes(graph_def, dead)
    return len(dead)


def check_integrity(graph_def: Any, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """Every main-graph input names an existing node, names are unique, and every signature tensor exists."""
    names = [n.name for n in graph_def.node]
    duplicates = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    known = set(names)
    dangling = sorted({f"{n.name} <- {s}" for n in graph_def.node for s in n.input if parse_ref(s).node not in known})
    missing = sorted({i.name for i in [*inputs, *outputs] if node_name(i.name) not in known})
    problems = [f"duplicate node name: {n}" for n in duplicates] + [f"dangling input: {d}" for d in dangling] + \
        [f"signature tensor missing: {m}" for m in missing]
    if problems:
        raise ConversionError("the optimized graph is malformed (a bug in bridge's graph passes)", stage=STAGE,
                              details=problems[:20])


def op_histogram(graph_def: Any) -> dict[str, int]:
    """Op name -> node count over the main graph and library functions, sorted by op name."""
    counts = Counter(node.op for _, node in iter_all_nodes(graph_def))
    return dict(sorted(counts.items()))
