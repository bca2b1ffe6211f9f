import * as tf from '@tensorflow/tfjs';

/**
 * A training loss: the mean over the batch, from the classifier's logits (N × K) and the labels
 * (N class indices). The TrainStep differentiates it; a new loss is one function like the one below.
 */
export type Loss = (logits: tf.Tensor2D, labels: tf.Tensor1D) => tf.Scalar;

export interface CrossEntropyOptions {
  /** Loss weight per class (e.g. balanced weights for imbalanced folders). */
  classWeights?: number[];
}

/** Softmax cross-entropy, optionally weighted per class (Keras's `class_weight`). */
export function softmaxCrossEntropy(options: CrossEntropyOptions = {}): Loss {
  const { classWeights } = options;
  return (logits, labels) => {
    const perSample = tf.neg(tf.sum(tf.mul(tf.oneHot(labels, logits.shape[1]), tf.logSoftmax(logits)), 1));
    return tf.mean(classWeights ? tf.mul(perSample, tf.gather(tf.tensor1d(classWeights), labels)) : perSample) as tf.Scalar;
  };
}
