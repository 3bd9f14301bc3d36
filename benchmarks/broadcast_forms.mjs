// Broadcasting in TF.js 4.22 wasm, Node: a binary op of a [1, 1, 128, 128] tensor and an operand of each shape
// below, both ways round. Equal shapes, scalars and shapes that are a suffix of the other's run fast; a size-1 axis
// broadcast among aligned axes takes the slow path (comparisons, logical ops, Maximum, Minimum, Pow; Add, Sub, Mul
// and RealDiv are fast either way). Backs `suffix_shaped` in bridge/native/ops/elementwise.py.
//
//   node benchmarks/broadcast_forms.mjs [RUNS]
import path from 'node:path';
import { createRequire } from 'node:module';

const modules = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'bridge', 'js', 'node_modules');
const require = createRequire(path.join(modules, 'index.js'));
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');
wasm.setWasmPaths(path.join(modules, '@tensorflow/tfjs-backend-wasm/dist') + '/');
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
await tf.setBackend('wasm');
await tf.ready();

const runs = Number(process.argv[2] || 30);
const SHAPES = [[], [128], [128, 128], [1, 128, 128], [1, 1, 128, 128], [1, 128], [1, 1, 1, 128], [128, 1],
  [1, 1, 128, 1]];
const OPS = ['greater', 'logicalAnd', 'maximum', 'pow', 'add', 'mul'];

function msPerCall(fn) {
  for (let i = 0; i < 3; i++) tf.tidy(() => fn().dataSync());
  const start = performance.now();
  for (let i = 0; i < runs; i++) tf.tidy(() => { fn().dataSync(); });
  return (performance.now() - start) / runs;
}

const x = tf.randomUniform([1, 1, 128, 128], 0.5, 1.5, 'float32', 1);
console.log(`ms per call, x [1,1,128,128] op y; ${runs} runs`);
console.log(['y shape'.padEnd(16), ...OPS.map((op) => op.padStart(11))].join(''));
for (const shape of SHAPES) {
  const y = tf.randomUniform(shape, 0.5, 1.5, 'float32', 2);
  const cells = OPS.map((op) => {
    const fn = op === 'logicalAnd' ? () => tf.logicalAnd(tf.greater(x, 1), tf.greater(y, 1)) : () => tf[op](x, y);
    return msPerCall(fn).toFixed(3).padStart(11);
  });
  console.log([JSON.stringify(shape).padEnd(16), ...cells].join(''));
  y.dispose();
}
