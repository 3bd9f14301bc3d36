// onnxruntime-web's own profile of an ONNX model (wasm, one thread) in Node, for benchmarks/op_profile.py.
//
//   node ort_profile.mjs REQUEST.json
//
// Request kinds:
//   * {kind: "model", model_file, inputs_file, inputs: [{name, dtype, shape, offset, nbytes}], warmup, repeats,
//      summary_file, node_modules?}: times `repeats` plain runs (after `warmup`) on one session, then runs the model
//      `warmup` + `repeats` times on a session created with `enableProfiling` and keeps the node events of the last
//      `repeats` runs (plain runs are timed in CPU time of this process and in wall time; the node events are
//      onnxruntime's own wall-clock timings);
//   * {kind: "chain", models: [{n, file}], warmup, repeats, summary_file}: the median run of chains of N Add nodes
//      on 1-element tensors (their input "x", output "y"), for the fixed cost of one op call.
// onnxruntime-web's wasm build prints its trace (Chrome trace-event JSON: one "model_run" event per run, one
// "<node>_kernel_time" event per node run, durations in microseconds) to fd 1 when the session's profiling ends;
// this script catches that text before it is written and puts its figures in summary_file.
// Exit code 0: summary written (a failure is in `error`).

import { makeFeeds, unpackInputs } from './ort_runner.mjs';
import { errorText, median } from '../profile.mjs';

const SESSION = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };

/** CPU time of this process in ms (user + system): a loaded machine does not inflate it as it does wall time. */
function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Times `warmup` + `repeats` runs of `session` on `inputs`: the timed ones' CPU and wall times in ms. */
async function timeRuns(ort, session, inputs, warmup, repeats) {
  const times = { cpu: [], wall: [] };
  for (let i = 0; i < warmup + repeats; i++) {
    const w0 = performance.now();
    const t0 = cpuMs();
    const outs = await session.run(makeFeeds(ort, inputs));
    for (const t of Object.values(outs)) void t.data;
    const ms = cpuMs() - t0;
    const wall = performance.now() - w0;
    for (const t of Object.values(outs)) t.dispose();
    if (i >= warmup) {
      times.cpu.push(ms);
      times.wall.push(wall);
    }
  }
  return times;
}

/**
 * Ends the session's profiling and returns the trace events it printed. The wasm build prints them in Node with
 * `require("fs").writeSync(1, line)`, so that one function is swapped while the (synchronous) call runs.
 */
function endProfiling(fs, session) {
  const chunks = [];
  const writeSync = fs.writeSync;
  fs.writeSync = (fd, data, ...rest) => {
    if (fd !== 1) return writeSync.call(fs, fd, data, ...rest);
    chunks.push(typeof data === 'string' ? data : Buffer.from(data).toString('utf8'));
    return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
  };
  try {
    session.endProfiling();
  } finally {
    fs.writeSync = writeSync;
  }
  const text = chunks.join('');
  const start = text.indexOf('[');
  const end = text.lastIndexOf(']');
  if (start < 0 || end < start) throw new Error(`no profile trace printed by endProfiling (${text.length} characters)`);
  return JSON.parse(text.slice(start, end + 1));
}

/** The node events of the last `repeats` runs, grouped per run: [[{name, op, ms, shapes}]]. */
export function runsFromTrace(events, repeats) {
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts);
  const nodes = events.filter((e) => e.cat === 'Node' && /_kernel_time$/.test(e.name)).sort((a, b) => a.ts - b.ts);
  const node = (e) => ({ name: e.name.replace(/_kernel_time$/, ''), op: (e.args || {}).op_name || '?',
    ms: e.dur / 1000, shapes: ((e.args || {}).output_type_shape || []).map((o) => Object.values(o)[0]) });
  return runs.slice(-repeats).map((run) => ({ run_ms: run.dur / 1000,
    nodes: nodes.filter((e) => e.ts >= run.ts && e.ts <= run.ts + run.dur).map(node) }));
}

async function profileModel(ort, fs, request) {
  const result = { error: null, stage: 'load' };
  let session = null;
  try {
    const blob = fs.readFileSync(request.inputs_file);
    const inputs = unpackInputs(blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength),
      request.inputs);
    const model = new Uint8Array(fs.readFileSync(request.model_file));
    session = await ort.InferenceSession.create(model, SESSION);
    result.stage = 'time';
    const plain = await timeRuns(ort, session, inputs, request.warmup, request.repeats);
    result.plain_ms = plain.cpu;
    result.plain_wall_ms = plain.wall;
    await session.release();
    session = null;
    result.stage = 'profile';
    session = await ort.InferenceSession.create(model, { ...SESSION, enableProfiling: true });
    result.profiled_ms = (await timeRuns(ort, session, inputs, request.warmup, request.repeats)).cpu;
    const runs = runsFromTrace(endProfiling(fs, session), request.repeats);
    if (runs.length === 0) throw new Error('the profile trace holds no model_run event');
    const count = runs[0].nodes.length;
    if (runs.some((r) => r.nodes.length !== count)) throw new Error('the profiled runs ran different node counts');
    result.run_ms = runs.map((r) => r.run_ms);
    result.nodes = runs[0].nodes.map((n, i) => ({ ...n, ms: median(runs.map((r) => r.nodes[i].ms)) }));
    result.plain_median_ms = median(result.plain_ms);
    result.plain_wall_median_ms = median(result.plain_wall_ms);
    result.runs = runs.length;
    result.stage = null;
  } catch (err) {
    result.error = errorText(err);
  } finally {
    if (session !== null) await session.release().catch(() => {});
  }
  return result;
}

async function profileChains(ort, fs, request) {
  const result = { error: null, points: [] };
  try {
    for (const { n, file } of request.models) {
      const session = await ort.InferenceSession.create(new Uint8Array(fs.readFileSync(file)), SESSION);
      const inputs = { x: { dtype: 'float32', shape: [1], data: new Float32Array([1]) } };
      const times = await timeRuns(ort, session, inputs, request.warmup, request.repeats);
      await session.release();
      result.points.push({ n, ms: median(times.cpu), wall_ms: median(times.wall) });
    }
  } catch (err) {
    result.error = errorText(err);
  }
  return result;
}

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
    const ort = await import(pathToFileURL(req.resolve('onnxruntime-web')).href);
    ort.env.wasm.wasmPaths = pathToFileURL(path.join(modules, 'onnxruntime-web', 'dist') + path.sep).href;
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.simd = true;
    ort.env.wasm.proxy = false;
    ort.env.logLevel = 'error';
    summary.versions = { onnxruntime_web: ort.env.versions ? ort.env.versions.web : null, node: process.version };
    summary.result = request.kind === 'chain' ? await profileChains(ort, fs, request)
      : await profileModel(ort, fs, request);
  } catch (err) {
    summary.fatal = errorText(err);
  }
  fs.writeFileSync(request.summary_file, JSON.stringify(summary));
}

const isMain = typeof process !== 'undefined' && Array.isArray(process.argv)
  && /ort_profile\.mjs$/.test(process.argv[1] || '');
if (isMain) {
  main(process.argv[2]).then(() => process.exit(0), (err) => {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
}
