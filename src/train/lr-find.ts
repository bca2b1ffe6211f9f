/**
 * The learning-rate range test (Smith 2015; fastai's `lr_find`): train on batches while the
 * learning rate grows exponentially from `startLr` to `endLr` over `steps` steps, record the loss
 * of each batch, smooth it, and stop once it diverges. The curve shows where a rate is too small to
 * learn (flat), right (falling) and too large (rising); `valley` picks a rate from it.
 *
 * It runs on a Trainer as its stages do (cached frozen features when nothing augments them), and
 * puts the trained weights back afterwards, so the trainer is left as it was found.
 */
import * as tf from '@tensorflow/tfjs';
import { FinetuneError, InterruptedError } from '../errors.js';
import type { Trainer } from './trainer.js';
import type { Callback } from './types.js';

export interface LrFindOptions {
  /** First learning rate (fastai: 1e-7). */
  startLr?: number;
  /** Last learning rate, reached at `steps` (fastai: 10). */
  endLr?: number;
  /** Steps of the sweep (fastai: 100). */
  steps?: number;
  /** Stop when the smoothed loss exceeds this times its minimum (fastai: 4). */
  divergeFactor?: number;
  /** Weight of the past in the smoothed loss, debiased like Adam's moments (fastai: 0.98). */
  smoothing?: number;
  /** The stage whose layers train: 1 the head, 2 what `unfreeze` made trainable (default 1). */
  stage?: number;
}

export interface LrFindResult {
  /** Learning rate of each step taken. */
  lrs: number[];
  /** Loss of each step's batch. */
  losses: number[];
  /** The smoothed (debiased exponential moving average) loss after each step. */
  smoothed: number[];
  /** True when the sweep stopped because the loss diverged (else it ran all its steps). */
  diverged: boolean;
  /** The suggested rate (fastai's 'valley') and, for reference, the other usual readings of the curve. */
  suggestion: { lr: number; method: 'valley'; index: number };
  alternatives: { steepest: number; minimumOver10: number };
  options: Required<LrFindOptions>;
}

const DEFAULTS: Required<LrFindOptions> = { startLr: 1e-7, endLr: 10, steps: 100, divergeFactor: 4, smoothing: 0.98, stage: 1 };

/** The rate of step `i` (0-based) of an exponential sweep from `start` to `end` over `steps` steps. */
export function sweepRate(start: number, end: number, steps: number, i: number): number {
  return start * (end / start) ** (i / Math.max(1, steps - 1));
}

/**
 * Runs the range test on `trainer`'s trainable layers (freeze or unfreeze it first) and gives its
 * weights back afterwards. Throws a FinetuneError when fewer than 10 steps could be taken.
 */
