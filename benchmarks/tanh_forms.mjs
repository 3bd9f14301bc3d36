// Tanh in TF.js 4.22, Node: tf.tanh against 2 * sigmoid(2x) - 1 (four kernels) at a small and a large size, per
// backend, with the largest difference between the two. Backs bridge/tfjs/tanh_as_sigmoid.py.
//
//   node benchmarks/tanh_forms.mjs [RUNS]
import path from 'node:path';
import { createRequire } from 'node:module';

const modules = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'bridge', 'js', 'node_modules');
const require = createRequire(path.join(modules, 'index.js'));
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');
wasm.setWasmPaths(path.join(modules, '@tensorflow/tfjs-backend-wasm/dist') + '/');
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);

const runs = Number(process.argv[2] || 30);
const SHAPES = [[1, 256], [1, 4096], [1, 64, 64, 12], [1, 256, 256, 12]]; // an LSTM step .. an SR net's feature map

// ms per call; each call sums its result (a small read-back) so the kernel really runs
function msPerCall(fn) {
  for (let i = 0; i < 3; i++) tf.tidy(() => tf.sum(fn()).dataSync());
  const start = performance.now();
  for (let i = 0; i < runs; i++) tf.tidy(() => { tf.sum(fn()).dataSync(); });
  return (performance.now() - start) / runs;
}

for (const backend of ['wasm', 'cpu']) {
  await tf.setBackend(backend);
  await tf.ready();
  for (const shape of SHAPES) {
    const x = tf.mul(tf.randomNormal(shape, 0, 1, 'float32', 1), 2);
    const two = tf.scalar(2);
    const one = tf.scalar(1);
    const tanh = () => tf.tanh(x);
    const viaSigmoid = () => tf.sub(tf.mul(tf.sigmoid(tf.mul(x, two)), two), one);
    const readBack = () => x;
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(tanh(), viaSigmoid()))).dataSync()[0]);
    const base = msPerCall(readBack);
    console.log(`${backend.padEnd(5)} ${shape.join('x').padEnd(14)} tanh ${(msPerCall(tanh) - base).toFixed(3)} ms, ` +
                `2*sigmoid(2x)-1 ${(msPerCall(viaSigmoid) - base).toFixed(3)} ms, max diff ${diff.toExponential(1)}`);
    tf.dispose([x, two, one]);
  }
}
