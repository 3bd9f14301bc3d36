// Per-op profile of a TF.js graph model in Node, and TF.js's fixed cost per op call, for benchmarks/op_profile.py.
//
//   node benchmarks/profile.mjs REQUEST.json
//
// Request kinds (both take `clock`: "cpu", the default, this process's CPU time, or "wall"; see CLOCKS):
//   * {kind: "model", model_dir, node_modules, backends, warmup, repeats, inputs_file, input_set, summary_file}
//     Loads the web model on each backend (TF.js loading code of bridge/js/tfjs_runner.mjs), runs it `warmup` times,
//     times `repeats` plain runs, then `repeats` instrumented runs and one tf.profile() run.
//   * {kind: "fixed", node_modules, backends, lengths, warmup, repeats, summary_file}
//     Times a graph model that is a chain of N AddV2 nodes on 1-element tensors, and the same chain run eagerly,
//     for every N in `lengths`; the slope of time over N is the fixed cost of one op call.
//
// How kernels and time are given to graph nodes (the instrumented runs). TF.js's graph executor (tfjs-converter
// 4.22, GraphExecutor.execute) runs inside one tf.tidy, walks the compiled node order and runs every node that has
// no value yet through executeOp, which wraps the node's op in its own tf.tidy (every op category a synchronous
// model can hold). So, counting scopes from the executor's own tidy, each scope opened at depth 2 is exactly one
// node, and the nodes come in the compiled order minus the weights and the fed inputs. The engine's
// startScope / endScope / runKernelFunc are wrapped on the engine instance (the ops call them through it): a node's
// time runs from its scope's start to the end of its scope (its tidy's disposals included); a kernel's time is the
// outermost runKernelFunc call (kernels run synchronously on wasm and cpu). Each node keeps the figures of the run
// where its time is the median. The number of depth-2 scopes must equal
// the number of nodes the compiled order says will run, and the kernel names must match tf.profile()'s list of
// the same run, or the profile is refused (`fatal.kind` "attribution").
//
// Exit code 0: summary written (per-backend failures inside it); 2: summary written with `fatal`; else a crash.

import { FatalError, loadTfjs, needsAsync, nodeLibs, outputKeys, readModelFolder, readRefSet }
  from '../bridge/js/tfjs_runner.mjs';

// The clock every figure is taken on: "cpu" (default), the CPU time of this process (process.cpuUsage: user +
// system, µs resolution, ~1.5 µs a read), which a loaded machine does not inflate the way it inflates wall time,
// since time spent waiting for a core is not counted; or "wall" (performance.now).
const CLOCKS = {
  cpu: () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  },
  wall: () => performance.now(),
};
let now = CLOCKS.cpu;

/** The message of an error (or the thing thrown). */
export function errorText(err) {
  return String(err && err.message ? err.message : err);
}

/** The median of `values` (null when empty). */
export function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function makeInputs(tf, set) {
  const out = {};
  for (const [key, v] of Object.entries(set)) out[key] = tf.tensor(v.data, v.shape, v.dtype);
  return out;
}

function disposeAll(tensors) {
  for (const t of new Set(tensors)) t.dispose();
}

/** One plain run: execute, read every output back; its time in ms on the chosen clock and on the wall clock. */
function timedRun(tf, model, set, keys) {
  const inputs = makeInputs(tf, set);
  let outs = [];
  try {
    const w0 = performance.now();
    const t0 = now();
    const result = model.execute(inputs, keys);
    outs = Array.isArray(result) ? result : [result];
    for (const t of outs) t.dataSync();
    return { ms: now() - t0, wall: performance.now() - w0 };
  } finally {
    disposeAll(outs);
    disposeAll(Object.values(inputs));
  }
}

// ------------------------------------------------------------------------------------------------ instrumentation

/**
 * Wraps the engine's scope and kernel entry points. `probe.begin()` / `probe.end()` bracket one executor run;
 * `probe.install()` / `probe.remove()` put the wrappers on and take them off the engine instance.
 */
