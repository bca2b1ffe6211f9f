/**
 * Stage 1 as a linear probe (--stage1 lbfgs): the L-BFGS minimiser, the logistic regression it
 * solves (checked against its optimality condition computed here in float64, not by the code under
 * test), and the wiring through the Trainer and fineTune on fixtures/shapes with a random backbone
 * at 32 px (wiring, not accuracy: bench/ measures that).
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/data/rng.js';
import { InterruptedError, UsageError } from '../src/errors.js';
import { fineTune, resolveOptions, type FineTuneOptions } from '../src/finetune.js';
import { HEAD_LAYERS } from '../src/train/head.js';
import { lbfgs } from '../src/train/lbfgs.js';
import { solveLinearProbe } from '../src/train/linear-probe.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import type { Callback } from '../src/train/types.js';
import { Trainer } from '../src/train/trainer.js';
import { needShared, sharedPath, TM_WEIGHTS } from './helpers/shared.js';
import { randomShapesTrainer, shapesFixture, SHAPES_DIR } from './helpers/shapes-fixture.js';

const fixture = shapesFixture(32, 'finetune-linear-probe-');

describe('lbfgs', () => {
  it('finds the minimum of a badly scaled quadratic', async () => {
    const scales = [1, 10, 100, 1000];
    const target = [3, -2, 0.5, 7];
    const result = await lbfgs(async (x) => {
      const gradient = new Float64Array(4);
      let value = 0;
      for (let i = 0; i < 4; i++) {
        const d = x[i]! - target[i]!;
        value += 0.5 * scales[i]! * d * d;
        gradient[i] = scales[i]! * d;
      }
      return { value, gradient };
    }, new Float64Array(4), { gradientTolerance: 1e-9, valueTolerance: 0 });
    expect(result.reason).toBe('gradient');
    Array.from(result.x).forEach((v, i) => expect(v).toBeCloseTo(target[i]!, 6));
  });

  it('finds the minimum of the Rosenbrock function from (−1.2, 1)', async () => {
    const result = await lbfgs(async ([a, b]) => ({
      value: (1 - a!) ** 2 + 100 * (b! - a! * a!) ** 2,
      gradient: Float64Array.of(-2 * (1 - a!) - 400 * a! * (b! - a! * a!), 200 * (b! - a! * a!)),
    }), Float64Array.of(-1.2, 1), { gradientTolerance: 1e-8 });
    expect(result.x[0]).toBeCloseTo(1, 5);
    expect(result.x[1]).toBeCloseTo(1, 5);
    expect(result.iterations).toBeLessThan(100);
  });
});

/** ∇ of mean softmax cross-entropy + l2·‖W‖² at (W, b), in float64 on the host. */
function objectiveGradient(x: number[][], y: number[], w: number[][], b: number[], l2: number): { dw: number[][]; db: number[] } {
  const [n, d, k] = [x.length, w.length, b.length];
  const dw = w.map((row) => row.map((v) => 2 * l2 * v));
  const db = new Array<number>(k).fill(0);
  for (let r = 0; r < n; r++) {
    const logits = b.map((bj, j) => bj + x[r]!.reduce((s, xi, i) => s + xi * w[i]![j]!, 0));
    const top = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - top));
    const sum = e.reduce((s, v) => s + v, 0);
    for (let j = 0; j < k; j++) {
      const g = (e[j]! / sum - (y[r] === j ? 1 : 0)) / n;
      db[j]! += g;
      for (let i = 0; i < d; i++) dw[i]![j]! += g * x[r]![i]!;
    }
  }
  return { dw, db };
}

