/**
 * A trainable convolution followed by an inference-mode batch norm and ReLU6 (or nothing): the
 * Conv → BN → ReLU6 and Conv → BN units MobileNetV2 is made of, as one differentiable op.
 *
 * Run as separate ops (SplitModel's conv, batchNormAsAffine, relu6), one such unit costs the WebGPU
 * backend about 10 shader dispatches forward (the conv, six on 1-D tensors computing the batch
 * norm's scale and shift from γ, β, μ, σ², a multiply, an add, the clip) and about 17 backward
 * (ReLU6's mask in five kernels; the affine's gradients, each channel sum a transpose and a
 * reduction; the chain back to γ and β; the conv's two gradients). On a GPU each dispatch costs
 * more than its arithmetic. Here:
 *
 * - forward: the convolution (tfjs's kernel), then one shader computing act(z · s + b) with
 *   s = γ / √(σ² + ε) and b = β − μ · s worked out per element from the four vectors: 2 dispatches;
 * - backward: one shader for dz = dy · mask · s; dβ = Σ dy · mask and dγ = Σ dy · mask · (z − μ) /
 *   √(σ² + ε) over N·H·W together in one shader with two outputs, or, from 32768 pixels on, in one
 *   shader split over workgroups plus one adding the splits of both; the convolution's filter and
 *   input gradients (tfjs's kernels, or finetune's WebGPU filter gradients): 4 to 6 dispatches. The input
 *   gradient is skipped when the caller says the input needs none (the lowest trainable layer).
 *
 * mask is 1 where the pre-activation p = z · s + b passes (ReLU6: 0 ≤ p ≤ 6, as tfjs's clipByValue
 * gradient; none: everywhere). The batch norm's μ and σ² are constants here (inference mode: they
 * get no gradient), as in SplitModel's batchNormAsAffine.
 *
 * On other backends the op computes the same with tfjs ops (the reference the WebGPU shaders are
 * tested against).
 */
import * as tf from '@tensorflow/tfjs';
import {
  freeData, installKernel, kernelFunc, makeGPUOutput, registeredKernel, runKernel, runRawWebGPUShader, runWebGPUProgram, type TensorInfo, type WebGPUProgram,
} from './tfjs-internals.js';

export type UnitActivation = 'linear' | 'relu6';

/** A convolution layer's weight and geometry, and the inference-mode batch norm after it. */
export interface ConvBatchNormUnit {
  /** [kh, kw, in, out] for a convolution; [kh, kw, in, 1] for a depthwise one (multiplier 1). */
  filter: tf.Tensor4D;
  depthwise: boolean;
  strides: [number, number];
  pad: 'same' | 'valid';
  gamma: tf.Tensor1D;
  beta: tf.Tensor1D;
  /** Moving mean and variance: constants (no gradient). */
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
  epsilon: number;
  activation: UnitActivation;
  /** False where nothing needs the input's gradient (it comes from frozen layers, or is the images). */
  inputGradient: boolean;
}

const AFFINE = 'FinetuneAffineActivation';
const AFFINE_GRAD = 'FinetuneAffineActivationGrad';
const PARAM_GRADS = 'FinetuneAffineParamGrads';
const BACKEND = 'webgpu';

/**
 * Below this many pixels (N·H·W) the parameters' sums run in one shader (64 channels a workgroup);
 * from it on, split over workgroups, which takes one shader more. On a GPU a dispatch costs more
 * than a small reduction, so only the largest layers split (MobileNetV2 at 224 px, batch 32: the
 * 112² and 56² ones; at 128 and 160 px the same layers, so those sizes count as 224 does).
 */
export const SPLIT_PIXELS = 32768;
/** Pixels per workgroup of a split sum. */
const PIXELS_PER_SPLIT = 2048;
const CHANNELS_PER_WORKGROUP = 64;
const LANES = 4;

