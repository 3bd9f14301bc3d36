// Uses generated web modules the way a Node user would, for tests/test_webmodule.py: run inside a scratch npm
// project where the modules were installed (`npm install ./models/<name>/web_model`), it imports each one by
// its package name, loads it (default URL, a folder path, a file:// URL or an IOHandler), predicts every input
// set on each backend with the inputs given in a chosen form, and writes what happened to a JSON file.
//
//   node webmodule_node_check.mjs REQUEST.json RESULT.json
//
// REQUEST: {wasmDir, models: [{package, folder, load: 'default'|'path'|'url'|'memory', backends, sets: [{name:
// {form, dtype, shape, values}}]}], checks: [{package, inputs, options}]}. RESULT: {models: [{package, runs:
// [{backend, outputs: [{name: {shape, dtype, data}}], kernels, tensorsBefore, tensorsAfter}]}], checks: [{error}]}.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';

/** One input value in the asked form: typed array, BigInt64Array, nested arrays, {data, shape}, or a tensor. */
function inputValue(spec) {
  const { form, dtype, shape, values } = spec;
  const typed = dtype === 'int32' ? Int32Array : Float32Array;
  switch (form) {
    case 'typed':
      return typed.from(values);
    case 'bigint':
      return { data: BigInt64Array.from(values.map((v) => BigInt(v))), shape };
    case 'numbers':
      return { data: values, shape };
    case 'nested':
      return nest(values, shape);
    case 'tensor':
      return tf.tensor(values, shape, dtype);
    default:
      throw new Error(`unknown input form ${form}`);
  }
}

function nest(values, shape) {
  if (shape.length === 0) return values[0];
  const step = values.length / shape[0];
  return Array.from({ length: shape[0] }, (_, i) => nest(values.slice(i * step, (i + 1) * step), shape.slice(1)));
}

function inputs(set) {
  return Object.fromEntries(Object.entries(set).map(([name, spec]) => [name, inputValue(spec)]));
}

function disposeGiven(given) {
  Object.values(given).forEach((value) => value instanceof tf.Tensor && value.dispose());
}

/** The load() argument for the asked way of loading. */
function source(model) {
  switch (model.load) {
    case 'default':
      return undefined;
    case 'path':
      return model.folder;
    case 'url':
      return pathToFileURL(path.join(model.folder, 'model.json'));
    case 'memory': {
      const modelJSON = JSON.parse(fs.readFileSync(path.join(model.folder, 'model.json'), 'utf8'));
      const shards = modelJSON.weightsManifest.flatMap((g) => g.paths)
        .map((p) => fs.readFileSync(path.join(model.folder, p)));
      const bytes = Buffer.concat(shards);
      const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return tf.io.fromMemory({ modelTopology: modelJSON.modelTopology, format: modelJSON.format,
        signature: modelJSON.signature, userDefinedMetadata: modelJSON.userDefinedMetadata,
        weightSpecs: modelJSON.weightsManifest.flatMap((g) => g.weights), weightData });
    }
    default:
      throw new Error(`unknown load kind ${model.load}`);
  }
}

async function runModel(model) {
  const module = await import(model.package);
  const runs = [];
  for (const backend of model.backends) {
    const loaded = await module.load(source(model), { backend });
    const tensorsBefore = tf.memory().numTensors;
    const outputs = [];
    const kernels = new Set();
    for (const set of model.sets) {
      const given = inputs(set);
      const profile = await tf.profile(async () => {
        const out = await module.predict(given, { output: 'data' });
        outputs.push(Object.fromEntries(Object.entries(out).map(([name, o]) =>
          [name, { shape: o.shape, dtype: o.dtype, data: Array.from(o.data) }])));
      });
      profile.kernelNames.forEach((name) => kernels.add(name));
      disposeGiven(given);
    }
    // The tensor form: outputs stay tensors, the caller disposes them.
    const given = inputs(model.sets[0]);
    const asTensors = await loaded.predict(given);
    const tensorOutputs = Object.keys(asTensors);
    Object.values(asTensors).forEach((t) => t.dispose());
    disposeGiven(given);
    runs.push({ backend: tf.getBackend(), outputs, kernels: [...kernels].sort(), tensorsBefore,
      tensorsAfter: tf.memory().numTensors, tensorOutputs, exported: Object.keys(module).sort() });
    loaded.dispose();
  }
  return { package: model.package, runs };
}

async function runCheck(check) {
  const module = await import(check.package);
  await module.load(check.folder);
  try {
    const given = check.raw ? check.inputs : inputs(check.inputs);
    await module.predict(given, check.options || {});
    return { error: null };
  } catch (err) {
    return { error: String(err.message || err) };
  } finally {
    module.dispose();
  }
}

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  setWasmPaths(request.wasmDir);
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  const result = { models: [], checks: [] };
  for (const model of request.models) result.models.push(await runModel(model));
  await tf.setBackend('cpu');
  for (const check of request.checks) result.checks.push(await runCheck(check));
  fs.writeFileSync(process.argv[3], JSON.stringify(result));
}

await main();
