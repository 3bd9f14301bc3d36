// Runs a TF.js graph model (or a layers model: predict, and optionally one fit run) on several backends and input
// sets, for bridge's parity checks.
//
// Two layers in one file:
//   * an environment-free core (`runModelOnBackend`, `needsAsync`, weight size checks): it gets the `tf` namespace,
//     the model artifacts and the inputs as typed arrays, so the browser harness can reuse it for webgl;
//   * a Node shell (`main`): reads a request JSON and a packed input file written by bridge/runtime/node.py,
//     loads TF.js from a given node_modules folder, writes a packed output file and summary.json.
//
// Protocol (version 1): `node tfjs_runner.mjs REQUEST.json`. Nothing is printed to stdout; logs go to stderr.
// Exit code 0: summary.json written (per-backend failures are inside it); 2: summary.json written with `fatal`;
// anything else: a crash, stderr tells why.

export const PROTOCOL_VERSION = 1;

// Ops that make `model.execute()` refuse the graph or fail with "returned a promise".
const ASYNC_OPS = new Set([
  'Switch', 'Merge', 'Enter', 'Exit', 'NextIteration', 'LoopCond', 'While', 'StatelessWhile', 'If', 'StatelessIf',
  'Where', 'ListDiff', 'EmptyTensorList',
]);
const ASYNC_OP_PREFIXES = ['NonMaxSuppressionV', 'TensorArray', 'TensorList', 'HashTable', 'LookupTable',
  'InitializeTable'];

const DTYPE_BYTES = { float32: 4, int32: 4, bool: 1, complex64: 8, float16: 2, uint8: 1, uint16: 2 };

/** Every op name in the graph, including library functions (control-flow bodies). */
export function graphOps(modelJSON) {
  const topology = modelJSON.modelTopology || {};
  const ops = new Set((topology.node || []).map((n) => n.op));
  for (const fn of ((topology.library || {}).function || [])) {
    for (const n of (fn.nodeDef || [])) ops.add(n.op);
  }
  return ops;
}

/** Whether the model needs executeAsync: bridge metadata wins, else the ops decide. Returns {async, reason}. */
export function needsAsync(modelJSON) {
  const meta = ((modelJSON.userDefinedMetadata || {}).bridge || {});
  if (typeof meta.needsAsync === 'boolean') {
    return { async: meta.needsAsync, reason: 'userDefinedMetadata.bridge.needsAsync' };
  }
  const found = [...graphOps(modelJSON)].filter(
    (op) => ASYNC_OPS.has(op) || ASYNC_OP_PREFIXES.some((p) => op.startsWith(p)));
  return found.length > 0
    ? { async: true, reason: `graph has ${found.sort().join(', ')}` }
    : { async: false, reason: 'no control-flow or dynamic-shape ops' };
}

/** Bytes the manifest entries need, or null when it cannot be known (string weights). */
export function expectedWeightBytes(weightsManifest) {
  let total = 0;
  for (const group of weightsManifest || []) {
    for (const w of group.weights || []) {
      const dtype = (w.quantization && w.quantization.dtype) || w.dtype;
      const size = DTYPE_BYTES[dtype];
      if (size === undefined) return null;
      total += size * (w.shape || []).reduce((a, b) => a * b, 1);
    }
  }
  return total;
}

function isAsyncError(err) {
  const msg = String(err && err.message ? err.message : err);
  return /executeAsync/.test(msg) || /returned a promise/.test(msg);
}

function errorText(err) {
  return String(err && err.message ? err.message : err);
}

/** Output keys in signature order (or the graph's output node names when the model has no signature). */
export function outputKeys(model, modelJSON) {
  const sig = modelJSON.signature && modelJSON.signature.outputs;
  return sig && Object.keys(sig).length > 0 ? Object.keys(sig) : [...model.outputNodes];
}

async function executeOnce(model, inputs, names, useAsync) {
  const result = useAsync ? await model.executeAsync(inputs, names) : model.execute(inputs, names);
  return Array.isArray(result) ? result : [result];
}

async function readTensor(t) {
  return { dtype: t.dtype, shape: [...t.shape], data: await t.data() };
}

