// Times an ONNX model in onnxruntime-web (wasm, one thread) for bridge's benchmark, in Node or in Chromium.
//
// Two layers in one file, like bridge/js/tfjs_runner.mjs:
//   * an environment-free core (`runOrt`): it gets the `ort` namespace, the model bytes and the inputs as typed
//     arrays, creates the session twice (cold: wasm start-up + load; warm: load only), reads the outputs of one run
//     back for a sanity check (that first run after load timed as `first_run_ms`), then times `warmup` + `repeats` runs (input tensors built and outputs read every run);
//   * a Node shell (`main`): `node ort_runner.mjs REQUEST.json` reads the request and the packed inputs written by
//     benchmarks/latency.py, loads onnxruntime-web from this folder's node_modules and writes summary.json.
// The browser page (written by latency.py) imports this module and calls `runOrt` with the browser build.
//
// Request: {model_file | model_url, inputs_file | inputs_url, inputs: [{name, dtype, shape, offset, nbytes}],
//           warmup, repeats, threads, summary_file}. Exit code 0: summary written (a failure is in `error`).

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array, int8: Int8Array,
  uint8: Uint8Array, bool: Uint8Array, int16: Int16Array, uint16: Uint16Array,
};

/** Typed arrays of every input, cut from the packed `blob` (an ArrayBuffer) as `specs` say. */
export function unpackInputs(blob, specs) {
  const out = {};
  for (const spec of specs) {
    const Kind = ARRAYS[spec.dtype];
    if (Kind === undefined) throw new Error(`unsupported input dtype ${spec.dtype}`);
    const copy = blob.slice(spec.offset, spec.offset + spec.nbytes);
    out[spec.name] = { dtype: spec.dtype, shape: spec.shape, data: new Kind(copy) };
  }
  return out;
}

export function makeFeeds(ort, inputs) {
  const feeds = {};
  for (const [name, v] of Object.entries(inputs)) feeds[name] = new ort.Tensor(v.dtype, v.data, v.shape);
  return feeds;
}

function toBase64(bytes) {
  let text = '';
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) text += String.fromCharCode(...bytes.subarray(i, i + chunk));
  return btoa(text);
}

function readOutputs(results) {
  const out = {};
  for (const [name, t] of Object.entries(results)) {
    const data = t.data;
    out[name] = { dtype: t.type, shape: [...t.dims],
      b64: toBase64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)) };
  }
  return out;
}

function disposeAll(results) {
  for (const t of Object.values(results || {})) if (t && typeof t.dispose === 'function') t.dispose();
}

function errorText(err) {
  return String(err && err.message ? err.message : err);
}

/** Lets timers and the page breathe between runs (a loop of resolved promises never yields to them). */
function yieldToEventLoop() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Creates the session (twice), runs once for the outputs, then times the runs. Never throws: a failure becomes
 * `error` with the step (`init`, `load`, `run`, `time`) in `stage`.
 */
export async function runOrt(ort, modelBytes, inputs, opts = {}) {
  const { warmup = 3, repeats = 10, threads = 1 } = opts;
  const result = { error: null, stage: null, load_cold_ms: null, load_ms: null, first_run_ms: null, infer_ms: [],
    outputs: {}, flags: {} };
  let stage = 'init';
  let session = null;
  try {
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.simd = true;
    ort.env.wasm.proxy = false;
    ort.env.logLevel = 'error';
    const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
    stage = 'load';
    let t0 = performance.now();
    session = await ort.InferenceSession.create(modelBytes, options);
    result.load_cold_ms = performance.now() - t0;
    await session.release();
    session = null;
    t0 = performance.now();
    session = await ort.InferenceSession.create(modelBytes, options);
    result.load_ms = performance.now() - t0;
    result.flags = { threads: ort.env.wasm.numThreads, simd: ort.env.wasm.simd };
    stage = 'run';
    const t2 = performance.now();
    const first = await session.run(makeFeeds(ort, inputs));
    for (const t of Object.values(first)) void t.data;
    result.first_run_ms = performance.now() - t2;  // the first run after load (feeds built, outputs read)
    result.outputs = readOutputs(first);
    disposeAll(first);
    stage = 'time';
    for (let i = 0; i < warmup + repeats; i++) {
      await yieldToEventLoop();
      const t1 = performance.now();
      const outs = await session.run(makeFeeds(ort, inputs));
      for (const t of Object.values(outs)) void t.data;  // outputs are already on the CPU with the wasm provider
      const elapsed = performance.now() - t1;
      disposeAll(outs);
      if (i >= warmup) result.infer_ms.push(elapsed);
    }
  } catch (err) {
    result.error = errorText(err);
    result.stage = stage;
  } finally {
    if (session !== null) await session.release().catch(() => {});
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Node shell. Node modules are imported lazily so the core above stays loadable in a browser.

async function main(requestPath) {
  const fs = (await import('node:fs')).default;
  const path = (await import('node:path')).default;
  const { createRequire } = await import('node:module');
  const { pathToFileURL, fileURLToPath } = await import('node:url');
  const request = JSON.parse(fs.readFileSync(requestPath, 'utf8'));
  const here = path.dirname(fileURLToPath(import.meta.url));
  const modules = request.node_modules || path.join(here, 'node_modules');
  const summary = { versions: {}, result: null, fatal: null };
  try {
    const req = createRequire(path.join(modules, '_bridge_resolver.js'));
    const entry = req.resolve('onnxruntime-web');
    const ort = await import(pathToFileURL(entry).href);
    const dist = path.join(modules, 'onnxruntime-web', 'dist') + path.sep;
    ort.env.wasm.wasmPaths = pathToFileURL(dist).href;
    summary.versions = { onnxruntime_web: ort.env.versions ? ort.env.versions.web : null, node: process.version };
    const blob = fs.readFileSync(request.inputs_file);
    const inputs = unpackInputs(blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength),
      request.inputs);
    const model = new Uint8Array(fs.readFileSync(request.model_file));
    summary.result = await runOrt(ort, model, inputs, request);
  } catch (err) {
    summary.fatal = errorText(err);
  }
  fs.writeFileSync(request.summary_file, JSON.stringify(summary));
}

const isMain = typeof window === 'undefined' && typeof process !== 'undefined' && Array.isArray(process.argv)
  && /ort_runner\.mjs$/.test(process.argv[1] || '');
if (isMain) {
  main(process.argv[2]).then(() => process.exit(0), (err) => {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
}
