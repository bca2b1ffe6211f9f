import * as tf from '@tensorflow/tfjs';
import { batchNormScaleShift, foldableBatchNorm, foldableConv, FusedInference, inboundNames, reluActivation } from '../engine/fused-inference.js';
import { relu6 } from '../engine/relu6.js';
import { planTrainableUnits, runTrainableUnit, type TrainableUnit } from '../engine/trainable-units.js';

type Layer = tf.layers.Layer;

/**
 * Runs a functional model in two parts, split after layer index `boundary` (in `model.layers`
 * order, which is topological): `runBottom` computes the boundary layer's output, `runTop` carries
 * on from it. This is what lets a frozen bottom run once (or without a gradient tape) while only the
 * trainable top is differentiated.
 *
 * The bottom runs with batch norms folded into their convolutions (see FusedInference): it is
 * frozen, so nothing differentiates through it.
 *
 * The split must cut the graph at a single tensor (true at MobileNetV2 and VGG16 block edges:
 * residual connections stay inside a block); otherwise the constructor says which layer crosses it.
 */
export class SplitModel {
  readonly boundary: number;
  private readonly inbound: string[][];
  /** Layers run by finetune's own ops rather than their `apply` (cheaper gradients), decided once. */
  private readonly ownOp: OwnOp[];
  private bottom: FusedInference | undefined;
  private top: FusedInference | undefined;
  private units: (TrainableUnit | undefined)[] | undefined;

  constructor(
    readonly model: tf.LayersModel,
    boundary: number,
  ) {
    this.boundary = boundary;
    this.inbound = model.layers.map(inboundNames);
    this.ownOp = model.layers.map((layer, i) => (this.inbound[i]!.length === 1 ? ownOpOf(layer) : undefined));
    const boundaryName = model.layers[boundary]!.name;
    for (let i = boundary + 1; i < model.layers.length; i++) {
      for (const name of this.inbound[i]!) {
        const j = model.layers.findIndex((l) => l.name === name);
        if (j < boundary) {
          throw new Error(
            `cannot split ${model.name} after ${boundaryName}: ${model.layers[i]!.name} also reads ${name}, below the split.`,
          );
        }
      }
    }
  }

  /** Output of layer `boundary` for input `x` (inference mode). */
  runBottom(x: tf.Tensor): tf.Tensor {
    if (this.boundary <= 0) return x;
    this.bottom ??= new FusedInference(this.model, 0, this.boundary);
    return this.bottom.run(x);
  }

  /**
   * Model output from the boundary tensor in inference mode (evaluation, prediction), folded like
   * the bottom; the folded weights follow the trainable ones as they change.
   */
  runTopInference(boundaryOutput: tf.Tensor): tf.Tensor {
    this.top ??= new FusedInference(this.model, this.boundary, this.model.layers.length - 1);
    return this.top.run(boundaryOutput);
  }

  /** Frees the folded weights. */
  dispose(): void {
    this.bottom?.dispose();
    this.top?.dispose();
    this.bottom = this.top = undefined;
  }

  /** Model output from the boundary tensor; `training(layer)` decides each layer's mode. */
  runTop(boundaryOutput: tf.Tensor, training: (layer: Layer) => boolean, until?: string): tf.Tensor {
    return this.run(boundaryOutput, this.boundary, this.model.layers.length - 1, training, until);
  }

  /**
   * On WebGPU, Conv → BN (inference) → ReLU6 chains run as one custom-gradient op (2 dispatches
   * forward, 3–6 backward, against ~10 + ~17 as separate ops: a GPU pays per dispatch). Elsewhere
   * the separate ops are as cheap, and keep results bit-identical to earlier versions.
   */
  private unitsFor(): (TrainableUnit | undefined)[] | undefined {
    if (tf.getBackend() !== 'webgpu') return undefined;
    return (this.units ??= planTrainableUnits(this.model));
  }