/** act(conv(x, filter) · s + b), differentiable in x (when asked), the filter, γ and β. */
export function convBatchNormActivation(x: tf.Tensor4D, unit: ConvBatchNormUnit): tf.Tensor4D {
  const { filter, gamma, beta } = unit;
  const op = tf.customGrad(((...args: unknown[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const z = convolve(x, filter, unit);
    save([z, x]);
    return {
      value: affineActivation(z, unit),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [z, input] = saved as [tf.Tensor4D, tf.Tensor4D];
        const dz = affineActivationGrad(dy, z, unit);
        const grads = [filterGradient(input, dz, unit), ...parameterGradients(dy, z, unit)];
        return unit.inputGradient ? [inputGradient(x.shape, dz, unit), ...grads] : grads;
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  // x is an argument (and gets a gradient) only where something needs it.
  const inputs = unit.inputGradient ? [x, filter, gamma, beta] : [filter, gamma, beta];
  return (op as (...t: tf.Tensor[]) => tf.Tensor4D)(...inputs);
}

function convolve(x: tf.Tensor4D, filter: tf.Tensor4D, unit: ConvBatchNormUnit): tf.Tensor4D {
  return unit.depthwise ? tf.depthwiseConv2d(x, filter, unit.strides, unit.pad) : tf.conv2d(x, filter, unit.strides, unit.pad);
}

function filterGradient(x: tf.Tensor4D, dz: tf.Tensor4D, unit: ConvBatchNormUnit): tf.Tensor {
  const common = { strides: unit.strides, pad: unit.pad, filterShape: unit.filter.shape };
  return unit.depthwise
    ? (runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x, dy: dz }, { ...common, dilations: 1 }) as tf.Tensor)
    : (runKernel(tf.Conv2DBackpropFilter, { x, dy: dz }, { ...common, dataFormat: 'NHWC' }) as tf.Tensor);
}

function inputGradient(inputShape: number[], dz: tf.Tensor4D, unit: ConvBatchNormUnit): tf.Tensor {
  const common = { strides: unit.strides, pad: unit.pad, inputShape };
  return unit.depthwise
    ? (runKernel(tf.DepthwiseConv2dNativeBackpropInput, { dy: dz, filter: unit.filter }, { ...common, dilations: 1 }) as tf.Tensor)
    : (runKernel(tf.Conv2DBackpropInput, { dy: dz, filter: unit.filter }, { ...common, dataFormat: 'NHWC' }) as tf.Tensor);
}

// ── The affine part: WebGPU shaders, tfjs ops elsewhere ─────────────────────────────────────────

function useShaders(): boolean {
  if (tf.getBackend() !== BACKEND) return false;
  registerConvBatchNormKernels();
  return true;
}

function bnInputs(z: tf.Tensor, unit: ConvBatchNormUnit): tf.NamedTensorMap {
  return { z, gamma: unit.gamma, beta: unit.beta, mean: unit.mean, variance: unit.variance };
}

function affineActivation(z: tf.Tensor4D, unit: ConvBatchNormUnit): tf.Tensor4D {
  if (useShaders()) return runKernel(AFFINE, bnInputs(z, unit), { epsilon: unit.epsilon, activation: unit.activation }) as tf.Tensor4D;
  const { scale, shift } = scaleShift(unit);
  const pre = tf.add(tf.mul(z, scale), shift);
  return (unit.activation === 'relu6' ? tf.clipByValue(pre, 0, 6) : pre) as tf.Tensor4D;
}

function affineActivationGrad(dy: tf.Tensor4D, z: tf.Tensor4D, unit: ConvBatchNormUnit): tf.Tensor4D {
  if (useShaders()) {
    return runKernel(AFFINE_GRAD, { dy, ...bnInputs(z, unit) }, { epsilon: unit.epsilon, activation: unit.activation }) as tf.Tensor4D;
  }
  return tf.mul(maskedDy(dy, z, unit), scaleShift(unit).scale) as tf.Tensor4D;
}

/** [dγ, dβ]. */
function parameterGradients(dy: tf.Tensor4D, z: tf.Tensor4D, unit: ConvBatchNormUnit): [tf.Tensor1D, tf.Tensor1D] {
  if (useShaders()) {
    return runKernel(PARAM_GRADS, { dy, ...bnInputs(z, unit) }, { epsilon: unit.epsilon, activation: unit.activation }) as [tf.Tensor1D, tf.Tensor1D];
  }
  const g = maskedDy(dy, z, unit);
  const inv = tf.rsqrt(tf.add(unit.variance, unit.epsilon));
  return [tf.sum(tf.mul(g, tf.mul(tf.sub(z, unit.mean), inv)), [0, 1, 2]) as tf.Tensor1D, tf.sum(g, [0, 1, 2]) as tf.Tensor1D];
}

/** s = γ / √(σ² + ε), b = β − μ · s (as batchNormScaleShift). */
function scaleShift(unit: ConvBatchNormUnit): { scale: tf.Tensor1D; shift: tf.Tensor1D } {
  const scale = tf.mul(unit.gamma, tf.rsqrt(tf.add(unit.variance, unit.epsilon))) as tf.Tensor1D;
  return { scale, shift: tf.sub(unit.beta, tf.mul(unit.mean, scale)) as tf.Tensor1D };
}

/** dy where the activation passes the pre-activation's gradient, else 0 (as tfjs's clipByValue gradient). */
function maskedDy(dy: tf.Tensor4D, z: tf.Tensor4D, unit: ConvBatchNormUnit): tf.Tensor4D {
  if (unit.activation === 'linear') return dy;
  const { scale, shift } = scaleShift(unit);
  const pre = tf.add(tf.mul(z, scale), shift);
  return tf.where(tf.logicalAnd(tf.greaterEqual(pre, 0), tf.lessEqual(pre, 6)), dy, tf.zerosLike(dy)) as tf.Tensor4D;
}

// ── WGSL ────────────────────────────────────────────────────────────────────────────────────────

/** Per channel c: inv, s and b, from the four vectors (declared as inputs gamma, beta, mean, variance). */
const SCALE_SHIFT = `
        let inv = inverseSqrt(variance[c] + uniforms.epsilon);
        let scale = gamma[c] * inv;
        let shift = beta[c] - mean[c] * scale;`;

/** The gradient mask of the activation at pre-activation `pre`, as a WGSL bool expression. */
function passes(activation: UnitActivation, pre: string): string {
  return activation === 'relu6' ? `(${pre} >= 0.0 && ${pre} <= 6.0)` : 'true';
}

function activate(activation: UnitActivation, pre: string): string {
  return activation === 'relu6' ? `clamp(${pre}, 0.0, 6.0)` : pre;
}

const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);

/** Elementwise over an NHWC tensor, channel = index mod C. */
abstract class ChannelwiseProgram implements WebGPUProgram {
  outputShape: number[];
  abstract shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  abstract variableNames: string[];
  uniforms = 'epsilon : f32, channels : i32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;

  constructor(shape: number[]) {
    this.outputShape = shape;
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    this.dispatch = [ceilDiv(tf.util.sizeFromShape(shape), 64), 1, 1];
  }

  abstract getUserCode(): string;
}

class AffineActivationProgram extends ChannelwiseProgram {
  shaderKey: string;
  variableNames = ['z', 'gamma', 'beta', 'mean', 'variance'];

  constructor(
    shape: number[],
    private readonly activation: UnitActivation,
  ) {
    super(shape);
    this.shaderKey = `finetuneAffineActivation_${activation}`;
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let c = index % uniforms.channels;${SCALE_SHIFT}
          let pre = z[index] * scale + shift;
          result[index] = ${activate(this.activation, 'pre')};
        }
      }
    `;
  }
}

class AffineActivationGradProgram extends ChannelwiseProgram {
  shaderKey: string;
  variableNames = ['dy', 'z', 'gamma', 'beta', 'mean', 'variance'];

  constructor(
    shape: number[],
    private readonly activation: UnitActivation,
  ) {
    super(shape);
    this.shaderKey = `finetuneAffineActivationGrad_${activation}`;
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let c = index % uniforms.channels;${SCALE_SHIFT}
          let pre = z[index] * scale + shift;
          result[index] = select(0.0, dy[index] * scale, ${passes(this.activation, 'pre')});
        }
      }
    `;
  }
}

