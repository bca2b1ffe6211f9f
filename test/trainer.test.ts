import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mobileNetV2, mobileNetV2Blocks } from '../src/backbones/mobilenet_v2.js';
import { CAFFE_PREPROCESSING, MOBILENET_PREPROCESSING } from '../src/backbones/preprocess.js';
import { vgg16, vgg16Blocks } from '../src/backbones/vgg16.js';
import { loadBackboneWeights, seedRandomWeights } from '../src/backbones/weights.js';
import { loadImageData, type ImageData } from '../src/data/image-data.js';
import { discoverLayout } from '../src/data/layout.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { initEngine } from '../src/engine/backend.js';
import { attachHead, HEAD_LAYERS } from '../src/train/head.js';
import { FusedInference } from '../src/engine/fused-inference.js';
import { Trainer, type TrainerOptions } from '../src/train/trainer.js';
import { TrainableLayers, unfreezeLayers, validUnfreezeStarts } from '../src/train/trainable.js';
import { FusedAdam } from '../src/train/optimizer.js';
import { EarlyStopping } from '../src/train/callbacks.js';
import { DEFAULTS } from '../src/defaults.js';
import { UsageError } from '../src/errors.js';
import { fineTune } from '../src/finetune.js';
import { needShared, sharedMobileNetWeights, TM_WEIGHTS } from './helpers/shared.js';

const SIZE = 96;
let dir: string;
let data: ImageData;
let weights: string | undefined;

