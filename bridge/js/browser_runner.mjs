// Page side of bridge's browser harness (bridge/runtime/browser.py), loaded by browser_page.html.
//
// Reads request.json and the packed inputs (bridge/runtime/tensor_io.py format) from the served folder, loads the
// web model over http with tf.loadGraphModel (tf.loadLayersModel for a layers request: predict, and optionally one
// fit run), runs it on each requested backend with the shared core of
// tfjs_runner.mjs, optionally saves it to IndexedDB and runs the model loaded back from there, then sets
// window.__bridgeResult = {protocol, versions, timings, backends, indexeddb, fatal, outputs_b64}. Tensors in
// `backends`/`indexeddb` are refs into the base64 pack `outputs_b64`, like the Node runner's outputs.bin.

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

async function run(request, result, writer) {
  const tf = loadedTf();
  result.versions = { tfjs: tf.version.tfjs, tfjs_backend_wasm: tf.wasm.version_wasm, user_agent: navigator.userAgent };
  // The threaded wasm binary needs cross-origin isolation, which the harness page does not have: use the
  // single-threaded (SIMD) build, as the Node runner does, so both runtimes run the same kernels.
  tf.wasm.setWasmPaths(new URL(request.wasm_path, location.href).href);
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  const modelUrl = new URL(request.model_url, location.href).href;
  const layers = request.kind === 'layers';
  const modelJSON = await readModelJSON(modelUrl, layers ? 'layers-model' : 'graph-model');
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