/**
 * WGSL of the sums per channel of dy · mask · (z − μ) / √(σ² + ε) (γ) and of dy · mask (β), over
 * pixels [s·chunk, (s+1)·chunk) for split s, into two outputs [splits, C]: one dispatch for both
 * (runRawWebGPUShader; a tfjs program writes one tensor). Workgroup (tile, s) takes 64 channels, 4
 * lanes each walking every 4th pixel; the lanes are added in workgroup memory. Bindings: dy, z, γ,
 * β, μ, σ², dγ, dβ (8 storage buffers, WebGPU's default limit), then the uniforms.
 */
function paramGradCode(activation: UnitActivation): string {
  const lanes = CHANNELS_PER_WORKGROUP * LANES;
  const inputs = ['dy', 'z', 'gamma', 'beta', 'mean', 'variance'];
  return `
struct Uniforms { f : vec4<f32>, i : vec4<i32>, };
${inputs.map((n, i) => `@group(0) @binding(${i}) var<storage, read> ${n} : array<f32>;`).join('\n')}
@group(0) @binding(6) var<storage, read_write> gammaSums : array<f32>;
@group(0) @binding(7) var<storage, read_write> betaSums : array<f32>;
@group(0) @binding(8) var<uniform> u : Uniforms;
var<workgroup> laneSums : array<f32, ${2 * lanes}>;

@compute @workgroup_size(${CHANNELS_PER_WORKGROUP}, ${LANES}, 1)
fn main(@builtin(global_invocation_id) globalId : vec3<u32>, @builtin(local_invocation_id) localId : vec3<u32>, @builtin(workgroup_id) workgroupId : vec3<u32>) {
  let c = i32(globalId.x);
  let lane = i32(localId.y);
  let lx = i32(localId.x);
  let split = i32(workgroupId.y);
  let channels = u.i.x;
  let pStart = split * u.i.y;
  let pEnd = min(pStart + u.i.y, u.i.z);
  var acc : array<f32, 2>;
  if (c < channels) {
    let inv = inverseSqrt(variance[c] + u.f.x);
    let scale = gamma[c] * inv;
    let shift = beta[c] - mean[c] * scale;
    for (var p = pStart + lane; p < pEnd; p += ${LANES}) {
      let i = p * channels + c;
      let zi = z[i];
      let pre = zi * scale + shift;
      let g = select(0.0, dy[i], ${passes(activation, 'pre')});
      acc[0] += g * (zi - mean[c]) * inv; acc[1] += g;
    }
  }
  for (var k = 0; k < 2; k++) {
    laneSums[k * ${lanes} + lane * ${CHANNELS_PER_WORKGROUP} + lx] = acc[k];
  }
  workgroupBarrier();
  if (lane == 0 && c < channels) {
    var sums : array<f32, 2>;
    for (var k = 0; k < 2; k++) {
      var sum = 0.0;
      for (var l = 0; l < ${LANES}; l++) {
        sum += laneSums[k * ${lanes} + l * ${CHANNELS_PER_WORKGROUP} + lx];
      }
      sums[k] = sum;
    }
    gammaSums[split * channels + c] = sums[0];
    betaSums[split * channels + c] = sums[1];
  }
}
`;
}

