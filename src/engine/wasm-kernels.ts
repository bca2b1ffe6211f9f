/**
 * Convolution gradient kernels for the tfjs WASM backend.
 *
 * tfjs-backend-wasm 4.22 has no `Conv2DBackpropFilter`, `DepthwiseConv2dNativeBackpropFilter` or
 * `DepthwiseConv2dNativeBackpropInput`, so `tf.grad` through a conv layer's weights aborts there.
 * Its own `Conv2DBackpropInput` exists but is a naive C++ loop (6.6 s for VGG16 block5 at batch 16).
 * This module registers all four for backendName 'wasm':
 *
 * - dense convolutions are turned into matrix products run by the backend's own `BatchMatMul`
 *   kernel (XNNPACK, SIMD, ~8 GMAC/s on one core), with the gathering/scattering done in JS;
 *   the filter gradient, where that costs more in transposes and copies than the product itself,
 *   by finetune's own SIMD kernel for Xᵀ·dY instead, read in place (`useSimdFilterGradient`);
 * - depthwise convolutions (multiplier 1) run finetune's SIMD row kernels, except the input
 *   gradient at stride 1, which is the backend's own depthwise convolution of dy with the filter
 *   flipped in space; other multipliers are plain JS loops.
 *
 * Layout NHWC only, dilations 1, padding 'valid' | 'same' | number | explicit, strides any,
 * depthwise channel multiplier ≥ 1.
 */
import * as tf from '@tensorflow/tfjs';
import { convGradientChecks, isPointwise, type ConvCheck } from './conv-shapes.js';
import type { KernelReplacement } from './kernel-overrides.js';
import { heapOffset, simdKernels, type SimdKernels } from './simd/kernels.js';
import {
  installKernel, kernelFunc, registeredKernel, wasmAllocate, wasmFloats, wasmFree, type TensorInfo, type WasmBackend,
} from './tfjs-internals.js';

type BackendWasm = WasmBackend;
type Shape4 = [number, number, number, number];
type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
type Rounding = 'floor' | 'round' | 'ceil' | undefined;

/** The kernels this module provides for the 'wasm' backend. */
export const WASM_TRAINING_KERNELS = [
  tf.Conv2DBackpropFilter,
  tf.Conv2DBackpropInput,
  tf.DepthwiseConv2dNativeBackpropFilter,
  tf.DepthwiseConv2dNativeBackpropInput,
] as const;

/**
 * Registers the convolution gradient kernels for the 'wasm' backend (replacing its slow
 * `Conv2DBackpropInput`), unchecked: initEngine registers and checks them. Idempotent; before or
 * after the backend is initialised.
 */
export function registerWasmTrainingKernels(): void {
  for (const r of WASM_TRAINING_REPLACEMENTS) installKernel(r.kernelName, 'wasm', r.kernelFunc);
}

// ---------------------------------------------------------------------------------------------
// Helpers around the wasm backend's memory. Every tensor lives in the WASM heap; allocating one
// may grow the heap and detach every typed-array view taken before, so views are always taken
// (via `f32`) after the last allocation that precedes their use.

const f32 = wasmFloats;
const alloc = (backend: BackendWasm, shape: number[]): TensorInfo => wasmAllocate(backend, shape, 'float32');
const free = wasmFree;

/** The same data seen with another shape (no copy; only for passing to a kernel). */
function view(info: TensorInfo, shape: number[]): TensorInfo {
  return { dataId: info.dataId, shape, dtype: info.dtype };
}

/** A fresh copy: the wasm MatMul caches XNNPACK's packed copy of its `b` operand by tensor id, so a
 * `b` must be a tensor that no other product has used with another shape; a private copy is. */
function copy(backend: BackendWasm, info: TensorInfo, shape: number[]): TensorInfo {
  const out = alloc(backend, shape);
  f32(backend, out).set(f32(backend, info));
  return out;
}

function runWasmKernel(
  backend: BackendWasm,
  name: string,
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap,
): TensorInfo {
  const kernel = registeredKernel(name, 'wasm');
  if (!kernel) throw new Error(`The wasm backend has no ${name} kernel.`);
  return kernel({ inputs, backend, attrs }) as TensorInfo;
}

