/**
 * Faster convolution gradient kernels for the tfjs WebGPU backend.
 *
 * tfjs-backend-webgpu 4.22 computes `Conv2DBackpropFilter` and `DepthwiseConv2dNativeBackpropFilter`
 * with one GPU thread per filter element, each summing serially over all N·OH·OW output pixels. A
 * filter has few elements (MobileNetV2's first depthwise filter: 288; its 1×1 convolutions: 512 to
 * 400k) and the sum is long (N·112·112 terms at 224 px), so a big GPU runs a few hundred threads, each
 * waiting on memory for a long time: on an H100, 1 s of the 1.2 s of GPU time of a MobileNetV2
 * training step at batch 16. This module registers, for backendName 'webgpu':
 *
 * - `Conv2DBackpropFilter`:
 *   - 1×1, stride 1, no padding (every 1×1 convolution of MobileNetV2): dW = Xᵀ·dY, one matrix
 *     product [N·H·W, Ci]ᵀ·[N·H·W, Co] by the backend's own `BatchMatMul` kernel (which splits the
 *     long inner dimension over many workgroups);
 *   - any other NHWC convolution without dilation (3×3 stem of MobileNetV2, all of VGG16): an
 *     implicit-GEMM shader, dW[(ky,kx,ci), co] = Σ_p X_tap[p, ci]·dY[p, co] in 64×64 output tiles
 *     staged through workgroup memory, with the pixel sum split over workgroups (split-K) and the
 *     partial sums added by a second small shader;
 * - `DepthwiseConv2dNativeBackpropFilter` (NHWC, no dilation, any channel multiplier): a direct
 *   shader where each workgroup takes 64 output channels and one chunk of pixels, 4 lanes per channel,
 *   each lane keeping one running sum per filter tap; lanes are added in workgroup memory and the
 *   chunks by the second shader.
 *
 * Everything else (NCHW, dilations, non-float32 inputs) goes to the kernel tfjs ships, kept from the
 * registry before it is replaced. `DepthwiseConv2dNativeBackpropInput` and `Conv2DBackpropInput`
 * are left alone: the shipped ones already run one thread per input element (the latter as a
 * matrix product), which keeps a GPU busy.
 *
 * The package is an optional dependency and registers its backend only if `navigator.gpu` exists
 * when it is first imported, so this module never imports it: the parts of its API used here
 * (`WebGPUProgram`, `runWebGPUProgram`) are declared in tfjs-internals.ts.
 */
import * as tf from '@tensorflow/tfjs';
import { convGradientChecks, isPointwise, type ConvCheck } from './conv-shapes.js';
import type { KernelReplacement } from './kernel-overrides.js';
import {
  freeData, installKernel, kernelFunc, registeredKernel, restoreTfjsKernel, runWebGPUProgram, tfjsKernel, type TensorInfo, type WebGPUProgram,
} from './tfjs-internals.js';

/** WGSL shared by the split-K gradient shaders: the input and dy shapes, and this split's pixel range. */
const SPLIT_K_SHAPES = `        let inH = uniforms.xShape.y;
        let inW = uniforms.xShape.z;
        let inC = uniforms.xShape.w;
        let outH = uniforms.dyShape.y;
        let outW = uniforms.dyShape.z;
        let outC = uniforms.dyShape.w;
        let pStart = split * uniforms.chunk;
        let pEnd = min(pStart + uniforms.chunk, uniforms.pixels);
`;

type Shape4 = [number, number, number, number];

/** The kernels this module provides for the 'webgpu' backend. */
export const WEBGPU_TRAINING_KERNELS = [tf.Conv2DBackpropFilter, tf.DepthwiseConv2dNativeBackpropFilter] as const;

const BACKEND = 'webgpu';

/** WebGPU's guaranteed minimum; tfjs asks for the adapter's, at least this. */
const MAX_WORKGROUPS_PER_DIMENSION = 65535;

// ---------------------------------------------------------------------------------------------
// Registration.

/** A kernel's arguments, with its attributes typed. */
type KernelArgs<A> = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs: A };

/**
 * Registers the faster kernels for the 'webgpu' backend, unchecked (initEngine registers and checks
 * them). Idempotent. Call it after `@tensorflow/tfjs-backend-webgpu` has been imported (which
 * registers the shipped kernels); before that it registers nothing, and a later call does it.
 */
