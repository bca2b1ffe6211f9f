/**
 * WebGPUWorkCounter (src/engine/webgpu-counts.ts): it counts what the WebGPU backend does — a
 * dispatch per shader, a read per data() of a GPU tensor, buffers taken from the pool — names the
 * kernel that dispatched, and leaves the backend as it was when stopped. And, counted with it, the
 * Trainer's reads: none inside a training step, the running loss read back only as often as
 * `readbackSeconds` allows (every batch at 0; at the epoch's end only when it is large).
 * Needs a WebGPU adapter (lavapipe will do): skipped without one, failing under CI.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { mobileNetV2, mobileNetV2Blocks } from '../src/backbones/mobilenet_v2.js';
import { MOBILENET_PREPROCESSING } from '../src/backbones/preprocess.js';
import { MemoryPixelStore } from '../src/data/pixel-store.js';
import { WebGPUWorkCounter, type WebGPUWorkCounts } from '../src/engine/webgpu-counts.js';
import { attachHead } from '../src/train/head.js';
import { Trainer } from '../src/train/trainer.js';
import { needWebgpu, startWebgpu } from './helpers/webgpu.js';

let unavailable: string | undefined;
beforeAll(async () => {
  unavailable = await startWebgpu();
});

describe('WebGPUWorkCounter', () => {
  it('counts one dispatch per shader, one read per data(), names the kernel, and stops cleanly', async (ctx) => {
    needWebgpu(ctx, unavailable);
    await tf.setBackend('webgpu');
    // Over tfjs's CPU hand-off size (1000 values), below which small ops on CPU-side data run on the CPU.
    const n = 2048;
    const a = tf.range(0, n);
    const b = tf.fill([n], 10);
    const counter = new WebGPUWorkCounter();
    let counts: WebGPUWorkCounts;
    try {
      const sum = tf.add(a, b);
      const product = tf.mul(sum, sum);
      const values = await product.data();
      expect([values[0], values[1], values[n - 1]]).toEqual([100, 121, (n - 1 + 10) ** 2]);
      counts = counter.take();
      tf.dispose([sum, product]);
    } finally {
      counter.stop();
    }
    expect(counts.dispatches).toBe(2);
    expect(counts.byKernel).toEqual({ Add: 1, Multiply: 1 });
    expect(counts.byProgram).toEqual({ BinaryOpProgram: 2 });
    expect(counts.reads).toBe(1);
    expect(counts.readBytes).toBe(4 * n);
    // a's upload (range is computed on the CPU), the two outputs, a uniform buffer per shader, the read's staging buffer.
    expect(counts.allocations).toBe(6);
    // Stopped: nothing more is counted.
    const after = tf.add(a, b);
    await after.data();
    expect(counter.take().dispatches).toBe(0);
    tf.dispose([a, b, after]);
  });
});

describe('the Trainer on WebGPU, counted', () => {
  const SIZE = 32;
  const BATCH = 4;

  /** Per batch of one epoch on 3 batches: the counts from the end of the previous batch to the end of this one. */
  async function countBatches(readbackSeconds: number): Promise<WebGPUWorkCounts[]> {
    await tf.setBackend('webgpu');
    const model = attachHead(mobileNetV2({ alpha: 0.35, imageSize: SIZE }), { numClasses: 2, dropout: 0.2, seed: 1 });
    const images = Array.from({ length: 3 * BATCH }, (_, i) => new Uint8Array(SIZE * SIZE * 3).fill(20 * i));
    const train = { images: new MemoryPixelStore(images), labels: Int32Array.from(images, (_, i) => i % 2), paths: images.map((_, i) => `${i}.png`) };
    const counter = new WebGPUWorkCounter();
    const windows: WebGPUWorkCounts[] = [];
    const trainer = new Trainer(model, mobileNetV2Blocks(0.35), { train }, MOBILENET_PREPROCESSING, {
      augment: 'none',
      batchSize: BATCH,
      readbackSeconds,
      callbacks: [{ onEpochBegin: () => void counter.take(), onBatchEnd: () => void windows.push(counter.take()) }],
    });
    try {
      trainer.unfreeze({ blocks: 1 });
      await trainer.fit(1, 1e-3);
    } finally {
      counter.stop();
      trainer.dispose();
      model.dispose();
    }
    return windows;
  }

  it('reads nothing inside a training step; the loss and accuracy once, at the end of the epoch, with a long readbackSeconds', async (ctx) => {
    needWebgpu(ctx, unavailable);
    const windows = await countBatches(1e9);
    expect(windows.map((w) => w.reads)).toEqual([0, 0, 2]);
    expect(windows.every((w) => w.dispatches > 0)).toBe(true);
  });

  it('reads the loss and accuracy after every batch with readbackSeconds 0', async (ctx) => {
    needWebgpu(ctx, unavailable);
    const windows = await countBatches(0);
    expect(windows.map((w) => w.reads)).toEqual([2, 2, 2]);
  });
});