/** a [M, K] · b [K, N] → [M, N] by the backend's XNNPACK product (only the untransposed form is
 * fast: with transposeA/B the wasm backend falls back to a naive loop). */
function matMul(backend: BackendWasm, a: TensorInfo, b: TensorInfo): TensorInfo {
  const out = runWasmKernel(backend, tf.BatchMatMul, { a, b }, { transposeA: false, transposeB: false });
  return view(out, [a.shape[0]!, b.shape[1]!]);
}

/** x [R, C] → [C, R] by the backend's C++ transpose. */
function transpose2d(backend: BackendWasm, x: TensorInfo): TensorInfo {
  return runWasmKernel(backend, tf.Transpose, { x }, { perm: [1, 0] });
}

function assertFloat32(kernel: string, ...infos: TensorInfo[]): void {
  for (const info of infos) {
    if (info.dtype !== 'float32') throw new Error(`${kernel} on wasm supports float32 only, got ${info.dtype}.`);
  }
}

function assertNoDilation(kernel: string, dilations: number | [number, number] | undefined): void {
  const [dh, dw] = typeof dilations === 'number' ? [dilations, dilations] : (dilations ?? [1, 1]);
  if (dh !== 1 || dw !== 1) {
    throw new Error(`${kernel} on wasm supports dilations 1 only, got [${dh}, ${dw}].`);
  }
}

function assertNHWC(kernel: string, dataFormat: string | undefined): void {
  if (dataFormat !== undefined && dataFormat !== 'NHWC') {
    throw new Error(`${kernel} on wasm supports dataFormat NHWC only, got ${dataFormat}.`);
  }
}

function convInfo(
  xShape: number[],
  filterShape: number[],
  strides: number | [number, number],
  dilations: number | [number, number],
  pad: Pad,
  rounding: Rounding,
  depthwise: boolean,
): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as Shape4,
    filterShape as Shape4,
    strides,
    dilations,
    pad,
    rounding,
    depthwise,
    'channelsLast',
  );
}

// Hot inner loops, kept in small monomorphic functions unrolled by 4: V8 optimises these far
// better than the same loop inlined at the bottom of a deep loop nest (measured 2-4× faster).

/** dst[d + k] += src[s + k] for k < len. */
function addRow(dst: Float32Array, d: number, src: Float32Array, s: number, len: number): void {
  let k = 0;
  for (; k + 4 <= len; k += 4) {
    dst[d + k] += src[s + k]!;
    dst[d + k + 1] += src[s + k + 1]!;
    dst[d + k + 2] += src[s + k + 2]!;
    dst[d + k + 3] += src[s + k + 3]!;
  }
  for (; k < len; k++) dst[d + k] += src[s + k]!;
}

/** acc[o + k] += a[i + k] · b[j + k] for k < len, accumulating in float64. */
function mulAdd64(
  acc: Float64Array, o: number, a: Float32Array, i: number, b: Float32Array, j: number, len: number,
): void {
  let k = 0;
  for (; k + 4 <= len; k += 4) {
    acc[o + k] += a[i + k]! * b[j + k]!;
    acc[o + k + 1] += a[i + k + 1]! * b[j + k + 1]!;
    acc[o + k + 2] += a[i + k + 2]! * b[j + k + 2]!;
    acc[o + k + 3] += a[i + k + 3]! * b[j + k + 3]!;
  }
  for (; k < len; k++) acc[o + k] += a[i + k]! * b[j + k]!;
}

/** acc[o + k] += a[i + k] · b[j + k] for k < len, in float32. */
function mulAdd32(
  acc: Float32Array, o: number, a: Float32Array, i: number, b: Float32Array, j: number, len: number,
): void {
  let k = 0;
  for (; k + 4 <= len; k += 4) {
    acc[o + k] += a[i + k]! * b[j + k]!;
    acc[o + k + 1] += a[i + k + 1]! * b[j + k + 1]!;
    acc[o + k + 2] += a[i + k + 2]! * b[j + k + 2]!;
    acc[o + k + 3] += a[i + k + 3]! * b[j + k + 3]!;
  }
  for (; k < len; k++) acc[o + k] += a[i + k]! * b[j + k]!;
}

