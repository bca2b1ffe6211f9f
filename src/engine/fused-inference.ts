/**
 * Runs a stretch of a Keras functional model in inference mode with each
 * Conv2D/DepthwiseConv2D → BatchNormalization (→ ReLU/ReLU6) chain folded into one fused
 * convolution: the batch-norm scale goes into the kernel, its shift into a bias, and the
 * activation into the same op. That is three ops fewer per block and no separate pass over the
 * activations for the batch norm — the slowest kernel of a MobileNetV2 forward on WASM (FusedBatchNorm
 * took more time than all the convolutions together).
 *
 * Only for frozen layers (no gradients flow through the folded weights). Folded weights are
 * computed once and recomputed when any weight they came from is assigned (tfjs gives a variable a
 * new dataId on every assign), so loading or restoring weights can never leave them stale.
 * Layers that do not fold run as themselves.
 */
import * as tf from '@tensorflow/tfjs';

type Layer = tf.layers.Layer;
type Activation = 'linear' | 'relu' | 'relu6';

/** One step of the plan: a folded chain, or a layer applied as is. */
type Step =
  | { kind: 'layer'; layer: Layer; inputs: string[]; output: string }
  | { kind: 'fused'; conv: Layer; bn: Layer; activation: Activation; input: string; output: string };

interface Folded {
  /** The dataIds the folded tensors were made from, in a fixed order. */
  sources: object[];
  filter: tf.Tensor4D;
  bias: tf.Tensor1D;
}

/** The layers (by name) whose output each layer reads, for its first call. */
export function inboundNames(layer: Layer): string[] {
  const node = layer.inboundNodes[0];
  return node ? node.inboundLayers.map((l) => l.name) : [];
}

/**
 * `(i, j) => whether layer j (at most `to`) is the only layer reading layer i's output, and reads
 * nothing else`: the test for fusing a chain of layers into one step.
 */
export function soleReader(model: tf.LayersModel, to: number): (i: number, j: number) => boolean {
  const layers = model.layers;
  const inbound = layers.map(inboundNames);
  const readers = new Map<string, number>();
  for (const names of inbound) for (const name of names) readers.set(name, (readers.get(name) ?? 0) + 1);
  return (i, j) => j <= to && readers.get(layers[i]!.name) === 1 && inbound[j]!.length === 1 && inbound[j]![0] === layers[i]!.name;
}

function dataIdOf(v: tf.Tensor): object {
  return v.dataId;
}

function config(layer: Layer): Record<string, unknown> {
  return layer.getConfig() as Record<string, unknown>;
}

/**
 * An inference-mode BatchNormalization layer as y = x · scale + shift: scale = γ / √(σ² + ε),
 * shift = β − μ · scale. Differentiable in γ and β.
 */
export function batchNormScaleShift(layer: Layer): { scale: tf.Tensor1D; shift: tf.Tensor1D } {
  const c = config(layer);
  // Keras orders BN weights gamma (if scale), beta (if center), moving mean, moving variance.
  const weights = layer.weights.map((w) => w.read() as tf.Tensor1D);
  const gamma = c.scale === false ? undefined : weights.shift();
  const beta = c.center === false ? undefined : weights.shift();
  const [mean, variance] = weights as [tf.Tensor1D, tf.Tensor1D];
  const inv = tf.rsqrt(tf.add(variance, (c.epsilon as number | undefined) ?? 1e-3));
  const scale = (gamma ? tf.mul(gamma, inv) : inv) as tf.Tensor1D;
  const centred = tf.neg(tf.mul(mean, scale));
  return { scale, shift: (beta ? tf.add(beta, centred) : centred) as tf.Tensor1D };
}

/** The fused activation a ReLU layer amounts to, if it is plain relu or relu6. */
export function reluActivation(layer: Layer): Activation | undefined {
  if (layer.getClassName() !== 'ReLU') return undefined;
  const c = config(layer);
  if ((c.threshold ?? 0) !== 0 || (c.negativeSlope ?? 0) !== 0) return undefined;
  if (c.maxValue == null) return 'relu';
  return c.maxValue === 6 ? 'relu6' : undefined;
}

/** A Conv2D or DepthwiseConv2D (multiplier 1) with no activation, channels last, not dilated. */
export function foldableConv(layer: Layer): boolean {
  const cls = layer.getClassName();
  if (cls !== 'Conv2D' && cls !== 'DepthwiseConv2D') return false;
  const c = config(layer);
  const dilation = c.dilationRate as number | number[] | undefined;
  const dilated = Array.isArray(dilation) ? dilation.some((d) => d !== 1) : dilation != null && dilation !== 1;
  const multiplier = cls === 'DepthwiseConv2D' ? ((c.depthMultiplier as number | undefined) ?? 1) : 1;
  return c.activation === 'linear' && c.dataFormat !== 'channelsFirst' && !dilated && multiplier === 1;
}

/** A channels-last BatchNormalization (the kind that folds, or runs as a multiply-add). */
export function foldableBatchNorm(layer: Layer): boolean {
  if (layer.getClassName() !== 'BatchNormalization') return false;
  const axis = config(layer).axis;
  return axis === -1 || axis === 3;
}

export class FusedInference {
  private readonly steps: Step[];
  private readonly inputName: string;
  private readonly outputName: string;
  private readonly folded = new Map<string, Folded>();