/** WGSL adding the [splits, C] partial sums of γ and of β into [C] each (one dispatch for both). */
const ADD_SPLITS_CODE = `
struct Uniforms { i : vec4<i32>, };
@group(0) @binding(0) var<storage, read> gammaSums : array<f32>;
@group(0) @binding(1) var<storage, read> betaSums : array<f32>;
@group(0) @binding(2) var<storage, read_write> dGamma : array<f32>;
@group(0) @binding(3) var<storage, read_write> dBeta : array<f32>;
@group(0) @binding(4) var<uniform> u : Uniforms;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) globalId : vec3<u32>) {
  let c = i32(globalId.x);
  let channels = u.i.x;
  if (c < channels) {
    var g = 0.0;
    var b = 0.0;
    for (var s = 0; s < u.i.y; s++) {
      g += gammaSums[s * channels + c];
      b += betaSums[s * channels + c];
    }
    dGamma[c] = g;
    dBeta[c] = b;
  }
}
`;

type Args = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: tf.NamedAttrMap };

const bnInfos = (inputs: tf.NamedTensorInfoMap): TensorInfo[] => [inputs.gamma!, inputs.beta!, inputs.mean!, inputs.variance!];
const channelsOf = (shape: number[]): number => shape[shape.length - 1]!;
const channelUniforms = (attrs: tf.NamedAttrMap, shape: number[]) => [
  { type: 'float32' as const, data: [attrs.epsilon as number] },
  { type: 'int32' as const, data: [channelsOf(shape)] },
];

