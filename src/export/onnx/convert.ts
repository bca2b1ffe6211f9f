/**
 * A tfjs layers model (model.json topology + weights, as finetune saves it) → an ONNX graph.
 *
 * The graph takes what the tfjs model takes, NHWC float32 [batch, H, W, C], and transposes it to
 * ONNX's NCHW once at the start; every 4-D value inside is NCHW. Batch norms that follow a
 * convolution are folded into its weights (the inference-time arithmetic: scale the kernel, shift
 * the bias); the others become BatchNormalization nodes. A ZeroPadding2D in front of a convolution
 * becomes that convolution's own padding.
 */
import type * as tf from '@tensorflow/tfjs';
import { FinetuneError } from '../../errors.js';
import { OnnxGraphBuilder, type FloatInitializer, type ModelDescription } from './builder.js';

/** The layer classes this converter knows (MobileNetV2, VGG16, finetune's head, and a few plain relatives). */
export const SUPPORTED_LAYERS = [
  'InputLayer',
  'Conv2D',
  'DepthwiseConv2D',
  'BatchNormalization',
  'ReLU',
  'Activation',
  'Add',
  'ZeroPadding2D',
  'MaxPooling2D',
  'AveragePooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Dropout',
  'Dense',
  'Flatten',
  'Softmax',
] as const;

/** The graph's input and output names. */
export const ONNX_INPUT = 'input';
export const ONNX_OUTPUT = 'probabilities';

type Json = Record<string, unknown>;
interface LayerJson {
  name: string;
  class_name: string;
  config: Json;
  inbound_nodes?: unknown[];
}
/** [layer name, node index, tensor index] */
type TensorRef = [string, number, number];

interface Weight {
  shape: number[];
  data: Float32Array;
}

/** A convolution's weights (ONNX layout), while a batch norm right after it may still fold into them. */
interface ConvWeights {
  weight: FloatInitializer;
  bias: FloatInitializer;
  outChannels: number;
}

/** A Keras tensor as it exists in the ONNX graph. */
interface Value {
  name: string;
  /** Keras shape without the batch: [H, W, C] (stored NCHW in the graph) or [C]. */
  shape: number[];
  /** A ZeroPadding2D not yet applied ([top, bottom, left, right]); `name` is the unpadded value, `shape` the padded one. */
  pendingPad?: [number, number, number, number];
  /** Set when this value is a linear convolution's output and nothing else reads it: a batch norm can fold in. */
  conv?: ConvWeights;
}

const error = (message: string) => new FinetuneError(`cannot convert the model to ONNX: ${message}`);

/** The Functional config inside a tfjs modelTopology, or a Sequential one rewritten as Functional. */
function functionalLayers(topology: unknown): { layers: LayerJson[]; inputs: TensorRef[]; outputs: TensorRef[] } {
  const top = topology as { class_name?: string; config?: unknown; model_config?: { class_name?: string; config?: unknown } };
  const inner = top.model_config ?? top;
  const config = inner.config as { layers?: LayerJson[]; input_layers?: TensorRef[]; output_layers?: TensorRef[] } | LayerJson[] | undefined;
  if (inner.class_name === 'Sequential') {
    const list = Array.isArray(config) ? config : (config?.layers ?? []);
    return sequentialAsFunctional(list);
  }
  if (!config || Array.isArray(config) || !config.layers || !config.input_layers || !config.output_layers) {
    throw error(`the model is a ${inner.class_name ?? 'model of unknown kind'} without a layer graph`);
  }
  return { layers: config.layers, inputs: config.input_layers, outputs: config.output_layers };
}

function sequentialAsFunctional(list: LayerJson[]): { layers: LayerJson[]; inputs: TensorRef[]; outputs: TensorRef[] } {
  if (list.length === 0) throw error('the Sequential model has no layers');
  const layers: LayerJson[] = [];
  let previous: string;
  if (list[0]!.class_name === 'InputLayer') {
    layers.push(list[0]!);
    previous = list[0]!.name;
  } else {
    const shape = list[0]!.config.batch_input_shape;
    if (!Array.isArray(shape)) throw error('the Sequential model does not say its input shape');
    previous = 'sequential_input';
    layers.push({ name: previous, class_name: 'InputLayer', config: { batch_input_shape: shape } });
  }
  for (const layer of list.slice(layers.length === 1 && list[0]!.class_name === 'InputLayer' ? 1 : 0)) {
    layers.push({ ...layer, inbound_nodes: [[[previous, 0, 0, {}]]] });
    previous = layer.name;
  }
  return { layers, inputs: [[layers[0]!.name, 0, 0]], outputs: [[previous, 0, 0]] };
}

