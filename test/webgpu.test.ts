/**
 * The WebGPU path end to end: staged fine-tuning (folded frozen layers, FusedAdam, the Learner's
 * caches) and prediction on the webgpu backend give what the wasm backend gives.
 *
 * Needs a WebGPU adapter. Dev machines without a GPU can get one from Mesa's lavapipe (Vulkan on
 * the CPU; Debian bookworm-backports mesa-vulkan-drivers ≥ 24); where there is none the suite
 * skips, saying so.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mobileNetV2, mobileNetV2Blocks } from '../src/backbones/mobilenet_v2.js';
import { MOBILENET_PREPROCESSING } from '../src/backbones/preprocess.js';
import { loadBackboneWeights, seedRandomWeights } from '../src/backbones/weights.js';
import { loadImageData, type ImageData } from '../src/data/image-data.js';
import { discoverLayout } from '../src/data/layout.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { initEngine } from '../src/engine/backend.js';
import { attachHead, HEAD_LAYERS } from '../src/train/head.js';
import { Learner } from '../src/train/learner.js';
import { sharedMobileNetWeights } from './helpers/shared.js';

const SIZE = 64;
let dir: string;
let data: ImageData;
let unavailable: string | undefined;

beforeAll(async () => {
  process.env.XDG_RUNTIME_DIR ??= tmpdir(); // Dawn's Vulkan loader warns without it
  try {
    await initEngine('webgpu');
  } catch (e) {
    unavailable = (e as Error).message;
  }
  await initEngine('wasm');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-webgpu-'));
  await makeShapesDataset(dir, { trainPerClass: 8, validPerClass: 4, testCount: 2, size: 64, seed: 5 });
  data = await loadImageData(await discoverLayout(dir), { size: SIZE, resize: 'stretch' });
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await initEngine('wasm');
});

/** Two stages on `backend`; the head's and Conv_1's weights and the validation probabilities after. */
async function train(backend: 'webgpu' | 'wasm') {
  await initEngine(backend);
  const backbone = mobileNetV2({ alpha: 0.35, imageSize: SIZE });
  const weights = sharedMobileNetWeights();
  if (weights) await loadBackboneWeights(backbone, weights);
  else seedRandomWeights(backbone, 5); // without ../shared: the same random backbone on both backends
  const model = attachHead(backbone, { numClasses: data.classes.length, dropout: 0, seed: 1 });
  const learner = new Learner(model, mobileNetV2Blocks(0.35), data, MOBILENET_PREPROCESSING, { batchSize: 8, seed: 3 });
  const tensors: number[] = [];
  learner.callbacks.push({ onEpochEnd: () => void tensors.push(tf.memory().numTensors) });
  await learner.fit(2, 3e-3, 1);
  learner.unfreeze({ blocks: 1 });
  await learner.fit(2, 1e-3, 2);
  const result = {
    head: (await model.getLayer(HEAD_LAYERS.logits).getWeights()[0]!.data()).slice(),
    conv: (await model.getLayer('Conv_1').getWeights()[0]!.data()).slice(),
    probabilities: await learner.predictProbabilities(data.valid),
    tensors,
  };
  learner.dispose();
  model.dispose();
  return result;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('webgpu backend', () => {
  it('fine-tunes in two stages like wasm does, without leaking tensors', async (ctx) => {
    if (unavailable) {
      console.warn(`note: WebGPU checks skipped: ${unavailable}`);
      ctx.skip();
    }
    const gpu = await train('webgpu');
    const cpu = await train('wasm');
    // Different kernels, different float rounding; after a few Adam steps agreement to 1e-3 says
    // the same computation ran.
    expect(maxDiff(gpu.head, cpu.head)).toBeLessThan(1e-3);
    expect(maxDiff(gpu.conv, cpu.conv)).toBeLessThan(1e-3);
    expect(maxDiff(gpu.probabilities, cpu.probabilities)).toBeLessThan(1e-3);
    expect(gpu.tensors[1]).toBe(gpu.tensors[0]); // flat within stage 1
    expect(gpu.tensors[3]).toBe(gpu.tensors[2]); // flat within stage 2
  }, 300_000);
});