/** Lets timers run (the parent watchdog): a loop of resolved promises alone never yields to them. */
function yieldToEventLoop() {
  return new Promise((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)));
}

function disposeAll(tensors) {
  for (const t of new Set(tensors)) t.dispose();
}

/** Builds one input set's tensors: `set` maps key -> {dtype, shape, data}. */
function makeInputs(tf, set) {
  const out = {};
  for (const [key, v] of Object.entries(set)) out[key] = tf.tensor(v.data, v.shape, v.dtype);
  return out;
}

/**
 * Runs one input set, reading every output back; falls back to executeAsync once when execute() refuses.
 * Returns {outputs: [{key, tensor}], fetched: [{key, tensor}], usedAsync}.
 */
async function runSet(tf, model, set, keys, fetch, useAsync) {
  const inputs = makeInputs(tf, set);
  let outs = [];
  try {
    try {
      outs = await executeOnce(model, inputs, [...keys, ...fetch], useAsync);
    } catch (err) {
      if (useAsync || !isAsyncError(err)) throw err;
      useAsync = true;
      outs = await executeOnce(model, inputs, [...keys, ...fetch], true);
    }
    const values = await Promise.all(outs.map(readTensor));
    return {
      outputs: keys.map((key, i) => ({ key, tensor: values[i] })),
      fetched: fetch.map((key, i) => ({ key, tensor: values[keys.length + i] })),
      usedAsync: useAsync,
    };
  } finally {
    disposeAll(outs);
    disposeAll(Object.values(inputs));
  }
}

/** Times `repeats` runs (after `warmup` untimed ones) of one input set, output read-back included. */
async function timeRuns(tf, model, set, keys, useAsync, warmup, repeats) {
  const times = [];
  for (let i = 0; i < warmup + repeats; i++) {
    await yieldToEventLoop();
    const inputs = makeInputs(tf, set);
    let outs = [];
    try {
      const t0 = performance.now();
      outs = await executeOnce(model, inputs, keys, useAsync);
      await Promise.all(outs.map((t) => t.data()));
      if (i >= warmup) times.push(performance.now() - t0);
    } finally {
      disposeAll(outs);
      disposeAll(Object.values(inputs));
    }
  }
  return times;
}

/**
 * Loads the model on `backend` and runs every input set. Never throws: a failure becomes `error`.
 * `artifacts` is a tf.io ModelArtifacts object; `inputSets` a list of {key: {dtype, shape, data}}.
 */
export async function runModelOnBackend(tf, backend, artifacts, modelJSON, inputSets, opts = {}) {
  const { fetch = [], warmup = 0, repeats = 1 } = opts;
  const result = { backend, error: null, stage: null, load_ms: null, infer_ms: [], set_ms: [], used_async: false,
    async_reason: null, outputs: [], fetched: [], tensors_leaked: null, flags: {} };
  let stage = 'init';
  let model = null;
  let before = 0;
  try {
    if (!(await tf.setBackend(backend))) throw new Error(`backend '${backend}' failed to initialise`);
    await tf.ready();
    result.flags = backendFlags(tf, backend);
    before = tf.memory().numTensors;
    stage = 'load';
    const t0 = performance.now();
    model = await tf.loadGraphModel({ load: async () => artifacts });
    result.load_ms = performance.now() - t0;
    stage = 'run';
    const keys = outputKeys(model, modelJSON);
    const decision = needsAsync(modelJSON);
    let useAsync = decision.async;
    result.async_reason = decision.reason;
    for (const set of inputSets) {
      await yieldToEventLoop();
      const t1 = performance.now();
      const r = await runSet(tf, model, set, keys, fetch, useAsync);
      result.set_ms.push(performance.now() - t1);
      if (r.usedAsync && !useAsync) result.async_reason = 'execute() asked for executeAsync()';
      useAsync = r.usedAsync;
      result.outputs.push(r.outputs);
      result.fetched.push(r.fetched);
    }
    result.used_async = useAsync;
    stage = 'time';
    if (inputSets.length > 0 && repeats > 0) {
      result.infer_ms = await timeRuns(tf, model, inputSets[0], keys, useAsync, warmup, repeats);
    }
  } catch (err) {
    result.error = errorText(err);
    result.stage = stage;
  } finally {
    if (model !== null) model.dispose();
    if (tf.getBackend() === backend) result.tensors_leaked = tf.memory().numTensors - before;
  }
  return result;
}

