"""The parity data of an output folder (``OUT/parity/``): what `bridge parity` needs to re-check it later.

- ``interface.json``: format version, what the reference was (``pytorch`` or ``onnxruntime``), the route, the
  input specs, the input and output ports (PyTorch shape, dtype, layout, permutation into the web model) and the
  options that steer parity (atol, rtol, Node backends, browser on/off, strict, layout);
- ``samples.npz`` and ``reference.npz``: the sample inputs and the reference outputs, PyTorch layout, keyed
  ``"<set index>/<name>"``;
- ``layers.npz`` + ``layers.json``: PyTorch's per-module outputs, so `bridge parity` can bisect without the PyTorch
  model; kept when the conversion bisected (a stage was off, or ``--layers``) and they fit in 8 MiB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bisect.torch_layers import LayerPoint, TorchLayers
from bridge.errors import BridgeError
from bridge.source.inputs import InputSpec
from bridge.source.ports import Interface, Port
from bridge.stages.context import RunInputs

STAGE = "parity"
PARITY_DIR = "parity"
FORMAT_VERSION = 1
MAX_LAYER_BYTES = 8 * 1024 * 1024  # PyTorch layer outputs are stored for `bridge parity` only below this size


class ParityDataError(BridgeError):
    """The output folder lacks the parity data `bridge parity` needs, or it is unreadable."""


def _port_data(port: Port) -> dict[str, Any]:
    return {"name": port.name, "torch_shape": list(port.torch_shape), "dtype": port.dtype, "layout": port.layout,
            "perm": list(port.perm) if port.perm is not None else None}


def _spec_data(spec: InputSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype, "low": spec.low, "high": spec.high}


def _save_sets(path: Path, sets: Sequence[Mapping[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{i}/{name}": np.asarray(v) for i, s in enumerate(sets) for name, v in s.items()})


def save_parity_data(run: RunInputs, route: str | None, interface: Interface,
                     torch_layers: TorchLayers | None = None) -> Path:
    """Store what `bridge parity` needs in ``run.folder/parity/``; returns that folder. `torch_layers`, the PyTorch
    layer outputs a bisection captured (a stage was off, or ``--layers``), are kept too, so that `bridge parity`
    can bisect later without the PyTorch model."""
    folder = run.folder / PARITY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _save_sets(folder / "samples.npz", run.samples)
    _save_sets(folder / "reference.npz", run.reference)
    options = run.options
    interface_data = {
        "format": FORMAT_VERSION, "reference": run.reference_kind, "route": route,
        "web_formats": list(run.options.web_formats), "web_model": run.web_model_dir,
        "layers_model": run.layers_model_dir,
        "specs": [_spec_data(s) for s in run.specs],
        "inputs": [_port_data(p) for p in interface.inputs], "outputs": [_port_data(p) for p in interface.outputs],
        "options": {"atol": options.atol, "rtol": options.rtol, "node_backends": list(options.node_backends),
                    "browser": options.browser, "strict": options.strict, "layout": options.layout},
    }
    (folder / "interface.json").write_text(json.dumps(interface_data, indent=2) + "\n")
    if torch_layers is not None:
        _save_layers(folder, torch_layers)
    return folder


def _save_layers(folder: Path, torch_layers: TorchLayers) -> None:
    """PyTorch's per-module outputs, as many sample sets as fit in MAX_LAYER_BYTES (none if one set does not)."""
    if not torch_layers.points:
        return
    per_set = sum(v[0].nbytes for v in torch_layers.values)
    count = min(len(torch_layers.values[0]), MAX_LAYER_BYTES // max(per_set, 1))
    if count == 0:
        return
    np.savez(folder / "layers.npz", **{f"{s}/{i}": torch_layers.values[i][s]
                                       for i in range(len(torch_layers.points)) for s in range(count)})
    (folder / "layers.json").write_text(json.dumps({"samples": count,
                                                    "points": [p.to_dict() for p in torch_layers.points]}) + "\n")


@dataclass(frozen=True)
class ParityData:
    """What was stored at conversion time, read back."""

    reference_kind: str
    route: str
    specs: list[InputSpec]
    interface: Interface
    samples: list[dict[str, np.ndarray]]
    reference: list[dict[str, np.ndarray]]
    options: dict[str, Any]
    web_formats: tuple[str, ...] = ("graph",)
    web_model_dir: str = "web_model"
    layers_model_dir: str = "layers_model"

    @property
    def input_ports(self) -> tuple[Port, ...]:
        """The stored input ports."""
        return self.interface.inputs

    @property
    def output_ports(self) -> tuple[Port, ...]:
        """The stored output ports."""
        return self.interface.outputs


def _spec(data: Mapping[str, Any]) -> InputSpec:
    return InputSpec(name=data["name"], shape=tuple(data["shape"]), dtype=data["dtype"], low=data.get("low"),
                     high=data.get("high"))


def _load_sets(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        sets: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            index, _, name = key.partition("/")
            sets.setdefault(int(index), {})[name] = data[key]
    return [sets[i] for i in sorted(sets)]


def load_parity_data(out_dir: Path) -> ParityData:
    """Read ``OUT/parity/``; a `ParityDataError` says what is missing and how to get it."""
    folder = Path(out_dir) / PARITY_DIR
    hint = "convert again with this version of bridge: it stores what `bridge parity` needs in OUT/parity/"
    if not (folder / "interface.json").is_file():
        raise ParityDataError(f"{folder} holds no parity data (interface.json)", stage=STAGE, hint=hint)
    try:
        stored = json.loads((folder / "interface.json").read_text())
        if stored.get("format") != FORMAT_VERSION:
            raise ParityDataError(f"parity data format {stored.get('format')} is not {FORMAT_VERSION}",
                                  stage=STAGE, hint=hint)
        interface = Interface(tuple(Port.from_metadata(p) for p in stored["inputs"]),
                              tuple(Port.from_metadata(p) for p in stored["outputs"]))
        return ParityData(reference_kind=stored["reference"], route=stored.get("route") or "?",
                          specs=[_spec(s) for s in stored["specs"]], interface=interface,
                          samples=_load_sets(folder / "samples.npz"), reference=_load_sets(folder / "reference.npz"),
                          options=dict(stored.get("options") or {}),
                          web_formats=tuple(stored.get("web_formats") or ("graph",)),
                          web_model_dir=str(stored.get("web_model") or "web_model"),
                          layers_model_dir=str(stored.get("layers_model") or "layers_model"))
    except ParityDataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ParityDataError(f"cannot read the parity data in {folder}: {exc}", stage=STAGE, hint=hint) from exc


def load_layers(out_dir: Path) -> TorchLayers | None:
    """The stored PyTorch layer outputs, or None when none were stored."""
    folder = Path(out_dir) / PARITY_DIR
    if not (folder / "layers.json").is_file() or not (folder / "layers.npz").is_file():
        return None
    meta = json.loads((folder / "layers.json").read_text())
    points = [LayerPoint(p["path"], p["kind"], p.get("source"), tuple(p["shape"]), int(p.get("params", 0)),
                         list(p.get("aliases", []))) for p in meta["points"]]
    with np.load(folder / "layers.npz", allow_pickle=False) as data:
        values = [[data[f"{s}/{i}"] for s in range(int(meta["samples"]))] for i in range(len(points))]
    return TorchLayers(points, values)