  /**
   * Plans layers (from, to] of `model` (indices in `model.layers`, which is topological order);
   * the tensor given to `run` is layer `from`'s output, or the model's input when from = 0.
   */
  constructor(model: tf.LayersModel, from: number, to: number) {
    const layers = model.layers;
    const inbound = layers.map(inboundNames);
    const onlyReader = soleReader(model, to);

    this.inputName = layers[from]!.name;
    const steps: Step[] = [];
    for (let i = from + 1; i <= to; i++) {
      const layer = layers[i]!;
      if (foldableConv(layer) && i + 1 <= to && foldableBatchNorm(layers[i + 1]!) && onlyReader(i, i + 1)) {
        const bn = layers[i + 1]!;
        const relu = i + 2 <= to && onlyReader(i + 1, i + 2) ? reluActivation(layers[i + 2]!) : undefined;
        const last = relu ? i + 2 : i + 1;
        steps.push({ kind: 'fused', conv: layer, bn, activation: relu ?? 'linear', input: inbound[i]![0]!, output: layers[last]!.name });
        i = last;
      } else {
        steps.push({ kind: 'layer', layer, inputs: inbound[i]!, output: layer.name });
      }
    }
    this.steps = steps;
    this.outputName = layers[to]!.name;
  }

  /**
   * A plan for the whole of a functional model (input layer first, one output from its last
   * layer); undefined for models it can't plan, such as Sequential ones, which then run as usual.
   */
  static forModel(model: tf.LayersModel): FusedInference | undefined {
    const layers = model.layers;
    const planable =
      layers.length > 1 &&
      layers[0]!.getClassName() === 'InputLayer' &&
      model.inputs.length === 1 &&
      model.outputs.length === 1 &&
      model.outputLayers?.[0] === layers.at(-1);
    return planable ? new FusedInference(model, 0, layers.length - 1) : undefined;
  }

  /** How many layers ran folded into fused convolutions (for logs and tests). */
  get foldedChains(): number {
    return this.steps.filter((s) => s.kind === 'fused').length;
  }

  /** Output of layer `to` for `x` (the output of layer `from`). */
  run(x: tf.Tensor): tf.Tensor {
    const outputs = new Map<string, tf.Tensor>([[this.inputName, x]]);
    let last = x;
    for (const step of this.steps) {
      if (step.kind === 'layer') {
        const inputs = step.inputs.map((name) => outputs.get(name)!);
        last = step.layer.apply(inputs.length === 1 ? inputs[0]! : inputs, { training: false }) as tf.Tensor;
      } else {
        last = this.runFused(step, outputs.get(step.input)! as tf.Tensor4D);
      }
      outputs.set(step.output, last);
    }
    return outputs.get(this.outputName) ?? last;
  }

  /** Folds every chain's weights now rather than on the first `run` (so a loaded model's memory is all allocated up front). */
  prepare(): this {
    for (const step of this.steps) if (step.kind === 'fused') this.foldedWeights(step);
    return this;
  }

  /** Frees the folded weights (they are rebuilt if `run` is called again). */
  dispose(): void {
    for (const f of this.folded.values()) tf.dispose([f.filter, f.bias]);
    this.folded.clear();
  }

  private runFused(step: Extract<Step, { kind: 'fused' }>, x: tf.Tensor4D): tf.Tensor {
    const { filter, bias } = this.foldedWeights(step);
    const c = config(step.conv);
    const strides = c.strides as [number, number];
    const pad = c.padding as 'same' | 'valid';
    const args = { x, filter, strides, pad, bias, activation: step.activation, dataFormat: 'NHWC' as const };
    return step.conv.getClassName() === 'DepthwiseConv2D' ? tf.fused.depthwiseConv2d(args) : tf.fused.conv2d(args);
  }

  private foldedWeights(step: Extract<Step, { kind: 'fused' }>): Folded {
    const convWeights = step.conv.weights.map((w) => w.read());
    const bnWeights = step.bn.weights.map((w) => w.read());
    const sources = [...convWeights, ...bnWeights].map(dataIdOf);
    const cached = this.folded.get(step.conv.name);
    if (cached && cached.sources.length === sources.length && cached.sources.every((s, k) => s === sources[k])) return cached;
    if (cached) tf.dispose([cached.filter, cached.bias]);

    const [kernel, convBias] = convWeights as [tf.Tensor4D, tf.Tensor1D | undefined];
    const folded = tf.tidy(() => {
      const { scale, shift } = batchNormScaleShift(step.bn);
      // A depthwise kernel is [kh, kw, channels, 1]: its output channels are on axis 2.
      const depthwise = step.conv.getClassName() === 'DepthwiseConv2D';
      const filter = tf.mul(kernel, depthwise ? tf.reshape(scale, [1, 1, -1, 1]) : scale) as tf.Tensor4D;
      const bias = (convBias ? tf.add(tf.mul(convBias, scale), shift) : shift) as tf.Tensor1D;
      return { filter, bias };
    });
    // Kept past the caller's tidy(): they live until the weights change or dispose().
    tf.keep(folded.filter);
    tf.keep(folded.bias);
    const entry: Folded = { sources, ...folded };
    this.folded.set(step.conv.name, entry);
    return entry;
  }
}