describe('solveLinearProbe', () => {
  it('writes into the kernel and bias the point where the regularised loss has zero gradient', async () => {
    const rng = new Rng(3);
    const [n, d, k, l2] = [60, 8, 3, 0.01];
    const y = Array.from({ length: n }, (_, r) => r % k);
    // Overlapping classes (means 1 apart, unit noise): the optimum is finite even without the penalty.
    const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
    const x = y.map((c) => Array.from({ length: d }, (_, i) => (i === c ? 1 : 0) + normal()));
    const features = tf.tensor2d(x);
    const labels = tf.tensor1d(y, 'int32');
    const kernel = tf.variable(tf.randomNormal([d, k], 0, 1, 'float32', 1));
    const bias = tf.variable(tf.zeros([k]));
    const before = tf.memory().numTensors;
    const result = await solveLinearProbe(features, labels, kernel, bias, { l2, loss: softmaxCrossEntropy() });
    expect(tf.memory().numTensors).toBe(before);
    expect(result.reason).not.toBe('iterations');
    const w = kernel.arraySync() as number[][];
    const b = bias.arraySync() as number[];
    const { dw, db } = objectiveGradient(x, y, w, b, l2);
    expect(Math.max(...dw.flat().map(Math.abs), ...db.map(Math.abs))).toBeLessThan(1e-4);
    expect(result.accuracy).toBeGreaterThan(0.6); // the classes are separable enough to learn from
    // A larger penalty gives a smaller kernel.
    await solveLinearProbe(features, labels, kernel, bias, { l2: 1, loss: softmaxCrossEntropy() });
    const norm = (m: number[][]) => Math.hypot(...m.flat());
    expect(norm(kernel.arraySync() as number[][])).toBeLessThan(norm(w) / 2);
    tf.dispose([features, labels, kernel, bias]);
  });
});

const makeTrainer = (seed: number) => randomShapesTrainer(fixture, { headSeed: seed, seed });

describe('Trainer.fit with solve', () => {
  it('is one epoch that leaves the head at the optimum on the frozen features, whatever the seed', async () => {
    const heads: number[][] = [];
    for (const seed of [1, 2]) {
      const { trainer, model, done } = makeTrainer(seed);
      trainer.freeze();
      const rows = await trainer.fit(10, 1e-3, 1, { solve: { l2: 0.01 } });
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ stage: 1, epoch: 1, lr: 0 });
      expect(rows[0]!.valAccuracy).toBeDefined();
      heads.push(model.getLayer(HEAD_LAYERS.logits).getWeights().flatMap((t) => Array.from(t.dataSync())));
      done();
    }
    // Strictly convex, solved from zero: the seed (initial head, data order) changes nothing.
    expect(heads[1]).toEqual(heads[0]);
  });

  it('refuses to solve while backbone layers train', async () => {
    const { trainer, done } = makeTrainer(1);
    trainer.unfreeze({ blocks: 1 });
    await expect(trainer.fit(1, 1e-3, 2, { solve: { l2: 0.01 } })).rejects.toThrow(/trains the head only/);
    done();
  });
});