export function registerWebgpuTrainingKernels(): void {
  for (const r of WEBGPU_TRAINING_REPLACEMENTS) {
    if (tfjsKernel(r.kernelName, BACKEND)) installKernel(r.kernelName, BACKEND, r.kernelFunc);
  }
}

/** Puts the shipped kernels back (for benchmarks and tests). */
export function unregisterWebgpuTrainingKernels(): void {
  for (const r of WEBGPU_TRAINING_REPLACEMENTS) {
    if (registeredKernel(r.kernelName, BACKEND) === r.kernelFunc) restoreTfjsKernel(r.kernelName, BACKEND);
  }
}

function fallBack(kernelName: string, args: KernelArgs<object>): TensorInfo | TensorInfo[] {
  const original = tfjsKernel(kernelName, BACKEND);
  if (!original) throw new Error(`The webgpu backend's own ${kernelName} kernel is missing.`);
  return original(args as Parameters<tf.KernelFunc>[0]);
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/** The same data seen with another shape (no copy). */
function view(info: TensorInfo, shape: number[]): TensorInfo {
  return { dataId: info.dataId, shape, dtype: info.dtype };
}

function noDilation(dilations: number | [number, number] | undefined): boolean {
  const [dh, dw] = typeof dilations === 'number' ? [dilations, dilations] : (dilations ?? [1, 1]);
  return dh === 1 && dw === 1;
}

const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);

/**
 * Splits a sum over `pixels` terms into `splits` chunks of `chunk` terms so that about
 * `targetWorkgroups` workgroups run (given `tiles` workgroups per chunk), with at least `minChunk`
 * terms per chunk.
 */
function splitSum(pixels: number, tiles: number, targetWorkgroups: number, minChunk: number): { splits: number; chunk: number } {
  let splits = Math.max(1, Math.min(ceilDiv(targetWorkgroups, tiles), ceilDiv(pixels, minChunk), MAX_WORKGROUPS_PER_DIMENSION));
  const chunk = ceilDiv(pixels, splits);
  splits = ceilDiv(pixels, chunk);
  return { splits, chunk };
}