function backendFlags(tf, backend) {
  const env = tf.env();
  if (backend !== 'wasm') return {};
  return { simd: env.getBool('WASM_HAS_SIMD_SUPPORT'), threads: env.getBool('WASM_HAS_MULTITHREAD_SUPPORT') };
}

// ---------------------------------------------------------------------------------------------------------------
// Layers models (tf.loadLayersModel): predict on input sets, and one `fit` run whose weights are read back.

/** Input / output layer names (a Sequential leaves `inputNames` / `outputNames` empty: ask the tensors). */
function layerNames(tensors) {
  return tensors.map((t) => t.sourceLayer.name);
}

/** The input tensors of one set in the model's input order: by input name, else by position in the set. */
function layersInputs(tf, model, set) {
  const made = makeInputs(tf, set);
  const names = layerNames(model.inputs);
  const byName = names.every((name) => name in made);
  const values = Object.values(made);
  return { tensors: byName ? names.map((name) => made[name]) : values, all: values };
}

/** Output keys: the caller's (one per output, in order) or the output layer names. */
function outputNames(model, keys) {
  return keys && keys.length === model.outputs.length ? keys : layerNames(model.outputs);
}

/** Runs `model.predict` on one input set and reads every output back as [{key, tensor}], keyed by output name. */
async function predictSet(tf, model, set, keys) {
  const inputs = layersInputs(tf, model, set);
  let outs = [];
  try {
    const result = model.predict(inputs.tensors.length === 1 ? inputs.tensors[0] : inputs.tensors);
    outs = Array.isArray(result) ? result : [result];
    const values = await Promise.all(outs.map(readTensor));
    return outputNames(model, keys).map((key, i) => ({ key, tensor: values[i] }));
  } finally {
    disposeAll(outs);
    disposeAll(inputs.all);
  }
}

/** Times `repeats` predict calls (after `warmup` untimed ones) of one input set, output read-back included. */
async function timePredict(tf, model, set, warmup, repeats) {
  const times = [];
  for (let i = 0; i < warmup + repeats; i++) {
    await yieldToEventLoop();
    const t0 = performance.now();
    await predictSet(tf, model, set, null);
    if (i >= warmup) times.push(performance.now() - t0);
  }
  return times;
}

function snakeToCamel(name) {
  return name.replace(/_+([a-z0-9])/g, (m, c) => c.toUpperCase());
}

/** The optimizer a fit request names ({name: sgd|momentum|adam|adamax|adagrad|adadelta|rmsprop, learning_rate,
 * momentum?}), built with tf.train. */
function makeOptimizer(tf, spec) {
  const lr = spec.learning_rate;
  switch (spec.name) {
    case 'sgd': return tf.train.sgd(lr);
    case 'momentum': return tf.train.momentum(lr, spec.momentum == null ? 0.9 : spec.momentum);
    case 'adam': return tf.train.adam(lr);
    case 'adamax': return tf.train.adamax(lr);
    case 'adagrad': return tf.train.adagrad(lr);
    case 'adadelta': return tf.train.adadelta(lr);
    case 'rmsprop': return tf.train.rmsprop(lr);
    default: throw new Error(`unknown optimizer '${spec.name}'`);
  }
}

async function readWeights(model) {
  const values = await Promise.all(model.weights.map((w) => readTensor(w.read())));
  return model.weights.map((w, i) => ({ key: w.originalName, tensor: values[i] }));
}

/**
 * One `fit` run: compiles with the request's loss and optimizer (or keeps the model's trainingConfig when it
 * names none), fits `epochs` epochs on x/y without shuffling, and reads every weight before and after.
 */
