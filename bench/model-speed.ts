/**
 * Forward and training-step throughput of a whole classifier (backbone + finetune's head), through
 * the project's own Learner, so the figures are what `finetune` and `finetune predict` get:
 *
 * - forward: `Learner.predictProbabilities` on one batch (inference mode; the uint8 → float
 *   preprocessing of the batch is included, as in prediction);
 * - training step: one `Learner.fit` batch with every layer trainable (forward, backward, Adam
 *   update of the whole network; BatchNormalization in inference mode, finetune's default), the
 *   batch preprocessing included; no activation cache (nothing is frozen, and `cacheBytes` is 0).
 *
 * Weights are random (speed does not depend on their values); the images are random pixels.
 */
import * as tf from '@tensorflow/tfjs';
import { getBackbone } from '../src/backbones/registry.js';
import type { ImageSet } from '../src/data/batches.js';
import { MemoryPixelStore } from '../src/data/pixel-store.js';
import { Rng } from '../src/data/rng.js';
import { attachHead } from '../src/train/head.js';
import { Learner } from '../src/train/learner.js';
import { round, summarise, timeSteps, type StepBudget, type StepTiming } from './measure.js';

export interface ModelConfig {
  backbone: 'mobilenetv2' | 'vgg16';
  /** MobileNetV2 width multiplier. */
  alpha?: number;
  imageSize: number;
}

export type SpeedKind = 'forward' | 'train';

export interface SpeedResult {
  measurement: SpeedKind;
  model: string;
  backbone: string;
  alpha?: number;
  imageSize: number;
  /** The batch measured (smaller than `requestedBatch` when that one ran out of memory). */
  batch: number;
  requestedBatch: number;
  weights: 'random';
  /** Images per second over the timed steps; absent when the measurement failed. */
  imagesPerSecond?: number;
  timing?: StepTiming;
  /** What one step is. */
  what: string;
  /** The measuring process is killed past this. */
  timeLimitSeconds: number;
  error?: string;
  notes: string[];
}

const CLASSES = 10;

export function modelLabel(c: ModelConfig): string {
  const alpha = c.alpha ?? 1;
  return c.backbone === 'mobilenetv2'
    ? `MobileNetV2 α=${Number.isInteger(alpha) ? alpha.toFixed(1) : alpha} ${c.imageSize} px`
    : `VGG16 ${c.imageSize} px`;
}

/** `n` random images of `size` px with labels 0…CLASSES-1 in turn. */
function randomImages(n: number, size: number, seed: number): ImageSet {
  const rng = new Rng(seed);
  const images = Array.from({ length: n }, () => {
    const pixels = new Uint8Array(size * size * 3);
    for (let i = 0; i < pixels.length; i++) pixels[i] = rng.int(256);
    return pixels;
  });
  return {
    images: new MemoryPixelStore(images),
    labels: Int32Array.from({ length: n }, (_, i) => i % CLASSES),
    paths: images.map((_, i) => `random-${i}`),
  };
}

/** A classifier on `config`'s backbone with every layer trainable, on one batch of random images. */
function makeLearner(config: ModelConfig, batch: number): { learner: Learner; model: tf.LayersModel } {
  const spec = getBackbone(config.backbone);
  const options = { alpha: config.alpha ?? 1, imageSize: config.imageSize };
  const model = attachHead(spec.build(options), { numClasses: CLASSES, dropout: 0.2, seed: 1 });
  const data = { train: randomImages(batch, config.imageSize, 1) };
  const learner = new Learner(model, spec.blocks(options), data, spec.preprocessing, {
    batchSize: batch,
    augment: 'none',
    seed: 1,
    cacheBytes: 0,
  });
  // Every layer from the first one after the input: the split sits at the input, nothing is frozen.
  learner.unfreeze({ fromLayer: model.layers[1]!.name });
  return { learner, model };
}

async function forwardSteps(learner: Learner, budget: StepBudget): Promise<StepTiming> {
  const set = learner.data.train;
  return timeSteps(async () => {
    // Resolves once the probabilities are read back from the backend: the work is done.
    await learner.predictProbabilities(set);
  }, budget);
}

/** Training steps: each epoch is one batch (the data set is one batch); stops on the budget. */
async function trainSteps(learner: Learner, budget: StepBudget): Promise<StepTiming> {
  const times: number[] = [];
  let started = 0;
  const enough = () => {
    const timed = times.slice(budget.warmupSteps);
    const ms = timed.reduce((a, b) => a + b, 0);
    return timed.length >= budget.maxSteps || (timed.length >= 1 && ms >= budget.minSeconds * 1000);
  };
  learner.callbacks = [
    {
      onEpochBegin: () => void (started = performance.now()),
      // Epoch logs hold the epoch's exact loss, read back from the device: the step is done.
      onEpochEnd: (ctx) => {
        times.push(performance.now() - started);
        if (enough()) ctx.stopTraining = true;
      },
    },
  ];
  // A small rate keeps random-weight networks finite over many steps; speed does not depend on it.
  await learner.fit(budget.warmupSteps + budget.maxSteps, 1e-5, 1);
  learner.callbacks = [];
  const warm = times.slice(0, budget.warmupSteps);
  return summarise(budget.warmupSteps, warm.reduce((a, b) => a + b, 0) / 1000, times.slice(budget.warmupSteps));
}

/** What one step of `kind` is. */
export function stepDescription(kind: SpeedKind): string {
  return kind === 'forward'
    ? 'Learner.predictProbabilities on one batch: preprocessing + forward pass in inference mode, probabilities read back'
    : 'one Learner.fit batch (one epoch of a one-batch set), all layers trainable: preprocessing + forward + backward + Adam update of every weight (BatchNorm in inference mode), loss read back';
}

/** Times `kind` for one model at one batch size (throws when it fails, e.g. out of memory). */
export async function measureOnce(
  config: ModelConfig,
  kind: SpeedKind,
  batch: number,
  budget: StepBudget,
): Promise<{ timing: StepTiming; imagesPerSecond: number }> {
  const { learner, model } = makeLearner(config, batch);
  try {
    const timing = kind === 'forward' ? await forwardSteps(learner, budget) : await trainSteps(learner, budget);
    return { timing, imagesPerSecond: round((timing.steps * batch) / timing.seconds, 3) };
  } finally {
    learner.dispose();
    model.dispose();
  }
}
