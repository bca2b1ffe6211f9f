/**
 * Recipe options beyond the defaults, each tested for its effect: the weight average (--ema) and
 * discriminative learning rates (--layer-lr-decay). Random backbones on fixtures/shapes at 32 px:
 * these check arithmetic and wiring, not accuracy (bench/ measures that).
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../src/errors.js';
import { fineTune, resolveOptions, type FineTuneOptions } from '../src/finetune.js';
import { loadModelDir } from '../src/io/model-io.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { EarlyStopping } from '../src/train/callbacks.js';
import { rampedDecay } from '../src/train/ema.js';
import { HEAD_LAYERS } from '../src/train/head.js';
import { FusedAdam } from '../src/train/optimizer.js';
import type { TrainerOptions } from '../src/train/trainer.js';
import type { Callback } from '../src/train/types.js';
import { InterruptedError } from '../src/errors.js';
import { needShared, TM_WEIGHTS, tmWeightsDir } from './helpers/shared.js';
import { randomShapesTrainer, shapesFixture, SHAPES_DIR } from './helpers/shapes-fixture.js';

const SIZE = 32;
const shapes = SHAPES_DIR;
const fixture = shapesFixture(SIZE, 'finetune-recipe-options-');

const makeTrainer = (options: TrainerOptions) => randomShapesTrainer(fixture, options);

/** Every weight of a layer (kernel, then bias), flat. */
const kernelOf = (model: tf.LayersModel, layer: string) => model.getLayer(layer).getWeights().flatMap((w) => Array.from(w.dataSync()));

describe('--ema: a moving average of the weights', () => {
  it('ramps its decay up from 0.1 and caps it at the decay asked for', () => {
    expect(rampedDecay(0.999, 0)).toBeCloseTo(0.1, 10);
    expect(rampedDecay(0.999, 80)).toBeCloseTo(0.9, 10);
    expect(rampedDecay(0.5, 80)).toBe(0.5);
  });

  it('is what validation and callbacks see after each epoch, the hand-computed average of the raw weights after each step', async () => {
    const { trainer, model, done } = makeTrainer({ ema: 0.95 });
    let average = kernelOf(model, HEAD_LAYERS.logits); // the average starts at the stage's initial weights
    let updates = 0;
    const seenAtEpochEnd: number[][] = [];
    const rawAfterEpoch: number[][] = [];
    let raw: number[] = [];
    const tensorsAtEpochBegin: number[] = [];
    const watcher: Callback = {
      onEpochBegin: () => void tensorsAtEpochBegin.push(tf.memory().numTensors),
      onBatchEnd: (ctx) => {
        raw = kernelOf(ctx.trainer.model, HEAD_LAYERS.logits); // the raw weights: the average is swapped in only at epoch ends
        const d = rampedDecay(0.95, updates++);
        average = average.map((a, i) => d * a + (1 - d) * raw[i]!);
      },
      onEpochEnd: (ctx) => {
        seenAtEpochEnd.push(kernelOf(ctx.trainer.model, HEAD_LAYERS.logits));
        rawAfterEpoch.push(raw);
        const got = seenAtEpochEnd.at(-1)!;
        expect(Math.max(...got.map((g, i) => Math.abs(g - average[i]!)))).toBeLessThan(1e-5);
      },
    };
    trainer.callbacks.push(watcher);
    await trainer.fit(3, 1e-2, 1);
    expect(new Set(tensorsAtEpochBegin.slice(1)).size).toBe(1); // the average and its swaps leak nothing
    expect(updates).toBeGreaterThan(10);
    // The average differs from the raw weights…
    const gap = Math.max(...seenAtEpochEnd.at(-1)!.map((g, i) => Math.abs(g - rawAfterEpoch.at(-1)![i]!)));
    expect(gap).toBeGreaterThan(1e-3);
    // …and the stage ends on it (no early stopping here: the last epoch's average).
    expect(kernelOf(model, HEAD_LAYERS.logits)).toEqual(seenAtEpochEnd.at(-1));
    done();
  });

  it('early stopping keeps the best epoch of the average, not the last', async () => {
    const stopping = new EarlyStopping({ patience: 10 });
    const seen: number[][] = [];
    // Validation losses made up so that epoch 2 is the best: the weights kept must be its average.
    const madeUp: Callback = { onEpochEnd: (ctx, logs) => void (logs.valLoss = [3, 1, 2, 4][ctx.epoch - 1]!) };
    const { trainer, model, done } = makeTrainer({
      ema: 0.9,
      callbacks: [madeUp, stopping, { onEpochEnd: (ctx) => void seen.push(kernelOf(ctx.trainer.model, HEAD_LAYERS.logits)) }],
    });
    await trainer.fit(4, 1e-2, 1);
    expect(seen[1]).not.toEqual(seen[3]);
    expect(kernelOf(model, HEAD_LAYERS.logits)).toEqual(seen[1]);
    stopping.disposeWeights();
    done();
  });

  it('0 is off: the same weights, bit for bit, as without the option', async () => {
    const final = async (options: TrainerOptions) => {
      const { trainer, model, done } = makeTrainer(options);
      await trainer.fit(2, 1e-2, 1);
      const kernel = kernelOf(model, HEAD_LAYERS.logits);
      done();
      return kernel;
    };
    expect(await final({ ema: 0 })).toEqual(await final({}));
  });

  it('is refused outside [0, 1)', () => {
    expect(() => resolveOptions({ data: '.', ema: 1 })).toThrow(UsageError);
    expect(() => resolveOptions({ data: '.', ema: -0.1 })).toThrow(/--ema -0.1 is not valid/);
    expect(() => resolveOptions({ data: '.', ema: 0.99 })).not.toThrow();
  });

  it('a run with --ema stopped in stage 2 and resumed saves the model an uninterrupted run saves', async (ctx) => {
    needShared(ctx, 'a stage 2 to stop in (pretrained weights; from random ones there is one stage, every layer training, too slow here)', TM_WEIGHTS);
    const base: FineTuneOptions = {
      data: shapes, backbone: 'mobilenetv2', alpha: 0.35, imageSize: 32, weights: tmWeightsDir, epochs: 2, fineTuneEpochs: 3,
      batchSize: 30, augment: 'none', patience: 10, seed: 7, backend: 'wasm', ema: 0.9, fineTuneLr: 1e-2,
    };
    const whole = path.join(fixture.dir, 'ema-whole');
    await fineTune({ ...base, out: whole });
    const out = path.join(fixture.dir, 'ema-resumed');
    const controller = new AbortController();
    const abort: Callback = { onEpochEnd: (c) => void (c.stage === 2 && c.epoch === 2 && controller.abort()) };
    await expect(fineTune({ ...base, out, signal: controller.signal, callbacks: [abort] })).rejects.toThrow(InterruptedError);
    const checkpoint = (await loadCheckpoint(path.join(out, 'checkpoint')))!;
    expect(checkpoint.state).toMatchObject({ stage: 2, epoch: 2, emaUpdates: 6 }); // 90 images, batches of 30, 2 epochs of stage 2
    await fineTune({ ...base, out, resume: true });
    const [a, b] = [await loadModelDir(path.join(whole, 'model')), await loadModelDir(path.join(out, 'model'))];
    let maxDiff = 0;
    a.getWeights().forEach((w, i) => {
      const [x, y] = [w.dataSync(), b.getWeights()[i]!.dataSync()];
      for (let k = 0; k < x.length; k++) maxDiff = Math.max(maxDiff, Math.abs(x[k]! - y[k]!));
    });
    expect(maxDiff).toBeLessThan(1e-5);
    a.dispose();
    b.dispose();
  });
});

