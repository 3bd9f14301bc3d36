// Scratch: per-head attention forms on TF.js wasm. node attn_micro2.mjs [S] [H] [D]
import path from 'node:path';
import { createRequire } from 'node:module';
const nm = '/work/wt-attn/bridge/js/node_modules';
const req = createRequire(path.join(nm, '_x.js'));
const tf = req('@tensorflow/tfjs');
const wasm = req('@tensorflow/tfjs-backend-wasm');
wasm.setWasmPaths(path.join(nm, '@tensorflow/tfjs-backend-wasm/dist') + '/');
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
await tf.setBackend('wasm'); await tf.ready();
function bench(name, fn, n = 20) {
  for (let i = 0; i < 3; i++) tf.tidy(() => { fn().dataSync(); });
  const ts = [];
  for (let i = 0; i < n; i++) { const t = performance.now(); tf.tidy(() => { fn().dataSync(); }); ts.push(performance.now() - t); }
  ts.sort((a, b) => a - b);
  console.log(`${name.padEnd(46)} min ${ts[0].toFixed(3)} med ${ts[Math.floor(n / 2)].toFixed(3)} ms`);
}
const S = Number(process.argv[2] || 128), H = Number(process.argv[3] || 12), D = Number(process.argv[4] || 32);
const q = tf.randomNormal([H, S, D]), k = tf.randomNormal([H, S, D]), kt = tf.randomNormal([H, D, S]);
const q2 = tf.randomNormal([S, H * D]);
bench('BMM q k adjY (current)', () => tf.matMul(q, k, false, true));
bench('BMM q kt', () => tf.matMul(q, kt));
bench('split only q (H pieces)', () => tf.concat(tf.split(q, H), 0));
bench('unstack only q', () => tf.stack(tf.unstack(q)));
bench('slice loop q', () => tf.concat([...Array(H).keys()].map((h) => tf.slice(q, [h, 0, 0], [1, S, D])), 0));
bench('split q2 last axis', () => tf.concat(tf.split(q2, H, 1), 1));
bench('per-head split+mm+concat', () => { const a = tf.split(q, H), b = tf.split(kt, H); return tf.concat(a.map((x, i) => tf.matMul(x, b[i])), 0); });
bench('per-head unstack+mm(2d)+stack', () => { const a = tf.unstack(q), b = tf.unstack(kt); return tf.stack(a.map((x, i) => tf.matMul(x, b[i]))); });
const qs = tf.split(q, H), ks = tf.split(kt, H);
bench('per-head mm only', () => tf.concat(qs.map((x, i) => tf.matMul(x, ks[i])), 0));
bench('one head mm [1,S,D]x[1,D,S]', () => tf.matMul(qs[0], ks[0]));
const qs2 = tf.unstack(q), ks2 = tf.unstack(kt);
bench('one head mm 2d', () => tf.matMul(qs2[0], ks2[0]));
bench('one head mm 2d transposeB (k rows)', () => tf.matMul(qs2[0], tf.unstack(k)[0], false, true));
const idx = [...Array(H).keys()].map((h) => tf.scalar(h, 'int32'));
bench('per-head split+mm+concat (again)', () => { const a = tf.split(q, H), b = tf.split(kt, H); return tf.concat(a.map((x, i) => tf.matMul(x, b[i])), 0); });
bench('per-head gather+mm(2d)+stack', () => tf.stack(idx.map((i) => tf.matMul(tf.gather(q, i), tf.gather(kt, i)))));
const p = tf.softmax(tf.randomNormal([H, S, S])); const v = tf.randomNormal([H, S, D]);
bench('BMM p v (batch)', () => tf.matMul(p, v));
bench('P@V split+mm+concat', () => { const a = tf.split(p, H), b = tf.split(v, H); return tf.concat(a.map((x, i) => tf.matMul(x, b[i])), 0); });
bench('P@V gather+mm+stack', () => tf.stack(idx.map((i) => tf.matMul(tf.gather(p, i), tf.gather(v, i)))));
