/** --mixup / --cutmix: Beta(α, α) mixing of a batch, the mixed targets and loss, and what the Trainer does with them. */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mobileNetV2, mobileNetV2Blocks } from '../src/backbones/mobilenet_v2.js';
import { MOBILENET_PREPROCESSING } from '../src/backbones/preprocess.js';
import { seedRandomWeights } from '../src/backbones/weights.js';
import { loadImageData, type ImageData } from '../src/data/image-data.js';
import { discoverLayout } from '../src/data/layout.js';
import { Rng } from '../src/data/rng.js';
import { initEngine } from '../src/engine/backend.js';
import { resolveOptions } from '../src/finetune.js';
import { UsageError } from '../src/errors.js';
import { attachHead } from '../src/train/head.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { drawBatchMix, mixedLoss, mixedTargets, mixRows, pasteBox, sampleBeta } from '../src/train/mix.js';
import { Trainer, type TrainerOptions } from '../src/train/trainer.js';
import { repoRoot } from './helpers/shared.js';

const SIZE = 32;
let data: ImageData;

beforeAll(async () => {
  await initEngine('wasm');
  data = await loadImageData(await discoverLayout(path.join(repoRoot, 'fixtures/shapes')), { size: SIZE, resize: 'stretch' });
});
afterAll(() => data?.dispose());

describe('mixing a batch', () => {
  it('Beta(α, α) draws: mean ½, U-shaped for α = 0.2, near ½ for α = 20; seeded', () => {
    const draws = (alpha: number) => {
      const rng = new Rng(1);
      return Array.from({ length: 4000 }, () => sampleBeta(rng, alpha));
    };
    for (const alpha of [0.2, 0.35, 1, 20]) {
      const d = draws(alpha);
      expect(d.every((x) => x >= 0 && x <= 1)).toBe(true);
      expect(d.reduce((a, b) => a + b) / d.length, `α ${alpha}`).toBeCloseTo(0.5, 1);
      // Var of Beta(α, α) = 1 / (4(2α + 1)).
      const variance = d.reduce((a, x) => a + (x - 0.5) ** 2, 0) / d.length;
      expect(variance / (1 / (4 * (2 * alpha + 1))), `α ${alpha}`).toBeGreaterThan(0.9);
      expect(variance / (1 / (4 * (2 * alpha + 1))), `α ${alpha}`).toBeLessThan(1.1);
    }
    expect(draws(0.35)).toEqual(draws(0.35));
  });

  it('mixup targets are convex combinations of the two one-hot labels, and the loss is cross-entropy against them', () => {
    const labels = [0, 2, 1, 2];
    const mix = { lambda: 0.7, perm: [1, 0, 3, 2] };
    const targets = mixedTargets(labels, mix, 3);
    targets.forEach((row, i) => {
      expect(row.reduce((a, b) => a + b)).toBeCloseTo(1, 12);
      row.forEach((v) => expect(v).toBeGreaterThanOrEqual(0));
      expect(row[labels[i]!]).toBeGreaterThanOrEqual(0.7 - 1e-12);
      expect(row[labels[mix.perm[i]!]!]).toBeGreaterThanOrEqual(0.3 - 1e-12);
    });
    // Image 2 (label 1) mixed with image 3 (label 2).
    [0, 0.7, 0.3].forEach((v, c) => expect(targets[2]![c]).toBeCloseTo(v, 12));
    tf.tidy(() => {
      const logits = tf.tensor2d([[1, 2, 0.5], [0, -1, 3], [2, 2, 2], [0.3, 0, -0.4]]);
      const loss = mixedLoss(softmaxCrossEntropy(), logits, tf.tensor1d(labels, 'int32'), tf.tensor1d(mix.perm.map((j) => labels[j]!), 'int32'), 0.7);
      const expected = tf.mean(tf.neg(tf.sum(tf.mul(tf.tensor2d(targets), tf.logSoftmax(logits)), 1)));
      expect(loss.dataSync()[0]).toBeCloseTo(expected.dataSync()[0]!, 6);
    });
  });

  it('mixup mixes rows; CutMix pastes a box and its λ is the share left', () => {
    tf.tidy(() => {
      const x = tf.tensor2d([[1, 2], [10, 20], [100, 200]]);
      expect(mixRows(x, { lambda: 0.25, perm: [2, 0, 1] }).arraySync()).toEqual([[75.25, 150.5], [3.25, 6.5], [32.5, 65]]);
      const mix = drawBatchMix(new Rng(3), 2, 8, { mixup: 0, cutmix: 1 })!;
      expect(mix.kind).toBe('cutmix');
      const { y0, y1, x0, x1 } = mix.box!;
      expect(mix.lambda).toBeCloseTo(1 - ((y1 - y0) * (x1 - x0)) / 64, 12);
      const images = tf.concat([tf.zeros([1, 8, 8, 3]), tf.ones([1, 8, 8, 3])]) as tf.Tensor4D;
      const pasted = pasteBox(images, { perm: [1, 0], box: mix.box }).arraySync() as number[][][][];
      for (let y = 0; y < 8; y++) {
        for (let x = 0; x < 8; x++) {
          const inside = y >= y0 && y < y1 && x >= x0 && x < x1;
          expect(pasted[0]![y]![x]![0], `(${y}, ${x})`).toBe(inside ? 1 : 0);
          expect(pasted[1]![y]![x]![0], `(${y}, ${x})`).toBe(inside ? 0 : 1);
        }
      }
    });
    expect(drawBatchMix(new Rng(3), 4, 8, { mixup: 0, cutmix: 0 }), 'both off: no mixing').toBeUndefined();
  });

  it('negative α and --cutmix with --augment-copies are usage errors', () => {
    expect(() => resolveOptions({ data: '.', mixup: -0.1 })).toThrow(/--mixup -0.1/);
    expect(() => resolveOptions({ data: '.', cutmix: 1, augmentCopies: 2 })).toThrow(UsageError);
    expect(() => resolveOptions({ data: '.', mixup: 0.2, cutmix: 1 })).not.toThrow();
  });
});

