/**
 * SplitModel.run as it was before trainable Conv → BN (→ ReLU6) units ran as one op on WebGPU
 * (src/train/graph.ts, 5486ff5): every layer as its own op — the conv, the affine batch norm, ReLU6
 * — else the layer's apply. With FusedAdam as the optimizer (a Trainer option) it is the training
 * step as it was, for measuring what the units and WebGPUAdam changed (counts, speed) on the same
 * machine. `withSeparateOpsRunTop` installs it on SplitModel for the duration of a callback.
 */
import * as tf from '@tensorflow/tfjs';
import { batchNormScaleShift, foldableBatchNorm, foldableConv, inboundNames, reluActivation } from '../src/engine/fused-inference.js';
import { relu6 } from '../src/engine/relu6.js';
import { convolution, SplitModel } from '../src/train/graph.js';

type Layer = tf.layers.Layer;

function separateOpsRunTop(this: SplitModel, boundaryOutput: tf.Tensor, training: (layer: Layer) => boolean, until?: string): tf.Tensor {
  const layers = this.model.layers;
  const from = this.boundary;
  if (layers[from]!.name === until) return boundaryOutput;
  const outputs = new Map<string, tf.Tensor>([[layers[from]!.name, boundaryOutput]]);
  let last = boundaryOutput;
  for (let i = from + 1; i < layers.length; i++) {
    const layer = layers[i]!;
    const inputs = inboundNames(layer).map((name) => outputs.get(name)!);
    const single = inputs.length === 1;
    if (single && foldableConv(layer)) last = convolution(layer, inputs[0]!);
    else if (single && foldableBatchNorm(layer) && !training(layer)) {
      const { scale, shift } = batchNormScaleShift(layer);
      last = tf.add(tf.mul(inputs[0]!, scale), shift);
    } else if (single && reluActivation(layer) === 'relu6') last = relu6(inputs[0]!);
    else last = layer.apply(single ? inputs[0]! : inputs, { training: training(layer) }) as tf.Tensor;
    outputs.set(layer.name, last);
    if (layer.name === until) break;
  }
  return last;
}

/** Runs `body` with SplitModel.runTop running every layer as its own op; puts SplitModel back after. */
export async function withSeparateOpsRunTop<T>(body: () => Promise<T>): Promise<T> {
  const shipped = Object.getOwnPropertyDescriptor(SplitModel.prototype, 'runTop')!;
  Object.defineProperty(SplitModel.prototype, 'runTop', { ...shipped, value: separateOpsRunTop });
  try {
    return await body();
  } finally {
    Object.defineProperty(SplitModel.prototype, 'runTop', shipped);
  }
}