function makeProbe(tf) {
  const engine = tf.engine();
  const probe = { recording: false, depth: 0, kernelDepth: 0, current: null, nodes: [], kernels: [], allKernels: [],
    inner: [] };
  const original = { startScope: engine.startScope, endScope: engine.endScope, runKernelFunc: engine.runKernelFunc };
  probe.install = () => {
    engine.startScope = function startScope(name) {
      if (probe.recording) {
        probe.depth += 1;
        if (probe.depth === 2) probe.current = { t0: now(), kernels: [], kernelTimes: [], kernelMs: 0 };
      }
      return original.startScope.call(this, name);
    };
    engine.endScope = function endScope(result) {
      const out = original.endScope.call(this, result);
      if (probe.recording) {
        if (probe.depth === 2 && probe.current !== null) {
          const node = probe.current;
          const tensors = result == null ? [] : (Array.isArray(result) ? result : [result]);
          const t1 = now();
          probe.nodes.push({ ms: t1 - node.t0, t0: node.t0, t1, kernels: node.kernels, kernelTimes: node.kernelTimes,
            kernelMs: node.kernelMs,
            shapes: tensors.filter((t) => t && t.shape).map((t) => [...t.shape]) });
          probe.current = null;
        }
        probe.depth -= 1;
      }
      return out;
    };
    engine.runKernelFunc = function runKernelFunc(params) {
      if (!probe.recording) return original.runKernelFunc.call(this, params);
      // Registered kernels carry their name; a customGrad wrapper (fused ops) is named by the active scope, as the
      // engine names it for tf.profile(). Calls are listed when they finish, as tf.profile() lists them.
      const registered = params.kernelName != null;
      const scope = this.state.activeScope;
      const listed = registered ? params.kernelName : (scope != null ? scope.name : '');
      if (probe.kernelDepth === 0) probe.inner = [];
      if (registered) probe.inner.push(params.kernelName);
      probe.kernelDepth += 1;
      const t0 = now();
      try {
        return original.runKernelFunc.call(this, params);
      } finally {
        probe.kernelDepth -= 1;
        probe.allKernels.push(listed);
        if (probe.kernelDepth === 0) {
          const ms = now() - t0;
          const name = registered ? listed : ([...new Set(probe.inner)].join('+') || listed || 'customGrad');
          const node = probe.depth >= 2 ? probe.current : null;
          probe.kernels.push({ name, ms, node: node === null ? -1 : probe.nodes.length });
          if (node !== null) {
            node.kernels.push(name);
            node.kernelTimes.push(ms);
            node.kernelMs += ms;
          }
        }
      }
    };
  };
  probe.remove = () => Object.assign(engine, original);
  probe.begin = () => {
    Object.assign(probe, { recording: true, depth: 0, kernelDepth: 0, current: null, nodes: [], kernels: [],
      allKernels: [], start: now() });
  };
  probe.end = () => {
    const stop = now();
    probe.recording = false;
    return { nodes: probe.nodes, kernels: probe.kernels, allKernels: probe.allKernels, gaps: gaps(probe, stop) };
  };
  return probe;
}

/**
 * Where the executor's time outside node scopes goes: before the first node (input checks, the weight map copy,
 * frozen tensor ids), between nodes (the loop, disposal of tensors past their last use), after the last node
 * (context disposal, the outer tidy's clean-up).
 */
function gaps(probe, stop) {
  const nodes = probe.nodes;
  if (nodes.length === 0) return { before: stop - probe.start, between: 0, after: 0 };
  let between = 0;
  for (let i = 1; i < nodes.length; i++) between += nodes[i].t0 - nodes[i - 1].t1;
  return { before: nodes[0].t0 - probe.start, between, after: stop - nodes[nodes.length - 1].t1 };
}

