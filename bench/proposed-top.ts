/**
 * The call-site change proposed for src/train/graph.ts (SplitModel.run), simulated for the counts
 * benchmark without editing that file: the same loop over the trainable layers, except that where
 * a Conv → BN (→ ReLU6) unit starts and its batch norm runs in inference mode, the unit runs as one
 * convBatchNormActivation op (planTrainableUnits / runTrainableUnit, src/engine/trainable-units.ts).
 * Every other layer runs exactly as SplitModel runs it today (its own conv, affine batch norm and
 * ReLU6 ops, else the layer's apply). `withProposedRunTop` installs it on SplitModel for the
 * duration of a callback.
 */
import * as tf from '@tensorflow/tfjs';
import { batchNormScaleShift, foldableBatchNorm, foldableConv, inboundNames, reluActivation } from '../src/engine/fused-inference.js';
import { relu6 } from '../src/engine/relu6.js';
import { planTrainableUnits, runTrainableUnit, type TrainableUnit } from '../src/engine/trainable-units.js';
import { SplitModel } from '../src/train/graph.js';

type Layer = tf.layers.Layer;

const plans = new WeakMap<tf.LayersModel, (TrainableUnit | undefined)[]>();

function proposedRunTop(this: SplitModel, boundaryOutput: tf.Tensor, training: (layer: Layer) => boolean, until?: string): tf.Tensor {
  const layers = this.model.layers;
  const from = this.boundary;
  let units = plans.get(this.model);
  if (!units) plans.set(this.model, (units = planTrainableUnits(this.model)));
  if (layers[from]!.name === until) return boundaryOutput;
  const index = new Map(layers.map((l, i) => [l.name, i]));
  const outputs = new Map<string, tf.Tensor>([[layers[from]!.name, boundaryOutput]]);
  let last = boundaryOutput;
  for (let i = from + 1; i < layers.length; i++) {
    const layer = layers[i]!;
    const inbound = inboundNames(layer);
    const inputs = inbound.map((name) => outputs.get(name)!);
    const unit = units[i];
    if (unit && !training(unit.bn)) {
      // The proposed lines: the unit as one op; its input needs a gradient unless it is the boundary's.
      last = runTrainableUnit(unit, inputs[0]!, index.get(inbound[0]!) !== from);
      for (const l of unit.layers) outputs.set(l.name, last);
      if (unit.layers.some((l) => l.name === until)) break;
      i = unit.last;
      continue;
    }
    // As SplitModel.run today.
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

/** SplitModel's convolution(): tf.conv2d / tf.depthwiseConv2d plus the bias. */
function convolution(layer: Layer, x: tf.Tensor): tf.Tensor {
  const c = layer.getConfig() as { strides: [number, number]; padding: 'same' | 'valid'; useBias?: boolean };
  const [kernel, bias] = layer.weights.map((w) => w.read());
  const y =
    layer.getClassName() === 'DepthwiseConv2D'
      ? tf.depthwiseConv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, c.strides, c.padding)
      : tf.conv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, c.strides, c.padding);
  return c.useBias && bias ? tf.add(y, bias) : y;
}

/** Runs `body` with SplitModel.runTop replaced by the proposed one; puts SplitModel back after. */
export async function withProposedRunTop<T>(body: () => Promise<T>): Promise<T> {
  const shipped = Object.getOwnPropertyDescriptor(SplitModel.prototype, 'runTop')!;
  Object.defineProperty(SplitModel.prototype, 'runTop', { ...shipped, value: proposedRunTop });
  try {
    return await body();
  } finally {
    Object.defineProperty(SplitModel.prototype, 'runTop', shipped);
  }
}