export async function lrRangeTest(trainer: Trainer, options: LrFindOptions = {}): Promise<LrFindResult> {
  const o = { ...DEFAULTS, ...options };
  if (!(o.startLr > 0 && o.endLr > o.startLr)) throw new FinetuneError(`the range test needs 0 < start (${o.startLr}) < end (${o.endLr}).`);
  const images = trainer.data.train.images.length;
  const perEpoch = Math.ceil(images / trainer.batchSize);
  const lrs: number[] = [];
  const losses: number[] = [];
  const smoothed: number[] = [];
  let average = 0;
  let best = Infinity;
  let diverged = false;
  let previousSum = 0;
  const stop = new AbortController();
  const sweep: Callback = {
    onEpochBegin: () => void (previousSum = 0),
    onBatchBegin: (ctx) => {
      ctx.trainer.learningRate = sweepRate(o.startLr, o.endLr, o.steps, lrs.length);
    },
    onBatchEnd: (ctx, logs) => {
      if (stop.signal.aborted) return;
      // The logs carry the epoch's mean loss so far: this batch's is the difference of the sums.
      const seen = Math.min(images, logs.batch * ctx.trainer.batchSize);
      const sum = logs.loss * seen;
      const loss = (sum - previousSum) / (seen - Math.min(images, (logs.batch - 1) * ctx.trainer.batchSize));
      previousSum = sum;
      lrs.push(ctx.trainer.learningRate);
      losses.push(loss);
      average = o.smoothing * average + (1 - o.smoothing) * loss;
      const smooth = average / (1 - o.smoothing ** losses.length);
      smoothed.push(smooth);
      best = Math.min(best, smooth);
      if (!Number.isFinite(smooth) || smooth > o.divergeFactor * best) diverged = true;
      if (diverged || lrs.length >= o.steps) stop.abort();
    },
  };
  const saved = trainer.snapshot();
  const callbacks = trainer.callbacks;
  const batchSize = trainer.batchSize;
  const readback = trainer.options.readbackSeconds;
  trainer.callbacks = [sweep];
  trainer.options.readbackSeconds = 0; // every batch's loss is read back: the sweep needs each one
  try {
    await trainer.fit(Math.ceil(o.steps / perEpoch) + 1, o.startLr, o.stage, { signal: stop.signal });
  } catch (error) {
    // The sweep ends by aborting; a loss that became NaN or infinite is the divergence it looks for.
    if (!(error instanceof InterruptedError) && !(error instanceof FinetuneError && /training loss became/.test(error.message))) throw error;
    if (!(error instanceof InterruptedError)) diverged = true;
  } finally {
    trainer.callbacks = callbacks;
    trainer.restore(saved);
    tf.dispose([...saved.values()]);
    trainer.batchSize = batchSize;
    trainer.options.readbackSeconds = readback;
  }
  if (lrs.length < 10) {
    throw new FinetuneError(
      `the range test took only ${lrs.length} steps before the loss diverged: start lower (--start-lr ${o.startLr}) or give more training images.`,
    );
  }
  const valleyIndex = valley(smoothed, o.steps);
  return {
    lrs,
    losses,
    smoothed,
    diverged,
    suggestion: { lr: lrs[valleyIndex]!, method: 'valley', index: valleyIndex },
    alternatives: { steepest: lrs[steepest(lrs, smoothed, o.steps)]!, minimumOver10: lrs[smoothed.indexOf(Math.min(...smoothed))]! / 10 },
    options: o,
  };
}

/** The part of the curve fastai reads suggestions from: the first tenth of the sweep and the last 5 steps are noise. */
function window(n: number, steps: number): [number, number] {
  const from = Math.floor(steps / 10);
  const to = Math.max(from + 1, n - 5);
  return to - from >= 3 ? [from, to] : [0, n];
}

/**
 * fastai's 'valley' (its default suggestion since 2.5): the longest run of steps along which the
 * smoothed loss keeps falling (longest decreasing subsequence), and the point two thirds of the way
 * down it — a rate in the steep part of the valley, well before the minimum, where the loss is
 * still falling fast. Returns an index into `smoothed`.
 */
export function valley(smoothed: number[], steps: number): number {
  const [from, to] = window(smoothed.length, steps);
  const losses = smoothed.slice(from, to);
  const n = losses.length;
  const lds = new Array<number>(n).fill(1);
  let maxStart = 0;
  let maxEnd = 0;
  for (let i = 1; i < n; i++) {
    for (let j = 0; j < i; j++) {
      if (losses[i]! < losses[j]! && lds[i]! < lds[j]! + 1) lds[i] = lds[j]! + 1;
      if (lds[maxEnd]! < lds[i]!) {
        maxEnd = i;
        maxStart = maxEnd - lds[maxEnd]!;
      }
    }
  }
  const sections = (maxEnd - maxStart) / 3;
  return from + Math.max(0, maxStart + Math.floor(sections) + Math.floor(sections / 2));
}

/** fastai's 'steep': where the smoothed loss falls fastest against log(lr). Returns an index. */
export function steepest(lrs: number[], smoothed: number[], steps: number): number {
  const [from, to] = window(smoothed.length, steps);
  let best = from;
  let bestSlope = Infinity;
  // As fastai: the slope from step i to i + 1 is reported at i.
  for (let i = from; i + 1 < to; i++) {
    const slope = (smoothed[i + 1]! - smoothed[i]!) / (Math.log(lrs[i + 1]!) - Math.log(lrs[i]!));
    if (slope < bestSlope) {
      bestSlope = slope;
      best = i;
    }
  }
  return best;
}
