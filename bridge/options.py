"""Options of a conversion, in one frozen dataclass (the CLI and the Python API both build one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.errors import UsageError

ROUTES = ("onnx", "native", "auto")
LAYOUTS = ("nhwc", "nchw")
WEB_FORMATS = ("graph", "layers")
DEFAULT_SHARD_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that steers `bridge convert` besides the model, its inputs and the output folder."""

    route: str = "auto"
    layout: str = "nhwc"
    output_names: tuple[str, ...] = ()
    quantize: tuple[str, ...] = ()
    shard_size: int = DEFAULT_SHARD_SIZE
    atol: float | None = None
    rtol: float | None = None
    samples: int = 3
    seed: int = 0
    strict: bool = False
    force: bool = False
    verbose: bool = False
    node_backends: tuple[str, ...] = ("wasm", "cpu")
    browser: bool = True
    layers: bool = False  # --layers: bisect even when every stage passes
    trust_pickle: bool = False  # --trust-pickle: a MODEL path may be a whole pickled module (weights_only=False)
    metadata: dict[str, object] = field(default_factory=dict)
    dynamic_sizes: tuple[str, ...] = ()  # --dynamic-sizes: sizes of dynamic dimensions in the sample inputs
    control_flow_v2: bool = False  # the writer keeps TF2 While/If instead of lowering them to v1 control flow
    strip_debug_ops: bool = True  # the writer drops Assert/Print/CheckNumerics
    web_formats: tuple[str, ...] = ("graph",)  # which web models to write: "graph" (inference), "layers"
    train_optimizer: str = "sgd"  # the train-step check of a layers model: sgd or adam ...
    train_learning_rate: float = 0.01  # ... with this fixed learning rate ...
    train_loss: str | None = None  # ... and loss: cross_entropy for classifier outputs, mse otherwise
    image_range: tuple[float, float] | None = None  # --image-range: pixels 0..255 scaled to this (default 0..1)
    mean: tuple[float, ...] | None = None  # --mean: then per channel minus this ...
    std: tuple[float, ...] | None = None  # --std: ... and divided by this (image inputs; page and module)
    labels: tuple[str, ...] | None = None  # --labels: class names of a classifier output (page and module)
    time_limit: float = 1800.0  # --time-limit: seconds the reference run and each stage may take (0: no limit)

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise UsageError(f"unknown route {self.route!r}", stage="options", hint=f"use one of {', '.join(ROUTES)}")
        if self.layout not in LAYOUTS:
            raise UsageError(f"unknown layout {self.layout!r}", stage="options", hint="use nhwc or nchw")
        if not self.time_limit >= 0:
            raise UsageError("--time-limit must be a non-negative number of seconds", stage="options")
        if self.samples < 1:
            raise UsageError("--samples must be at least 1", stage="options")
        if self.shard_size < 1024:
            raise UsageError("--shard-size must be at least 1024 bytes", stage="options")
        if self.train_optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown --train-optimizer {self.train_optimizer!r}", stage="options",
                             hint="use sgd or adam")
        if self.train_loss not in (None, "cross_entropy", "mse"):
            raise UsageError(f"unknown --train-loss {self.train_loss!r}", stage="options",
                             hint="use cross_entropy or mse")
        if not self.train_learning_rate > 0:
            raise UsageError("--train-lr must be a positive number", stage="options")
        bad_range = self.image_range is not None and not (len(self.image_range) == 2
                                                          and self.image_range[0] < self.image_range[1])
        if bad_range:
            raise UsageError("--image-range must be LOW..HIGH with LOW < HIGH", stage="options", hint="e.g. -1..1")
        if self.std is not None and not all(s > 0 for s in self.std):
            raise UsageError("--std values must be positive", stage="options")
        formats = [f for f in self.web_formats if f not in WEB_FORMATS]
        if formats or not self.web_formats:
            raise UsageError(f"unknown web format(s) {', '.join(formats) or '(none)'}", stage="options",
                             hint=f"use {' or '.join(WEB_FORMATS)}, or both: graph,layers")
        unknown = [b for b in self.node_backends if b not in ("wasm", "cpu")]
        if unknown:
            raise UsageError(f"unknown Node backend(s) {', '.join(unknown)}", stage="options", hint="use wasm, cpu")
        from bridge.source.inputs import DynamicSizes

        DynamicSizes.parse(self.dynamic_sizes)  # a bad value is a usage error before any work
        for value, name in ((self.atol, "atol"), (self.rtol, "rtol")):
            if value is not None and not value >= 0:
                raise UsageError(f"--{name} must be a non-negative number", stage="options")


def preprocessing_metadata(options: ConvertOptions, image_inputs: list[str]) -> dict[str, dict[str, object]]:
    """The picture preprocessing given at conversion, per image input (for model.json's metadata, the demo page and
    the generated module); empty when none was given."""
    record: dict[str, object] = {}
    if options.image_range is not None:
        record["range"] = list(options.image_range)
    if options.mean is not None:
        record["mean"] = list(options.mean)
    if options.std is not None:
        record["std"] = list(options.std)
    return {name: dict(record) for name in image_inputs} if record else {}
