// Scratch: per-kernel wall time of a web model on TF.js wasm (Node). node attn_profile.mjs WEB_MODEL_DIR [runs]
// Inputs: zeros/ones of the signature shapes (int inputs 1). Prints total ms per kernel name and per-run total.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
const nm = '/work/wt-attn/bridge/js/node_modules';
const req = createRequire(path.join(nm, '_x.js'));
const tf = req('@tensorflow/tfjs');
const wasm = req('@tensorflow/tfjs-backend-wasm');
wasm.setWasmPaths(path.join(nm, '@tensorflow/tfjs-backend-wasm/dist') + '/');
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
const dir = process.argv[2];
const runs = Number(process.argv[3] || 5);
const modelJSON = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
const bufs = [];
for (const g of modelJSON.weightsManifest) for (const p of g.paths) bufs.push(fs.readFileSync(path.join(dir, p)));
const data = Buffer.concat(bufs);
const specs = modelJSON.weightsManifest.flatMap((g) => g.weights);
const artifacts = tf.io.getModelArtifactsForJSONSync(modelJSON, specs, data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
await tf.setBackend('wasm');
await tf.ready();
const model = await tf.loadGraphModel({ load: async () => artifacts });
const feeds = {};
for (const inp of model.inputs) {
  const shape = inp.shape.map((d) => (d < 0 ? 1 : d));
  feeds[inp.name] = inp.dtype === 'int32' ? tf.ones(shape, 'int32') : tf.randomNormal(shape);
}
const run = () => { const o = model.execute(feeds); (Array.isArray(o) ? o : [o]).forEach((t) => { t.dataSync(); t.dispose(); }); };
for (let i = 0; i < 3; i++) run();
const times = [];
for (let i = 0; i < runs; i++) { const t = performance.now(); run(); times.push(performance.now() - t); }
times.sort((a, b) => a - b);
console.log(`median ${times[Math.floor(times.length / 2)].toFixed(1)} ms  min ${times[0].toFixed(1)}`);
const byKernel = {};
const prof = await tf.profile(() => { run(); });
for (const k of prof.kernels) {
  const e = (byKernel[k.name] ||= { n: 0, ms: 0 });
  e.n += 1; e.ms += (typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0);
}
const rows = Object.entries(byKernel).sort((a, b) => b[1].ms - a[1].ms);
let tot = 0; for (const [, e] of rows) tot += e.ms;
console.log(`profiled kernel total ${tot.toFixed(1)} ms`);
for (const [k, e] of rows) console.log(`${k.padEnd(22)} n=${String(e.n).padStart(4)} ${e.ms.toFixed(1).padStart(8)} ms ${(100 * e.ms / tot).toFixed(1)}%`);
