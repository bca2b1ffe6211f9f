/**
 * --folds k: stratified seeded folds, mean ± sd, one shared activation cache (each image's frozen
 * output computed once for all folds), what is written at the end, and the usage errors.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mobileNetV2, mobileNetV2Blocks } from '../src/backbones/mobilenet_v2.js';
import { MOBILENET_PREPROCESSING } from '../src/backbones/preprocess.js';
import { seedRandomWeights } from '../src/backbones/weights.js';
import { concatSets, stratifiedFolds, subsetOf } from '../src/data/folds.js';
import { loadImageData, type ImageData } from '../src/data/image-data.js';
import { discoverLayout } from '../src/data/layout.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { initEngine } from '../src/engine/backend.js';
import { UsageError } from '../src/errors.js';
import { ReduceLROnPlateau } from '../src/train/callbacks.js';
import { crossValidate, sharedActivationCache, summarizeFolds } from '../src/train/cross-validate.js';
import { attachHead } from '../src/train/head.js';
import { TrainableLayers } from '../src/train/trainable.js';
import type { ClassificationMetrics } from '../src/train/metrics.js';
import { needShared, repoRoot, TM_WEIGHTS, tmWeightsDir } from './helpers/shared.js';

const SIZE = 32;
let dir: string;
let data: ImageData;

beforeAll(async () => {
  await initEngine('wasm');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-folds-'));
  data = await loadImageData(await discoverLayout(path.join(repoRoot, 'fixtures/shapes')), { size: SIZE, resize: 'stretch' });
});
afterAll(() => {
  data?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('stratifiedFolds', () => {
  // 3 classes of 10, 7 and 5 images, in a scrambled order.
  const labels = Array.from({ length: 22 }, (_, i) => (i < 10 ? 0 : i < 17 ? 1 : 2)).sort((a, b) => ((a * 7 + b) % 3) - ((b * 7 + a) % 3));

  it('gives k disjoint folds covering every image once, each class spread within one image', () => {
    const folds = stratifiedFolds(labels, 4, 1);
    expect(folds).toHaveLength(4);
    expect(folds.flat().sort((a, b) => a - b)).toEqual(labels.map((_, i) => i));
    for (const c of [0, 1, 2]) {
      const perFold = folds.map((f) => f.filter((i) => labels[i] === c).length);
      expect(Math.max(...perFold) - Math.min(...perFold), `class ${c}: ${perFold}`).toBeLessThanOrEqual(1);
    }
    const sizes = folds.map((f) => f.length);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
  });

  it('is seeded: the same seed gives the same folds, another seed others', () => {
    expect(stratifiedFolds(labels, 3, 7)).toEqual(stratifiedFolds(labels, 3, 7));
    expect(stratifiedFolds(labels, 3, 8)).not.toEqual(stratifiedFolds(labels, 3, 7));
  });

  it('refuses k < 2 and k above the smallest class (5 images)', () => {
    expect(() => stratifiedFolds(labels, 1, 1)).toThrow(UsageError);
    expect(() => stratifiedFolds(labels, 6, 1)).toThrow(/--folds 6 is more than the 5 images of the smallest class/);
    expect(stratifiedFolds(labels, 5, 1)).toHaveLength(5);
  });
});

describe('summarizeFolds', () => {
  it('gives the mean and the sample (n − 1) standard deviation of each metric', () => {
    const fold = (accuracy: number, loss: number) => ({ metrics: { accuracy, loss, balancedAccuracy: accuracy } as ClassificationMetrics });
    const { mean, sd } = summarizeFolds([fold(0.9, 0.3), fold(0.8, 0.5), fold(1.0, 0.1)]);
    expect(mean.accuracy).toBeCloseTo(0.9, 12);
    expect(sd.accuracy).toBeCloseTo(0.1, 12); // sqrt((0.01 + 0.01 + 0) / 2)
    expect(mean.loss).toBeCloseTo(0.3, 12);
    expect(sd.loss).toBeCloseTo(0.2, 12);
    expect(mean.rocAucMacro, 'a metric the folds lack is left out').toBeUndefined();
  });
});

describe('crossValidate', () => {
  it('trains k folds on one shared cache: every image through the frozen layers once, stage 2 included; weights put back', async () => {
    const backbone = mobileNetV2({ alpha: 0.35, imageSize: SIZE });
    seedRandomWeights(backbone, 3);
    const model = attachHead(backbone, { numClasses: data.classes.length, dropout: 0.2, seed: 1 });
    const pooled = concatSets(data.train, data.valid);
    const cache = sharedActivationCache(model, MOBILENET_PREPROCESSING, { augment: 'none', batchSize: 16, seed: 1 });
    const variables = model.weights.slice(); // model.weights' order changes with what trains
    const before = variables.map((w) => w.read().dataSync().slice());
    const logs: string[] = [];
    const options = {
      k: 3, seed: 5, epochs: 2, lr: 1e-3, stage2: { what: { blocks: 1 }, epochs: 1, lr: 1e-4 }, patience: 5, classWeights: true,
      trainer: { augment: 'none' as const, batchSize: 16, seed: 1 },
      schedule: () => new ReduceLROnPlateau({ patience: 2 }),
      log: (m: string) => logs.push(m),
    };
    const tensorsBefore = tf.memory().numTensors;
    const cv = await crossValidate(model, mobileNetV2Blocks(0.35), pooled, data.classes, MOBILENET_PREPROCESSING, cache, options);
    try {
      expect(cv.folds).toHaveLength(3);
      expect(cv.folds.map((f) => f.validImages).reduce((a, b) => a + b)).toBe(pooled.images.length);
      for (const f of cv.folds) expect(f.trainImages + f.validImages).toBe(pooled.images.length);
      // 120 images, 40 per class: each fold holds 40 of them, and each class's share is even.
      for (const f of cv.folds) {
        expect(f.validImages).toBe(40);
        const supports = Object.values(f.metrics.perClass).map((c) => c.support).sort();
        expect(supports).toEqual([13, 13, 14]);
      }
      expect(cv.mean.accuracy).toBeCloseTo(cv.folds.reduce((s, f) => s + f.metrics.accuracy, 0) / 3, 12);
      expect(cv.imagesComputed, 'each image ran through the frozen layers once, for all 3 folds').toBe(pooled.images.length);
      expect(logs.filter((m) => /^fold \d\/3: val accuracy/.test(m))).toHaveLength(3);
      expect(cv.epochs.stage1).toBeGreaterThanOrEqual(1);
      expect(cv.epochs.stage1).toBeLessThanOrEqual(2);
      variables.forEach((w, i) => expect(Array.from(w.read().dataSync()), w.name).toEqual(Array.from(before[i]!)));
      // What stays held is the shared cache's (the set's activations below stage 2), nothing per fold.
      cache.dispose();
      expect(tf.memory().numTensors).toBe(tensorsBefore);
    } finally {
      cache.dispose();
      model.dispose();
    }
  }, 120_000);

  it('gathers a fold\'s activations from its parent set\'s rows', async () => {
    const backbone = mobileNetV2({ alpha: 0.35, imageSize: SIZE });
    seedRandomWeights(backbone, 3);
    const model = attachHead(backbone, { numClasses: 3, dropout: 0, seed: 1 });
    const cache = sharedActivationCache(model, MOBILENET_PREPROCESSING, { augment: 'none', batchSize: 16, seed: 1 });
    const layers = new TrainableLayers(model, mobileNetV2Blocks(0.35));
    const split = layers.split;
    const rows = [5, 0, 17];
    try {
      const whole = await cache.outputs(data.train, split);
      expect(whole).toBeDefined();
      const part = (await cache.outputs(subsetOf(data.train, rows), split))!;
      expect(Array.from(part.dataSync())).toEqual(Array.from(tf.gather(whole!, rows).dataSync()));
      expect(cache.imagesComputed).toBe(data.train.images.length);
    } finally {
      cache.dispose();
      layers.dispose();
      model.dispose();
    }
  }, 60_000);
});

describe('finetune --folds (CLI)', () => {
  const bin = path.join(repoRoot, 'bin/finetune.js');
  const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 });

  it('reports k per-fold results and their mean ± sd, and writes the model trained on everything', (ctx) => {
    needShared(ctx, 'the --folds run', `${TM_WEIGHTS}/model.json`);
    const out = path.join(dir, 'cv');
    const run = cli(path.join(repoRoot, 'fixtures/shapes'), '--alpha', '0.35', '--image-size', '64', '--weights', tmWeightsDir, '--epochs', '3',
      '--fine-tune-epochs', '1', '--folds', '3', '--augment', 'none', '--backend', 'wasm', '--out', out, '-q');
    expect(run.status, run.stderr).toBe(0);
    const metrics = JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    const folds = metrics.folds;
    expect(folds.k).toBe(3);
    expect(folds.perFold).toHaveLength(3);
    const accuracies = folds.perFold.map((f: { accuracy: number }) => f.accuracy);
    const mean = accuracies.reduce((a: number, b: number) => a + b) / 3;
    expect(folds.mean.accuracy).toBeCloseTo(mean, 12);
    expect(folds.sd.accuracy).toBeCloseTo(Math.sqrt(accuracies.reduce((a: number, v: number) => a + (v - mean) ** 2, 0) / 2), 12);
    expect(metrics.accuracy, 'no held-out set is left for the final model').toBeUndefined();
    expect(run.stdout).toMatch(new RegExp(`val accuracy ${mean.toFixed(3)} ± ${folds.sd.accuracy.toFixed(3)} over 3 folds`));
    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8'));
    expect(config.results.valAccuracy).toBeCloseTo(mean, 12);
    expect(config.training.folds).toBe(3);
    // The final fit trained on all 120 images, for the folds' mean best epochs.
    const history = readFileSync(path.join(out, 'history.csv'), 'utf8').trim().split('\n').slice(1);
    expect(history.filter((l) => l.startsWith('1,'))).toHaveLength(folds.finalEpochs.stage1);
    expect(existsSync(path.join(out, 'model/model.json'))).toBe(true);
    expect(readFileSync(path.join(out, 'report.html'), 'utf8')).toMatch(/validation accuracy, mean ± sd over 3 folds/);
    const runs = cli('runs', out);
    expect(runs.stdout).toMatch(/ ± \d\.\d{3} \(3 folds\)/);
  }, 180_000);

  it('--folds 1 and --folds above the smallest class are usage errors (exit 2, nothing written)', async () => {
    const data = path.join(dir, 'few');
    await makeShapesDataset(data, { trainPerClass: 3, validPerClass: 1, testCount: 0, size: 32, seed: 1 });
    for (const [k, message] of [['1', /--folds 1 is not valid/], ['5', /--folds 5 is more than the 4 images of the smallest class/]] as const) {
      const out = path.join(dir, `few-out-${k}`);
      const run = cli(data, '--folds', k, '--weights', tmWeightsDir, '--alpha', '0.35', '--out', out);
      expect(run.status, run.stderr).toBe(2);
      expect(run.stderr).toMatch(message);
      expect(existsSync(path.join(out, 'finetune.json'))).toBe(false);
    }
  }, 60_000);
});
