/**
 * The classifier head solved as an L2-regularised (multinomial) logistic regression on fixed
 * features, to convergence with L-BFGS: a *linear probe*, as scikit-learn's LogisticRegression and
 * CLIP's evaluations fit one. Used as stage 1 it is the "LP" of LP-FT (Kumar et al. 2022, "Fine-Tuning
 * can Distort Pretrained Features"): stage 2 then fine-tunes from a head that is already at its
 * optimum instead of one that a few epochs of Adam left part way.
 */
import * as tf from '@tensorflow/tfjs';
import { lbfgs, type LbfgsResult } from './lbfgs.js';
import type { Loss } from './loss.js';
import { accuracy } from './train-step.js';

export interface LinearProbeOptions {
  /**
   * L2 penalty on the kernel: the objective is the mean loss + l2 · ‖W‖² (Keras's `l2` regularizer;
   * the bias is not penalised). scikit-learn's C on n rows is l2 = 1 / (2 · C · n).
   */
  l2: number;
  /** The loss of the training step (class weights, label smoothing). */
  loss: Loss;
  /** Most L-BFGS iterations (default 500). */
  maxIterations?: number;
  /** After each iteration (it may throw to stop the solve, e.g. when interrupted). */
  onIteration?: (iteration: number) => void;
}

export interface LinearProbeResult extends Pick<LbfgsResult, 'iterations' | 'reason'> {
  /** The mean loss on the features at the solution (without the penalty) and the accuracy there. */
  loss: number;
  accuracy: number;
}

/**
 * Solves `kernel` (D × K) and `bias` (K) for `features` (N × D) and `labels` (N class indices),
 * starting from zero, and writes the solution into them. Deterministic: the optimum of a strictly
 * convex objective does not depend on the seed.
 */
export async function solveLinearProbe(
  features: tf.Tensor2D,
  labels: tf.Tensor1D,
  kernel: tf.Variable,
  bias: tf.Variable | undefined,
  options: LinearProbeOptions,
): Promise<LinearProbeResult> {
  const [d, k] = kernel.shape as [number, number];
  if (features.shape[1] !== d) throw new Error(`solveLinearProbe: features of ${features.shape[1]} values for a ${d} × ${k} kernel`);
  const split = (x: Float64Array) => {
    const w = tf.tensor2d(Float32Array.from(x.subarray(0, d * k)), [d, k]);
    const b = tf.tensor1d(bias ? Float32Array.from(x.subarray(d * k)) : new Float32Array(k));
    return [w, b] as const;
  };
  const objective = async (x: Float64Array) => {
    const [w, b] = split(x);
    const { value, grads } = tf.tidy(() =>
      tf.valueAndGrads((wt: tf.Tensor, bt: tf.Tensor) => {
        const logits = tf.add(tf.matMul(features, wt), bt) as tf.Tensor2D;
        const dataLoss = options.loss(logits, labels);
        return options.l2 > 0 ? tf.add(dataLoss, tf.mul(tf.sum(tf.square(wt)), options.l2)) : dataLoss;
      })([w, b]),
    );
    tf.dispose([w, b]);
    const [gw, gb] = await Promise.all(grads.map((g) => g.data()));
    const v = (await value.data())[0]!;
    tf.dispose([value, ...grads]);
    const gradient = new Float64Array(d * k + (bias ? k : 0));
    gradient.set(gw!);
    if (bias) gradient.set(gb!, d * k);
    return { value: v, gradient };
  };
  const solution = await lbfgs(objective, new Float64Array(d * k + (bias ? k : 0)), {
    maxIterations: options.maxIterations ?? 500,
    ...(options.onIteration ? { onIteration: options.onIteration } : {}),
  });
  const [w, b] = split(solution.x);
  kernel.assign(w);
  bias?.assign(b);
  const measured = tf.tidy(() => {
    const logits = tf.add(tf.matMul(features, w), b) as tf.Tensor2D;
    return [options.loss(logits, labels), tf.div(accuracy.batchSum(logits, labels), labels.shape[0])];
  });
  const [loss, trainAccuracy] = await Promise.all(measured.map(async (t) => (await t.data())[0]!));
  tf.dispose([w, b, ...measured]);
  return { iterations: solution.iterations, reason: solution.reason, loss: loss!, accuracy: trainAccuracy! };
}