/**
 * Visits every (output row y of image b, filter row fy) whose input row iy = y·sh − top + fy lies
 * inside the image, in that order, with the flat pixel indices where input row iy and output row y
 * start. The gradients that walk a row at a time (both depthwise ones, the SIMD filter gradient)
 * share it.
 */
function forEachRowTap(
  info: tf.backend_util.Conv2DInfo,
  visit: (inRowPixel: number, outRowPixel: number, fy: number) => void,
): void {
  const { batchSize: n, inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, strideHeight: sh, filterHeight: kh } = info;
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < oh; y++) {
      for (let fy = 0; fy < kh; fy++) {
        const iy = y * sh - info.padInfo.top + fy;
        if (iy >= 0 && iy < h) visit((b * h + iy) * w, (b * oh + y) * ow, fy);
      }
    }
  }
}

/**
 * For kernel tap (fy, fx) of a dense convolution, visits every output pixel (flat index over
 * N·OH·OW) with the input pixel it read (flat index over N·H·W), or -1 where the tap fell in the
 * padding. Both dense gradients gather or scatter rows along exactly this map.
 */
function forEachTapPixel(
  info: tf.backend_util.Conv2DInfo,
  fy: number,
  fx: number,
  visit: (outPixel: number, inPixel: number) => void,
): void {
  const { batchSize: n, inHeight: h, inWidth: w, outHeight: oh, outWidth: ow } = info;
  const { strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < oh; y++) {
      const iy = y * sh - top + fy;
      const outRow = (b * oh + y) * ow;
      const inRow = (b * h + iy) * w;
      for (let xo = 0; xo < ow; xo++) {
        const ix = xo * sw - left + fx;
        visit(outRow + xo, iy < 0 || iy >= h || ix < 0 || ix >= w ? -1 : inRow + ix);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Conv2DBackpropFilter: dW[kh, kw] = Xₖᵀ · dY, where Xₖ [P, Ci] holds, for every output pixel p,
// the input pixel that kernel tap (kh, kw) saw (zeros for padding), and P = N·OH·OW.

function conv2DBackpropFilter(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: BackendWasm;
  attrs: tf.Conv2DBackpropFilterAttrs;
}): TensorInfo {
  const { backend } = args;
  const x = args.inputs.x!;
  const dy = args.inputs.dy!;
  const { attrs } = args;
  const name = tf.Conv2DBackpropFilter;
  assertFloat32(name, x, dy);
  assertNHWC(name, attrs.dataFormat);
  const info = convInfo(x.shape, attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false);
  const { batchSize: n, inChannels: ci, outHeight: oh, outWidth: ow } = info;
  const { outChannels: co, filterHeight: kh, filterWidth: kw } = info;
  const p = n * oh * ow;
  const simd = simdKernels(backend);
  if (simd && useSimdFilterGradient(info)) return conv2DFilterGradientSimd(backend, simd, info, x, dy, attrs.filterShape);

  if (isPointwise(info) && co > ci) {
    // dWᵀ = dYᵀ · X: XNNPACK repacks its b operand on every call, so b is the smaller matrix.
    const dyT = transpose2d(backend, view(dy, [p, co]));
    const xMat = copy(backend, x, [p, ci]);
    const dWT = matMul(backend, dyT, xMat); // [co, ci]
    free(backend, dyT);
    free(backend, xMat);
    const dW = transpose2d(backend, dWT);
    free(backend, dWT);
    return view(dW, attrs.filterShape);
  }
  const dyMat = copy(backend, dy, [p, co]);
  if (isPointwise(info)) {
    const xT = transpose2d(backend, view(x, [p, ci]));
    const dW = matMul(backend, xT, dyMat);
    free(backend, xT);
    free(backend, dyMat);
    return view(dW, attrs.filterShape);
  }

  const dW = alloc(backend, attrs.filterShape);
  for (let fy = 0; fy < kh; fy++) {
    for (let fx = 0; fx < kw; fx++) {
      const cols = alloc(backend, [p, ci]);
      {
        const colV = f32(backend, cols);
        const xV = f32(backend, x);
        forEachTapPixel(info, fy, fx, (outPixel, inPixel) => {
          const dst = outPixel * ci;
          if (inPixel < 0) colV.fill(0, dst, dst + ci);
          else colV.set(xV.subarray(inPixel * ci, inPixel * ci + ci), dst);
        });
      }
      const colsT = transpose2d(backend, cols);
      free(backend, cols);
      const tap = matMul(backend, colsT, dyMat); // [ci, co]
      free(backend, colsT);
      f32(backend, dW).set(f32(backend, tap), (fy * kw + fx) * ci * co);
      free(backend, tap);
    }
  }
  free(backend, dyMat);
  return dW;
}

/**
 * Whether the SIMD path below beats the XNNPACK one above, for dW [m, n] = Xᵀ [m, P] · dY [P, n]
 * (m = kh·kw·Ci, n = Co). XNNPACK's product runs on both threads but its path costs O(P·(m + n))
 * in transposes, copies and packing (and a JS gather per tap); the SIMD kernel runs on one thread
 * with none of that, so it wins where m·n/(m + n) (work per element moved; P cancels out) is
 * small. Measured on 2 Zen 3 cores, XNNPACK on both, ms per call, XNNPACK path → SIMD kernel, with
 * that ratio in brackets (runs vary by ±20 %):
 * - MobileNetV2, batch 16, 224 px, pointwise: 112² 16→96 [14] 140 → 35; 112² 32→16 [11] 45 → 11;
 *   56² 24→144 [21] 75 → 28; 56² 144→24 75 → 19; 28² 32→192 [27] 18 → 8; 14² 64→384 [55] 9 → 10;
 *   14² 384→96 [77] 15 → 14; 7² 160→960 [137] 8-10 → 13; 7² 960→320 [240] 17-20 → 21-30;
 *   7² 320→1280 [256] 24-32 → 33-42; Conv1 3×3/2 3→32 [m = 27: 15] 210 → 18-30.
 * - VGG16 3×3 (x's shape): 4×224²×3→64 [19] 380-450 → 40-90; 4×224²×64→64 [58] 1320-1820 →
 *   650-800; 8×112²×128→128 [115] 2650-2800 → 1150; 16×56²×256→256 [230] 3470-3870 → 2800;
 *   16×28²×256→512 [419] 1540 → 1490-1670; 16×28²×512→512 [461] 2530 → 3600;
 *   16×14²×512→512 [461] 400 → 800-880.
 * Hence SIMD for ratios up to 48 (pointwise) and 256 (other kernels, whose XNNPACK path costs more).
 */
function useSimdFilterGradient(info: tf.backend_util.Conv2DInfo): boolean {
  const m = info.filterHeight * info.filterWidth * info.inChannels;
  const n = info.outChannels;
  return m * n <= (isPointwise(info) ? 48 : 256) * (m + n);
}

/** Output pixels per call of matMulTransposeA in the pointwise case: its operands' rows then stay
 * in L1 while the kernel's tiles sweep them (32-64 measured best, out of cache; 256+ is ~30 % slower). */
const POINTWISE_BLOCK = 48;

/**
 * dW by the SIMD kernel `matMulTransposeA`, which reads x and dy where they lie (no transposes,
 * copies or packing). Every dW entry is one float32 sum over the output pixels in order.
 *
 * Pointwise: dW [Ci, Co] = x [P, Ci]ᵀ · dy [P, Co], a block of pixels per call.
 *
 * Other kernels, an output row and a filter row at a time: for output row (b, y) and filter row
 * fy, output pixel xo's kw taps read kw adjacent input pixels, i.e. kw·Ci adjacent floats from
 * pixel xo·sw − left of input row iy, so the row's pixels form a strided [OW, kw·Ci] matrix (row
 * stride sw·Ci) and dW[fy] [kw·Ci, Co] += its transpose · dy's row [OW, Co]. Pixels with taps in
 * the padding go one by one with only their taps inside. No im2col gather (measured 25-40 % slower
 * for Conv1 and VGG16's first blocks, in JS).
 */
function conv2DFilterGradientSimd(
  backend: BackendWasm, simd: SimdKernels, info: tf.backend_util.Conv2DInfo, x: TensorInfo, dy: TensorInfo, filterShape: number[],
): TensorInfo {
  const { batchSize: n, inWidth: w, inChannels: ci, outHeight: oh, outWidth: ow, outChannels: co } = info;
  const { strideWidth: sw, filterWidth: kw } = info;
  const { left } = info.padInfo;
  const dW = alloc(backend, filterShape);
  const xByte = heapOffset(backend, x);
  const dyByte = heapOffset(backend, dy);
  const dWByte = heapOffset(backend, dW);

  if (isPointwise(info)) {
    const p = n * oh * ow;
    // The first call overwrites dW (with zeros where p is 0), the others add.
    for (let q = 0; q === 0 || q < p; q += POINTWISE_BLOCK) {
      const rows = Math.min(POINTWISE_BLOCK, p - q);
      simd.matMulTransposeA(xByte + 4 * q * ci, ci, dyByte + 4 * q * co, co, dWByte, co, ci, co, rows, q > 0 ? 1 : 0);
    }
    return dW;
  }

  f32(backend, dW).fill(0);
  // Output columns [xoA, xoB) have all kw taps inside the image.
  const xoA = Math.min(ow, Math.ceil(left / sw));
  const xoB = Math.max(xoA, Math.min(ow, Math.floor((w - kw + left) / sw) + 1));
  const edgePixel = (xRow: number, dyRow: number, dWRow: number, xo: number): void => {
    const ix0 = xo * sw - left;
    const fx0 = Math.max(0, -ix0); // taps [fx0, fx1) are inside
    const fx1 = Math.min(kw, w - ix0);
    if (fx1 > fx0) {
      simd.matMulTransposeA(xRow + 4 * (ix0 + fx0) * ci, 0, dyRow + 4 * xo * co, co, dWRow + 4 * fx0 * ci * co, co, (fx1 - fx0) * ci, co, 1, 1);
    }
  };
  forEachRowTap(info, (inRowPixel, outRowPixel, fy) => {
    const xRow = xByte + 4 * inRowPixel * ci;
    const dyRow = dyByte + 4 * outRowPixel * co;
    const dWRow = dWByte + 4 * fy * kw * ci * co;
    for (let xo = 0; xo < xoA; xo++) edgePixel(xRow, dyRow, dWRow, xo);
    if (xoB > xoA) {
      const aStart = xRow + 4 * (xoA * sw - left) * ci;
      simd.matMulTransposeA(aStart, sw * ci, dyRow + 4 * xoA * co, co, dWRow, co, kw * ci, co, xoB - xoA, 1);
    }
    for (let xo = xoB; xo < ow; xo++) edgePixel(xRow, dyRow, dWRow, xo);
  });
  return dW;
}

// ---------------------------------------------------------------------------------------------
// Conv2DBackpropInput: dX = Σₖ scatter(dY · W[kh, kw]ᵀ), each product [P, Co]·[Co, Ci] adding its
// rows into the input pixels that tap (kh, kw) read in the forward pass.

function conv2DBackpropInput(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: BackendWasm;
  attrs: tf.Conv2DBackpropInputAttrs;
}): TensorInfo {
  const { backend } = args;
  const dy = args.inputs.dy!;
  const filter = args.inputs.filter!;
  const { attrs } = args;
  const name = tf.Conv2DBackpropInput;
  assertFloat32(name, dy, filter);
  assertNHWC(name, attrs.dataFormat);
  const info = convInfo(attrs.inputShape, filter.shape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false);
  const { batchSize: n, inChannels: ci, outHeight: oh, outWidth: ow } = info;
  const { outChannels: co, filterHeight: kh, filterWidth: kw } = info;
  const p = n * oh * ow;
  const dyMat = view(dy, [p, co]);

  /** W[fy, fx] transposed to [co, ci], as a fresh tensor (see `copy`). */
  const tapWeightsT = (fy: number, fx: number): TensorInfo => {
    const wT = alloc(backend, [co, ci]);
    const wTV = f32(backend, wT);
    const wV = f32(backend, filter);
    const base = (fy * kw + fx) * ci * co;
    for (let c = 0; c < ci; c++) {
      const row = base + c * co;
      for (let o = 0; o < co; o++) wTV[o * ci + c] = wV[row + o]!;
    }
    return wT;
  };

  if (isPointwise(info)) {
    const wT = tapWeightsT(0, 0);
    const dX = matMul(backend, dyMat, wT);
    free(backend, wT);
    return view(dX, attrs.inputShape);
  }

  const dX = alloc(backend, attrs.inputShape);
  f32(backend, dX).fill(0);
  for (let fy = 0; fy < kh; fy++) {
    for (let fx = 0; fx < kw; fx++) {
      const wT = tapWeightsT(fy, fx);
      const tap = matMul(backend, dyMat, wT); // [p, ci]
      free(backend, wT);
      const dXV = f32(backend, dX);
      const tapV = f32(backend, tap);
      forEachTapPixel(info, fy, fx, (outPixel, inPixel) => {
        if (inPixel >= 0) addRow(dXV, inPixel * ci, tapV, outPixel * ci, ci);
      });
      free(backend, tap);
    }
  }
  return dX;
}

// ---------------------------------------------------------------------------------------------
// Depthwise: output channel c·M + m is input channel c convolved with filter[:, :, c, m].
// Loops run over channels innermost, so every access walks contiguous memory.

/**
 * Visits every (input pixel, output pixel, filter tap) that a depthwise convolution connects, with
 * the flat offsets of the input pixel's channels, the output pixel's channels and the tap's
 * channels: both depthwise gradients are sums over exactly these triples.
 */
function forEachDepthwiseTap(
  info: tf.backend_util.Conv2DInfo,
  visit: (xBase: number, dyBase: number, tapBase: number) => void,
): void {
  const { inWidth: w, inChannels: c, outWidth: ow, outChannels: co, strideWidth: sw, filterWidth: kw } = info;
  const { left } = info.padInfo;
  forEachRowTap(info, (inRowPixel, outRowPixel, fy) => {
    for (let xo = 0; xo < ow; xo++) {
      const dyBase = (outRowPixel + xo) * co;
      for (let fx = 0; fx < kw; fx++) {
        const ix = xo * sw - left + fx;
        if (ix < 0 || ix >= w) continue;
        visit((inRowPixel + ix) * c, dyBase, (fy * kw + fx) * co);
      }
    }
  });
}

/** dW of a depthwise convolution with multiplier 1 by the SIMD row kernel (float64 sums). */
function depthwiseFilterGradientSimd(backend: BackendWasm, simd: SimdKernels, info: tf.backend_util.Conv2DInfo, x: TensorInfo, dy: TensorInfo, filterShape: number[]): TensorInfo {
  const { inWidth: w, inChannels: c, outWidth: ow, strideWidth: sw, filterHeight: kh, filterWidth: kw } = info;
  // float64 accumulators in the backend's memory (two float32 slots each), then dW.
  const acc = alloc(backend, [2 * kh * kw * c]);
  const dW = alloc(backend, filterShape);
  const accByte = heapOffset(backend, acc);
  if (accByte % 8 !== 0) throw new Error('wasm heap allocation is not 8-byte aligned');
  const accValues = () => new Float64Array(f32(backend, acc).buffer, accByte, kh * kw * c);
  accValues().fill(0);
  const xByte = heapOffset(backend, x);
  const dyByte = heapOffset(backend, dy);
  forEachRowTap(info, (inRowPixel, outRowPixel, fy) =>
    simd.depthwiseFilterRow(xByte + 4 * inRowPixel * c, dyByte + 4 * outRowPixel * c, accByte + 8 * fy * kw * c, ow, w, c, sw, info.padInfo.left, kw),
  );
  f32(backend, dW).set(accValues());
  free(backend, acc);
  return dW;
}

function depthwiseConv2dNativeBackpropFilter(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: BackendWasm;
  attrs: tf.DepthwiseConv2dNativeBackpropFilterAttrs;
}): TensorInfo {
  const { backend } = args;
  const x = args.inputs.x!;
  const dy = args.inputs.dy!;
  const { attrs } = args;
  const name = tf.DepthwiseConv2dNativeBackpropFilter;
  assertFloat32(name, x, dy);
  assertNoDilation(name, attrs.dilations);
  const info = convInfo(x.shape, attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, true);
  const { inChannels: c, outChannels: co, filterHeight: kh, filterWidth: kw } = info;
  const m = co / c;
  const simd = m === 1 ? simdKernels(backend) : undefined;
  if (simd) return depthwiseFilterGradientSimd(backend, simd, info, x, dy, attrs.filterShape);

  // Sums run over N·OH·OW terms: accumulate in float64 like the cpu backend does.
  const acc = new Float64Array(kh * kw * co);
  const xV = f32(backend, x);
  const dyV = f32(backend, dy);
  forEachDepthwiseTap(info, (xBase, dyBase, tapBase) => {
    if (m === 1) mulAdd64(acc, tapBase, xV, xBase, dyV, dyBase, c);
    else {
      for (let k = 0; k < c; k++) {
        const xv = xV[xBase + k]!;
        const o = k * m;
        for (let q = 0; q < m; q++) acc[tapBase + o + q] += xv * dyV[dyBase + o + q]!;
      }
    }
  });
  const dW = alloc(backend, attrs.filterShape);
  f32(backend, dW).set(acc);
  return dW;
}