beforeAll(async () => {
  await initEngine('wasm');
  dir = mkdtempSync(path.join(tmpdir(), 'finetune-trainer-'));
  await makeShapesDataset(dir, { trainPerClass: 16, validPerClass: 8, testCount: 3, size: 64, seed: 7 });
  const layout = await discoverLayout(dir);
  data = await loadImageData(layout, { size: SIZE, resize: 'stretch' });
  weights = sharedMobileNetWeights();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function makeTrainer(options: TrainerOptions = {}) {
  const backbone = mobileNetV2({ alpha: 0.35, imageSize: SIZE });
  if (weights) await loadBackboneWeights(backbone, weights);
  else seedRandomWeights(backbone, 5); // without ../shared: the same random backbone every time
  const model = attachHead(backbone, { numClasses: data.classes.length, dropout: 0.2, seed: 1 });
  const trainer = new Trainer(model, mobileNetV2Blocks(0.35), data, MOBILENET_PREPROCESSING, {
    batchSize: 16,
    augment: 'none',
    seed: 3,
    ...options,
  });
  return { trainer, model };
}

/** Counts the images the frozen layers run on (every frozen run from the images goes through FusedInference). */
function bottomRuns() {
  let images = 0;
  const original = FusedInference.prototype.run;
  FusedInference.prototype.run = function (this: FusedInference, x: tf.Tensor) {
    if (x.shape.length === 4 && x.shape[3] === 3) images += x.shape[0]!;
    return original.call(this, x);
  };
  return { count: () => images, restore: () => void (FusedInference.prototype.run = original) };
}

/** Every weight of every layer, by layer name, copied out of the model. */
function weightValues(model: tf.LayersModel): Map<string, Float32Array[]> {
  return new Map(model.layers.map((l) => [l.name, l.getWeights().map((w) => w.dataSync() as Float32Array)]));
}

function changedLayers(before: Map<string, Float32Array[]>, model: tf.LayersModel): string[] {
  const after = weightValues(model);
  return [...before].filter(([name, values]) => values.some((v, i) => !bitEqual(v, after.get(name)![i]!))).map(([n]) => n);
}

function bitEqual(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

describe('Trainer (MobileNetV2 alpha 0.35, 96 px, wasm)', () => {
  it('stage 1 trains only the head and leaks no tensors', async () => {
    const counts: number[] = [];
    const { trainer, model } = await makeTrainer({
      callbacks: [{ onEpochEnd: () => void counts.push(tf.memory().numTensors) }],
    });
    const before = weightValues(model);
    await trainer.fit(6, 3e-3, 1);
    expect(changedLayers(before, model)).toEqual([HEAD_LAYERS.logits]);
    expect(new Set(counts.slice(1)).size).toBe(1); // flat from epoch to epoch
    trainer.dispose();
    model.dispose();
  });

  it('stage 1 on ImageNet features reaches ≥ 90 % on the shapes', async (ctx) => {
    // Random MobileNetV2 weights with frozen inference-mode BatchNorm give near-constant features.
    needShared(ctx, 'accuracy on pretrained features', TM_WEIGHTS);
    const { trainer, model } = await makeTrainer();
    await trainer.fit(6, 3e-3, 1);
    expect((await trainer.evaluate(data.valid)).accuracy).toBeGreaterThanOrEqual(0.9);
    trainer.dispose();
    model.dispose();
  });

  it('stage 2 changes only the unfrozen blocks and the head; BN statistics stay put', async () => {
    const { trainer, model } = await makeTrainer();
    await trainer.fit(2, 3e-3, 1);
    const unfrozen = trainer.unfreeze({ blocks: 2 });
    expect(unfrozen[0]).toBe('block_16_expand');
    expect(unfrozen).toContain('Conv_1');
    const before = weightValues(model);
    const movingStats = model.layers
      .filter((l) => l.getClassName() === 'BatchNormalization')
      .map((l) => l.nonTrainableWeights.map((w) => w.read().dataSync().slice()));
    const counts: number[] = [];
    trainer.callbacks.push({ onEpochEnd: () => void counts.push(tf.memory().numTensors) });
    await trainer.fit(3, 1e-3, 2);
    const changed = changedLayers(before, model);
    expect(changed.length).toBeGreaterThan(1);
    const allowed = new Set([...unfrozen, HEAD_LAYERS.logits]);
    expect(changed.filter((name) => !allowed.has(name))).toEqual([]);
    expect(changed).toContain('Conv_1');
    const statsAfter = model.layers
      .filter((l) => l.getClassName() === 'BatchNormalization')
      .map((l) => l.nonTrainableWeights.map((w) => w.read().dataSync()));
    statsAfter.forEach((layer, i) => layer.forEach((v, j) => expect(bitEqual(v as Float32Array, movingStats[i]![j] as Float32Array)).toBe(true)));
    expect(new Set(counts).size).toBe(1);
    trainer.dispose();
    model.dispose();
  });

  it('unfreezes from a named layer up, and names the block starts when the layer is unknown', async () => {
    const { trainer, model } = await makeTrainer();
    const layers = trainer.unfreeze({ fromLayer: 'block_15_expand' });
    expect(layers[0]).toBe('block_15_expand');
    expect(layers).toContain('block_16_project');
    expect(layers.at(-1)).toBe('Conv_1_bn');
    expect(trainer.trainableLayers).toContain(HEAD_LAYERS.logits);
    expect(() => trainer.unfreeze({ fromLayer: 'block_99' })).toThrow(/block_99.*block_1_expand/);
    trainer.dispose();
    model.dispose();
  });

  it('with trainBatchNorm, unfrozen BN layers update their statistics and frozen ones do not', async () => {
    const { trainer, model } = await makeTrainer({ trainBatchNorm: true });
    trainer.unfreeze({ blocks: 1 });
    const stats = (name: string) => model.getLayer(name).nonTrainableWeights[0]!.read().dataSync().slice();
    const [top, below] = [stats('Conv_1_bn'), stats('block_16_project_BN')];
    await trainer.fit(1, 1e-3, 2);
    expect(bitEqual(stats('Conv_1_bn') as Float32Array, top as Float32Array)).toBe(false);
    expect(bitEqual(stats('block_16_project_BN') as Float32Array, below as Float32Array)).toBe(true);
    trainer.dispose();
    model.dispose();
  });

  it('caching the frozen activations gives the same weights as recomputing them', async (ctx) => {
    // Random MobileNetV2 features are nearly constant; Adam then turns float rounding into visible
    // weight differences, which says nothing about the cache.
    needShared(ctx, 'cache equivalence (real features)', TM_WEIGHTS);
    const run = async (cacheBytes: number) => {
      const { trainer, model } = await makeTrainer({ cacheBytes });
      await trainer.fit(2, 3e-3, 1);
      trainer.unfreeze({ blocks: 1 });
      await trainer.fit(1, 1e-3, 2);
      const values = [HEAD_LAYERS.logits, 'Conv_1'].map((n) => model.getLayer(n).getWeights()[0]!.dataSync().slice());
      trainer.dispose();
      model.dispose();
      return values;
    };
    const [cached, uncached] = [await run(2 ** 31), await run(0)];
    cached.forEach((v, i) => {
      const u = uncached[i]!;
      let maxDiff = 0;
      for (let j = 0; j < v.length; j++) maxDiff = Math.max(maxDiff, Math.abs(v[j]! - u[j]!));
      expect(maxDiff).toBeLessThan(1e-4);
    });
  });

  it('with augmentation, --augment-copies runs the frozen layers once per stage and says so', async () => {
    const messages: string[] = [];
    const train = data.train.images.length;
    const valid = data.valid.images.length;

    // On the fly: every epoch runs the frozen layers on every augmented training image.
    const plain = await makeTrainer({ augment: 'light', log: (m) => void (/memory:/.test(m) || messages.push(m)) });
    let spy = bottomRuns();
    await plain.trainer.fit(3, 3e-3, 1);
    spy.restore();
    expect(spy.count()).toBe(3 * train + valid);
    expect(messages).toEqual([expect.stringMatching(/^stage 1: augmentation is on.*--augment-copies K/)]);
    plain.trainer.dispose();
    plain.model.dispose();

    // Two copies: computed once, then every epoch only gathers.
    messages.length = 0;
    const run = async () => {
      const { trainer, model } = await makeTrainer({ augment: 'light', augmentCopies: 2, log: (m) => void (/memory:/.test(m) || messages.push(m)) });
      spy = bottomRuns();
      const rows = await trainer.fit(3, 3e-3, 1);
      spy.restore();
      const head = model.getLayer(HEAD_LAYERS.logits).getWeights()[0]!.dataSync().slice();
      trainer.dispose();
      model.dispose();
      return { rows, head, bottom: spy.count() };
    };
    const first = await run();
    expect(first.bottom).toBe(2 * train + valid);
    expect(messages[0]).toMatch(/^stage 1: the frozen layers' output for 2 augmented copies of each training image is computed once \(\d+ MiB\)/);
    const second = await run(); // the copies and the draws come from the seed
    expect(Array.from(second.head)).toEqual(Array.from(first.head));
  });

  it('retaining the activations below stage 2 runs the backbone once for both stages, with the same result', async () => {
    const run = async (retain: boolean) => {
      const { trainer, model } = await makeTrainer();
      const spy = bottomRuns();
      if (retain) trainer.retainActivationsFor({ blocks: 2 });
      await trainer.fit(2, 3e-3, 1);
      trainer.unfreeze({ blocks: 2 });
      await trainer.fit(2, 1e-3, 2);
      spy.restore();
      const conv = model.getLayer('Conv_1').getWeights()[0]!.dataSync().slice();
      trainer.dispose();
      model.dispose();
      return { conv, images: spy.count() };
    };
    const all = data.train.images.length + data.valid.images.length;
    const [retained, plain] = [await run(true), await run(false)];
    expect(retained.images).toBe(all);
    expect(plain.images).toBe(2 * all);
    expect(Array.from(retained.conv)).toEqual(Array.from(plain.conv));
  });

  it('after EarlyStopping restores the best epoch, its kept validation probabilities are what the model now computes, bit for bit', async () => {
    const stopping = new EarlyStopping({ patience: 5 });
    const { trainer, model } = await makeTrainer({ callbacks: [stopping] });
    trainer.retainActivationsFor({ blocks: 2 });
    await trainer.fit(2, 3e-3, 1);
    trainer.unfreeze({ blocks: 2 });
    await trainer.fit(3, 1e-2, 2); // a high rate: later epochs differ from the best one
    const best = stopping.bestEpoch!;
    const again = await trainer.predictProbabilities(data.valid);
    if (best.stage === 2) {
      expect(Array.from(trainer.validationProbabilitiesAt(best)!)).toEqual(Array.from(again));
    } else {
      expect(trainer.validationProbabilitiesAt(best)).toBeUndefined(); // kept at stage 1's split: not reused
    }
    // Another epoch's (other weights) are not what the model computes now.
    const other = trainer.history.filter((r) => r.stage === 2 && r.epoch !== best.epoch).at(-1)!;
    expect(trainer.validationProbabilitiesAt(other)).toBeDefined();
    expect(Array.from(trainer.validationProbabilitiesAt(other)!)).not.toEqual(Array.from(again));
    expect(trainer.validationProbabilitiesAt({ stage: 1, epoch: 1 })).toBeUndefined(); // another split
    stopping.disposeWeights();
    trainer.dispose();
    model.dispose();
  });

  it('VGG16: stage 2 with --unfreeze 1 trains block5 and the head only', async () => {
    const backbone = vgg16({ imageSize: 32 });
    const model = attachHead(backbone, { numClasses: data.classes.length, dropout: 0.2, seed: 1 });
    const small = await loadImageData(await discoverLayout(dir), { size: 32, resize: 'stretch' });
    const trainer = new Trainer(model, vgg16Blocks(), small, CAFFE_PREPROCESSING, { batchSize: 16, seed: 3 });
    await trainer.fit(1, 1e-3, 1);
    expect(trainer.unfreeze({ blocks: 1 })).toEqual(['block5_conv1', 'block5_conv2', 'block5_conv3']);
    const before = weightValues(model);
    await trainer.fit(1, 1e-4, 2);
    expect(changedLayers(before, model).sort()).toEqual(['block5_conv1', 'block5_conv2', 'block5_conv3', HEAD_LAYERS.logits]);
    trainer.dispose();
    model.dispose();
  });
});

describe('Trainer parts and guards', () => {
  it('library defaults are the CLI defaults, and the dropout is the head’s own', async () => {
    const backbone = mobileNetV2({ alpha: 0.35, imageSize: SIZE });
    const model = attachHead(backbone, { numClasses: data.classes.length, dropout: 0.5, seed: 1 });
    const trainer = new Trainer(model, mobileNetV2Blocks(0.35), data, MOBILENET_PREPROCESSING);
    expect(trainer.options).toMatchObject({
      augment: DEFAULTS.augment,
      batchSize: DEFAULTS.batchSize,
      seed: DEFAULTS.seed,
      augmentCopies: DEFAULTS.augmentCopies,
      trainBatchNorm: DEFAULTS.trainBatchNorm,
      cacheBytes: DEFAULTS.cacheMb * 1024 ** 2,
      dropout: 0.5,
    });
    trainer.dispose();
    model.dispose();
  });

  it('a batch that runs out of memory is halved, said, and training goes on without leaking', async () => {
    const messages: string[] = [];
    const counts: number[] = [];
    const { trainer, model } = await makeTrainer({
      batchSize: 16,
      failBatchesAbove: 5,
      log: (m) => messages.push(m),
      callbacks: [{ onEpochEnd: () => void counts.push(tf.memory().numTensors) }],
    });
    const rows = await trainer.fit(3, 3e-3, 1);
    expect(rows).toHaveLength(3);
    expect(trainer.batchSize).toBe(4); // 16 → 8 → 4
    expect(messages.filter((m) => /out of memory on a training batch of 16 images.*batches of 8/.test(m))).toHaveLength(1);
    expect(messages.filter((m) => /out of memory on a training batch of 8 images.*batches of 4/.test(m))).toHaveLength(1);
    expect(rows.every((r) => Number.isFinite(r.loss))).toBe(true);
    expect(new Set(counts).size).toBe(1);
    trainer.dispose();
    model.dispose();
  });

  it('other errors in a step are not taken for memory: they stop training', async () => {
    const { trainer, model } = await makeTrainer({
      loss: () => {
        throw new Error('a broken loss');
      },
    });
    await expect(trainer.fit(1, 1e-3, 1)).rejects.toThrow('a broken loss');
    trainer.dispose();
    model.dispose();
  });

  it('loss, optimizer and metrics plug into the TrainStep', async () => {
    let optimizerVariables = 0;
    const seen: number[] = [];
    const { trainer, model } = await makeTrainer({
      // Label smoothing 0.1 (Szegedy et al.), as one small function.
      loss: (logits, labels) =>
        tf.tidy(() => {
          const k = logits.shape[1];
          const target = tf.add(tf.mul(tf.oneHot(labels, k), 0.9), 0.1 / k);
          return tf.mean(tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(logits)), 1))) as tf.Scalar;
        }),
      optimizer: (variables, lr) => {
        optimizerVariables = variables.length;
        return new FusedAdam(variables, lr);
      },
      metrics: [
        { name: 'accuracy', batchSum: (logits, labels) => tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32')) as tf.Scalar },
        { name: 'images', batchSum: (_logits, labels) => tf.scalar(labels.shape[0]) },
      ],
      callbacks: [{ onBatchEnd: (_ctx, logs) => void seen.push(logs.batch) }],
    });
    const rows = await trainer.fit(2, 3e-3, 1);
    expect(optimizerVariables).toBe(2); // the head's kernel and bias
    expect(rows[0]!.accuracy).toBeGreaterThanOrEqual(0);
    expect(rows[0]!.accuracy).toBeLessThanOrEqual(1);
    // With smoothing the loss cannot reach 0: at best it is the smoothed target's entropy.
    const k = data.classes.length;
    const floor = -(0.9 + 0.1 / k) * Math.log(0.9 + 0.1 / k) - (k - 1) * (0.1 / k) * Math.log(0.1 / k);
    expect(rows.at(-1)!.loss).toBeGreaterThan(floor - 1e-4);
    expect(seen.length).toBe(2 * Math.ceil(data.train.images.length / 16));
    trainer.dispose();
    model.dispose();
  });

  it('--unfreeze-from inside a residual block is refused before any work, listing the layers that can start', async () => {
    const backbone = mobileNetV2({ alpha: 0.35, imageSize: SIZE });
    expect(() => unfreezeLayers(backbone, mobileNetV2Blocks(0.35), { fromLayer: 'block_15_project' })).toThrow(UsageError);
    expect(() => unfreezeLayers(backbone, mobileNetV2Blocks(0.35), { fromLayer: 'block_15_project' })).toThrow(
      /block_15_project is inside a residual block.*block_15_expand/,
    );
    expect(validUnfreezeStarts(backbone)).not.toContain('block_15_project');
    expect(validUnfreezeStarts(backbone)).toContain('block_16_expand');
    // Every layer offered really works as a split.
    const model = attachHead(backbone, { numClasses: 3, dropout: 0.2 });
    const layers = new TrainableLayers(model, mobileNetV2Blocks(0.35));
    for (const start of validUnfreezeStarts(backbone)) expect(() => layers.unfreeze({ fromLayer: start })).not.toThrow();
    layers.dispose();
    model.dispose();
  });

  it('says what memory a stage plans before training', async () => {
    const messages: string[] = [];
    const { trainer, model } = await makeTrainer({ log: (m) => messages.push(m) });
    await trainer.fit(1, 1e-3, 1);
    expect(messages.find((m) => /^stage 1: memory: a training step of 16 images needs about \d+ MiB; .* of the 4096 MiB heap in use/.test(m))).toBeDefined();
    trainer.dispose();
    model.dispose();
  });
});

describe('fineTune checks the stage-2 split before any work', () => {
  it('--unfreeze-from inside a residual block fails before weights or images are read, with exit status 2', async () => {
    const steps: string[] = [];
    const reporter = {
      info: (m: string) => void steps.push(m),
      warn: (m: string) => void steps.push(m),
      task: (name: string) => (steps.push(name), { update: () => {}, finish: () => {} }),
    };
    // The weights file does not exist: the split is checked before it would be read.
    const options = { data: dir, out: `${dir}-refused`, alpha: 0.35, imageSize: SIZE, weights: path.join(dir, 'absent.h5'), reporter };
    const refused = fineTune({ ...options, unfreezeFrom: 'block_15_project' });
    await expect(refused).rejects.toThrow(/--unfreeze-from block_15_project is inside a residual block.*Layers that can start.*block_16_expand/);
    await expect(refused).rejects.toMatchObject({ exitCode: 2 });
    expect(steps.filter((s) => /decod|weights/.test(s))).toEqual([]);
    // A valid start gets past the check (and fails only at the missing weights file).
    await expect(fineTune({ ...options, unfreezeFrom: 'block_15_expand' })).rejects.toThrow(/absent\.h5/);
  });
});
