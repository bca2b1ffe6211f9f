import * as tf from '@tensorflow/tfjs';
import { webgpuSoftmaxCrossEntropy } from '../engine/webgpu-loss.js';

/**
 * A training loss: the mean over the batch, from the classifier's logits (N × K) and the labels
 * (N class indices). The TrainStep differentiates it; a new loss is one function like the one below.
 */
export type Loss = (logits: tf.Tensor2D, labels: tf.Tensor1D) => tf.Scalar;

export interface CrossEntropyOptions {
  /** Loss weight per class (e.g. balanced weights for imbalanced folders). */
  classWeights?: number[];
  /**
   * Label smoothing ε (Szegedy et al. 2016): the target puts 1 − ε on the label and ε/K on every
   * class, so the model is not pushed towards ever more confident logits. 0: none.
   */
  labelSmoothing?: number;
}

/**
 * Softmax cross-entropy, optionally weighted per class (Keras's `class_weight`) and label-smoothed.
 * On WebGPU one shader forward and one backward (src/engine/webgpu-loss.ts), where the tfjs ops of
 * `opsSoftmaxCrossEntropy` take about 19 dispatches; elsewhere those ops.
 */
export function softmaxCrossEntropy(options: CrossEntropyOptions = {}): Loss {
  const { classWeights, labelSmoothing = 0 } = options;
  const ops = opsSoftmaxCrossEntropy(options);
  return (logits, labels) => {
    if (tf.getBackend() !== 'webgpu') return ops(logits, labels);
    const weights = tf.tensor1d(classWeights ?? new Array<number>(logits.shape[1]).fill(1));
    return webgpuSoftmaxCrossEntropy(logits, labels, weights, labelSmoothing);
  };
}

/** The same loss as tfjs ops on every backend (the reference for the WebGPU shaders). */
export function opsSoftmaxCrossEntropy(options: CrossEntropyOptions = {}): Loss {
  const { classWeights, labelSmoothing = 0 } = options;
  return (logits, labels) => {
    const k = logits.shape[1];
    const oneHot = tf.oneHot(labels, k);
    const target = labelSmoothing > 0 ? tf.add(tf.mul(oneHot, 1 - labelSmoothing), labelSmoothing / k) : oneHot;
    const perSample = tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(logits)), 1));
    return tf.mean(classWeights ? tf.mul(perSample, tf.gather(tf.tensor1d(classWeights), labels)) : perSample) as tf.Scalar;
  };
}