describe('--stage1 lbfgs', () => {
  it('checks its values', () => {
    expect(() => resolveOptions({ data: '.', stage1: 'sgd' as never })).toThrow(/--stage1 sgd is not valid: use one of adam, lbfgs/);
    expect(() => resolveOptions({ data: '.', stage1: 'lbfgs', probeL2: 0 })).toThrow(UsageError);
    expect(() => resolveOptions({ data: '.', stage1: 'lbfgs', weights: 'none' })).toThrow(/--weights none/);
    expect(() => resolveOptions({ data: '.', stage1: 'lbfgs', epochs: 5 })).toThrow(/--epochs 5 .* --stage1 lbfgs solves it/);
    // The default: solved with pretrained weights; Adam when epochs are asked for, or from random weights.
    expect(resolveOptions({ data: '.' })).toMatchObject({ stage1: 'lbfgs', probeL2: 0.01 });
    expect(resolveOptions({ data: '.', epochs: 5 })).toMatchObject({ stage1: 'adam', epochs: 5 });
    expect(resolveOptions({ data: '.', weights: 'none' })).toMatchObject({ stage1: 'adam' });
  });

  it('trains stage 1 as one solved epoch, then stage 2 from it; the run records how', async (ctx) => {
    needShared(ctx, 'fine-tuning from pretrained weights', TM_WEIGHTS);
    const out = path.join(fixture.dir, 'run');
    const messages: string[] = [];
    const result = await fineTune({
      data: SHAPES_DIR, out, alpha: 0.35, imageSize: 48, weights: sharedPath(TM_WEIGHTS), backend: 'wasm', cache: false,
      stage1: 'lbfgs', probeL2: 0.05, fineTuneEpochs: 2, augmentCopies: 2, batchSize: 16,
      reporter: { info: (m: string) => messages.push(m), warn: () => {}, task: () => ({ update() {}, finish() {} }) },
    });
    expect(result.history.filter((r) => r.stage === 1)).toHaveLength(1);
    expect(result.history.filter((r) => r.stage === 2).length).toBeGreaterThan(0);
    expect(messages.join('\n')).toMatch(/stage 1: head solved on \d+ rows \(2 augmented copies of each image\) in \d+ L-BFGS iterations/);
    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8'));
    expect(config.training).toMatchObject({ stage1: 'lbfgs', probeL2: 0.05 });
    expect(result.metrics!.accuracy).toBeGreaterThanOrEqual(0.8); // pretrained features separate the shapes
  });

  it('with --folds, each fold solves its head, and the model written solves one on all the images', async (ctx) => {
    needShared(ctx, 'fine-tuning from pretrained weights', TM_WEIGHTS);
    const messages: string[] = [];
    const result = await fineTune({
      data: SHAPES_DIR, out: path.join(fixture.dir, 'folds'), alpha: 0.35, imageSize: 48, weights: sharedPath(TM_WEIGHTS), backend: 'wasm', cache: false,
      folds: 3, fineTuneEpochs: 1, augment: 'none', batchSize: 16,
      reporter: { info: (m: string) => messages.push(m), warn: () => {}, task: () => ({ update() {}, finish() {} }) },
    });
    const cv = result.crossValidation!;
    expect(cv.folds).toHaveLength(3);
    expect(cv.epochs.stage1).toBe(1);
    // 3 folds of 80 of the 120 images, then all 120.
    expect(messages.filter((m) => /stage 1: head solved on 80 rows/.test(m))).toHaveLength(3);
    expect(messages.filter((m) => /stage 1: head solved on 120 rows/.test(m))).toHaveLength(1);
  });

  it('a run stopped in stage 2 resumes there, without solving the head again, and ends like one never stopped', async (ctx) => {
    needShared(ctx, 'fine-tuning from pretrained weights', TM_WEIGHTS);
    const run = (out: string, extra: Partial<FineTuneOptions> = {}) =>
      fineTune({
        data: SHAPES_DIR, out: path.join(fixture.dir, out), alpha: 0.35, imageSize: 48, weights: sharedPath(TM_WEIGHTS), backend: 'wasm', cache: false,
        fineTuneEpochs: 3, patience: 10, augment: 'none', batchSize: 16, seed: 3, ...extra,
      });
    const whole = await run('whole');
    const controller = new AbortController();
    const stopInStage2: Callback = { onEpochEnd: (ctx) => void (ctx.stage === 2 && ctx.epoch === 1 && controller.abort()) };
    await expect(run('stopped', { signal: controller.signal, callbacks: [stopInStage2] })).rejects.toThrow(InterruptedError);
    const messages: string[] = [];
    const resumed = await run('stopped', {
      resume: true,
      reporter: { info: (m: string) => messages.push(m), warn: () => {}, task: () => ({ update() {}, finish() {} }) },
    });
    expect(messages.join('\n')).toMatch(/resuming after stage 2, epoch 1/);
    expect(messages.join('\n')).not.toMatch(/head solved/);
    expect(resumed.history.map((r) => [r.stage, r.epoch])).toEqual(whole.history.map((r) => [r.stage, r.epoch]));
    expect(resumed.metrics!.loss).toBeCloseTo(whole.metrics!.loss, 4);
  });
});