describe('--layer-lr-decay: discriminative learning rates in stage 2', () => {
  it('counts blocks down from the top trainable one; the head is at the top', () => {
    const { trainer, done } = makeTrainer({});
    trainer.unfreeze({ blocks: 3 });
    const variables = trainer.layers.variables();
    const depths = trainer.layers.blockDepths(variables);
    const depthOf = (prefix: string) => [...new Set(variables.map((v, i) => [v.name, depths[i]!] as const).filter(([n]) => n.includes(prefix)).map(([, d]) => d))];
    expect(depthOf('Conv_1/')).toEqual([0]);
    expect(depthOf('block_16_')).toEqual([1]);
    expect(depthOf('block_15_')).toEqual([2]);
    expect(depthOf(HEAD_LAYERS.logits)).toEqual([0]);
    done();
  });

  it('FusedAdam moves a variable scaled by s exactly s times as far on the first step; scale 1 is bit-identical to none', () => {
    const step = (lrScales?: number[]) => {
      const vars = [tf.variable(tf.tensor1d([1, -2, 3]), true, `a${Math.random()}`), tf.variable(tf.tensor1d([0.5, 0.25]), true, `b${Math.random()}`)];
      const adam = new FusedAdam(vars, 0.1, { lrScales });
      const grads = { [vars[0]!.name]: tf.tensor1d([0.3, -0.1, 2]), [vars[1]!.name]: tf.tensor1d([-1, 4]) };
      adam.applyGradients(grads);
      const out = vars.map((v) => Array.from(v.dataSync()));
      tf.dispose([...vars, ...Object.values(grads)]);
      adam.dispose();
      return out;
    };
    const [plain, ones, scaled] = [step(), step([1, 1]), step([1, 0.25])];
    expect(ones).toEqual(plain);
    expect(scaled[0]).toEqual(plain[0]);
    [0.5, 0.25].forEach((start, i) => expect(scaled[1]![i]! - start).toBeCloseTo((plain[1]![i]! - start) * 0.25, 6));
  });

  it('lower blocks move less than with one rate, the top block as much; 1 is bit-identical to today', async () => {
    const movement = async (options: TrainerOptions) => {
      const { trainer, model, done } = makeTrainer(options);
      await trainer.fit(1, 1e-2, 1);
      trainer.unfreeze({ blocks: 2 });
      const before = { top: kernelOf(model, 'Conv_1'), lower: kernelOf(model, 'block_16_project') };
      await trainer.fit(2, 1e-3, 2);
      const after = { top: kernelOf(model, 'Conv_1'), lower: kernelOf(model, 'block_16_project') };
      const moved = (a: number[], b: number[]) => a.reduce((s, x, i) => s + Math.abs(x - b[i]!), 0) / a.length;
      const result = { top: moved(before.top, after.top), lower: moved(before.lower, after.lower), weights: after };
      done();
      return result;
    };
    const [today, one, decayed] = [await movement({}), await movement({ layerLrDecay: 1 }), await movement({ layerLrDecay: 0.1 })];
    expect(one.weights).toEqual(today.weights);
    expect(decayed.lower).toBeLessThan(today.lower * 0.3);
    expect(decayed.top).toBeGreaterThan(today.top * 0.5);
  });

  it('is refused outside (0, 1]', () => {
    expect(() => resolveOptions({ data: '.', layerLrDecay: 0 })).toThrow(UsageError);
    expect(() => resolveOptions({ data: '.', layerLrDecay: 2 })).toThrow(/--layer-lr-decay 2 is not valid/);
    expect(() => resolveOptions({ data: '.', layerLrDecay: 0.5 })).not.toThrow();
  });
});
