"""custom_layers.js: the JavaScript of a layers model's custom classes, one ES module beside model.json.

The module exports ``registerCustomLayers(tf)``, which defines one class per custom layer (extending
``tf.layers.Layer``, with ``className``, ``build``, ``computeOutputShape``, ``call``, ``getConfig``) on the given
TF.js namespace and registers it with ``tf.serialization.registerClass``; it takes ``tf`` as an argument so the
classes extend the very TF.js the page loads models with (a bundle, a script tag, Node). When a global ``tf``
exists (the script-tag build), importing the module registers the classes at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.layers_route.custom_ops import OPS, js_literal
from bridge.layers_route.ir import Arg, LayerSpec, Program

FILE_NAME = "custom_layers.js"


def _arg(a: Arg, weights: Sequence[str]) -> str:
    if a.kind == "in":
        return f"x{a.index}"
    if a.kind == "w":
        return weights[a.index]
    if a.kind == "step":
        return f"t{a.index}"
    return js_literal(float(a.value))


def _indent(lines: Sequence[str], depth: int) -> list[str]:
    return [("  " * depth + line) if line else "" for line in lines]


def program_class(class_name: str, program: Program, describe: str) -> list[str]:
    """The JavaScript class computing `program`."""
    weight_vars = [f"w{i}" for i in range(len(program.weights))]
    build = [f"this.w_{w.name} = this.addWeight({js_literal(w.name)}, this.weightShapes[{i}], 'float32', "
             f"tf.initializers.zeros(), undefined, {js_literal(w.trainable)});"
             for i, w in enumerate(program.weights)]
    inputs = ", ".join(f"x{i}" for i in range(program.inputs))
    body = [f"const [{inputs}] = Array.isArray(inputs) ? inputs : [inputs];"]
    body += [f"const w{i} = this.w_{w.name}.read();" for i, w in enumerate(program.weights)]
    for index, step in enumerate(program.steps):
        expr = OPS[step.op].js([_arg(a, weight_vars) for a in step.args], dict(step.attrs))
        body.append(f"const t{index} = {expr};")
    body.append(f"return {_arg(program.output, weight_vars)};")
    return [
        f"/** {describe} */",
        f"class {class_name} extends tf.layers.Layer {{",
        f"  static className = {js_literal(class_name)};",
        "",
        "  constructor(config) {",
        "    super(config);",
        "    this.outShape = config.outShape;",
        "    this.weightShapes = config.weightShapes;",
        "    this.bridgeCustom = config.bridgeCustom;",
        "  }",
        "",
        "  build(inputShape) {",
        *_indent(build, 2),
        "    this.built = true;",
        "  }",
        "",
        "  computeOutputShape(inputShape) {",
        "    const first = Array.isArray(inputShape[0]) ? inputShape[0] : inputShape;",
        "    return [first[0], ...this.outShape];",
        "  }",
        "",
        "  call(inputs, kwargs) {",
        "    return tf.tidy(() => {",
        *_indent(body, 3),
        "    });",
        "  }",
        "",
        "  getConfig() {",
        "    return { ...super.getConfig(), outShape: this.outShape, weightShapes: this.weightShapes,",
        "      bridgeCustom: this.bridgeCustom };",
        "  }",
        "}",
    ]


GRU_CLASS = """\
/** PyTorch's GRU (the reset gate scales the recurrent product, Keras' reset_after=True, which tfjs-layers' own GRU
 * does not implement), with Keras' weights: kernel [in, 3H], recurrent_kernel [H, 3H], bias [2, 3H], gates z, r, h.
 * Outputs [sequence (batch, time, units), last state (batch, units)]. */
class BridgeGRU extends tf.layers.Layer {
  static className = 'BridgeGRU';

  constructor(config) {
    super(config);
    this.units = config.units;
    this.useBias = config.useBias !== false;
    this.bridgeCustom = config.bridgeCustom;
  }

