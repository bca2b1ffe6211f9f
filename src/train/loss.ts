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

/** Softmax cross-entropy, optionally weighted per class (Keras's `class_weight`) and label-smoothed. */
export function softmaxCrossEntropy(options: CrossEntropyOptions = {}): Loss {
  const { classWeights, labelSmoothing = 0 } = options;
  return (logits, labels) => {
    const k = logits.shape[1];
    // One shader forward and one backward, where these ops take about 16 dispatches.
    if (tf.getBackend() === 'webgpu') return webgpuSoftmaxCrossEntropy(logits, labels, tf.tensor1d(classWeights ?? new Array<number>(k).fill(1)), labelSmoothing);
    const oneHot = tf.oneHot(labels, k);
    const target = labelSmoothing > 0 ? tf.add(tf.mul(oneHot, 1 - labelSmoothing), labelSmoothing / k) : oneHot;
    const perSample = tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(logits)), 1));
    return tf.mean(classWeights ? tf.mul(perSample, tf.gather(tf.tensor1d(classWeights), labels)) : perSample) as tf.Scalar;
  };
}
