/**
 * An exponential moving average of the weights that train (`--ema`), as Ultralytics and timm keep
 * one: after every optimizer step each averaged value becomes d·average + (1 − d)·weight. The
 * average is smoother than the last step's weights, and it is what validation, early stopping,
 * the kept (best) epoch and the saved model see; training itself goes on from the raw weights.
 *
 * The decay ramps up so the first average is not dominated by the weights it started from:
 * d = min(decay, (1 + n) / (10 + n)) after n updates, TensorFlow's `ExponentialMovingAverage(
 * num_updates=n)`. Ultralytics' ramp decay·(1 − exp(−n/2000)) is tuned for runs of tens of
 * thousands of steps; a finetune stage is often under a hundred (hymenoptera: 8 steps an epoch), where
 * that ramp would keep d near 0 for the whole run and the average would just be the weights. This
 * one reaches 0.9 after 80 updates and 0.99 after 890, whatever the run's length.
 */
import * as tf from '@tensorflow/tfjs';
import { stableWeights } from './checkpoint.js';

/** The decay used for update number `updates` + 1 (0-based count of updates done so far). */
export function rampedDecay(decay: number, updates: number): number {
  return Math.min(decay, (1 + updates) / (10 + updates));
}

export class WeightAverage {
  /** Updates done so far (the ramp's n). */
  updates = 0;
  private readonly average: Map<tf.Variable, tf.Tensor>;
  /** The raw weights while the average is swapped in. */
  private raw: Map<tf.Variable, tf.Tensor> | undefined;

  /** Starts the average at the variables' current values. */
  constructor(
    readonly variables: tf.Variable[],
    readonly decay: number,
  ) {
    this.average = new Map(variables.map((v) => [v, tf.keep(v.clone())]));
  }

  /** One update, after an optimizer step. */
  update(): void {
    const d = rampedDecay(this.decay, this.updates);
    for (const [variable, previous] of this.average) {
      const next = tf.tidy(() => tf.add(tf.mul(previous, d), tf.mul(variable, 1 - d)));
      previous.dispose();
      this.average.set(variable, tf.keep(next));
    }
    this.updates += 1;
  }

  /** Puts the average into the variables (for evaluation and what callbacks keep); `swapOut` undoes it. */
  swapIn(): void {
    if (this.raw) return;
    this.raw = new Map();
    for (const [variable, value] of this.average) {
      this.raw.set(variable, tf.keep(variable.clone()));
      variable.assign(value);
    }
  }

  /** Gives the variables their raw (trained) values back. */
  swapOut(): void {
    if (!this.raw) return;
    for (const [variable, value] of this.raw) {
      variable.assign(value);
      value.dispose();
    }
    this.raw = undefined;
  }

  /** Leaves the average in the variables for good (the end of a stage). */
  keep(): void {
    this.swapIn();
    if (this.raw) for (const value of this.raw.values()) value.dispose();
    this.raw = undefined;
  }

  /** The average of every weight of `model` in `stableWeights` order (weights not averaged: their values), for checkpoints. */
  checkpointValues(model: tf.LayersModel): tf.Tensor[] {
    return stableWeights(model).map((w) => this.average.get(w.read() as tf.Variable) ?? w.read());
  }

  /** Takes back what `checkpointValues` gave (copies are kept; the caller still owns `values`). */
  restore(model: tf.LayersModel, values: tf.Tensor[], updates: number): void {
    stableWeights(model).forEach((w, i) => {
      const variable = w.read() as tf.Variable;
      const previous = this.average.get(variable);
      if (!previous) return;
      previous.dispose();
      this.average.set(variable, tf.keep(values[i]!.clone()));
    });
    this.updates = updates;
  }

  dispose(): void {
    this.swapOut();
    for (const t of this.average.values()) t.dispose();
    this.average.clear();
  }
}