/** The nodes the executor will run for these inputs, in its compiled order (weights and fed inputs left out). */
function executedNodes(model, inputKeys) {
  const executor = model.executor;
  const compilations = [...executor.compiledMap.values()];
  if (compilations.length !== 1) {
    throw new FatalError('attribution', `expected one compiled node order, the executor holds ${compilations.length}`);
  }
  const fed = new Set(inputKeys.map((k) => k.split(':')[0]));
  for (const n of model.inputs) fed.add(n.name.split(':')[0]);
  const weights = executor.weightMap;
  return compilations[0].orderedNodes.filter((n) => !(n.name in weights) && !fed.has(n.name))
    .map((n) => ({ name: n.name, op: n.op }));
}

/** One instrumented run: execute inside the probe, read the outputs, check the scopes match the node order. */
function instrumentedRun(tf, probe, model, set, keys, order) {
  const inputs = makeInputs(tf, set);
  let outs = [];
  let record;
  const t0 = now();
  const wrapped = model.executor.execute;
  try {
    model.executor.execute = function execute(...args) {
      probe.begin();
      const e0 = now();
      try {
        return wrapped.apply(this, args);
      } finally {
        const executeMs = now() - e0;
        record = { ...probe.end(), executeMs };
      }
    };
    const result = model.execute(inputs, keys);
    outs = Array.isArray(result) ? result : [result];
    for (const t of outs) t.dataSync();
  } finally {
    delete model.executor.execute;
    disposeAll(outs);
    disposeAll(Object.values(inputs));
  }
  const total = now() - t0;
  if (record.nodes.length !== order.length) {
    throw new FatalError('attribution', `the executor opened ${record.nodes.length} node scopes but its compiled ` +
      `order runs ${order.length} nodes: kernels cannot be given to nodes`);
  }
  return { total, ...record };
}

/** tf.profile() of one run: kernel names in order and kernelTimeMs. */
async function tfProfileRun(tf, model, set, keys) {
  const inputs = makeInputs(tf, set);
  try {
    const info = await tf.profile(() => model.execute(inputs, keys));
    const outs = Array.isArray(info.result) ? info.result : [info.result];
    for (const t of outs) t.dataSync();
    disposeAll(outs);
    return info.kernels.map((k) => ({ name: k.name, ms: Number(k.kernelTimeMs), inputShapes: k.inputShapes }));
  } finally {
    disposeAll(Object.values(inputs));
  }
}

/** Index of the median of `values` (the lower one for an even count). */
function medianIndex(values) {
  const order = values.map((v, i) => [v, i]).sort((x, y) => x[0] - y[0]);
  return order[Math.floor((order.length - 1) / 2)][1];
}

/**
 * The instrumented runs node by node: each node's figures (time, kernel times) come from the run where its time
 * is the median, so a node's kernel times always sum to its kernel time and stay within its time.
 */
function averageRuns(runs, order) {
  const nodes = order.map((node, i) => {
    const pick = runs[medianIndex(runs.map((r) => r.nodes[i].ms))].nodes[i];
    return { name: node.name, op: node.op, kernels: pick.kernels, shapes: pick.shapes, ms: pick.ms,
      kernel_ms: pick.kernelMs, kernel_times: pick.kernelTimes };
  });
  const outside = runs.map((r) => r.kernels.filter((k) => k.node < 0).reduce((s, k) => s + k.ms, 0));
  const gap = (key) => median(runs.map((r) => r.gaps[key]));
  return { nodes, run_ms: runs.map((r) => r.total), node_sum_ms: runs.map((r) => r.nodes.reduce((s, n) => s + n.ms, 0)),
    executor_gaps_ms: { before_first: gap('before'), between_nodes: gap('between'), after_last: gap('after'),
      execute_ms: median(runs.map((r) => r.executeMs)) },
    outside_kernel_ms: median(outside), outside_kernels: runs[0].kernels.filter((k) => k.node < 0).map((k) => k.name) };
}