/** Adds `partials` [splits, ...shape] over its first axis into a tensor of `shape`; frees `partials`. */
export function sumSplits(backend: tf.KernelBackend, partials: TensorInfo, splits: number, shape: number[]): TensorInfo {
  if (splits === 1) return view(partials, shape);
  const out = runWebGPUProgram(backend, new SumSplitsProgram(shape), [partials], 'float32', [{ type: 'int32', data: [splits] }]);
  freeData(backend, partials);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conv2DBackpropFilter.

function conv2DBackpropFilter(args: KernelArgs<tf.Conv2DBackpropFilterAttrs>): TensorInfo | TensorInfo[] {
  const { backend, attrs } = args;
  const x = args.inputs.x!;
  const dy = args.inputs.dy!;
  const dataFormat = tf.backend_util.convertConv2DDataFormat(attrs.dataFormat);
  if (dataFormat !== 'channelsLast' || x.dtype !== 'float32' || dy.dtype !== 'float32') {
    return fallBack(tf.Conv2DBackpropFilter, args);
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as Shape4, attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false, dataFormat,
  );
  const { batchSize: n, inChannels: ci, outChannels: co, outHeight: oh, outWidth: ow } = info;
  const pixels = n * oh * ow;
  if (pixels === 0 || ci === 0 || co === 0) return fallBack(tf.Conv2DBackpropFilter, args);

  if (isPointwise(info)) {
    // dW [Ci, Co] = X [P, Ci]ᵀ · dY [P, Co]: one product by the backend's own BatchMatMul.
    const matMul = registeredKernel(tf.BatchMatMul, BACKEND);
    if (!matMul) return fallBack(tf.Conv2DBackpropFilter, args);
    const out = matMul({
      inputs: { a: view(x, [1, pixels, ci]), b: view(dy, [1, pixels, co]) },
      backend: args.backend,
      attrs: { transposeA: true, transposeB: false },
    }) as TensorInfo;
    return view(out, attrs.filterShape);
  }

  const rows = info.filterHeight * info.filterWidth * ci;
  const tiles = ceilDiv(rows, GEMM_TILE) * ceilDiv(co, GEMM_TILE);
  if (tiles > MAX_WORKGROUPS_PER_DIMENSION) return fallBack(tf.Conv2DBackpropFilter, args);
  const { splits, chunk } = splitSum(pixels, tiles, 512, 256);
  const program = new Conv2DFilterGemmProgram(splits, rows, co, info.filterWidth);
  const partials = runWebGPUProgram(backend, program, [x, dy], 'float32', [
    { type: 'int32', data: [info.strideHeight, info.strideWidth] },
    { type: 'int32', data: [info.padInfo.top, info.padInfo.left] },
    { type: 'int32', data: [chunk] },
    { type: 'int32', data: [pixels] },
  ]);
  return sumSplits(backend, partials, splits, attrs.filterShape);
}

/** Output tile edge of the implicit GEMM (rows = filter taps × input channels, columns = output channels). */
const GEMM_TILE = 64;
/** Pixels per step of the implicit GEMM's inner loop. */
const GEMM_STEP = 16;

/**
 * Partial filter gradients of a dense NHWC convolution: output [splits, KH·KW·Ci, Co], where split s
 * sums over output pixels [s·chunk, (s+1)·chunk). Each 16×16 workgroup computes a 64×64 output tile
 * (4×4 per invocation), staging 16 pixels of the implicit im2col matrix of x and of dy in workgroup
 * memory per step. Loop trip counts depend on uniforms only, so the barriers are in uniform control.
 */
class Conv2DFilterGemmProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [2], y: [1], z: [0] };
  dispatch: [number, number, number];
  variableNames = ['x', 'dy'];
  uniforms = 'strides : vec2<i32>, pads : vec2<i32>, chunk : i32, pixels : i32,';
  workgroupSize: [number, number, number] = [16, 16, 1];

  constructor(
    splits: number,
    rows: number,
    outChannels: number,
    private readonly filterWidth: number,
  ) {
    this.outputShape = [splits, rows, outChannels];
    this.dispatch = [ceilDiv(outChannels, GEMM_TILE), ceilDiv(rows, GEMM_TILE), splits];
    this.shaderKey = `finetuneConv2DFilterGemm_${filterWidth}`;
  }

  getUserCode(): string {
    const loads = (GEMM_TILE * GEMM_STEP) / 256;
    return `
      var<workgroup> tileX : array<array<f32, ${GEMM_TILE}>, ${GEMM_STEP}>;
      var<workgroup> tileDy : array<array<f32, ${GEMM_TILE}>, ${GEMM_STEP}>;

      fn main() {
        let col0 = i32(workgroupId.x) * ${GEMM_TILE};
        let row0 = i32(workgroupId.y) * ${GEMM_TILE};
        let split = i32(workgroupId.z);
        let tx = i32(localId.x);
        let ty = i32(localId.y);
        let flat = ty * 16 + tx;
        let rows = uniforms.outShape.y;
${SPLIT_K_SHAPES}
        var acc : array<vec4<f32>, 4>;
        let steps = (uniforms.chunk + ${GEMM_STEP - 1}) / ${GEMM_STEP};
        for (var step = 0; step < steps; step++) {
          let p0 = pStart + step * ${GEMM_STEP};
          for (var i = 0; i < ${loads}; i++) {
            let e = flat + i * 256;
            let k = e / ${GEMM_TILE};
            let j = e - k * ${GEMM_TILE};
            let p = p0 + k;
            var xv = 0.0;
            var gv = 0.0;
            if (p < pEnd) {
              let r = row0 + j;
              if (r < rows) {
                let tap = r / inC;
                let c = r - tap * inC;
                let ky = tap / ${this.filterWidth};
                let kx = tap - ky * ${this.filterWidth};
                let ox = p % outW;
                let q = p / outW;
                let oy = q % outH;
                let b = q / outH;
                let iy = oy * uniforms.strides.x - uniforms.pads.x + ky;
                let ix = ox * uniforms.strides.y - uniforms.pads.y + kx;
                if (iy >= 0 && iy < inH && ix >= 0 && ix < inW) {
                  xv = x[((b * inH + iy) * inW + ix) * inC + c];
                }
              }
              let o = col0 + j;
              if (o < outC) {
                gv = dy[p * outC + o];
              }
            }
            tileX[k][j] = xv;
            tileDy[k][j] = gv;
          }
          workgroupBarrier();
          for (var k = 0; k < ${GEMM_STEP}; k++) {
            let a = vec4<f32>(tileX[k][ty * 4], tileX[k][ty * 4 + 1], tileX[k][ty * 4 + 2], tileX[k][ty * 4 + 3]);
            let g = vec4<f32>(tileDy[k][tx * 4], tileDy[k][tx * 4 + 1], tileDy[k][tx * 4 + 2], tileDy[k][tx * 4 + 3]);
            acc[0] = fma(vec4<f32>(a.x), g, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), g, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), g, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), g, acc[3]);
          }
          workgroupBarrier();
        }

        for (var i = 0; i < 4; i++) {
          let r = row0 + ty * 4 + i;
          if (r < rows) {
            for (var j = 0; j < 4; j++) {
              let o = col0 + tx * 4 + j;
              if (o < outC) {
                result[(split * rows + r) * outC + o] = acc[i][j];
              }
            }
          }
        }
      }
    `;
  }
}