const affineKernel = kernelFunc(({ inputs, backend, attrs }: Args) => {
  const z = inputs.z!;
  const program = new AffineActivationProgram([...z.shape], attrs.activation as UnitActivation);
  return runWebGPUProgram(backend, program, [z, ...bnInfos(inputs)], 'float32', channelUniforms(attrs, z.shape));
});

const affineGradKernel = kernelFunc(({ inputs, backend, attrs }: Args) => {
  const z = inputs.z!;
  const program = new AffineActivationGradProgram([...z.shape], attrs.activation as UnitActivation);
  return runWebGPUProgram(backend, program, [inputs.dy!, z, ...bnInfos(inputs)], 'float32', channelUniforms(attrs, z.shape));
});

/**
 * [dγ, dβ]: over fewer than SPLIT_PIXELS pixels, one shader for both; from there on, one shader
 * for both sums split over workgroups ([splits, C] each) and one adding the splits of both.
 */
const paramGradsKernel = kernelFunc(({ inputs, backend, attrs }: Args) => {
  const z = inputs.z!;
  const channels = channelsOf(z.shape);
  const pixels = tf.util.sizeFromShape(z.shape) / channels;
  // At least 2 splits from SPLIT_PIXELS on: how many shaders run depends on that threshold only.
  const splits = pixels >= SPLIT_PIXELS ? Math.max(2, ceilDiv(pixels, PIXELS_PER_SPLIT)) : 1;
  const chunk = ceilDiv(pixels, splits);
  const activation = attrs.activation as UnitActivation;
  const shape = splits === 1 ? [channels] : [splits, channels];
  const sums = [makeGPUOutput(backend, shape), makeGPUOutput(backend, shape)];
  runRawWebGPUShader(
    backend,
    {
      key: `finetuneAffineParamGrads_${activation}`,
      code: paramGradCode(activation),
      dispatch: [ceilDiv(channels, CHANNELS_PER_WORKGROUP), splits, 1],
      name: 'AffineParamGradsShader',
    },
    [inputs.dy!, z, ...bnInfos(inputs), ...sums],
    [
      { type: 'float32', data: [attrs.epsilon as number, 0, 0, 0] },
      { type: 'int32', data: [channels, chunk, pixels, 0] },
    ],
  );
  if (splits === 1) return sums;
  const out = [makeGPUOutput(backend, [channels]), makeGPUOutput(backend, [channels])];
  runRawWebGPUShader(
    backend,
    { key: 'finetuneAffineAddSplits', code: ADD_SPLITS_CODE, dispatch: [ceilDiv(channels, 64), 1, 1], name: 'AffineAddSplitsShader' },
    [...sums, ...out],
    [{ type: 'int32', data: [channels, splits, 0, 0] }],
  );
  for (const partial of sums) freeData(backend, partial);
  return out;
});

/** Registers the op's three WebGPU kernels (idempotent; the op does it on first use). */
export function registerConvBatchNormKernels(): void {
  if (registeredKernel(PARAM_GRADS, BACKEND)) return;
  installKernel(AFFINE, BACKEND, affineKernel);
  installKernel(AFFINE_GRAD, BACKEND, affineGradKernel);
  installKernel(PARAM_GRADS, BACKEND, paramGradsKernel);
}