/** The first position where two name lists differ ({index, a, b}), or null when they are the same. */
function firstDifference(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) return { index: i, a: a[i], b: b[i] };
  }
  return null;
}

/** Loads the model on `backend` and profiles it. Never throws for a backend failure: it becomes `error`. */
async function profileBackend(tf, backend, artifacts, modelJSON, set, opts) {
  const result = { backend, error: null, stage: 'init' };
  let model = null;
  const probe = makeProbe(tf);
  try {
    if (!(await tf.setBackend(backend))) throw new Error(`backend '${backend}' failed to initialise`);
    await tf.ready();
    result.stage = 'load';
    model = await tf.loadGraphModel({ load: async () => artifacts });
    const keys = outputKeys(model, modelJSON);
    const decision = needsAsync(modelJSON);
    if (decision.async) {
      throw new FatalError('attribution', `the model needs executeAsync (${decision.reason}): its nodes do not run ` +
        'one tidy each, so this profiler cannot attribute them');
    }
    result.stage = 'warmup';
    for (let i = 0; i < Math.max(1, opts.warmup); i++) timedRun(tf, model, set, keys);
    const order = executedNodes(model, Object.keys(set));
    result.stage = 'time';
    result.plain_ms = [];
    result.plain_wall_ms = [];
    for (let i = 0; i < opts.repeats; i++) {
      const run = timedRun(tf, model, set, keys);
      result.plain_ms.push(run.ms);
      result.plain_wall_ms.push(run.wall);
    }
    result.stage = 'profile';
    probe.install();
    const runs = [];
    try {
      for (let i = 0; i < opts.repeats; i++) runs.push(instrumentedRun(tf, probe, model, set, keys, order));
    } finally {
      probe.remove();
    }
    result.stage = 'tf.profile';
    const profiled = await tfProfileRun(tf, model, set, keys);
    const differ = firstDifference(profiled.map((k) => k.name), runs[0].allKernels);
    if (differ !== null) {
      throw new FatalError('attribution', `tf.profile() saw ${profiled.length} kernel calls, the probe ` +
        `${runs[0].allKernels.length}; first difference at call ${differ.index}: ${differ.a} vs ${differ.b}`);
    }
    Object.assign(result, averageRuns(runs, order));
    result.plain_median_ms = median(result.plain_ms);
    result.instrumented_median_ms = median(result.run_ms);
    result.tf_profile = profiled.map((k) => ({ name: k.name, ms: k.ms }));
    result.runs = opts.repeats;
    result.stage = null;
  } catch (err) {
    if (err instanceof FatalError && err.kind === 'attribution') result.error_kind = 'attribution';
    result.error = errorText(err);
  } finally {
    if (model !== null) model.dispose();
  }
  return result;
}

// ------------------------------------------------------------------------------------------------ fixed cost

/** Graph-model artifacts of a chain of `n` AddV2 nodes: y = x + c + c + ... (1-element float32 tensors). */
export function chainArtifacts(n) {
  const scalar = { dim: [{ size: '1' }] };
  const nodes = [
    { name: 'x', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: scalar } } },
    { name: 'c', op: 'Const', attr: { dtype: { type: 'DT_FLOAT' },
      value: { tensor: { dtype: 'DT_FLOAT', tensorShape: scalar } } } },
  ];
  let prev = 'x';
  for (let i = 0; i < n; i++) {
    nodes.push({ name: `add_${i}`, op: 'AddV2', input: [prev, 'c'], attr: { T: { type: 'DT_FLOAT' } } });
    prev = `add_${i}`;
  }
  return { format: 'graph-model', modelTopology: { node: nodes, versions: { producer: 1 } },
    weightSpecs: [{ name: 'c', shape: [1], dtype: 'float32' }], weightData: new Float32Array([1]).buffer };
}

