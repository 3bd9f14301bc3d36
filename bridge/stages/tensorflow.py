"""The stages that run in TensorFlow: `tf` (the route's TF model in memory), `savedmodel` (reloaded from disk
through its serving signature) and `tfjs-graph` (the web model written by bridge's writer, then its exact graph
replayed in TensorFlow with the written, dequantized weights)."""

from __future__ import annotations

from typing import Any

from bridge.errors import BridgeError
from bridge.util.tf_errors import describe_tf_error
from bridge.stages.artifacts import Produced, WebModel
from bridge.stages.context import StageEnv
from bridge.stages.result import StageResult

SIGNATURE = "serving_default"


def check_tf_model(env: StageEnv) -> StageResult:
    """The route's TF model, run in Python on every sample."""
    tf_model = env.artifacts.tf_model
    assert tf_model is not None
    actual = []
    for index, sample in enumerate(env.web_inputs()):
        try:
            actual.append(tf_model.run(sample))
        except BridgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - TF raises many types; the sample and node say where
            return env.failed(f"TensorFlow failed on sample {index} ({_shapes(sample)}): {describe_tf_error(exc)}",
                              detail=tf_model.detail)
    return env.judge(actual, detail=tf_model.detail, **tf_model.extra)


def _shapes(sample: dict[str, Any]) -> str:
    """`name 1x3x47x47, ...` for a sample."""
    return ", ".join(f"{name} {'x'.join(str(d) for d in getattr(value, 'shape', ()))}" for name, value in sample.items())


def check_saved_model(env: StageEnv) -> StageResult:
    """The SavedModel reloaded from disk and run through its serving signature."""
    from bridge.util.quiet import import_tensorflow

    tf = import_tensorflow(env.run.options.verbose)
    loaded = tf.saved_model.load(str(env.artifacts.saved_model))
    serve = loaded.signatures[SIGNATURE]
    names = [p.name for p in env.interface.outputs]
    actual = []
    for sample in env.web_inputs():
        result = serve(**{k: tf.constant(v) for k, v in sample.items()})
        actual.append({name: result[name].numpy() for name in names})
    return env.judge(actual, detail=SIGNATURE)


def write_web_model(env: StageEnv) -> Produced:
    """OUT/web_model from the SavedModel, with bridge's writer (the interface and route recorded in metadata)."""
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model

    run, artifacts = env.run, env.artifacts
    target = run.web_model_path
    source = str(run.onnx_source) if run.onnx_source else type(artifacts.module).__name__
    options = TfjsOptions(quantize=run.options.quantize, shard_size=run.options.shard_size,
                          metadata=user_metadata(env), bridge_metadata=bridge_metadata(env, artifacts.route),
                          source=source, force=True,
                          control_flow_v2=run.options.control_flow_v2,
                          output_order=tuple(p.name for p in env.interface.outputs))
    convert_saved_model(artifacts.saved_model, target, options)
    return Produced(artifacts.with_(web_model=WebModel.read(target)))


def bridge_metadata(env: StageEnv, route: str | None) -> dict[str, Any]:
    """userDefinedMetadata.bridge of a written model: the route, the ports, and the picture preprocessing given at
    conversion (--image-range, --mean, --std) for each image input."""
    from bridge.demo.page import image_preprocessing
    from bridge.options import preprocessing_metadata

    interface = env.interface
    samples = env.web_inputs()[:1] or [{}]
    images = [p.name for p in interface.inputs if image_preprocessing(p, samples[0].get(p.name)) is not None]
    meta: dict[str, Any] = {"route": route, **interface.metadata()}
    preprocessing = preprocessing_metadata(env.run.options, images)
    if preprocessing:
        meta["preprocessing"] = preprocessing
    return meta


def user_metadata(env: StageEnv) -> dict[str, Any]:
    """The top-level userDefinedMetadata: the user's --metadata files, and --labels (where TF.js tools look)."""
    options = env.run.options
    return {**dict(options.metadata), **({"labels": list(options.labels)} if options.labels else {})}


def check_web_graph(env: StageEnv) -> StageResult:
    """The web model as written: read it back (validating it), replay its graph in TensorFlow, compare."""
    from bridge.tfjs.inspect import kernel_summary, summarize
    from bridge.tfjs.reader import read_web_model, signature_infos
    from bridge.tfjs.replay import replay_samples

    web = env.artifacts.web_model
    assert web is not None
    model = read_web_model(web.path)
    infos_in, infos_out = signature_infos(model.signature)
    actual = replay_samples(model.graph_def, model.weights, env.web_inputs(), infos_in, infos_out)
    summary = summarize(model)
    textures = summary["webglTextures"]
    findings = [] if textures["fitsCommonLimit"] else [f"webgl: {_texture_finding(textures)}"]
    kernels = kernel_summary(web.path)  # before any runtime: an op a backend cannot run is named here
    findings += [f"kernels: {line}" for line in (kernels or {}).get("findings", [])]
    return env.judge(actual, detail=f"{len(model.shards)} shard(s), {model.weight_bytes / 1e6:.2f} MB",
                     weightCount=summary["weights"]["count"], weightBytes=summary["weights"]["bytes"],
                     modelJsonBytes=(web.path / "model.json").stat().st_size,
                     bytesByDtype=summary["weights"]["bytesByDtype"], needsAsync=summary["needsAsync"],
                     opHistogram=summary["ops"], shards=len(model.shards), webglTextures=textures,
                     kernels=kernels, findings=findings)


def _texture_finding(textures: dict[str, Any]) -> str:
    """One line naming the nodes whose textures exceed WebGL's common 8192 limit."""
    over = textures["over"].get("8192") or []
    names = ", ".join(f"{t['node']} ({t['texture'][0]}x{t['texture'][1]})" for t in over[:3])
    return (f"{len(over)} node(s) need a texture over 8192, which most GPUs refuse: {names}; the webgl backend may "
            "fail there (wasm and cpu are not limited)")
