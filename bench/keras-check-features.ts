/**
 * Checks that bench/keras-recipe.py loads a weights file into Keras as finetune loads it into tfjs:
 * the same .npy input batch (NHWC, [-1, 1]) through both MobileNetV2 backbones, pooled features compared.
 *
 *   /tmp/tfenv/bin/python bench/keras-recipe.py - --alpha A --weights W --features-of in.npy > keras.json
 *   npx vite-node --config bench/vite.config.ts bench/keras-check-features.ts -- A W in.npy keras.json
 */
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { mobileNetV2 } from '../src/backbones/mobilenet_v2.js';
import { loadBackboneWeights } from '../src/backbones/weights.js';

/** Reads a little-endian float32 .npy file (numpy's format version 1). */
function readNpy(file: string): tf.Tensor {
  const buf = readFileSync(file);
  const headerLength = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLength).toString('latin1');
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error(`${file}: need a C-order float32 .npy`);
  const shape = header.match(/'shape': \(([^)]*)\)/)![1]!.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + 10 + headerLength, buf.byteOffset + buf.length));
  return tf.tensor(data, shape);
}

const [alphaText, weights, npy, kerasJson] = process.argv.slice(2).filter((a) => a !== '--');
if (!kerasJson) throw new Error('usage: keras-check-features.ts <alpha> <weights> <input.npy> <keras-features.json>');
await tf.setBackend('cpu');
const input = readNpy(npy!);
const model = mobileNetV2({ alpha: Number(alphaText), imageSize: input.shape[1]! });
const report = await loadBackboneWeights(model, weights!);
const ours = (tf.mean(model.predict(input) as tf.Tensor, [1, 2]).arraySync() as number[][]).flat();
const theirs = (JSON.parse(readFileSync(kerasJson!, 'utf8')) as { features: number[][] }).features.flat();
if (ours.length !== theirs.length) throw new Error(`feature counts differ: finetune ${ours.length}, Keras ${theirs.length}`);
const maxAbs = Math.max(...ours.map((v, i) => Math.abs(v - theirs[i]!)));
const scale = Math.max(...theirs.map(Math.abs));
console.log(JSON.stringify({ alpha: Number(alphaText), features: ours.length, maxAbsDifference: maxAbs, maxAbsFeature: scale, withinTolerance: maxAbs <= 1e-3, finetuneWeights: report }));
