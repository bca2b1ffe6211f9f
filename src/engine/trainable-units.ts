/**
 * Finds the Conv → BatchNormalization (→ ReLU6) chains of a Keras functional model that can train as
 * one convBatchNormActivation op (src/engine/conv-bn-activation.ts), and runs one. For a model runner
 * that differentiates its trainable layers (SplitModel.runTop): where a unit starts, it runs the unit
 * instead of its two or three layers, when the batch norm runs in inference mode.
 *
 * A chain qualifies when the conv has no bias and no activation (MobileNetV2's), each layer's only
 * reader is the next, and the activation, if any, is a plain ReLU6 (or there is none).
 */
import * as tf from '@tensorflow/tfjs';
import { convBatchNormActivation, type UnitActivation } from './conv-bn-activation.js';
import { foldableBatchNorm, foldableConv, inboundNames, reluActivation, soleReader } from './fused-inference.js';

type Layer = tf.layers.Layer;

/** A chain that trains as one op: its layers, in order (conv, batch norm, maybe the ReLU6). */
export interface TrainableUnit {
  conv: Layer;
  bn: Layer;
  activation: UnitActivation;
  layers: Layer[];
  /** Index (in `model.layers`) of the conv, and of the unit's last layer. */
  first: number;
  last: number;
}

/**
 * For each layer index of `model`: the unit that starts there, if one does. Units never reach past
 * index `to` (default: the last layer), so a runner that stops at a layer can pass its index.
 */
export function planTrainableUnits(model: tf.LayersModel, to = model.layers.length - 1): (TrainableUnit | undefined)[] {
  const layers = model.layers;
  const inbound = layers.map(inboundNames);
  const onlyReader = soleReader(model, to);
  const plan: (TrainableUnit | undefined)[] = layers.map(() => undefined);
  for (let i = 0; i < layers.length; i++) {
    const conv = layers[i]!;
    if (!trainableConv(conv) || inbound[i]!.length !== 1 || i + 1 > to || !foldableBatchNorm(layers[i + 1]!) || !onlyReader(i, i + 1)) continue;
    const bn = layers[i + 1]!;
    const relu = i + 2 <= to && onlyReader(i + 1, i + 2) ? reluActivation(layers[i + 2]!) : undefined;
    if (relu === 'relu') continue; // the op does ReLU6 or nothing
    const last = relu === 'relu6' ? i + 2 : i + 1;
    plan[i] = { conv, bn, activation: relu ?? 'linear', layers: layers.slice(i, last + 1), first: i, last };
  }
  return plan;
}

/** A conv that folds (no activation, channels last, no dilation, multiplier 1) and has no bias. */
function trainableConv(layer: Layer): boolean {
  return foldableConv(layer) && (layer.getConfig() as { useBias?: boolean }).useBias === false;
}

/**
 * The unit's output for `x` (its conv's input), differentiable in the conv's kernel and the batch
 * norm's γ and β (inference mode: the moving statistics are constants), and in `x` when
 * `inputGradient` (false where x comes from frozen layers, or is the images).
 */
export function runTrainableUnit(unit: TrainableUnit, x: tf.Tensor, inputGradient: boolean): tf.Tensor {
  const c = unit.conv.getConfig() as { strides: [number, number]; padding: 'same' | 'valid' };
  const bnConfig = unit.bn.getConfig() as { scale?: boolean; center?: boolean; epsilon?: number };
  // Keras orders BN weights gamma (if scale), beta (if center), moving mean, moving variance.
  const weights = unit.bn.weights.map((w) => w.read() as tf.Tensor1D);
  const channels = weights[weights.length - 1]!.shape[0];
  const gamma = bnConfig.scale === false ? tf.ones([channels]) : weights.shift()!;
  const beta = bnConfig.center === false ? tf.zeros([channels]) : weights.shift()!;
  const [mean, variance] = weights as [tf.Tensor1D, tf.Tensor1D];
  return convBatchNormActivation(x as tf.Tensor4D, {
    filter: unit.conv.weights[0]!.read() as tf.Tensor4D,
    depthwise: unit.conv.getClassName() === 'DepthwiseConv2D',
    strides: c.strides,
    pad: c.padding,
    gamma: gamma as tf.Tensor1D,
    beta: beta as tf.Tensor1D,
    mean,
    variance,
    epsilon: bnConfig.epsilon ?? 1e-3,
    activation: unit.activation,
    inputGradient,
  });
}
