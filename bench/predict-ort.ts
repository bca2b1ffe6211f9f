/**
 * Labelling speed of a run's model: finetune's own path (tfjs on WebAssembly, `Classifier`, as
 * `finetune predict` runs it) against its ONNX export on onnxruntime-node, on the same decoded
 * images, in one process, rounds alternating (the machine is shared: read the spread).
 *
 *   npx vite-node --config bench/vite.config.ts bench/predict-ort.ts -- <run> <images…> [--rounds 3] [--batch 32]
 *
 * Decoding (sharp, the same for both) is timed once apart. Model time counts the forward passes
 * and reading the probabilities back, after one untimed warm-up batch.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { decodeAll } from '../src/data/decode.js';
import { onnxFormat } from '../src/export/onnx.js';
import { ONNX_INPUT, ONNX_OUTPUT } from '../src/export/onnx/convert.js';
import { loadClassifier } from '../src/predict/classifier.js';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2).filter((a, i, all) => a !== '--' && !a.startsWith('--') && !all[i - 1]?.startsWith('--'));
  const [run, ...images] = args;
  if (run === undefined || images.length === 0) throw new Error('usage: predict-ort.ts <run> <images…> [--rounds n] [--batch n]');
  const rounds = flag('rounds', 3);
  const batch = flag('batch', 32);

  const classifier = await loadClassifier(run, { backend: 'wasm' });
  const size = classifier.size;
  let t = performance.now();
  const decoded = await decodeAll(images, { size, resize: classifier.resize });
  const pixels = decoded.images.filter((p): p is Uint8Array => p !== undefined);
  const decodeSeconds = (performance.now() - t) / 1000;

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'predict-ort-'));
  const onnxFile = path.join(tmp, 'model.onnx');
  await onnxFormat.export({ runDir: path.resolve(run), out: onnxFile, log: () => undefined });
  const session = await ort.InferenceSession.create(onnxFile);
  const batches: Uint8Array[][] = [];
  for (let i = 0; i < pixels.length; i += batch) batches.push(pixels.slice(i, i + batch));

  const ortRun = async (images: Uint8Array[]) => {
    const input = new Float32Array(images.length * size * size * 3);
    images.forEach((p, j) => input.set(p, j * size * size * 3));
    const out = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', input, [images.length, size, size, 3]) });
    return out[ONNX_OUTPUT]!.data as Float32Array;
  };
  await classifier.predictPixels(batches[0]!);
  await ortRun(batches[0]!);

  const rates: { tfjs: number[]; ort: number[] } = { tfjs: [], ort: [] };
  for (let r = 0; r < rounds; r++) {
    t = performance.now();
    for (const b of batches) await classifier.predictPixels(b);
    rates.tfjs.push(pixels.length / ((performance.now() - t) / 1000));
    t = performance.now();
    for (const b of batches) await ortRun(b);
    rates.ort.push(pixels.length / ((performance.now() - t) / 1000));
  }
  const fmt = (xs: number[]) => `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)} images/s (${xs.map((x) => x.toFixed(1)).join(', ')})`;
  console.log(`${pixels.length} images at ${size} px, batch ${batch}, ${os.availableParallelism()} cores, load ${os.loadavg()[0]!.toFixed(1)}`);
  console.log(`decode (sharp, once): ${(pixels.length / decodeSeconds).toFixed(1)} images/s`);
  console.log(`tfjs ${classifier.engine?.backend} (finetune predict's path): ${fmt(rates.tfjs)}`);
  console.log(`onnxruntime-node ${ort.env.versions?.node ?? ''}: ${fmt(rates.ort)}`);
  classifier.dispose();
  rmSync(tmp, { recursive: true, force: true });
}

await main();