  /** Runs layers (from, to]; the tensor given is layer `from`'s output (or the model input when from = 0). */
  private run(x: tf.Tensor, from: number, to: number, training: (layer: Layer) => boolean, until?: string): tf.Tensor {
    const layers = this.model.layers;
    if (layers[from]!.name === until) return x;
    const outputs = new Map<string, tf.Tensor>([[layers[from]!.name, x]]);
    const units = this.unitsFor();
    let last = x;
    for (let i = from + 1; i <= to; i++) {
      const layer = layers[i]!;
      const inputs = this.inbound[i]!.map((name) => outputs.get(name)!);
      const unit = units?.[i];
      if (unit && unit.last <= to && !training(unit.bn)) {
        // Its input needs a gradient unless it is what the frozen part computed.
        last = runTrainableUnit(unit, inputs[0]!, this.inbound[i]![0] !== layers[from]!.name);
        for (const l of unit.layers) outputs.set(l.name, last);
        if (unit.layers.some((l) => l.name === until)) break;
        i = unit.last;
        continue;
      }
      const inTraining = training(layer);
      const own = this.ownOp[i];
      if (own === 'conv') last = convolution(layer, inputs[0]!);
      else if (own === 'batchNorm' && !inTraining) last = batchNormAsAffine(layer, inputs[0]!);
      else if (own === 'relu6') last = relu6(inputs[0]!); // one-kernel gradient
      else last = layer.apply(inputs.length === 1 ? inputs[0]! : inputs, { training: inTraining }) as tf.Tensor;
      outputs.set(layer.name, last);
      if (layer.name === until) break;
    }
    return last;
  }
}

/**
 * For each layer index b, whether the model can be split after layer b (see SplitModel): no layer
 * above b reads a layer below it, so layer b's output is all the top needs. O(layers).
 */
export function splittableAfter(model: tf.LayersModel): boolean[] {
  const index = new Map(model.layers.map((l, i) => [l.name, i]));
  const lowestInput = model.layers.map((layer, i) => Math.min(i, ...inboundNames(layer).map((name) => index.get(name) ?? i)));
  const ok = new Array<boolean>(model.layers.length).fill(true);
  let lowestAbove = Infinity;
  for (let b = model.layers.length - 1; b >= 0; b--) {
    ok[b] = lowestAbove >= b;
    lowestAbove = Math.min(lowestAbove, lowestInput[b]!);
  }
  return ok;
}

type OwnOp = 'conv' | 'batchNorm' | 'relu6' | undefined;

function ownOpOf(layer: Layer): OwnOp {
  if (foldableConv(layer)) return 'conv';
  if (foldableBatchNorm(layer)) return 'batchNorm';
  return reluActivation(layer) === 'relu6' ? 'relu6' : undefined;
}

/**
 * A convolution layer as tf.conv2d / tf.depthwiseConv2d (plus its bias). The layer's own apply
 * runs tf.fused.conv2d, whose gradient computes the input's gradient even where nothing needs it:
 * for the lowest trainable convolution that is a whole backward convolution per step for nothing
 * (74 ms of a MobileNetV2-224 step at batch 16 on WASM, for Conv1). These ops' gradients compute
 * only what the tape asks for.
 */
export function convolution(layer: Layer, x: tf.Tensor): tf.Tensor {
  const c = layer.getConfig() as { strides: [number, number]; padding: 'same' | 'valid'; useBias?: boolean };
  const [kernel, bias] = layer.weights.map((w) => w.read());
  const y =
    layer.getClassName() === 'DepthwiseConv2D'
      ? tf.depthwiseConv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, c.strides, c.padding)
      : tf.conv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, c.strides, c.padding);
  return c.useBias && bias ? tf.add(y, bias) : y;
}

/**
 * A BatchNormalization layer in inference mode as x · s + b, with s = γ / √(σ² + ε) and
 * b = β − μ · s: the same values, but its gradient is a broadcast multiply and a sum, where tfjs'
 * batchNorm gradient tiles γ and the statistics to the activations' full size (Tile was 43 % of a
 * MobileNetV2 fine-tuning step on WASM). γ and β still get their gradients.
 */
function batchNormAsAffine(layer: Layer, x: tf.Tensor): tf.Tensor {
  const { scale, shift } = batchNormScaleShift(layer);
  return tf.add(tf.mul(x, scale), shift);
}