  build(inputShape) {
    const features = inputShape[inputShape.length - 1];
    const zeros = tf.initializers.zeros();
    this.kernel = this.addWeight('kernel', [features, 3 * this.units], 'float32', zeros);
    this.recurrentKernel = this.addWeight('recurrent_kernel', [this.units, 3 * this.units], 'float32', zeros);
    this.bias = this.useBias ? this.addWeight('bias', [2, 3 * this.units], 'float32', zeros) : null;
    this.built = true;
  }

  computeOutputShape(inputShape) {
    return [[inputShape[0], inputShape[1], this.units], [inputShape[0], this.units]];
  }

  call(inputs, kwargs) {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const [batch, steps, features] = x.shape;
      const bias = this.bias === null ? null : tf.unstack(this.bias.read());
      let projected = tf.reshape(tf.matMul(tf.reshape(x, [-1, features]), this.kernel.read()),
        [batch, steps, 3 * this.units]);
      if (bias !== null) projected = tf.add(projected, bias[0]);
      let h = tf.zeros([batch, this.units]);
      const outputs = [];
      for (const xt of tf.unstack(projected, 1)) {
        let hh = tf.matMul(h, this.recurrentKernel.read());
        if (bias !== null) hh = tf.add(hh, bias[1]);
        const [xz, xr, xn] = tf.split(xt, 3, -1);
        const [hz, hr, hn] = tf.split(hh, 3, -1);
        const z = tf.sigmoid(tf.add(xz, hz));
        const r = tf.sigmoid(tf.add(xr, hr));
        const n = tf.tanh(tf.add(xn, tf.mul(r, hn)));
        h = tf.add(tf.mul(z, h), tf.mul(tf.sub(1, z), n));
        outputs.push(h);
      }
      return [tf.stack(outputs, 1), h];
    });
  }

  getConfig() {
    return { ...super.getConfig(), units: this.units, useBias: this.useBias, bridgeCustom: this.bridgeCustom };
  }
}"""

TEMPLATES_JS = {"gru": GRU_CLASS}


def custom_layers_module(layers: Sequence[LayerSpec], model_name: str) -> str:
    """The ES module source for the custom classes used by `layers` (each class once)."""
    classes: list[str] = []
    blocks: list[list[str]] = []
    helpers: list[str] = []
    for spec in layers:
        if spec.class_name in classes or (spec.program is None and spec.template is None):
            continue
        classes.append(spec.class_name)
        if spec.template is not None:
            blocks.append(TEMPLATES_JS[spec.template].splitlines())
            continue
        assert spec.program is not None
        ops = ", ".join(s.op for s in spec.program.steps)
        origin = f"the PyTorch module `{spec.owner}`" if spec.owner else f"the op at `{spec.path}`"
        blocks.append(program_class(spec.class_name, spec.program, f"Custom layer for {origin}: {ops}."))
        for step in spec.program.steps:
            helper = OPS[step.op].helper
            if helper and helper not in helpers:
                helpers.append(helper)
    lines = [
        f"// Custom layers of the TF.js layers model {model_name!s}, generated by bridge: import this module and",
        "// call registerCustomLayers(tf) once before tf.loadLayersModel (with the script-tag build of TF.js, a",
        "// global `tf`, importing it is enough).",
        "",
        "const registered = new WeakMap();",
        "",
        "/** Defines and registers the custom layer classes on `tf` (once per TF.js namespace); returns them. */",
        "export function registerCustomLayers(tf) {",
        "  if (registered.has(tf)) return registered.get(tf);",
    ]
    for helper in helpers:
        lines += _indent(helper.splitlines(), 1) + [""]
    for block in blocks:
        lines += _indent(block, 1) + [""]
    lines += [
        f"  const classes = {{ {', '.join(classes)} }};",
        "  for (const cls of Object.values(classes)) tf.serialization.registerClass(cls);",
        "  registered.set(tf, classes);",
        "  return classes;",
        "}",
        "",
        "if (typeof globalThis !== 'undefined' && globalThis.tf && globalThis.tf.layers) {",
        "  registerCustomLayers(globalThis.tf);",
        "}",
        "",
    ]
    return "\n".join(lines)
