"""Scratch benchmark for issue 17 (TF.js wasm): a 6x384 sentence encoder, ViT-tiny, the speech encoder and the
benchmark suite's LSTM and GRU classifiers, converted on
the native route, timed in TF.js Node wasm and onnxruntime-web Node wasm back to back.

    python -m benchmarks.attn_scratch convert MODEL OUT     # bridge.convert (native) + ONNX export
    python -m benchmarks.attn_scratch rewrite MODEL OUT     # only re-write OUT/saved_model -> OUT/web_model
    python -m benchmarks.attn_scratch time MODEL OUT [--repeats N]
    python -m benchmarks.attn_scratch ops OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def sentence_encoder():
    import torch
    from transformers import BertConfig, BertModel

    from benchmarks.zoo_models import TextModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    return TextModel(BertModel(config, add_pooling_layer=False)).eval(), (
        "input_ids:1x128:int64:0..30521", "attention_mask:1x128:int64:1..1")


def vit_tiny():
    import torch
    from transformers import ViTConfig, ViTModel

    from benchmarks.zoo_models import PixelModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       image_size=224, patch_size=16)
    return PixelModel(ViTModel(config, add_pooling_layer=False)).eval(), ("pixel_values:1x3x224x224",)


def speech_encoder():
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from benchmarks.zoo_models import FeaturesModel

    torch.manual_seed(0)
    config = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                           num_mel_bins=80, max_source_positions=1500)
    return FeaturesModel(WhisperEncoder(config)).eval(), ("input_features:1x80x3000",)


def _perturb(module):
    """Non-trivial biases and layer-norm parameters (transformers initialises them to 0 and 1, which grappler
    would fold away, unlike in a trained model)."""
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.1, 0.1)
            elif "norm" in name.lower() and name.endswith("weight"):
                p.uniform_(0.8, 1.2)
    return module


def _bench_model(name: str):
    def build():
        from benchmarks.models import MODELS as BENCH

        bench = BENCH[name]
        return bench.build().eval(), bench.inputs
    return build


MODELS = {"sentence": sentence_encoder, "vit": vit_tiny, "speech": speech_encoder,
          "lstm": _bench_model("lstm"), "gru": _bench_model("gru")}


def op_counts(web_model: Path) -> Counter:
    data = json.loads((web_model / "model.json").read_text())
    nodes = data["modelTopology"]["node"]
    return Counter(n["op"] for n in nodes)


def show_ops(web_model: Path) -> None:
    counts = op_counts(web_model)
    skip = {"Const", "Placeholder", "Identity", "NoOp"}
    total = sum(v for k, v in counts.items() if k not in skip)
    print(f"ops {total}  Transpose {counts.get('Transpose', 0)}")
    print(", ".join(f"{k}:{v}" for k, v in counts.most_common() if k not in skip))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what")
    parser.add_argument("model")
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-ort", action="store_true")
    args = parser.parse_args()
    if args.what == "ops":
        show_ops(Path(args.model) / "web_model")
        return 0
    module, inputs = MODELS[args.model]()
    _perturb(module)
    out: Path = args.out
    if args.what == "convert":
        import bridge
        from bridge.onnx_route.export import export_onnx
        from bridge.source.inputs import make_sample_inputs, parse_input_spec
        from bridge.source.reference import run_reference, to_torch_inputs

        result = bridge.convert(module, list(inputs), out, route="native", force=True, quiet=True,
                                node_backends=("wasm",), browser=False, samples=1)
        print("status", result.status.value)
        for s in result.stages:
            print(f"  {s.name:24s} {s.status.value:8s} {s.seconds:7.1f}s max_abs={s.max_abs}")
        specs = [parse_input_spec(t) for t in inputs]
        sample = make_sample_inputs(specs, count=1)[0]
        names, _ = run_reference(module, [sample], specs)
        export_onnx(module, to_torch_inputs(sample, specs), out / "ref.onnx", input_names=[s.name for s in specs],
                    output_names=names)
        show_ops(out / "web_model")
    elif args.what == "rewrite":
        import shutil

        from bridge.tfjs.convert import TfjsOptions, convert_saved_model

        target = out / "web_model_new"
        shutil.rmtree(target, ignore_errors=True)
        convert_saved_model(out / "saved_model", target, TfjsOptions(force=True))
        # keep the port / interface files of the original web model
        for f in (out / "web_model").iterdir():
            if not (target / f.name).exists():
                shutil.copy(f, target / f.name)
        show_ops(target)
    elif args.what == "time":
        from benchmarks import latency as lat
        from bridge.source.inputs import make_sample_inputs, parse_input_spec

        specs = [parse_input_spec(t) for t in inputs]
        names = [s.name for s in specs]
        sample = make_sample_inputs(specs, count=1, seed=0)[0]
        reference = lat.torch_outputs(module, sample, names)
        rows = {}
        for label in ("web_model", "web_model_new"):
            web = out / label
            if not web.is_dir():
                continue
            t = lat.tfjs_node_latency(web, lat.web_inputs(web, sample), lat.web_expected(web, reference),
                                      backend="wasm", warmup=args.warmup, repeats=args.repeats)
            rows[f"tfjs-wasm {label}"] = t
        if not args.no_ort:
            rows["ort-web wasm"] = lat.ort_node_latency(out / "ref.onnx", sample, reference, warmup=args.warmup,
                                                        repeats=args.repeats)
        ort = rows.get("ort-web wasm", {}).get("median_ms")
        for k, t in rows.items():
            ratio = f" ratio {t['median_ms'] / ort:.2f}x" if ort and t.get("median_ms") else ""
            print(f"{k:28s} {t['status']} median {t.get('median_ms')} ms p10 {t.get('p10_ms')} p90 "
                  f"{t.get('p90_ms')} max_abs {t.get('max_abs')} {t.get('reason', '')}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