function depthwiseConv2dNativeBackpropInput(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: BackendWasm;
  attrs: tf.DepthwiseConv2dNativeBackpropInputAttrs;
}): TensorInfo {
  const { backend } = args;
  const dy = args.inputs.dy!;
  const filter = args.inputs.filter!;
  const { attrs } = args;
  const name = tf.DepthwiseConv2dNativeBackpropInput;
  assertFloat32(name, dy, filter);
  assertNoDilation(name, attrs.dilations);
  const info = convInfo(attrs.inputShape, filter.shape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, true);
  const { inChannels: c, outChannels: co, strideHeight: sh, strideWidth: sw, filterHeight: kh, filterWidth: kw } = info;
  const { top, left, bottom, right } = info.padInfo;
  const m = co / c;

  // Stride 1, multiplier 1 (every MobileNetV2 depthwise layer but four): dX is the forward
  // depthwise convolution of dy with the filter flipped in space, which XNNPACK runs ~5× faster.
  if (sh === 1 && sw === 1 && m === 1 && Math.max(top, bottom) < kh && Math.max(left, right) < kw) {
    const flipped = alloc(backend, filter.shape);
    {
      const fV = f32(backend, flipped);
      const wV = f32(backend, filter);
      for (let fy = 0; fy < kh; fy++) {
        for (let fx = 0; fx < kw; fx++) {
          const src = ((kh - 1 - fy) * kw + (kw - 1 - fx)) * c;
          fV.set(wV.subarray(src, src + c), (fy * kw + fx) * c);
        }
      }
    }
    const pad = [[0, 0], [kh - 1 - top, kh - 1 - bottom], [kw - 1 - left, kw - 1 - right], [0, 0]];
    const dX = runWasmKernel(backend, tf.DepthwiseConv2dNative, { x: dy, filter: flipped }, { strides: 1, pad, dilations: 1 });
    free(backend, flipped);
    return dX;
  }

  const dX = alloc(backend, attrs.inputShape);
  const dXV = f32(backend, dX);
  dXV.fill(0);
  const simd = m === 1 ? simdKernels(backend) : undefined;
  if (simd) {
    const dxByte = heapOffset(backend, dX);
    const dyByte = heapOffset(backend, dy);
    const filterByte = heapOffset(backend, filter);
    forEachRowTap(info, (inRowPixel, outRowPixel, fy) =>
      simd.depthwiseInputRow(dxByte + 4 * inRowPixel * c, dyByte + 4 * outRowPixel * c, filterByte + 4 * fy * kw * c, info.outWidth, info.inWidth, c, sw, left, kw),
    );
    return dX;
  }
  const dyV = f32(backend, dy);
  const wV = f32(backend, filter);
  forEachDepthwiseTap(info, (xBase, dyBase, tapBase) => {
    if (m === 1) mulAdd32(dXV, xBase, dyV, dyBase, wV, tapBase, c);
    else {
      for (let k = 0; k < c; k++) {
        const o = k * m;
        let sum = 0;
        for (let q = 0; q < m; q++) sum += dyV[dyBase + o + q]! * wV[tapBase + o + q]!;
        dXV[xBase + k] += sum;
      }
    }
  });
  return dX;
}