async function fitOnce(tf, model, fit, keys) {
  if (fit.optimizer || fit.loss) {
    if (!fit.optimizer || !fit.loss) throw new Error('a fit request needs both a loss and an optimizer, or neither');
    model.compile({ optimizer: makeOptimizer(tf, fit.optimizer), loss: snakeToCamel(fit.loss) });
  } else if (model.optimizer == null) {
    throw new Error('the model has no trainingConfig: give a loss and an optimizer to fit it');
  }
  const x = layersInputs(tf, model, fit.x);
  const yMade = makeInputs(tf, fit.y);
  const names = outputNames(model, keys);
  const ys = names.every((name) => name in yMade) ? names.map((name) => yMade[name]) : Object.values(yMade);
  try {
    const before = await readWeights(model);
    const t0 = performance.now();
    const history = await model.fit(x.tensors.length === 1 ? x.tensors[0] : x.tensors, ys.length === 1 ? ys[0] : ys,
      { epochs: fit.epochs || 1, batchSize: fit.batch_size || 32, shuffle: false, verbose: 0 });
    const ms = performance.now() - t0;
    const after = await readWeights(model);
    return { loss: history.history.loss.map(Number), ms, before, after };
  } finally {
    disposeAll(x.all);
    disposeAll(Object.values(yMade));
  }
}

/**
 * Loads a layers model on `backend` (tf.loadLayersModel over an IOHandler serving `artifacts`), predicts every
 * input set (outputs keyed by `opts.output_keys`, else by output layer name), times the first, and runs the
 * `fit` request if one is given. Never throws: a failure becomes
 * `error` (`fit_error` for the fit alone). The result has the graph runner's fields plus `fit` ({loss, ms,
 * before, after} or null) and `fit_error`.
 */
