// Scratch: A/B CPU time (process.cpuUsage, robust to a loaded machine; wall time too) of web models on TF.js wasm in one Node process, runs interleaved round-robin so machine
// load hits every model alike. node attn_ab.mjs [--async] [--dynamic=N] ROUNDS DIR1 DIR2 ...
// --async: executeAsync (models with control flow); --dynamic=N: dynamic dimensions take size N (default 1).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
const nm = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'bridge', 'js', 'node_modules');
const req = createRequire(path.join(nm, '_x.js'));
const tf = req('@tensorflow/tfjs');
const wasm = req('@tensorflow/tfjs-backend-wasm');
wasm.setWasmPaths(path.join(nm, '@tensorflow/tfjs-backend-wasm/dist') + '/');
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
await tf.setBackend('wasm'); await tf.ready();
const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const [roundsArg, ...dirs] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const rounds = Number(roundsArg);
const useAsync = flags.includes('--async');
const dynamicSize = Number((flags.find((f) => f.startsWith('--dynamic=')) || '--dynamic=1').split('=')[1]);
async function load(dir) {
  const modelJSON = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const bufs = [];
  for (const g of modelJSON.weightsManifest) for (const p of g.paths) bufs.push(fs.readFileSync(path.join(dir, p)));
  const data = Buffer.concat(bufs);
  const specs = modelJSON.weightsManifest.flatMap((g) => g.weights);
  const art = tf.io.getModelArtifactsForJSONSync(modelJSON, specs, data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const model = await tf.loadGraphModel({ load: async () => art });
  const feeds = {};
  for (const inp of model.inputs) {
    const shape = inp.shape.map((d) => (d < 0 ? dynamicSize : d));
    feeds[inp.name] = inp.dtype === 'int32' ? tf.ones(shape, 'int32') : tf.randomNormal(shape, 0, 1, 'float32', 7);
  }
  return { dir, model, feeds, ts: [], cpu: [] };
}
const ms = [];
for (const d of dirs) ms.push(await load(d));
const run = async (m) => { const o = useAsync ? await m.model.executeAsync(m.feeds) : m.model.execute(m.feeds); (Array.isArray(o) ? o : [o]).forEach((t) => { t.dataSync(); t.dispose(); }); };
for (const m of ms) for (let i = 0; i < 2; i++) await run(m);
for (let r = 0; r < rounds; r++) for (const m of ms) { const t = performance.now(); const c = process.cpuUsage(); await run(m); const d = process.cpuUsage(c); m.cpu.push((d.user + d.system) / 1000); m.ts.push(performance.now() - t); }
for (const m of ms) {
  m.ts.sort((a, b) => a - b); m.cpu.sort((a, b) => a - b);
  console.log(`${m.dir.padEnd(40)} cpu min ${m.cpu[0].toFixed(1)} med ${m.cpu[Math.floor(rounds / 2)].toFixed(1)} | wall min ${m.ts[0].toFixed(1)} p25 ${m.ts[Math.floor(rounds / 4)].toFixed(1)} med ${m.ts[Math.floor(rounds / 2)].toFixed(1)} ms`);
}
