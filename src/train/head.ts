import * as tf from '@tensorflow/tfjs';

/** Names of the classifier head's layers: stable, so saved models and tests can find them. */
export const HEAD_LAYERS = {
  pool: 'head_pool',
  dropout: 'head_dropout',
  logits: 'head_logits',
  softmax: 'head_softmax',
} as const;

export interface HeadOptions {
  numClasses: number;
  /** Dropout rate before the dense layer (Keras's fine-tuning guide uses 0.2). */
  dropout: number;
  seed?: number;
}

/**
 * Puts a new classifier on a convolutional base: global average pooling → dropout → dense → softmax.
 * The softmax is its own layer so training can use the logits (a numerically stable loss) while the
 * saved model outputs probabilities.
 */
export function attachHead(backbone: tf.LayersModel, options: HeadOptions): tf.LayersModel {
  const features = backbone.outputs[0]!;
  const pooled = tf.layers.globalAveragePooling2d({ name: HEAD_LAYERS.pool }).apply(features) as tf.SymbolicTensor;
  const dropped = tf.layers
    .dropout({ rate: options.dropout, name: HEAD_LAYERS.dropout, seed: options.seed })
    .apply(pooled) as tf.SymbolicTensor;
  const logits = tf.layers
    .dense({
      units: options.numClasses,
      name: HEAD_LAYERS.logits,
      kernelInitializer: tf.initializers.glorotUniform({ seed: options.seed }),
    })
    .apply(dropped) as tf.SymbolicTensor;
  const probabilities = tf.layers.softmax({ name: HEAD_LAYERS.softmax }).apply(logits) as tf.SymbolicTensor;
  return tf.model({ inputs: backbone.inputs, outputs: probabilities, name: 'finetune' });
}