export async function runLayersModelOnBackend(tf, backend, artifacts, inputSets, opts = {}) {
  const { warmup = 0, repeats = 1, fit = null, output_keys: keys = null } = opts;
  const result = { backend, error: null, stage: null, load_ms: null, infer_ms: [], set_ms: [], used_async: false,
    async_reason: 'layers model: predict', outputs: [], fetched: [], tensors_leaked: null, flags: {}, fit: null,
    fit_error: null };
  let stage = 'init';
  let model = null;
  let before = 0;
  try {
    if (!(await tf.setBackend(backend))) throw new Error(`backend '${backend}' failed to initialise`);
    await tf.ready();
    result.flags = backendFlags(tf, backend);
    before = tf.memory().numTensors;
    stage = 'load';
    const t0 = performance.now();
    model = await tf.loadLayersModel({ load: async () => artifacts });
    result.load_ms = performance.now() - t0;
    stage = 'run';
    for (const set of inputSets) {
      await yieldToEventLoop();
      const t1 = performance.now();
      result.outputs.push(await predictSet(tf, model, set, keys));
      result.fetched.push([]);
      result.set_ms.push(performance.now() - t1);
    }
    stage = 'time';
    if (inputSets.length > 0 && repeats > 0) result.infer_ms = await timePredict(tf, model, inputSets[0], warmup, repeats);
    if (fit) {
      // A backend may predict but lack a training kernel (wasm has no Conv2DBackpropFilter): keep the outputs.
      try {
        result.fit = await fitOnce(tf, model, fit, keys);
      } catch (err) {
        result.fit_error = errorText(err);
      }
    }
  } catch (err) {
    result.error = errorText(err);
    result.stage = stage;
  } finally {
    if (model !== null) {
      if (model.optimizer) model.optimizer.dispose();
      model.dispose();
    }
    if (tf.getBackend() === backend) result.tensors_leaked = tf.memory().numTensors - before;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Node shell. Node modules are imported lazily so the core above stays loadable in a browser.

export class FatalError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

export async function nodeLibs() {
  const [fs, path, module, url] = await Promise.all(
    [import('node:fs'), import('node:path'), import('node:module'), import('node:url')]);
  return { fs: fs.default, path: path.default, createRequire: module.createRequire, url };
}

/** Loads tfjs and the wasm backend from `nodeModules` (not from the script's folder, so it can be overridden). */
export async function loadTfjs(libs, nodeModules) {
  const req = libs.createRequire(libs.path.join(nodeModules, '_bridge_resolver.js'));
  let tf;
  let wasm;
  try {
    tf = req('@tensorflow/tfjs');
    wasm = req('@tensorflow/tfjs-backend-wasm');
  } catch (err) {
    throw new FatalError('deps', `cannot load TF.js from ${nodeModules}: ${errorText(err)}`);
  }
  const wasmDir = libs.path.join(nodeModules, '@tensorflow', 'tfjs-backend-wasm', 'dist');
  // A path prefix works in Node: emscripten reads the .wasm file with fs. The threaded build needs workers
  // and cross-origin isolation, so force the single-threaded (SIMD) binary.
  wasm.setWasmPaths(wasmDir + libs.path.sep);
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  const versions = { tfjs: tf.version.tfjs, tfjs_backend_wasm: wasm.version_wasm };
  return { tf, versions };
}

function insideFolder(libs, folder, rel) {
  const full = libs.path.resolve(folder, rel);
  return full.startsWith(libs.path.resolve(folder) + libs.path.sep) ? full : null;
}

/** Reads model.json and its shards into ModelArtifacts, checking the format, that every shard exists and that
 * sizes add up. */
export function readModelFolder(libs, tf, dir, format = 'graph-model') {
  const jsonPath = libs.path.join(dir, 'model.json');
  let modelJSON;
  try {
    modelJSON = JSON.parse(libs.fs.readFileSync(jsonPath, 'utf8'));
  } catch (err) {
    throw new FatalError('model', `cannot read ${jsonPath}: ${errorText(err)}`);
  }
  if (modelJSON.format !== format || !modelJSON.modelTopology) {
    const kind = format === 'layers-model' ? 'layers' : 'graph';
    throw new FatalError('model', `${jsonPath} is not a TF.js ${kind} model (format '${modelJSON.format}')`);
  }
  const manifest = modelJSON.weightsManifest || [];
  const buffers = [];
  for (const group of manifest) {
    for (const rel of group.paths || []) {
      const full = insideFolder(libs, dir, rel);
      if (full === null) throw new FatalError('model', `weight shard path '${rel}' points outside ${dir}`);
      try {
        buffers.push(libs.fs.readFileSync(full));
      } catch (err) {
        throw new FatalError('model', `cannot read weight shard ${rel}: ${errorText(err)}`);
      }
    }
  }
  const data = Buffer.concat(buffers);
  const expected = expectedWeightBytes(manifest);
  if (expected !== null && expected !== data.length) {
    throw new FatalError('model', `weight shards hold ${data.length} bytes but weightsManifest needs ${expected} ` +
      '(truncated or wrong shard?)');
  }
  const weightData = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  const weightSpecs = manifest.flatMap((g) => g.weights || []);
  return { modelJSON, artifacts: tf.io.getModelArtifactsForJSONSync(modelJSON, weightSpecs, weightData) };
}

const TYPED = { float32: Float32Array, int32: Int32Array, bool: Uint8Array, complex64: Float32Array };

/** One set of refs {key: {dtype, shape, offset, nbytes}} into the packed bytes as {key: {dtype, shape, data}}. */
export function readRefSet(blob, set) {
  const out = {};
  for (const [key, ref] of Object.entries(set)) {
    const Typed = TYPED[ref.dtype];
    if (Typed === undefined || ref.dtype === 'complex64') {
      throw new FatalError('request', `input '${key}' has unsupported dtype ${ref.dtype}`);
    }
    const copy = blob.buffer.slice(blob.byteOffset + ref.offset, blob.byteOffset + ref.offset + ref.nbytes);
    out[key] = { dtype: ref.dtype, shape: ref.shape, data: new Typed(copy) };
  }
  return out;
}

/** Reads the packed input file: the input sets, and a fit request's x and y when there is one. */
function readInputSets(libs, request) {
  const blob = libs.fs.readFileSync(request.inputs_file);
  const sets = request.input_sets.map((set) => readRefSet(blob, set));
  const fit = request.fit ? { ...request.fit, x: readRefSet(blob, request.fit.x), y: readRefSet(blob, request.fit.y) }
    : null;
  return { sets, fit };
}

function encodeStrings(values) {
  const parts = [];
  for (const v of values) {
    const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(bytes.length);
    parts.push(len, bytes);
  }
  return Buffer.concat(parts);
}

/** Appends tensors to one file, 8-byte aligned, and hands back refs for summary.json. */
class PackWriter {
  constructor(libs, file) {
    this.fs = libs.fs;
    this.fd = libs.fs.openSync(file, 'w');
    this.offset = 0;
  }

  add(tensor) {
    const bytes = tensor.dtype === 'string'
      ? encodeStrings(tensor.data)
      : Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
    const pad = (8 - (this.offset % 8)) % 8;
    if (pad) this.fs.writeSync(this.fd, Buffer.alloc(pad));
    this.offset += pad;
    const ref = { dtype: tensor.dtype, shape: tensor.shape, offset: this.offset, nbytes: bytes.length };
    this.fs.writeSync(this.fd, bytes);
    this.offset += bytes.length;
    return ref;
  }

  close() {
    this.fs.closeSync(this.fd);
  }
}

function packResult(writer, result) {
  const packSet = (set) => set.map(({ key, tensor }) => ({ key, ref: writer.add(tensor) }));
  const pack = (sets) => sets.map(packSet);
  const packed = { ...result, outputs: pack(result.outputs), fetched: pack(result.fetched) };
  if (result.fit) packed.fit = { ...result.fit, before: packSet(result.fit.before), after: packSet(result.fit.after) };
  return packed;
}

/**
 * Registers the custom layers bridge generated for a layers model (custom_layers.js beside model.json) on this
 * TF.js instance, so tf.loadLayersModel finds their classes. Imported through a data: URL: the file is an ES
 * module wherever it lives, and it imports nothing.
 */
async function registerCustomLayers(libs, tf, modelDir) {
  const file = libs.path.join(modelDir, 'custom_layers.js');
  if (!libs.fs.existsSync(file)) return;
  const source = libs.fs.readFileSync(file, 'utf8');
  const module = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
  module.registerCustomLayers(tf);
}

async function runRequest(libs, request, summary) {
  const { tf, versions } = await loadTfjs(libs, request.node_modules);
  Object.assign(summary.versions, versions);
  const layers = request.kind === 'layers';
  if (layers) await registerCustomLayers(libs, tf, request.model_dir);
  const { modelJSON, artifacts } = readModelFolder(libs, tf, request.model_dir,
    layers ? 'layers-model' : 'graph-model');
  const { sets, fit } = readInputSets(libs, request);
  const writer = new PackWriter(libs, request.outputs_file);
  try {
    for (const backend of request.backends) {
      const result = layers
        ? await runLayersModelOnBackend(tf, backend, artifacts, sets, { ...request, fit })
        : await runModelOnBackend(tf, backend, artifacts, modelJSON, sets, request);
      summary.backends.push(packResult(writer, result));
    }
  } finally {
    writer.close();
  }
}

/** Exits when the parent (bridge) is gone, so a killed Python never leaves Node running. */
function watchParent() {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(3);
  }, 500).unref();
}