/**
 * Start-up check convolutions: every path above (SIMD and XNNPACK filter gradients, pointwise and
 * not, padding on both sides of a row, depthwise multipliers 1 and 2, strides 1 and 2).
 */
const DENSE_CHECKS: ConvCheck[] = [
  { x: [2, 3, 3, 4], filter: [1, 1, 4, 5], strides: 1, pad: 'valid' },
  { x: [1, 5, 5, 3], filter: [3, 3, 3, 4], strides: 2, pad: 'same' },
  { x: [1, 4, 5, 2], filter: [3, 3, 2, 3], strides: [1, 2], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
];
/**
 * The smallest shapes the filter gradient leaves to XNNPACK (see useSimdFilterGradient): pointwise
 * with Ci < Co and Ci > Co. Its 3×3 XNNPACK path needs a 265k-value filter at least (too slow for a
 * start-up check; test/wasm-kernels.test.ts covers it); it shares its pieces with these and with
 * Conv2DBackpropInput.
 */
const DENSE_XNNPACK_FILTER_CHECKS: ConvCheck[] = [
  { x: [1, 2, 1, 97], filter: [1, 1, 97, 100], strides: 1, pad: 'same' },
  { x: [1, 2, 1, 100], filter: [1, 1, 100, 97], strides: 1, pad: 'same' },
];
const DEPTHWISE_CHECKS: ConvCheck[] = [
  { x: [2, 5, 5, 8], filter: [3, 3, 8, 1], strides: 1, pad: 'same' },
  { x: [1, 7, 6, 3], filter: [3, 3, 3, 1], strides: 2, pad: 'valid' },
  { x: [1, 5, 5, 3], filter: [3, 3, 3, 2], strides: 1, pad: 'same' },
  { x: [1, 5, 5, 3], filter: [3, 3, 3, 2], strides: 2, pad: 'same' },
];

const filterChecks = (cases: ConvCheck[], depthwise: boolean) => cases.map((c) => convGradientChecks(c, depthwise).filter);
const inputChecks = (cases: ConvCheck[], depthwise: boolean) => cases.map((c) => convGradientChecks(c, depthwise).input);

/**
 * The four kernels, for the start-up check and registration. tfjs-backend-wasm has its own
 * Conv2DBackpropInput only; for the others, tfjs's cpu kernels are the reference and the fallback.
 */
export const WASM_TRAINING_REPLACEMENTS: KernelReplacement[] = [
  {
    kernelName: tf.Conv2DBackpropFilter,
    backendName: 'wasm',
    kernelFunc: kernelFunc(conv2DBackpropFilter),
    fallback: 'cpu',
    checks: filterChecks([...DENSE_CHECKS, ...DENSE_XNNPACK_FILTER_CHECKS], false),
  },
  {
    kernelName: tf.Conv2DBackpropInput,
    backendName: 'wasm',
    kernelFunc: kernelFunc(conv2DBackpropInput),
    fallback: 'tfjs',
    checks: inputChecks(DENSE_CHECKS, false),
  },
  {
    kernelName: tf.DepthwiseConv2dNativeBackpropFilter,
    backendName: 'wasm',
    kernelFunc: kernelFunc(depthwiseConv2dNativeBackpropFilter),
    fallback: 'cpu',
    checks: filterChecks(DEPTHWISE_CHECKS, true),
  },
  {
    kernelName: tf.DepthwiseConv2dNativeBackpropInput,
    backendName: 'wasm',
    kernelFunc: kernelFunc(depthwiseConv2dNativeBackpropInput),
    fallback: 'cpu',
    checks: inputChecks(DEPTHWISE_CHECKS, true),
  },
];