/** The tensors a layer reads (its single call; shared layers are refused). */
function inboundRefs(layer: LayerJson): TensorRef[] {
  const nodes = layer.inbound_nodes ?? [];
  if (nodes.length === 0) return [];
  if (nodes.length > 1) throw error(`layer ${layer.name} is called ${nodes.length} times (shared layers are not supported)`);
  return (nodes[0] as unknown[][]).map((ref) => {
    if (!Array.isArray(ref) || typeof ref[0] !== 'string') throw error(`layer ${layer.name} has an inbound node finetune cannot read`);
    return [ref[0], Number(ref[1] ?? 0), Number(ref[2] ?? 0)] as TensorRef;
  });
}

const refKey = (ref: TensorRef) => `${ref[0]}:${ref[1]}:${ref[2]}`;

/** Float32 weights by name (`layer/kernel`), from the artifacts' manifest and data. */
function decodeWeights(artifacts: tf.io.ModelArtifacts): Map<string, Weight> {
  const specs = artifacts.weightSpecs ?? [];
  const parts = artifacts.weightData === undefined ? [] : Array.isArray(artifacts.weightData) ? artifacts.weightData : [artifacts.weightData];
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(new Uint8Array(p), at);
    at += p.byteLength;
  }
  const weights = new Map<string, Weight>();
  let offset = 0;
  for (const spec of specs) {
    if ((spec.dtype !== undefined && spec.dtype !== 'float32') || spec.quantization !== undefined) {
      throw error(`weight ${spec.name} is ${spec.quantization ? 'quantized' : spec.dtype}; only float32 weights are supported`);
    }
    const count = spec.shape.reduce((a, b) => a * b, 1);
    if (offset + count * 4 > bytes.byteLength) throw error(`the weights file is shorter than its manifest (at ${spec.name})`);
    // A copy: folding rewrites kernels in place, and the caller's buffer must stay as it was.
    const data = new Float32Array(bytes.buffer.slice(offset, offset + count * 4));
    weights.set(spec.name, { shape: spec.shape, data });
    offset += count * 4;
  }
  return weights;
}

const pair = (v: unknown, what: string): [number, number] => {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0], v[1]];
  throw error(`${what} is ${JSON.stringify(v)}, expected a number or two`);
};

