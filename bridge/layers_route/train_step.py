"""One training step in PyTorch and in TF.js on the same batch, the updated weights compared under one naming
(PyTorch state_dict keys).

What is made equal, and why:

- Dropout: both sides run with dropout off (every Dropout rate 0 in a temporary copy of model.json; ``p = 0`` on a
  copy of the module), because two random generators cannot draw the same masks. Dropout layers hold no weights,
  so this checks every weight update; that dropout itself trains is the stock TF.js layer's business.
- BatchNorm runs in training mode on both sides (batch statistics, running statistics updated with TF momentum =
  1 - PyTorch momentum). PyTorch updates running_var with the *unbiased* batch variance, TF.js with the biased one:
  running_var is compared with PyTorch's update re-derived with the biased variance (the count per channel read
  from the batch), so a wrong momentum or epsilon still shows.
- Loss, mean-reduced over the whole batch in one step (batch_size = batch): cross entropy for class-index
  targets (TF.js' categoricalCrossentropy takes probabilities, so a Softmax is appended to a logits output in the
  copy; an output that is already a softmax is used as is, PyTorch then computing the same clipped
  -sum(y log p)), mean squared error otherwise.
- Adam: TF.js' ``tf.train.adam(lr)`` uses epsilon = the backend's float epsilon, 1e-7 on cpu, wasm and float32
  webgl, and the same bias-corrected update as torch.optim.Adam, which is therefore run with eps=1e-7.
- Adam's first step moves a weight by lr * g / (|g| + eps), about lr * sign(g): where PyTorch's gradient is
  float noise (|g| < `ADAM_NOISE_FLOOR`, e.g. a bias feeding a BatchNorm, whose true gradient is 0), the two
  steps differ by up to 2 * lr for no fault of either side (measured: up to 7e-5 at lr 1e-3, on a conv bias before
  a BatchNorm and attention's key bias, both analytically 0); those elements are held to that bound only, left out
  of max|Δ|, and counted in `WeightCheck.noisy` (SGD, which does not amplify, checks every element tightly).
- LSTM: TF.js keeps bias_ih + bias_hh as one bias; both PyTorch biases get that bias's gradient, so each must move
  by TF.js' change of the sum (compared so).

Tolerance: |TF.js - PyTorch| <= atol + rtol * (PyTorch's own change of that entry), per entry; defaults in
`TOLERANCES`: SGD atol 1e-6, rtol 1e-3 (measured max on the test table 1.3e-7); Adam atol 0.1% of the learning
rate (its first step moves every weight by about lr; measured max 1.3e-7 at lr 1e-3 on elements with a real
gradient), rtol 1e-3. A 5% wrong learning rate or a wrong BatchNorm momentum fails both.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridge.errors import RuntimeStageError, UsageError
from bridge.layers_route.importer import read_tfjs_weights, weight_links
from bridge.layers_route.weight_links import by_short_name, short_name, to_torch
from bridge.layers_route.writer import METADATA_KEY
from bridge.source.ports import Interface, interface_from_model_json

STAGE = "train-step"
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("cross_entropy", "mse")
ADAM_EPSILON = 1e-7  # TF.js: ENGINE.backend.epsilon() for float32 backends
ADAM_NOISE_FLOOR = 1e-5

# (atol, rtol) per optimizer; Adam's atol is a fraction of the learning rate (see `tolerance`).
TOLERANCES: dict[str, tuple[float, float]] = {"sgd": (1e-6, 1e-3), "adam": (1e-3, 1e-3)}


@dataclass(frozen=True)
class WeightCheck:
    """One state_dict entry after the step: |TF.js - PyTorch|, the tolerance it had, PyTorch's own change, and how
    it was compared (``value``; ``shared-delta`` for LSTM's biases; ``biased-variance`` for running_var)."""

    key: str
    path: str
    max_abs_diff: float
    tolerance: float
    torch_change: float
    how: str
    noisy: int = 0

    @property
    def ok(self) -> bool:
        """True within the tolerance."""
        return bool(self.max_abs_diff <= self.tolerance)


@dataclass
class TrainStepResult:
    """The compared step. `first_diverging` is the module path of the first entry (in forward order) off its
    tolerance, None when all are within."""

    optimizer: str
    learning_rate: float
    loss: str
    batch_size: int
    backend: str
    torch_loss: float
    tfjs_loss: float
    checks: list[WeightCheck]
    first_diverging: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every entry is within its tolerance."""
        return all(c.ok for c in self.checks)

    @property
    def max_abs_diff(self) -> float:
        """The largest |TF.js - PyTorch| over every entry."""
        return max((c.max_abs_diff for c in self.checks), default=0.0)

    def summary(self) -> str:
        """One line for a report."""
        state = "ok" if self.ok else f"diverges first at {self.first_diverging}"
        return (f"{self.optimizer} lr={self.learning_rate:g} {self.loss}: {len(self.checks)} entries, max|Δ| "
                f"{self.max_abs_diff:.2e}, loss torch {self.torch_loss:.6f} / tfjs {self.tfjs_loss:.6f}: {state}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"optimizer": self.optimizer, "learning_rate": self.learning_rate, "loss": self.loss,
                "batch_size": self.batch_size, "backend": self.backend, "torch_loss": self.torch_loss,
                "tfjs_loss": self.tfjs_loss, "ok": self.ok, "max_abs_diff": self.max_abs_diff,
                "first_diverging": self.first_diverging, "notes": list(self.notes),
                "weights": [{"key": c.key, "path": c.path, "max_abs_diff": c.max_abs_diff,
                             "tolerance": c.tolerance, "torch_change": c.torch_change, "how": c.how,
                             "noisy": c.noisy, "ok": c.ok}
                            for c in self.checks]}


def tolerance(optimizer: str, learning_rate: float, atol: float | None, rtol: float | None) -> tuple[float, float]:
    """(atol, rtol) for a step: the given ones, else `TOLERANCES` (Adam's atol times the learning rate)."""
    base_atol, base_rtol = TOLERANCES[optimizer]
    if optimizer == "adam":
        base_atol *= learning_rate
    return (base_atol if atol is None else atol, base_rtol if rtol is None else rtol)


# ---------------------------------------------------------------------------------------------- the TF.js side

def _output_is_probability(model_json: Mapping[str, Any]) -> bool:
    """True when the model's (single) output is produced by a softmax (then cross entropy uses it as is)."""
    config = model_json["modelTopology"].get("model_config", model_json["modelTopology"])["config"]
    by_name = {layer["name"]: layer for layer in config["layers"]}
    name = config["output_layers"][0][0]
    for _ in range(3):
        layer = by_name[name]
        cls = layer["class_name"]
        if cls == "Softmax" or (cls == "Activation" and layer["config"].get("activation") == "softmax"):
            return True
        if not (cls == "Activation" and layer["config"].get("activation") == "linear") or not layer["inbound_nodes"]:
            return False
        name = layer["inbound_nodes"][0][0][0]
    return False


def training_copy(model_dir: Path, work: Path, append_softmax: bool) -> tuple[Path, str]:
    """A copy of the layers model for the check: model.json with every Dropout rate 0 (and a Softmax after the
    output when asked), the shards and custom_layers.js linked. Returns the folder and the output's name."""
    model_json = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    topology = model_json["modelTopology"].get("model_config", model_json["modelTopology"])
    config = topology["config"]
    for layer in config["layers"]:
        if layer["class_name"] in ("Dropout", "SpatialDropout1D", "AlphaDropout", "GaussianDropout"):
            layer["config"]["rate"] = 0.0
    output = config["output_layers"][0][0]
    if append_softmax:
        name = f"{output}_softmax"
        config["layers"].append({"class_name": "Softmax", "config": {"name": name, "trainable": True,
                                                                     "dtype": "float32", "axis": -1},
                                 "name": name, "inbound_nodes": [[[output, 0, 0, {}]]]})
        config["output_layers"] = [[name, 0, 0]]
        output = name
    folder = work / "model"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(model_json), encoding="utf-8")
    for entry in model_dir.iterdir():
        if entry.name != "model.json" and entry.is_file():
            os.symlink(entry.resolve(), folder / entry.name)
    return folder, output


def tfjs_step(model_dir: Path, inputs: Mapping[str, np.ndarray], output: str, target: np.ndarray, loss: str,
              optimizer: str, learning_rate: float, backend: str, timeout_s: float) -> Any:
    """One TF.js fit epoch of one batch; returns the FitRun (weights before and after, the loss)."""
    from bridge.runtime.node import run_layers_model
    from bridge.runtime.node import LayersFit

    batch = int(next(iter(inputs.values())).shape[0])
    fit = LayersFit(x=dict(inputs), y={output: target}, loss=loss, optimizer=optimizer,
                    learning_rate=learning_rate, epochs=1, batch_size=batch)
    runs = run_layers_model(model_dir, [dict(inputs)], backends=(backend,), fit=fit, repeats=0,
                            timeout_s=timeout_s)
    run = runs[backend]
    if run.error or run.fit is None:
        raise RuntimeStageError(f"TF.js could not fit the layers model on {backend}: "
                                f"{run.error or run.fit_error}", stage=STAGE,
                                hint="TF.js wasm lacks some training kernels (convolution, embedding "
                                     "gradients): use the cpu backend")
    return run.fit


# ---------------------------------------------------------------------------------------------- the PyTorch side

def without_dropout(module: nn.Module) -> nn.Module:
    """A copy of `module` with every dropout probability 0 (modules, and the `dropout` floats of RNNs and
    attention)."""
    clone = copy.deepcopy(module)
    for sub in clone.modules():
        if isinstance(sub, nn.modules.dropout._DropoutNd):
            sub.p = 0.0
        elif isinstance(getattr(sub, "dropout", None), float):
            sub.dropout = 0.0
    return clone


def torch_step(module: nn.Module, inputs: Sequence[torch.Tensor], target: torch.Tensor, loss: str,
               probabilities: bool, optimizer: str, learning_rate: float
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float, dict[str, int], dict[str, np.ndarray]]:
    """One optimizer step of a dropout-free copy in training mode: (state before, state after, loss, elements
    per channel seen by each BatchNorm, gradients by key)."""
    model = without_dropout(module)
    model.train()
    counts: dict[str, int] = {}
    hooks = [sub.register_forward_hook(_count_hook(name, counts)) for name, sub in model.named_modules()
             if isinstance(sub, nn.modules.batchnorm._BatchNorm)]
    before = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=learning_rate) if optimizer == "sgd" else \
        torch.optim.Adam(params, lr=learning_rate, eps=ADAM_EPSILON)
    opt.zero_grad()
    out = model(*inputs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    value = _torch_loss(out, target, loss, probabilities)
    value.backward()
    grads = {name: p.grad.detach().cpu().numpy().copy() for name, p in model.named_parameters()
             if p.grad is not None}
    opt.step()
    for hook in hooks:
        hook.remove()
    after = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return before, after, float(value.detach()), counts, grads


def _count_hook(name: str, counts: dict[str, int]) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        x = args[0]
        counts[name] = int(x.numel() // x.shape[1])
    return hook


def _torch_loss(out: torch.Tensor, target: torch.Tensor, loss: str, probabilities: bool) -> torch.Tensor:
    if loss == "mse":
        return F.mse_loss(out, target.to(out.dtype))
    if not probabilities:
        return F.cross_entropy(out, target)
    p = (out / out.sum(dim=-1, keepdim=True)).clamp(ADAM_EPSILON, 1 - ADAM_EPSILON)  # TF.js' clipping epsilon
    return -(F.one_hot(target, out.shape[-1]).to(out.dtype) * torch.log(p)).sum(dim=-1).mean()


# ---------------------------------------------------------------------------------------------- comparing

def compare_steps(links: Sequence[Any], tfjs_before: Mapping[str, np.ndarray], tfjs_after: Mapping[str, np.ndarray],
                  torch_before: Mapping[str, np.ndarray], torch_after: Mapping[str, np.ndarray],
                  batch_norms: Mapping[str, float], counts: Mapping[str, int], atol: float, rtol: float,
                  noise_bound: float | None = None, grads: Mapping[str, np.ndarray] | None = None
                  ) -> list[WeightCheck]:
    """Every linked entry of PyTorch's updated state against TF.js' updated weights mapped back. With
    `noise_bound` (Adam), elements whose PyTorch gradient is below `ADAM_NOISE_FLOOR` are held to that bound
    only."""
    before, after = by_short_name(tfjs_before), by_short_name(tfjs_after)
    checks = []
    for link in links:
        reference = [torch_before[key] for key in link.torch_keys]
        tf_after = [after[short_name(name)] for name in link.tfjs]
        if link.shared_delta:
            delta = tf_after[0] - before[short_name(link.tfjs[0])]
            mapped = [ref + delta for ref in reference]
            how = "shared-delta"
        else:
            mapped = list(to_torch(link, tf_after, reference))
            how = "value"
        for key, got in zip(link.torch_keys, mapped):
            want, old = torch_after[key], torch_before[key]
            entry_how = how
            module_path = key.rsplit(".", 1)[0]
            if key.endswith(".running_var") and module_path in batch_norms and module_path in counts:
                want = _biased_running_var(old, want, batch_norms[module_path], counts[module_path])
                entry_how = "biased-variance"
            change = float(np.max(np.abs(want - old))) if want.size else 0.0
            tol = atol + rtol * change
            error = np.abs(np.asarray(got, dtype=np.float64) - want)
            noisy = np.zeros(error.shape, dtype=bool)
            if noise_bound is not None and grads is not None and key in grads:
                # Elements whose gradient is float noise: held to the noise bound only (else reported as they are).
                noisy = np.abs(grads[key]) < ADAM_NOISE_FLOOR
                if np.any(error[noisy] > noise_bound):
                    noisy[:] = False
            checked = error[~noisy]
            diff = float(np.max(checked)) if checked.size else 0.0
            checks.append(WeightCheck(key, link.path, diff, tol, change, entry_how, int(np.count_nonzero(noisy))))
    return checks


def _biased_running_var(old: np.ndarray, new: np.ndarray, momentum: float, count: int) -> np.ndarray:
    """PyTorch's running_var update redone with the biased batch variance (what TF.js uses)."""
    if momentum == 0 or count < 2:
        return new
    unbiased = (new.astype(np.float64) - (1 - momentum) * old) / momentum
    return (1 - momentum) * old + momentum * unbiased * (count - 1) / count


# ---------------------------------------------------------------------------------------------- the check

def train_step_parity(module: nn.Module, model_dir: str | Path, inputs: Sequence[torch.Tensor] | torch.Tensor,
                      target: torch.Tensor, *, optimizer: str = "sgd", learning_rate: float = 0.01,
                      loss: str | None = None, backend: str = "cpu", atol: float | None = None,
                      rtol: float | None = None, tfjs_learning_rate: float | None = None,
                      timeout_s: float = 300.0) -> TrainStepResult:
    """Run one `optimizer` step (``sgd`` or ``adam``, fixed `learning_rate`) on the batch (`inputs` in PyTorch's
    layout, `target`: class indices for cross entropy, else an output-shaped tensor for MSE) in PyTorch and in
    TF.js (`backend` of the Node runner; cpu runs every training kernel), and compare the updated weights.
    `loss` defaults to cross entropy for integer targets, MSE otherwise. `tfjs_learning_rate` (default: the
    same) exists for negative controls: a different rate must be caught."""
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}", stage=STAGE)
    xs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    loss = loss or ("cross_entropy" if not target.is_floating_point() else "mse")
    if loss not in LOSSES:
        raise UsageError(f"loss must be one of {LOSSES}, got {loss!r}", stage=STAGE)
    folder = Path(model_dir)
    model_json, _ = read_tfjs_weights(folder)
    interface = interface_from_model_json(model_json, STAGE)
    if len(interface.outputs) != 1:
        raise UsageError("the train-step check needs a single-output model", stage=STAGE)
    links, _ = weight_links(model_json)
    meta = model_json["userDefinedMetadata"]["bridge"][METADATA_KEY]
    batch_norms = {entry["path"]: float(entry["momentum"]) for entry in meta.get("batchNorms") or []}
    probabilities = loss == "cross_entropy" and _output_is_probability(model_json)
    web_inputs = {port.name: port.to_web(x.detach().cpu().numpy()) for port, x in zip(interface.inputs, xs)}
    web_target = _web_target(interface, target, loss)
    tfjs_loss_name = "categorical_crossentropy" if loss == "cross_entropy" else "mean_squared_error"
    with tempfile.TemporaryDirectory(prefix="bridge-train-step-") as tmp:
        copy_dir, output = training_copy(folder.resolve(), Path(tmp), loss == "cross_entropy" and not probabilities)
        fit = tfjs_step(copy_dir, web_inputs, output, web_target, tfjs_loss_name, optimizer,
                        learning_rate if tfjs_learning_rate is None else tfjs_learning_rate, backend, timeout_s)
        shutil.rmtree(copy_dir, ignore_errors=True)
    before, after, torch_loss, counts, grads = torch_step(module, xs, target, loss, probabilities, optimizer,
                                                          learning_rate)
    a, r = tolerance(optimizer, learning_rate, atol, rtol)
    bound = 2.0 * learning_rate + a if optimizer == "adam" else None
    checks = compare_steps(links, fit.before, fit.after, before, after, batch_norms, counts, a, r, bound, grads)
    first = next((c.path for c in checks if not c.ok), None)
    notes = ["dropout off on both sides"]
    noisy = sum(c.noisy for c in checks)
    if optimizer == "adam":
        notes.append(f"Adam eps={ADAM_EPSILON} on both sides; {noisy} element(s) with |grad| < {ADAM_NOISE_FLOOR} "
                     "(float noise) held only to 2*lr")
    return TrainStepResult(optimizer=optimizer, learning_rate=learning_rate, loss=loss,
                           batch_size=int(xs[0].shape[0]), backend=backend, torch_loss=torch_loss,
                           tfjs_loss=float(fit.loss[0]), checks=checks, first_diverging=first, notes=notes)


def _web_target(interface: Interface, target: torch.Tensor, loss: str) -> np.ndarray:
    """The target as TF.js fits it: one-hot class probabilities for cross entropy, else the output's layout."""
    port = interface.outputs[0]
    if loss == "cross_entropy":
        classes = port.web_shape[-1]
        if classes is None:
            raise UsageError("cross entropy needs a fixed number of classes", stage=STAGE)
        return np.eye(int(classes), dtype=np.float32)[target.detach().cpu().numpy()]
    return port.to_web(target.detach().cpu().numpy().astype(np.float32))
