// Row lookups (embeddings) in TF.js 4.22, Node: tf.gather vs tf.gatherND of the same 128 rows, per backend, with a
// check that both give the same numbers. Backs bridge/tfjs/gather_rows.py.
//
//   node benchmarks/gather_forms.mjs [RUNS]
import path from 'node:path';
import { createRequire } from 'node:module';

const modules = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'bridge', 'js', 'node_modules');
const require = createRequire(path.join(modules, 'index.js'));
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');
wasm.setWasmPaths(path.join(modules, '@tensorflow/tfjs-backend-wasm/dist') + '/');
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);

const runs = Number(process.argv[2] || 50);
const TABLES = [[30522, 384], [512, 384], [2, 384]]; // a BERT vocabulary, positions, token types

function msPerCall(fn) {
  for (let i = 0; i < 3; i++) tf.tidy(() => fn().dataSync());
  const start = performance.now();
  for (let i = 0; i < runs; i++) tf.tidy(() => { fn().dataSync(); });
  return (performance.now() - start) / runs;
}

for (const backend of ['wasm', 'cpu']) {
  await tf.setBackend(backend);
  await tf.ready();
  for (const [rows, width] of TABLES) {
    const table = tf.randomNormal([rows, width], 0, 1, 'float32', 1);
    const ids = tf.randomUniform([1, 128], 0, rows, 'int32', 2);
    const gather = () => tf.gather(table, ids);
    const gatherNd = () => tf.gatherND(table, tf.expandDims(ids, -1));
    const same = tf.tidy(() => tf.all(tf.equal(gather(), gatherNd())).dataSync()[0] === 1);
    console.log(`${backend.padEnd(5)} table ${rows}x${width}: gather ${msPerCall(gather).toFixed(3)} ms, ` +
                `gatherND ${msPerCall(gatherNd).toFixed(3)} ms, same ${same}`);
    table.dispose();
    ids.dispose();
  }
}
