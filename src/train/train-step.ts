import * as tf from '@tensorflow/tfjs';
import { softmaxCrossEntropy, type Loss } from './loss.js';
import { mixedLoss } from './mix.js';
import { WebGPUAdam } from '../engine/webgpu-adam.js';
import { FusedAdam } from './optimizer.js';
import type { NamedTensor } from './types.js';

/** What a TrainStep needs of an optimizer (FusedAdam, or any tfjs-style optimizer wrapped to this). */
export interface StepOptimizer {
  learningRate: number;
  applyGradients(gradients: tf.NamedTensorMap): void;
  /** Its slots, for checkpoints (`getWeights()[0]` is a fresh tensor the caller disposes). */
  getWeights(): Promise<NamedTensor[]>;
  setWeights(weights: NamedTensor[]): Promise<void>;
  dispose(): void;
}

/**
 * Makes a stage's optimizer over the variables that train in it. `lrScales` (one per variable, when
 * given) multiply the learning rate per variable: discriminative learning rates (`--layer-lr-decay`).
 */
export type OptimizerFactory = (variables: tf.Variable[], learningRate: number, lrScales?: number[]) => StepOptimizer;

/**
 * A training metric, summed over each batch on the device (read back rarely: a read stalls a GPU);
 * its epoch value is the sum over the epoch divided by the images seen.
 */
export interface Metric {
  readonly name: string;
  batchSum(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar;
}

/** The fraction of images whose highest logit is their label. */
export const accuracy: Metric = {
  name: 'accuracy',
  batchSum: (logits, labels) => tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32')) as tf.Scalar,
};

/** The pluggable parts of a training step; each has a default. */
export interface TrainStepParts {
  /** Default: softmax cross-entropy (class-weighted when the Trainer is given class weights). */
  loss?: Loss;
  /** Default: Adam (`defaultAdam`: FusedAdam, or WebGPUAdam on WebGPU). */
  optimizer?: OptimizerFactory;
  /** Default: [accuracy]. The first is the one EpochLogs.accuracy reports. */
  metrics?: Metric[];
}

export const fusedAdam: OptimizerFactory = (variables, lr, lrScales) => new FusedAdam(variables, lr, { lrScales });

/**
 * The default optimizer: Adam as FusedAdam's arithmetic, on WebGPU as two shaders per step plus one
 * per variable (WebGPUAdam) instead of a dozen flat ops and a slice and an add per variable.
 */
export const defaultAdam: OptimizerFactory = (variables, lr, lrScales) =>
  tf.getBackend() === 'webgpu' ? new WebGPUAdam(variables, lr, { lrScales }) : new FusedAdam(variables, lr, { lrScales });

/** Loss and metric values of the images stepped on so far (means over them). */
export interface StepTotals {
  loss: number;
  metrics: Record<string, number>;
  images: number;
}

/**
 * One gradient step on a batch — forward through the trainable part, the loss, gradients, the
 * optimizer's update — with the loss and metrics accumulated on the device across steps. The
 * Trainer decides what a batch is; this decides what a step does with it.
 */
export class TrainStep {
  readonly optimizer: StepOptimizer;
  private readonly loss: Loss;
  private readonly metrics: Metric[];
  /** Sum of loss × batch size, then one sum per metric. */
  private sums: tf.Scalar[] | undefined;
  private images = 0;

  constructor(
    /** The logits of a batch, from what the frozen part computed (the gradient tape is on). */
    private readonly forward: (boundaryInput: tf.Tensor, dropoutSeed: number) => tf.Tensor2D,
    private readonly variables: tf.Variable[],
    learningRate: number,
    parts: TrainStepParts = {},
    /** Per-variable multipliers of the learning rate (default: all 1). */
    lrScales?: number[],
  ) {
    this.loss = parts.loss ?? softmaxCrossEntropy();
    this.metrics = parts.metrics ?? [accuracy];
    this.optimizer = (parts.optimizer ?? defaultAdam)(variables, learningRate, lrScales);
  }

  /** Names of the metrics, in order. */
  get metricNames(): string[] {
    return this.metrics.map((m) => m.name);
  }

  /** Starts new totals (an epoch). */
  reset(): void {
    tf.dispose(this.sums);
    this.sums = undefined;
    this.images = 0;
  }

  /**
   * One step on a batch: `boundaryInput` is the frozen part's output for it, `labels` its classes.
   * `mixedWith`: the batch was mixed (mixup, CutMix) with these labels in proportion 1 − lambda, and
   * the loss is lambda·loss(labels) + (1 − lambda)·loss(mixedWith); metrics count `labels`.
   */
  step(boundaryInput: tf.Tensor, labels: tf.Tensor1D, dropoutSeed: number, mixedWith?: { labels: tf.Tensor1D; lambda: number }): void {
    const previous = this.sums ?? tf.tidy(() => [tf.scalar(0), ...this.metrics.map(() => tf.scalar(0))]);
    this.sums = tf.tidy(() => {
      let logits: tf.Tensor2D | undefined;
      const { value, grads } = tf.variableGrads(() => {
        logits = tf.keep(this.forward(boundaryInput, dropoutSeed));
        return mixedWith ? mixedLoss(this.loss, logits, labels, mixedWith.labels, mixedWith.lambda) : this.loss(logits, labels);
      }, this.variables);
      this.optimizer.applyGradients(grads);
      const n = labels.shape[0];
      const next = [tf.add(previous[0]!, tf.mul(value, n)), ...this.metrics.map((m, i) => tf.add(previous[i + 1]!, m.batchSum(logits!, labels)))];
      logits!.dispose(); // kept to leave the gradient tape; tidy() won't free it
      return next as tf.Scalar[];
    });
    tf.dispose(previous);
    this.images += labels.shape[0];
  }

  /** The totals so far, read back from the device (this waits for the queued steps). */
  async read(): Promise<StepTotals> {
    const values = this.sums ? await Promise.all(this.sums.map(async (t) => (await t.data())[0]!)) : [];
    const n = Math.max(1, this.images);
    return {
      loss: this.images > 0 ? values[0]! / n : Number.NaN,
      metrics: Object.fromEntries(this.metrics.map((m, i) => [m.name, this.images > 0 ? values[i + 1]! / n : Number.NaN])),
      images: this.images,
    };
  }

  dispose(): void {
    this.reset();
    this.optimizer.dispose();
  }
}
