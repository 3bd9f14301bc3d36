// Test helper for tests/test_layers_route.py: in one Node process, load a bridge layers model (its
// custom_layers.js registered first) with tf.loadLayersModel, predict on each backend, fit a few epochs on cpu,
// predict again, and save the fitted model exactly as TF.js uploads it: tf.io.http's multipart POST, caught by a
// fetchFunc, its two parts (model.json, model.weights.bin) written into a folder.
//
// usage: node layers_route_node_check.mjs REQUEST.json   (writes REQUEST.json's `result_file`)
// request: {node_modules, model_dir, backends, x: {name: {dtype, shape, data}}, y: {name: {...}},
//           fit: {optimizer, learning_rate, epochs, loss}, save_dir}

import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const req = createRequire(path.join(request.node_modules, '_bridge_resolver.js'));
const tf = req('@tensorflow/tfjs');
const wasm = req('@tensorflow/tfjs-backend-wasm');
wasm.setWasmPaths(path.join(request.node_modules, '@tensorflow', 'tfjs-backend-wasm', 'dist') + path.sep);
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);

const customLayers = path.join(request.model_dir, 'custom_layers.js');
if (existsSync(customLayers)) {
  const source = readFileSync(customLayers, 'utf8');
  const module = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
  module.registerCustomLayers(tf);
}

function tensors(set) {
  return Object.fromEntries(Object.entries(set).map(([k, v]) => [k, tf.tensor(v.data, v.shape, v.dtype)]));
}

async function plain(t) {
  return { shape: t.shape, data: Array.from(await t.data()) };
}

function fileHandler(dir) {
  // Loads model.json and its shards from `dir` (what tf.loadLayersModel('file://...') would do with tfjs-node).
  return {
    load: async () => {
      const json = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8'));
      const buffers = json.weightsManifest.flatMap((g) => g.paths).map((p) => readFileSync(path.join(dir, p)));
      const data = Buffer.concat(buffers);
      const specs = json.weightsManifest.flatMap((g) => g.weights);
      return tf.io.getModelArtifactsForJSONSync(json, specs, data.buffer.slice(data.byteOffset,
        data.byteOffset + data.byteLength));
    },
  };
}

async function predict(model, x) {
  const names = model.inputs.map((t) => t.sourceLayer.name);
  const made = tensors(x);
  const out = model.predict(names.length === 1 ? made[names[0]] : names.map((n) => made[n]));
  const result = await plain(Array.isArray(out) ? out[0] : out);
  tf.dispose([out, ...Object.values(made)]);
  return result;
}

const result = { before: {}, after: null, loss: null, saved: null };
for (const backend of request.backends) {
  await tf.setBackend(backend);
  await tf.ready();
  const model = await tf.loadLayersModel(fileHandler(request.model_dir));
  result.before[backend] = await predict(model, request.x);
  model.dispose();
}

await tf.setBackend('cpu');
const model = await tf.loadLayersModel(fileHandler(request.model_dir));
const fit = request.fit;
const optimizer = fit.optimizer === 'adam' ? tf.train.adam(fit.learning_rate) : tf.train.sgd(fit.learning_rate);
model.compile({ optimizer, loss: fit.loss });
const x = tensors(request.x);
const y = tensors(request.y);
const inputNames = model.inputs.map((t) => t.sourceLayer.name);
const history = await model.fit(inputNames.length === 1 ? x[inputNames[0]] : inputNames.map((n) => x[n]),
  Object.values(y)[0], { epochs: fit.epochs, batchSize: Object.values(request.x)[0].shape[0], shuffle: false,
    verbose: 0 });
result.loss = history.history.loss.map(Number);
result.after = await predict(model, request.x);

// Save as tf.io.http sends it: one multipart/form-data POST with the parts model.json and model.weights.bin.
let body = null;
const saveResult = await model.save(tf.io.http('http://127.0.0.1:9/upload', {
  fetchFunc: async (url, init) => {
    body = init.body;
    return new Response('{}', { status: 200 });
  },
}));
mkdirSync(request.save_dir, { recursive: true });
const parts = [];
for (const [name, value] of body.entries()) {
  writeFileSync(path.join(request.save_dir, value.name || name), Buffer.from(await value.arrayBuffer()));
  parts.push({ field: name, filename: value.name, type: value.type, size: value.size });
}
result.saved = { parts, weightDataBytes: saveResult.modelArtifactsInfo.weightDataBytes };
writeFileSync(request.result_file, JSON.stringify(result));