function eagerChain(tf, x, c, n) {
  return tf.tidy(() => {
    let y = x;
    for (let i = 0; i < n; i++) y = tf.add(y, c);
    return y;
  });
}

/** Least-squares slope and intercept of ys over xs. */
export function fitLine(xs, ys) {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  const slope = sxx > 0 ? sxy / sxx : null;
  return { slope, intercept: slope === null ? null : my - slope * mx };
}

/** The chain timings on one backend: per N the median graph-model and eager run (ms), and the fitted slopes. */
async function fixedCostBackend(tf, backend, opts) {
  const result = { backend, error: null, points: [] };
  try {
    if (!(await tf.setBackend(backend))) throw new Error(`backend '${backend}' failed to initialise`);
    await tf.ready();
    const x = tf.tensor1d([1]);
    const c = tf.tensor1d([1]);
    for (const n of opts.lengths) {
      const model = await tf.loadGraphModel({ load: async () => chainArtifacts(n) });
      const graph = [];
      const eager = [];
      for (let i = 0; i < opts.warmup + opts.repeats; i++) {
        let t0 = now();
        const y = model.execute({ x }, `add_${n - 1}`);
        const value = y.dataSync()[0];
        const graphMs = now() - t0;
        y.dispose();
        if (value !== 1 + n) throw new Error(`chain of ${n} adds gave ${value}, not ${1 + n}`);
        t0 = now();
        const z = eagerChain(tf, x, c, n);
        z.dataSync();
        const eagerMs = now() - t0;
        z.dispose();
        if (i >= opts.warmup) {
          graph.push(graphMs);
          eager.push(eagerMs);
        }
      }
      model.dispose();
      result.points.push({ n, graph_ms: median(graph), eager_ms: median(eager) });
    }
    x.dispose();
    c.dispose();
    const ns = result.points.map((p) => p.n);
    result.graph = fitLine(ns, result.points.map((p) => p.graph_ms));
    result.eager = fitLine(ns, result.points.map((p) => p.eager_ms));
  } catch (err) {
    result.error = errorText(err);
  }
  return result;
}

// ------------------------------------------------------------------------------------------------ Node shell

async function runRequest(libs, request, summary) {
  const clock = request.clock || 'cpu';
  if (!(clock in CLOCKS)) throw new FatalError('request', `unknown clock '${clock}' (cpu or wall)`);
  now = CLOCKS[clock];
  summary.clock = clock;
  const { tf, versions } = await loadTfjs(libs, request.node_modules);
  Object.assign(summary.versions, versions);
  if (request.kind === 'fixed') {
    for (const backend of request.backends) summary.backends.push(await fixedCostBackend(tf, backend, request));
    return;
  }
  if (request.kind !== 'model') throw new FatalError('request', `unknown request kind '${request.kind}'`);
  const { modelJSON, artifacts } = readModelFolder(libs, tf, request.model_dir);
  const set = readRefSet(libs.fs.readFileSync(request.inputs_file), request.input_set);
  for (const backend of request.backends) {
    summary.backends.push(await profileBackend(tf, backend, artifacts, modelJSON, set, request));
  }
}

async function main(argv) {
  for (const name of ['log', 'info', 'debug']) console[name] = console.error;
  const warn = console.warn;
  console.warn = (...args) => {
    if (typeof args[0] === 'string' && args[0].includes('looks like you are running TensorFlow.js in Node')) return;
    warn(...args);
  };
  const libs = await nodeLibs();
  if (argv.length !== 1) {
    console.error('usage: node profile.mjs REQUEST.json');
    return 64;
  }
  const request = JSON.parse(libs.fs.readFileSync(argv[0], 'utf8'));
  const summary = { versions: { node: process.version }, backends: [], fatal: null };
  let code = 0;
  try {
    await runRequest(libs, request, summary);
  } catch (err) {
    if (!(err instanceof FatalError)) throw err;
    summary.fatal = { kind: err.kind, message: err.message };
    code = 2;
  }
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