/** out[i] = Σ_s partials[s, i]: one invocation per output element. */
class SumSplitsProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey = 'finetuneSumSplits';
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames = ['partials'];
  uniforms = 'splits : i32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;

  constructor(shape: number[]) {
    this.outputShape = shape;
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    const size = shape.reduce((a, b) => a * b, 1);
    this.dispatch = [ceilDiv(size, 64), 1, 1];
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          var sum = 0.0;
          for (var s = 0; s < uniforms.splits; s++) {
            sum += partials[s * uniforms.size + index];
          }
          result[index] = sum;
        }
      }
    `;
  }
}

// ---------------------------------------------------------------------------------------------
// DepthwiseConv2dNativeBackpropFilter.

/** Output channels per workgroup, and invocations per channel (lanes over pixels). */
const DW_CHANNELS = 64;
const DW_LANES = 4;

function depthwiseConv2dNativeBackpropFilter(args: KernelArgs<tf.DepthwiseConv2dNativeBackpropFilterAttrs>): TensorInfo | TensorInfo[] {
  const { backend, attrs } = args;
  const x = args.inputs.x!;
  const dy = args.inputs.dy!;
  if (!noDilation(attrs.dilations) || x.dtype !== 'float32' || dy.dtype !== 'float32') {
    return fallBack(tf.DepthwiseConv2dNativeBackpropFilter, args);
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as Shape4, attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, true,
  );
  const { batchSize: n, outChannels: cm, outHeight: oh, outWidth: ow, filterHeight: kh, filterWidth: kw } = info;
  const pixels = n * oh * ow;
  const tiles = ceilDiv(cm, DW_CHANNELS);
  // Workgroup memory for the lanes' sums: 9 KB for 3×3 (WebGPU guarantees 16 KB).
  const laneBytes = kh * kw * DW_LANES * DW_CHANNELS * 4;
  if (pixels === 0 || cm === 0 || tiles > MAX_WORKGROUPS_PER_DIMENSION || laneBytes > 16384) {
    return fallBack(tf.DepthwiseConv2dNativeBackpropFilter, args);
  }
  const { splits, chunk } = splitSum(pixels, tiles, 1024, 64);
  const program = new DepthwiseFilterProgram(splits, kh, kw, cm);
  const partials = runWebGPUProgram(backend, program, [x, dy], 'float32', [
    { type: 'int32', data: [info.strideHeight, info.strideWidth] },
    { type: 'int32', data: [info.padInfo.top, info.padInfo.left] },
    { type: 'int32', data: [cm / info.inChannels] },
    { type: 'int32', data: [chunk] },
    { type: 'int32', data: [pixels] },
  ]);
  return sumSplits(backend, partials, splits, attrs.filterShape);
}

/**
 * Partial depthwise filter gradients: output [splits, KH·KW, C·M], where split s sums over output
 * pixels [s·chunk, (s+1)·chunk). Invocation (channel d, lane l) of workgroup (tile, s) walks every
 * 4th pixel of the chunk, reading dy[p, d] once and the KH·KW input pixels it touched, keeping one
 * running sum per tap in registers; the 4 lanes are then added in workgroup memory.
 */
class DepthwiseFilterProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [2], y: [0] };
  dispatch: [number, number, number];
  variableNames = ['x', 'dy'];
  uniforms = 'strides : vec2<i32>, pads : vec2<i32>, channelMul : i32, chunk : i32, pixels : i32,';
  workgroupSize: [number, number, number] = [DW_CHANNELS, DW_LANES, 1];

  constructor(
    splits: number,
    private readonly filterHeight: number,
    private readonly filterWidth: number,
    channels: number,
  ) {
    this.outputShape = [splits, filterHeight * filterWidth, channels];
    this.dispatch = [ceilDiv(channels, DW_CHANNELS), splits, 1];
    this.shaderKey = `finetuneDepthwiseFilter_${filterHeight}_${filterWidth}`;
  }

  getUserCode(): string {
    const kh = this.filterHeight;
    const kw = this.filterWidth;
    const taps = kh * kw;
    const accumulate: string[] = [];
    for (let ky = 0; ky < kh; ky++) {
      accumulate.push(`{
              let iy = iy0 + ${ky};
              if (iy >= 0 && iy < inH) {
                let rowBase = (b * inH + iy) * inW;`);
      for (let kx = 0; kx < kw; kx++) {
        accumulate.push(`
                { let ix = ix0 + ${kx};
                  if (ix >= 0 && ix < inW) { acc[${ky * kw + kx}] = fma(x[(rowBase + ix) * inC + c], g, acc[${ky * kw + kx}]); } }`);
      }
      accumulate.push(`
              }
            }`);
    }
    return `
      var<workgroup> laneSums : array<f32, ${taps * DW_LANES * DW_CHANNELS}>;

      fn main() {
        let d = i32(globalId.x);
        let lane = i32(localId.y);
        let lx = i32(localId.x);
        let split = i32(workgroupId.y);
${SPLIT_K_SHAPES}
        var acc : array<f32, ${taps}>;
        if (d < outC) {
          let c = d / uniforms.channelMul;
          for (var p = pStart + lane; p < pEnd; p += ${DW_LANES}) {
            let ox = p % outW;
            let q = p / outW;
            let oy = q % outH;
            let b = q / outH;
            let g = dy[p * outC + d];
            let iy0 = oy * uniforms.strides.x - uniforms.pads.x;
            let ix0 = ox * uniforms.strides.y - uniforms.pads.y;
            ${accumulate.join('')}
          }
        }
        for (var t = 0; t < ${taps}; t++) {
          laneSums[(t * ${DW_LANES} + lane) * ${DW_CHANNELS} + lx] = acc[t];
        }
        workgroupBarrier();
        for (var t = lane; t < ${taps}; t += ${DW_LANES}) {
          var sum = 0.0;
          for (var l = 0; l < ${DW_LANES}; l++) {
            sum += laneSums[(t * ${DW_LANES} + l) * ${DW_CHANNELS} + lx];
          }
          if (d < outC) {
            result[(split * ${taps} + t) * outC + d] = sum;
          }
        }
      }
    `;
  }
}

// ---------------------------------------------------------------------------------------------

/** Start-up check convolutions: the 1×1 matrix product, the implicit GEMM (strided, padded), depthwise multipliers 1 and 2. */
const DENSE_CHECKS: ConvCheck[] = [
  { x: [2, 3, 3, 4], filter: [1, 1, 4, 5], strides: 1, pad: 'valid' },
  { x: [1, 5, 5, 3], filter: [3, 3, 3, 4], strides: 2, pad: 'same' },
  { x: [2, 6, 5, 3], filter: [3, 3, 3, 70], strides: 1, pad: 'same' },
];
const DEPTHWISE_CHECKS: ConvCheck[] = [
  { x: [2, 5, 5, 8], filter: [3, 3, 8, 1], strides: 1, pad: 'same' },
  { x: [1, 7, 6, 3], filter: [3, 3, 3, 2], strides: 2, pad: 'valid' },
];

/** The kernels, each falling back to the shipped one. */
export const WEBGPU_TRAINING_REPLACEMENTS: KernelReplacement[] = [
  {
    kernelName: tf.Conv2DBackpropFilter,
    backendName: BACKEND,
    kernelFunc: kernelFunc(conv2DBackpropFilter),
    fallback: 'tfjs',
    checks: DENSE_CHECKS.map((c) => convGradientChecks(c, false).filter),
  },
  {
    kernelName: tf.DepthwiseConv2dNativeBackpropFilter,
    backendName: BACKEND,
    kernelFunc: kernelFunc(depthwiseConv2dNativeBackpropFilter),
    fallback: 'tfjs',
    checks: DEPTHWISE_CHECKS.map((c) => convGradientChecks(c, true).filter),
  },
];
