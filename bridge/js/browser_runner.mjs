// Page side of bridge's browser harness (bridge/runtime/browser.py), loaded by browser_page.html.
//
// Reads request.json and the packed inputs (bridge/runtime/tensor_io.py format) from the served folder, loads the
// web model over http with tf.loadGraphModel (tf.loadLayersModel for a layers request: predict, and optionally one
// fit run), runs it on each requested backend with the shared core of
// tfjs_runner.mjs, optionally saves it to IndexedDB and runs the model loaded back from there, then sets
// window.__bridgeResult = {protocol, versions, timings, backends, indexeddb, fatal, outputs_b64}. Tensors in
// `backends`/`indexeddb` are refs into the base64 pack `outputs_b64`, like the Node runner's outputs.bin.
// A 'layers-save' request instead trains the layers model and saves it to each scheme (result.save; see
// runSaveRequest).

import { expectedWeightBytes, runLayersModelOnBackend, runModelOnBackend, PROTOCOL_VERSION } from './tfjs_runner.mjs';

class FatalError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const TYPED = { float32: Float32Array, int32: Int32Array, bool: Uint8Array };

function errorText(err) {
  return String(err && err.message ? err.message : err);
}

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url, { cache: 'no-store' });
  } catch (err) {
    throw new FatalError('request', `cannot fetch ${what} (${url}): ${errorText(err)}`);
  }
  if (!response.ok) throw new FatalError('request', `cannot fetch ${what} (${url}): HTTP ${response.status}`);
  return response;
}

/** One set of refs into the packed bytes as {key: {dtype, shape, data}}. */
function readRefSet(set, blob) {
  const out = {};
  for (const [key, ref] of Object.entries(set)) {
    const Typed = TYPED[ref.dtype];
    if (Typed === undefined) throw new FatalError('request', `input '${key}' has unsupported dtype ${ref.dtype}`);
    const bytes = blob.slice(ref.offset, ref.offset + ref.nbytes);
    out[key] = { dtype: ref.dtype, shape: ref.shape, data: new Typed(bytes) };
  }
  return out;
}

/** Builds the input sets ({key: {dtype, shape, data}}) from the refs in the request and the packed bytes. */
function readInputSets(request, blob) {
  return request.input_sets.map((set) => readRefSet(set, blob));
}

/** A layers-model fit request with its x and y read from the packed bytes (null when there is none). */
function readFit(request, blob) {
  return request.fit ? { ...request.fit, x: readRefSet(request.fit.x, blob), y: readRefSet(request.fit.y, blob) }
    : null;
}

function byteLengthOf(weightData) {
  if (weightData == null) return 0;
  return Array.isArray(weightData) ? weightData.reduce((n, b) => n + b.byteLength, 0) : weightData.byteLength;
}

/** Refuses artifacts whose shards are missing, outside the model folder, or do not add up to the manifest. */
function checkArtifacts(artifacts, source) {
  if (!artifacts || !artifacts.modelTopology) throw new FatalError('model', `${source} holds no model topology`);
  const expected = expectedWeightBytes(artifacts.weightSpecs ? [{ weights: artifacts.weightSpecs }] : []);
  const got = byteLengthOf(artifacts.weightData);
  if (expected !== null && expected !== got) {
    throw new FatalError('model', `weight shards of ${source} hold ${got} bytes but weightsManifest needs ` +
      `${expected} (truncated or wrong shard?)`);
  }
}

function checkShardPaths(modelJSON, modelUrl) {
  const folder = new URL('./', modelUrl).href;
  for (const group of modelJSON.weightsManifest || []) {
    for (const rel of group.paths || []) {
      if (!new URL(rel, modelUrl).href.startsWith(folder)) {
        throw new FatalError('model', `weight shard path '${rel}' points outside the model folder`);
      }
    }
  }
}

/** Fetches model.json itself (for signature and async decisions) and checks it before TF.js loads it. */
async function readModelJSON(modelUrl, format = 'graph-model') {
  const response = await fetch(modelUrl, { cache: 'no-store' }).catch((err) => {
    throw new FatalError('model', `cannot fetch ${modelUrl}: ${errorText(err)}`);
  });
  if (!response.ok) throw new FatalError('model', `cannot fetch ${modelUrl}: HTTP ${response.status}`);
  let modelJSON;
  try {
    modelJSON = await response.json();
  } catch (err) {
    throw new FatalError('model', `${modelUrl} is not valid JSON: ${errorText(err)}`);
  }
  if (modelJSON.format !== format || !modelJSON.modelTopology) {
    const kind = format === 'layers-model' ? 'layers' : 'graph';
    throw new FatalError('model', `${modelUrl} is not a TF.js ${kind} model (format '${modelJSON.format}')`);
  }
  checkShardPaths(modelJSON, modelUrl);
  return modelJSON;
}