/** TensorFlow's 'same' padding of one axis: (before, after), the odd pixel after. */
function samePadding(size: number, kernel: number, stride: number, dilation: number): [number, number] {
  const effective = (kernel - 1) * dilation + 1;
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + effective - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

const outputSize = (size: number, before: number, after: number, kernel: number, stride: number, dilation: number) =>
  Math.floor((size + before + after - ((kernel - 1) * dilation + 1)) / stride) + 1;

/** Converts one model; see the file comment. Returns the ONNX bytes. */
export function layersModelToOnnx(artifacts: tf.io.ModelArtifacts, description: ModelDescription): Uint8Array {
  return new Converter(artifacts).convert(description);
}

class Converter {
  private readonly g = new OnnxGraphBuilder();
  private readonly weights: Map<string, Weight>;
  private readonly layers: LayerJson[];
  private readonly inputs: TensorRef[];
  private readonly outputs: TensorRef[];
  private readonly values = new Map<string, Value>();
  /** How many layers (and graph outputs) read each tensor: a value read twice cannot take a folded batch norm. */
  private readonly readers = new Map<string, number>();
  private inputDims: number[] = [];

  constructor(artifacts: tf.io.ModelArtifacts) {
    const graph = functionalLayers(artifacts.modelTopology);
    this.layers = graph.layers;
    this.inputs = graph.inputs;
    this.outputs = graph.outputs;
    this.weights = decodeWeights(artifacts);
    if (this.inputs.length !== 1 || this.outputs.length !== 1) {
      throw error(`the model has ${this.inputs.length} inputs and ${this.outputs.length} outputs; finetune models have one of each`);
    }
    for (const layer of this.layers) for (const ref of inboundRefs(layer)) this.count(ref);
    this.count(this.outputs[0]!);
  }

  private count(ref: TensorRef): void {
    this.readers.set(refKey(ref), (this.readers.get(refKey(ref)) ?? 0) + 1);
  }

  convert(description: ModelDescription): Uint8Array {
    this.convertLayersInOrder();
    const last = this.materialize(this.value(this.outputs[0]!));
    const nhwc = last.shape.length === 3 ? this.g.node('Transpose', [last.name], 'to_nhwc', { perm: [0, 2, 3, 1] }) : last.name;
    this.g.node('Identity', [nhwc], ONNX_OUTPUT, {}, ONNX_OUTPUT);
    return this.g.encode({ name: ONNX_INPUT, dims: ['batch', ...this.inputDims] }, { name: ONNX_OUTPUT, dims: ['batch', ...last.shape] }, description);
  }

  /** Layers in an order where every input is converted first (model.json lists them so, but need not). */
  private convertLayersInOrder(): void {
    const pending = [...this.layers];
    while (pending.length > 0) {
      const index = pending.findIndex((layer) => inboundRefs(layer).every((ref) => this.values.has(refKey(ref))));
      if (index < 0) throw error(`layers ${pending.map((l) => l.name).join(', ')} read tensors no layer makes`);
      const [layer] = pending.splice(index, 1);
      this.values.set(refKey([layer!.name, 0, 0]), this.convertLayer(layer!));
    }
  }

  private value(ref: TensorRef): Value {
    const v = this.values.get(refKey(ref));
    if (v === undefined) throw error(`tensor ${refKey(ref)} is not made by any layer`);
    return v;
  }

  private weight(layer: LayerJson, param: string, shape?: number[]): Weight {
    const w = this.weights.get(`${layer.name}/${param}`);
    if (w === undefined) throw error(`the weights have no ${layer.name}/${param}`);
    if (shape !== undefined && (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i]))) {
      throw error(`${layer.name}/${param} has shape [${w.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return w;
  }

  private convertLayer(layer: LayerJson): Value {
    const format = layer.config.data_format;
    if (format !== undefined && format !== 'channels_last') throw error(`layer ${layer.name} is ${String(format)}; only channels_last is supported`);
    const inputs = inboundRefs(layer).map((ref) => this.value(ref));
    const x = inputs[0]!;
    switch (layer.class_name) {
      case 'InputLayer':
        return this.input(layer);
      case 'Conv2D':
        return this.conv(layer, x, false);
      case 'DepthwiseConv2D':
        return this.conv(layer, x, true);
      case 'BatchNormalization':
        return this.batchNorm(layer, x);
      case 'ReLU':
        return this.relu(layer, x);
      case 'Activation':
        return this.activation(this.materialize(x), String(layer.config.activation), layer.name);
      case 'Add':
        return this.add(layer, inputs);
      case 'ZeroPadding2D':
        return this.zeroPadding(layer, x);
      case 'MaxPooling2D':
      case 'AveragePooling2D':
        return this.pool(layer, this.materialize(x));
      case 'GlobalAveragePooling2D':
      case 'GlobalMaxPooling2D':
        return this.globalPool(layer, this.materialize(x));
      case 'Dropout':
        return { ...x, conv: undefined };
      case 'Dense':
        return this.dense(layer, this.materialize(x));
      case 'Flatten':
        return this.flatten(layer, this.materialize(x));
      case 'Softmax':
        return this.softmax(layer, this.materialize(x), layer.config.axis);
      default:
        throw error(
          `layer ${layer.name} is a ${layer.class_name}, which the ONNX export does not convert (it converts ${SUPPORTED_LAYERS.join(', ')})`,
        );
    }
  }

  private input(layer: LayerJson): Value {
    const shape = layer.config.batch_input_shape;
    if (!Array.isArray(shape) || shape.slice(1).some((d) => typeof d !== 'number')) {
      throw error(`input ${layer.name} has shape ${JSON.stringify(shape)}; the export needs a fixed image size`);
    }
    this.inputDims = shape.slice(1) as number[];
    if (this.inputDims.length === 3) {
      return { name: this.g.node('Transpose', [ONNX_INPUT], 'to_nchw', { perm: [0, 3, 1, 2] }), shape: this.inputDims };
    }
    if (this.inputDims.length === 1) return { name: ONNX_INPUT, shape: this.inputDims };
    throw error(`input ${layer.name} has rank ${shape.length}; the export takes images [batch, H, W, C] or vectors`);
  }

  /** Applies a pending ZeroPadding2D as a Pad node (for readers that cannot take it as their own padding). */
  private materialize(v: Value): Value {
    if (v.pendingPad === undefined) return v;
    const [t, b, l, r] = v.pendingPad;
    const pads = this.g.addInt64s(`${v.name}_pads`, [0, 0, t, l, 0, 0, b, r]);
    return { name: this.g.node('Pad', [v.name, pads], `${v.name}_padded`, { mode: 'constant' }), shape: v.shape };
  }

  private spatial(v: Value, layer: LayerJson): [number, number, number] {
    if (v.shape.length !== 3) throw error(`layer ${layer.name} (${layer.class_name}) reads a tensor of shape [${v.shape.join(', ')}], expected [H, W, C]`);
    return v.shape as [number, number, number];
  }

  private conv(layer: LayerJson, x: Value, depthwise: boolean): Value {
    const c = layer.config;
    const [kh, kw] = pair(c.kernel_size, `${layer.name} kernel_size`);
    const [sh, sw] = pair(c.strides ?? 1, `${layer.name} strides`);
    const [dh, dw] = pair(c.dilation_rate ?? 1, `${layer.name} dilation_rate`);
    const [h, w, cin] = this.spatial(x, layer);
    const [pt, pb, pl, pr] = x.pendingPad ?? [0, 0, 0, 0];
    // The padded size is what the Keras layer sees; a pending ZeroPadding2D adds to the convolution's pads.
    const [sameT, sameB] = c.padding === 'same' ? samePadding(h, kh, sh, dh) : [0, 0];
    const [sameL, sameR] = c.padding === 'same' ? samePadding(w, kw, sw, dw) : [0, 0];
    if (c.padding !== 'same' && c.padding !== 'valid') throw error(`layer ${layer.name} has padding ${String(c.padding)}`);
    const pads = [pt + sameT, pl + sameL, pb + sameB, pr + sameR];
    const hOut = outputSize(h - pt - pb, pads[0]!, pads[2]!, kh, sh, dh);
    const wOut = outputSize(w - pl - pr, pads[1]!, pads[3]!, kw, sw, dw);

    const { weight, outChannels, group } = depthwise ? this.depthwiseKernel(layer, kh, kw, cin) : this.denseKernel(layer, kh, kw, cin);
    const bias = this.g.addFloats(`${layer.name}/bias`, [outChannels], this.biasOrZeros(layer, outChannels));
    const out = this.g.node('Conv', [x.name, weight.name, bias.name], layer.name, {
      kernel_shape: [kh, kw],
      strides: [sh, sw],
      dilations: [dh, dw],
      pads,
      group,
    });
    const value: Value = { name: out, shape: [hOut, wOut, outChannels] };
    const act = String(c.activation ?? 'linear');
    if (act === 'linear' && this.readers.get(refKey([layer.name, 0, 0])) === 1) value.conv = { weight, bias, outChannels };
    return this.activation(value, act, layer.name);
  }

  /** Keras [kh, kw, cin, cout] → ONNX [cout, cin, kh, kw]. */
  private denseKernel(layer: LayerJson, kh: number, kw: number, cin: number) {
    const cout = Number(layer.config.filters);
    const k = this.weight(layer, 'kernel', [kh, kw, cin, cout]).data;
    const out = new Float32Array(k.length);
    for (let i = 0; i < kh; i++)
      for (let j = 0; j < kw; j++)
        for (let ci = 0; ci < cin; ci++)
          for (let co = 0; co < cout; co++) out[((co * cin + ci) * kh + i) * kw + j] = k[((i * kw + j) * cin + ci) * cout + co]!;
    return { weight: this.g.addFloats(`${layer.name}/kernel`, [cout, cin, kh, kw], out), outChannels: cout, group: 1 };
  }

  /** Keras [kh, kw, cin, m] → ONNX [cin·m, 1, kh, kw] with group = cin (output channel c·m + q, as TensorFlow orders them). */
  private depthwiseKernel(layer: LayerJson, kh: number, kw: number, cin: number) {
    const m = Number(layer.config.depth_multiplier ?? 1);
    const k = this.weight(layer, 'depthwise_kernel', [kh, kw, cin, m]).data;
    const out = new Float32Array(k.length);
    for (let i = 0; i < kh; i++)
      for (let j = 0; j < kw; j++)
        for (let ci = 0; ci < cin; ci++)
          for (let q = 0; q < m; q++) out[((ci * m + q) * kh + i) * kw + j] = k[((i * kw + j) * cin + ci) * m + q]!;
    return { weight: this.g.addFloats(`${layer.name}/depthwise_kernel`, [cin * m, 1, kh, kw], out), outChannels: cin * m, group: cin };
  }

  private biasOrZeros(layer: LayerJson, n: number): Float32Array {
    return layer.config.use_bias === false ? new Float32Array(n) : this.weight(layer, 'bias', [n]).data;
  }

  private batchNorm(layer: LayerJson, x: Value): Value {
    const c = layer.config;
    const channels = x.shape[x.shape.length - 1]!;
    const axis = Number(c.axis ?? -1);
    if (axis !== -1 && axis !== x.shape.length) throw error(`batch norm ${layer.name} normalises axis ${axis}; only the channel axis is supported`);
    const eps = Number(c.epsilon ?? 1e-3);
    const gamma = c.scale === false ? new Float32Array(channels).fill(1) : this.weight(layer, 'gamma', [channels]).data;
    const beta = c.center === false ? new Float32Array(channels) : this.weight(layer, 'beta', [channels]).data;
    const mean = this.weight(layer, 'moving_mean', [channels]).data;
    const variance = this.weight(layer, 'moving_variance', [channels]).data;
    if (x.conv !== undefined && x.pendingPad === undefined) {
      foldBatchNorm(x.conv, gamma, beta, mean, variance, eps);
      return { ...x, conv: undefined };
    }
    const v = this.materialize(x);
    const inputs = [v.name, ...[gamma, beta, mean, variance].map((d, i) => this.g.addFloats(`${layer.name}/${['gamma', 'beta', 'mean', 'variance'][i]}`, [channels], d).name)];
    return { name: this.g.node('BatchNormalization', inputs, layer.name, { epsilon: { float: eps } }), shape: v.shape };
  }

  private relu(layer: LayerJson, x: Value): Value {
    const c = layer.config;
    const max = c.max_value ?? null;
    const slope = Number(c.negative_slope ?? 0);
    if (Number(c.threshold ?? 0) !== 0) throw error(`ReLU ${layer.name} has a threshold; only threshold 0 is supported`);
    const v = this.materialize(x);
    if (slope !== 0) {
      if (max !== null) throw error(`ReLU ${layer.name} has both a negative slope and a maximum`);
      return { name: this.g.node('LeakyRelu', [v.name], layer.name, { alpha: { float: slope } }), shape: v.shape };
    }
    if (max === null) return { name: this.g.node('Relu', [v.name], layer.name), shape: v.shape };
    return this.clip(v, 0, Number(max), layer.name);
  }

  private clip(v: Value, min: number, max: number, base: string): Value {
    const lo = this.g.addFloats(`${base}/min`, [], Float32Array.of(min)).name;
    const hi = this.g.addFloats(`${base}/max`, [], Float32Array.of(max)).name;
    return { name: this.g.node('Clip', [v.name, lo, hi], base), shape: v.shape };
  }

  /** A Keras activation by name, applied to `v` (linear returns `v` itself, so a batch norm may still fold). */
  private activation(v: Value, name: string, base: string): Value {
    const simple: Record<string, string> = { relu: 'Relu', sigmoid: 'Sigmoid', tanh: 'Tanh', elu: 'Elu', selu: 'Selu', softplus: 'Softplus' };
    if (name === 'linear') return v;
    if (name === 'relu6') return this.clip(v, 0, 6, `${base}_relu6`);
    if (name === 'softmax') return this.softmax({ name: base, class_name: 'Activation', config: {} }, v, -1);
    const op = simple[name];
    if (op === undefined) throw error(`layer ${base} uses the activation ${name}, which the ONNX export does not convert`);
    return { name: this.g.node(op, [v.name], `${base}_${name}`), shape: v.shape };
  }

  private add(layer: LayerJson, inputs: Value[]): Value {
    const values = inputs.map((v) => this.materialize(v));
    const shape = values[0]!.shape;
    if (values.some((v) => v.shape.join() !== shape.join())) throw error(`Add ${layer.name} adds tensors of different shapes`);
    let sum = values[0]!.name;
    values.slice(1).forEach((v, i) => {
      sum = this.g.node('Add', [sum, v.name], i === values.length - 2 ? layer.name : `${layer.name}_partial`);
    });
    return { name: sum, shape };
  }

  private zeroPadding(layer: LayerJson, x: Value): Value {
    const p = layer.config.padding;
    const [[t, b], [l, r]] = Array.isArray(p) && Array.isArray(p[0]) ? [pair(p[0], 'padding'), pair(p[1], 'padding')] : [pair(p, 'padding'), pair(p, 'padding')];
    const [h, w, c] = this.spatial(x, layer);
    const [pt, pb, pl, pr] = x.pendingPad ?? [0, 0, 0, 0];
    return { name: x.name, shape: [h + t + b, w + l + r, c], pendingPad: [pt + t, pb + b, pl + l, pr + r] };
  }

  private pool(layer: LayerJson, x: Value): Value {
    const c = layer.config;
    const [kh, kw] = pair(c.pool_size ?? 2, `${layer.name} pool_size`);
    const [sh, sw] = pair(c.strides ?? c.pool_size ?? 2, `${layer.name} strides`);
    const [h, w, ch] = this.spatial(x, layer);
    const [t, b] = c.padding === 'same' ? samePadding(h, kh, sh, 1) : [0, 0];
    const [l, r] = c.padding === 'same' ? samePadding(w, kw, sw, 1) : [0, 0];
    const op = layer.class_name === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool';
    // TensorFlow's 'same' average leaves the padding out of the count, as count_include_pad=0 does.
    const extra: Record<string, number> = op === 'AveragePool' ? { count_include_pad: 0 } : {};
    const out = this.g.node(op, [x.name], layer.name, { kernel_shape: [kh, kw], strides: [sh, sw], pads: [t, l, b, r], ...extra });
    return { name: out, shape: [outputSize(h, t, b, kh, sh, 1), outputSize(w, l, r, kw, sw, 1), ch] };
  }

  private globalPool(layer: LayerJson, x: Value): Value {
    const [, , ch] = this.spatial(x, layer);
    const op = layer.class_name === 'GlobalAveragePooling2D' ? 'GlobalAveragePool' : 'GlobalMaxPool';
    const pooled = this.g.node(op, [x.name], `${layer.name}_nchw`);
    if (layer.config.keepdims === true) return { name: pooled, shape: [1, 1, ch] };
    return { name: this.g.node('Flatten', [pooled], layer.name, { axis: 1 }), shape: [ch] };
  }

  private dense(layer: LayerJson, x: Value): Value {
    if (x.shape.length !== 1) throw error(`Dense ${layer.name} reads a tensor of shape [${x.shape.join(', ')}]; the export converts Dense on vectors only`);
    const units = Number(layer.config.units);
    const inputs = x.shape[0]!;
    const kernel = this.g.addFloats(`${layer.name}/kernel`, [inputs, units], this.weight(layer, 'kernel', [inputs, units]).data);
    const bias = this.g.addFloats(`${layer.name}/bias`, [units], this.biasOrZeros(layer, units));
    const out = this.g.node('Gemm', [x.name, kernel.name, bias.name], layer.name);
    return this.activation({ name: out, shape: [units] }, String(layer.config.activation ?? 'linear'), layer.name);
  }

  private flatten(layer: LayerJson, x: Value): Value {
    const size = x.shape.reduce((a, b) => a * b, 1);
    if (x.shape.length === 1) return x;
    // Keras flattens H, W, C in that order; the graph holds C, H, W.
    const spatialOne = x.shape.length === 3 && x.shape[0] === 1 && x.shape[1] === 1;
    const source = spatialOne ? x.name : this.g.node('Transpose', [x.name], `${layer.name}_nhwc`, { perm: [0, 2, 3, 1] });
    return { name: this.g.node('Flatten', [source], layer.name, { axis: 1 }), shape: [size] };
  }

  private softmax(layer: LayerJson, x: Value, axisConfig: unknown): Value {
    const rank = x.shape.length + 1;
    const raw = Array.isArray(axisConfig) ? axisConfig : [axisConfig ?? -1];
    if (raw.length !== 1) throw error(`softmax ${layer.name} runs over several axes`);
    const axis = (Number(raw[0]) + rank) % rank;
    // Keras axes are NHWC; a 4-D value is NCHW in the graph.
    const onnxAxis = rank === 4 ? [0, 2, 3, 1][axis]! : axis;
    return { name: this.g.node('Softmax', [x.name], layer.name, { axis: onnxAxis }), shape: x.shape };
  }
}

/** Folds inference batch norm into the convolution before it: W·s, (b − mean)·s + beta, s = gamma / √(var + ε). */
function foldBatchNorm(conv: ConvWeights, gamma: Float32Array, beta: Float32Array, mean: Float32Array, variance: Float32Array, eps: number): void {
  const per = conv.weight.data.length / conv.outChannels;
  for (let o = 0; o < conv.outChannels; o++) {
    const s = gamma[o]! / Math.sqrt(variance[o]! + eps);
    for (let i = o * per; i < (o + 1) * per; i++) conv.weight.data[i] = conv.weight.data[i]! * s;
    conv.bias.data[o] = (conv.bias.data[o]! - mean[o]!) * s + beta[o]!;
  }
}