async function main(argv) {
  // Libraries may log with console.log/info; stdout belongs to the protocol, so send everything to stderr.
  for (const name of ['log', 'info', 'debug']) console[name] = console.error;
  const warn = console.warn;
  console.warn = (...args) => {
    // tfjs-core's advert for tfjs-node, printed on first use of the cpu backend: noise in error reports.
    if (typeof args[0] === 'string' && args[0].includes('looks like you are running TensorFlow.js in Node')) return;
    warn(...args);
  };
  watchParent();
  const libs = await nodeLibs();
  if (argv.length !== 1) {
    console.error('usage: node tfjs_runner.mjs REQUEST.json');
    return 64;
  }
  const request = JSON.parse(libs.fs.readFileSync(argv[0], 'utf8'));
  const summary = { protocol: PROTOCOL_VERSION, versions: { node: process.version }, backends: [], fatal: null };
  let code = 0;
  const t0 = performance.now();
  try {
    await runRequest(libs, request, summary);
  } catch (err) {
    if (!(err instanceof FatalError)) throw err;
    summary.fatal = { kind: err.kind, message: err.message };
    code = 2;
  }
  summary.total_ms = performance.now() - t0;
  libs.fs.writeFileSync(request.summary_file, JSON.stringify(summary));
  return code;
}

const isMain = typeof process !== 'undefined' && process.argv && process.argv[1] &&
  import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href;
if (isMain) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  });
}