/** An IOHandler that loads through `inner` (tf.io.http or the IndexedDB handler), checks and keeps the artifacts. */
function checkedHandler(inner, source) {
  const handler = {
    artifacts: null,
    load: async () => {
      let artifacts;
      try {
        artifacts = await inner.load();
      } catch (err) {
        throw new FatalError('model', `cannot load ${source}: ${errorText(err)}`);
      }
      checkArtifacts(artifacts, source);
      handler.artifacts = artifacts;
      return artifacts;
    },
  };
  return handler;
}

/** fetch that fails on an HTTP error: tf.io.http would otherwise take a 404 page's body for a weight shard. */
async function strictFetch(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

/** The http load: tf.loadGraphModel (or tf.loadLayersModel) over the tf.io.http handler a URL string would get,
 * on the cpu backend. */
async function loadOverHttp(tf, modelUrl, layers = false) {
  await tf.setBackend('cpu');
  const handler = checkedHandler(tf.io.http(modelUrl, { fetchFunc: strictFetch }), modelUrl);
  const t0 = performance.now();
  const loader = layers ? 'loadLayersModel' : 'loadGraphModel';
  let model;
  try {
    model = await tf[loader](handler);
  } catch (err) {
    if (err instanceof FatalError) throw err;
    throw new FatalError('model', `tf.${loader}(${modelUrl}) failed: ${errorText(err)}`);
  }
  return { model, artifacts: handler.artifacts, ms: performance.now() - t0 };
}

/** Runs one backend on artifacts: the graph runner, or the layers runner (predict, then the fit request). */
function runOnBackend(tf, backend, artifacts, modelJSON, inputSets, request, fit) {
  return request.kind === 'layers'
    ? runLayersModelOnBackend(tf, backend, artifacts, inputSets, { ...request, fit })
    : runModelOnBackend(tf, backend, artifacts, modelJSON, inputSets, request);
}

/**
 * Saves the http-loaded model to IndexedDB, loads it back through the indexeddb:// handler (the one
 * tf.loadGraphModel('indexeddb://...') resolves to) and runs the same inputs on `backend`. Never throws.
 */
async function indexedDbRoundTrip(tf, httpModel, request, modelJSON, inputSets, backend) {
  const url = `indexeddb://${request.idb_key}`;
  const out = { key: url, backend, save_ms: null, load_ms: null, error: null, entry: null };
  if (backend === null) {
    out.error = 'no backend ran the http-loaded model, so there is nothing to compare the IndexedDB copy with';
    return out;
  }
  let stage = 'save';
  try {
    let t0 = performance.now();
    await httpModel.save(url);
    out.save_ms = performance.now() - t0;
    stage = 'load';
    const handlers = tf.io.getLoadHandlers(url);
    if (handlers.length !== 1) throw new Error(`${handlers.length} load handlers for ${url}`);
    t0 = performance.now();
    const artifacts = await checkedHandler(handlers[0], url).load();
    out.load_ms = performance.now() - t0;
    stage = 'run';
    out.entry = await runOnBackend(tf, backend, artifacts, modelJSON, inputSets,
      { kind: request.kind, fetch: request.fetch, output_keys: request.output_keys, warmup: 0, repeats: 0 }, null);
    if (out.entry.error) out.error = `run: ${out.entry.stage}: ${out.entry.error}`;
  } catch (err) {
    out.error = `${stage}: ${errorText(err)}`;
  } finally {
    await tf.io.removeModel(url).catch(() => undefined);
  }
  return out;
}

function webglFacts(tf) {
  const facts = {
    webgl_version: tf.env().getNumber('WEBGL_VERSION'),
    render_float32: tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED'),
  };
  const gl = document.createElement('canvas').getContext('webgl2');
  const info = gl && gl.getExtension('WEBGL_debug_renderer_info');
  if (info) facts.renderer = gl.getParameter(info.UNMASKED_RENDERER_WEBGL);
  return facts;
}

/** Appends tensors 8-byte aligned to a growing byte array, as tensor_io.PackWriter does, returning refs. */
class PackWriter {
  constructor() {
    this.chunks = [];
    this.offset = 0;
  }

  add(tensor) {
    const bytes = tensor.dtype === 'string' ? encodeStrings(tensor.data)
      : new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
    const pad = (8 - (this.offset % 8)) % 8;
    if (pad) this.chunks.push(new Uint8Array(pad));
    this.offset += pad;
    const ref = { dtype: tensor.dtype, shape: tensor.shape, offset: this.offset, nbytes: bytes.length };
    this.chunks.push(bytes.slice());
    this.offset += bytes.length;
    return ref;
  }

  base64() {
    const all = new Uint8Array(this.offset);
    let at = 0;
    for (const chunk of this.chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    let text = '';
    for (let i = 0; i < all.length; i += 0x8000) text += String.fromCharCode.apply(null, all.subarray(i, i + 0x8000));
    return btoa(text);
  }
}

function encodeStrings(values) {
  const encoder = new TextEncoder();
  const parts = values.map((v) => (typeof v === 'string' ? encoder.encode(v) : new Uint8Array(v)));
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const p of parts) {
    view.setUint32(at, p.length, true);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return out;
}

function packEntry(writer, entry) {
  const packSet = (set) => set.map(({ key, tensor }) => ({ key, ref: writer.add(tensor) }));
  const pack = (sets) => sets.map(packSet);
  const packed = { ...entry, outputs: pack(entry.outputs), fetched: pack(entry.fetched) };
  if (entry.fit) packed.fit = { ...entry.fit, before: packSet(entry.fit.before), after: packSet(entry.fit.after) };
  return packed;
}

// ---------------------------------------------------------------------------------------------------------------
// Train and save (request.kind 'layers-save', bridge/runtime/browser.py: train_and_save_in_browser): fit a layers
// model a few steps, save it with model.save() to each requested scheme, load every copy back, and report the
// trained model's and each copy's predictions and weights, which Python compares bit for bit.

const SAVE_OPTIMIZERS = {
  sgd: (tf, spec) => tf.train.sgd(spec.learning_rate),
  momentum: (tf, spec) => tf.train.momentum(spec.learning_rate, spec.momentum == null ? 0.9 : spec.momentum),
  adam: (tf, spec) => tf.train.adam(spec.learning_rate),
  rmsprop: (tf, spec) => tf.train.rmsprop(spec.learning_rate),
  adagrad: (tf, spec) => tf.train.adagrad(spec.learning_rate),
  adamax: (tf, spec) => tf.train.adamax(spec.learning_rate),
  adadelta: (tf, spec) => tf.train.adadelta(spec.learning_rate),
};

/** {key: {dtype, shape, data}} as tensors, in the model's input (or output) order when the keys are its names. */
function orderedTensors(tf, set, layers) {
  const names = layers.map((t) => t.sourceLayer.name);
  const keys = names.every((name) => name in set) ? names : Object.keys(set);
  return keys.map((key) => tf.tensor(set[key].data, set[key].shape, set[key].dtype));
}

function single(tensors) {
  return tensors.length === 1 ? tensors[0] : tensors;
}

/** predict on every input set: [[{key, tensor: {dtype, shape, data}}]] keyed by output name. */
async function predictSets(tf, model, inputSets, keys) {
  const names = keys && keys.length === model.outputs.length ? keys : model.outputs.map((t) => t.sourceLayer.name);
  const sets = [];
  for (const set of inputSets) {
    const inputs = orderedTensors(tf, set, model.inputs);
    const result = model.predict(single(inputs));
    const outs = Array.isArray(result) ? result : [result];
    const values = await Promise.all(outs.map(async (t) => ({ dtype: t.dtype, shape: [...t.shape], data: await t.data() })));
    tf.dispose([...inputs, ...outs]);
    sets.push(names.map((key, i) => ({ key, tensor: values[i] })));
  }
  return sets;
}

async function modelWeights(model) {
  return Promise.all(model.weights.map(async (w) => {
    const value = w.read();
    return { key: w.originalName, tensor: { dtype: value.dtype, shape: [...value.shape], data: await value.data() } };
  }));
}

/** compile + fit on the request's x/y (no shuffling), returning the loss per epoch. */
async function trainModel(tf, model, fit) {
  const make = SAVE_OPTIMIZERS[fit.optimizer && fit.optimizer.name];
  if (!make || !fit.loss) throw new FatalError('request', 'a train-and-save request needs a loss and an optimizer');
  model.compile({ optimizer: make(tf, fit.optimizer), loss: fit.loss.replace(/_+([a-z0-9])/g, (m, c) => c.toUpperCase()) });
  const x = orderedTensors(tf, fit.x, model.inputs);
  const y = orderedTensors(tf, fit.y, model.outputs);
  try {
    const history = await model.fit(single(x), single(y),
      { epochs: fit.epochs || 1, batchSize: fit.batch_size || 32, shuffle: false, verbose: 0 });
    return history.history.loss.map(Number);
  } finally {
    tf.dispose([...x, ...y]);
  }
}

function isQuotaError(err) {
  return /quota|exceeded/i.test(`${err && err.name} ${errorText(err)}`);
}

/** Resolves with the files Python puts into <input id="bridge-files"> (the downloads it caught), json first. */
function downloadedFiles(prefix) {
  const input = document.getElementById('bridge-files');
  return new Promise((resolve) => {
    input.addEventListener('change', () => {
      const files = [...input.files];
      files.sort((a, b) => (a.name.endsWith('.json') ? 0 : 1) - (b.name.endsWith('.json') ? 0 : 1));
      resolve(files);
    }, { once: true });
    window.__bridgeAwaitFiles = { prefix, count: 2 };
  });
}

/** Saves `model` to one scheme and returns {url, save_ms, load: () => model loaded back, answer}. */
async function saveTo(tf, model, scheme, request) {
  const t0 = performance.now();
  if (scheme === 'indexeddb' || scheme === 'localstorage') {
    const url = `${scheme}://${request.save_key}`;
    await model.save(url);
    return { url, save_ms: performance.now() - t0, load: () => tf.loadLayersModel(url) };
  }
  if (scheme === 'downloads') {
    const url = `downloads://${request.save_key}`;
    const files = downloadedFiles(request.save_key);
    await model.save(url);
    const given = await files;
    return { url, save_ms: performance.now() - t0, files: given.map((f) => f.name),
      load: () => tf.loadLayersModel(tf.io.browserFiles(given)) };
  }
  if (scheme === 'http') {
    const url = new URL(request.upload_url, location.href).href;
    const headers = request.upload_token ? { Authorization: `Bearer ${request.upload_token}` } : {};
    const saved = await model.save(tf.io.http(url, { requestInit: { headers } }));
    const answer = await saved.responses[0].json();
    const modelUrl = new URL(answer.model, location.href).href;
    return { url, save_ms: performance.now() - t0, answer, load: () => tf.loadLayersModel(modelUrl) };
  }
  throw new FatalError('request', `unknown save scheme '${scheme}'`);
}

/** One scheme: save, load back, predict and read the weights. Never throws; a full localStorage is 'skipped'. */
async function saveAndLoadBack(tf, model, scheme, request) {
  const out = { scheme, url: null, status: 'failed', reason: null, save_ms: null, load_ms: null, answer: null,
    files: null, outputs: [], weights: [] };
  let step = 'save';
  let copy = null;
  try {
    const saved = await saveTo(tf, model, scheme, request);
    Object.assign(out, { url: saved.url, save_ms: saved.save_ms, answer: saved.answer || null,
      files: saved.files || null });
    step = 'load';
    const t0 = performance.now();
    copy = await saved.load();
    out.load_ms = performance.now() - t0;
    step = 'run';
    out.outputs = await predictSets(tf, copy, request.inputSets, request.output_keys);
    out.weights = await modelWeights(copy);
    out.status = 'ok';
  } catch (err) {
    const full = scheme === 'localstorage' && step === 'save' && isQuotaError(err);
    out.status = full ? 'skipped' : 'failed';
    out.reason = full ? `does not fit in localStorage: ${errorText(err)}` : `${step}: ${errorText(err)}`;
  } finally {
    if (copy !== null) copy.dispose();
    if (scheme === 'indexeddb' || scheme === 'localstorage') {
      await tf.io.removeModel(`${scheme}://${request.save_key}`).catch(() => undefined);
    }
  }
  return out;
}

function packSaveCopy(writer, copy) {
  const packSet = (set) => set.map(({ key, tensor }) => ({ key, ref: writer.add(tensor) }));
  return { ...copy, outputs: copy.outputs.map(packSet), weights: packSet(copy.weights) };
}

async function runSaveRequest(tf, request, result, writer, modelUrl, inputs) {
  const inputSets = readInputSets(request, inputs);
  const fit = readFit(request, inputs);
  if (!(await tf.setBackend(request.backend))) {
    throw new FatalError('runtime', `backend '${request.backend}' failed to initialise`);
  }
  await tf.ready();
  const handler = checkedHandler(tf.io.http(modelUrl, { fetchFunc: strictFetch }), modelUrl);
  let model;
  try {
    model = await tf.loadLayersModel(handler);
  } catch (err) {
    if (err instanceof FatalError) throw err;
    throw new FatalError('model', `tf.loadLayersModel(${modelUrl}) failed: ${errorText(err)}`);
  }
  const packSet = (set) => set.map(({ key, tensor }) => ({ key, ref: writer.add(tensor) }));
  try {
    const before = await modelWeights(model);
    const t0 = performance.now();
    const loss = await trainModel(tf, model, fit);
    const fitMs = performance.now() - t0;
    const trained = { outputs: await predictSets(tf, model, inputSets, request.output_keys),
      weights: await modelWeights(model) };
    const copies = [];
    for (const scheme of request.schemes) {
      copies.push(await saveAndLoadBack(tf, model, scheme, { ...request, inputSets }));
    }
    result.save = { backend: tf.getBackend(), loss, fit_ms: fitMs, before: packSet(before),
      trained_outputs: trained.outputs.map(packSet), trained_weights: packSet(trained.weights),
      copies: copies.map((c) => packSaveCopy(writer, c)) };
  } finally {
    if (model.optimizer) model.optimizer.dispose();
    model.dispose();
  }
}

function loadedTf() {
  const tf = globalThis.tf;
  if (tf === undefined || typeof tf.loadGraphModel !== 'function') {
    throw new FatalError('deps', 'TF.js (tfjs/tf.min.js) did not load');
  }
  if (tf.wasm === undefined || typeof tf.wasm.setWasmPaths !== 'function') {
    throw new FatalError('deps', 'the TF.js wasm backend (tfjs-backend-wasm/tf-backend-wasm.min.js) did not load');
  }
  return tf;
}

/**
 * Registers the custom layers bridge generated for a PyTorch layers model (custom_layers.js beside model.json,
 * listed in its metadata) before tf.loadLayersModel needs their classes.
 */
async function registerCustomLayers(tf, modelUrl, modelJSON) {
  const route = ((modelJSON.userDefinedMetadata || {}).bridge || {}).layersRoute || {};
  if (!route.customLayers) return;
  const module = await import(new URL('custom_layers.js', modelUrl).href);
  module.registerCustomLayers(tf);
}

async function run(request, result, writer) {
  const tf = loadedTf();
  result.versions = { tfjs: tf.version.tfjs, tfjs_backend_wasm: tf.wasm.version_wasm, user_agent: navigator.userAgent };
  // The threaded wasm binary needs cross-origin isolation, which the harness page does not have: use the
  // single-threaded (SIMD) build, as the Node runner does, so both runtimes run the same kernels.
  tf.wasm.setWasmPaths(new URL(request.wasm_path, location.href).href);
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  const modelUrl = new URL(request.model_url, location.href).href;
  if (request.kind === 'layers-save') {
    await registerCustomLayers(tf, modelUrl, await readModelJSON(modelUrl, 'layers-model'));
    const packed = await (await fetchOk(request.inputs_url, 'the packed inputs')).arrayBuffer();
    await runSaveRequest(tf, request, result, writer, modelUrl, packed);
    return;
  }
  const layers = request.kind === 'layers';
  const modelJSON = await readModelJSON(modelUrl, layers ? 'layers-model' : 'graph-model');
  if (layers) await registerCustomLayers(tf, modelUrl, modelJSON);
  const inputs = await (await fetchOk(request.inputs_url, 'the packed inputs')).arrayBuffer();
  const inputSets = readInputSets(request, inputs);
  const fit = readFit(request, inputs);
  const http = await loadOverHttp(tf, modelUrl, layers);
  result.timings.http_load_ms = http.ms;
  let firstOk = null;
  try {
    for (const backend of request.backends) {
      const entry = await runOnBackend(tf, backend, http.artifacts, modelJSON, inputSets, request, fit);
      if (backend === 'webgl' && entry.stage !== 'init') entry.flags = { ...entry.flags, ...webglFacts(tf) };
      if (entry.error === null && firstOk === null) firstOk = backend;
      result.backends.push(packEntry(writer, entry));
    }
    if (request.indexeddb) {
      await tf.setBackend('cpu');
      const trip = await indexedDbRoundTrip(tf, http.model, request, modelJSON, inputSets, firstOk);
      result.indexeddb = { ...trip, entry: trip.entry && packEntry(writer, trip.entry) };
    }
  } finally {
    http.model.dispose();
  }
}

async function main() {
  window.__bridgeStarted = true;
  const result = { protocol: PROTOCOL_VERSION, versions: {}, backends: [], indexeddb: null, fatal: null,
    timings: { ready_ms: performance.now() } };
  const writer = new PackWriter();
  try {
    const request = await (await fetchOk('request.json', 'the request')).json();
    await run(request, result, writer);
  } catch (err) {
    result.fatal = err instanceof FatalError ? { kind: err.kind, message: err.message }
      : { kind: 'runtime', message: String((err && err.stack) || err) };
  }
  result.timings.total_ms = performance.now() - result.timings.ready_ms;
  result.outputs_b64 = writer.base64();
  window.__bridgeResult = result;
}

main();