describe('Trainer with mixup / CutMix', () => {
  /** Head-only training on the shapes with a seeded random backbone; returns the head's weights and the history. */
  async function train(options: TrainerOptions, epochs = 2) {
    const backbone = mobileNetV2({ alpha: 0.35, imageSize: SIZE });
    seedRandomWeights(backbone, 5);
    const model = attachHead(backbone, { numClasses: data.classes.length, dropout: 0.2, seed: 1 });
    const logs: string[] = [];
    const trainer = new Trainer(model, mobileNetV2Blocks(0.35), data, MOBILENET_PREPROCESSING, { batchSize: 16, log: (m) => logs.push(m), ...options });
    const tensors: number[] = [];
    trainer.callbacks.push({ onEpochEnd: () => void tensors.push(tf.memory().numTensors) });
    const rows = await trainer.fit(epochs, 1e-2, 1);
    const head = Array.from(model.getLayer('head_logits').getWeights()[0]!.dataSync());
    trainer.dispose();
    model.dispose();
    return { head, rows, logs, tensors };
  }

  it('--mixup 0 is bit-identical to no mixup; --mixup 0.35 trains differently, on the cached features, tensors flat', async () => {
    const off = await train({ augment: 'none' });
    const zero = await train({ augment: 'none', mixup: 0 });
    expect(zero.head).toEqual(off.head);
    expect(zero.rows).toEqual(off.rows.map((r) => ({ ...r, seconds: zero.rows[r.epoch - 1]!.seconds })));
    const mixed = await train({ augment: 'none', mixup: 0.35 }, 3);
    expect(mixed.head).not.toEqual(off.head);
    expect(mixed.logs.join('\n')).toMatch(/output for the 90 training images is computed once/);
    expect(new Set(mixed.tensors).size, `tensors after each epoch: ${mixed.tensors}`).toBe(1);
  }, 60_000);

  it('--cutmix runs the frozen layers on each batch and trains differently from off', async () => {
    const off = await train({ augment: 'none' });
    const cut = await train({ augment: 'none', cutmix: 0.35 }, 3);
    expect(cut.head).not.toEqual(off.head);
    expect(cut.logs.join('\n')).toMatch(/--cutmix pastes pixels, so the frozen layers run on every training batch/);
    expect(new Set(cut.tensors).size, `tensors after each epoch: ${cut.tensors}`).toBe(1);
  }, 60_000);
});
