/**
 * Faster versions of tfjs-backend-wasm 4.22 kernels that training spends its time in, for the cases
 * where the shipped ones are slow; every other case goes to the shipped kernel.
 *
 * - `Slice` (and `SplitV`, which slices once per piece) starts with `readSync(x)`, a copy of the
 *   whole input, for every slice: splitting FusedAdam's flat update into MobileNetV2's 158
 *   variables copied the 2.2M-value vector 158 times a step. Here a slice copies only itself.
 * - `Sum` and `Mean` over adjacent axes before the last (the gradients of biases, batch-norm
 *   scales and broadcast adds sum an NHWC tensor over N, H, W; a global average pool averages over
 *   H, W) transpose the input first to bring the reduced axes last. Here finetune's SIMD kernel
 *   adds the rows in place (src/engine/simd): 8× faster for MobileNetV2's [32, 5, 5, 1280], with
 *   the same sums bit for bit (each column adds its rows in the same order).
 * - `GatherV2` along the first axis (a batch drawn from cached activations) copies rows; the
 *   shipped kernel took 3 ms to gather 32 rows of 1,400 values.
 * - `Add`, `Multiply`, `Sub` and `RealDiv` with one operand broadcast (batch norm's scale and offset
 *   over an NHWC tensor in inference mode and their gradients, a pool's gradient [N, 1, 1, C] over
 *   [N, H, W, C], the loss's [N, 1] over [N, K], a scalar): the shipped kernels took ~1.75 ms for
 *   [32, 7, 7, 336] × [336], 5× a same-shape product, and over 1 ms for [32, 1] × [32, 2]. Here
 *   finetune's SIMD kernel runs them, one IEEE operation per element as tfjs's, so the values are
 *   the same bit for bit.
 * - `Identity` shares its input's data, as the cpu backend's does, instead of copying it (tensors
 *   are immutable; tfjs runs it for every custom gradient's output and every clone).
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelReplacement } from './kernel-overrides.js';
import { heapOffset, simdKernels } from './simd/kernels.js';
import {
  installKernel, kernelFunc, tfjsKernel, wasmAllocate, wasmShare, wasmValues, type TensorInfo, type WasmBackend,
} from './tfjs-internals.js';

type BackendWasm = WasmBackend;

/** The kernels this module replaces for the 'wasm' backend. */
export const WASM_FAST_PATH_KERNELS = [
  tf.Slice, tf.SplitV, tf.Sum, tf.Mean, tf.GatherV2, tf.Identity, tf.Add, tf.Multiply, tf.Sub, tf.RealDiv,
] as const;

/** Registers the faster kernels for 'wasm', unchecked (initEngine registers and checks them). Idempotent. */
export function registerWasmFastPaths(): void {
  for (const r of WASM_FAST_PATH_REPLACEMENTS) {
    if (!tfjsKernel(r.kernelName, 'wasm')) throw new Error(`tfjs-backend-wasm has no ${r.kernelName} kernel to speed up.`);
    installKernel(r.kernelName, 'wasm', r.kernelFunc);
  }
}

/** tfjs's own kernel, for the cases not handled here. */
function passThrough<R extends TensorInfo | TensorInfo[] = TensorInfo>(name: string, args: object): R {
  const shipped = tfjsKernel(name, 'wasm');
  if (!shipped) throw new Error(`tfjs-backend-wasm's own ${name} kernel is missing.`);
  return shipped(args as Parameters<tf.KernelFunc>[0]) as R;
}

// ── Slice, SplitV ───────────────────────────────────────────────────────────────────────────────

interface SliceAttrs {
  begin: number | number[];
  size: number | number[];
}

function slice(args: { inputs: { x: TensorInfo }; backend: BackendWasm; attrs: SliceAttrs }): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x } = inputs;
  if (x.dtype === 'string') return passThrough(tf.Slice, args);
  const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, attrs.begin, attrs.size);
  return sliceOf(backend, x, begin, size);
}

/** x[begin : begin + size], copying only that part (views are taken after the allocation, which may
 * grow the heap and detach older ones). */
function sliceOf(backend: BackendWasm, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const out = wasmAllocate(backend, size, x.dtype);
  const count = tf.util.sizeFromShape(size);
  if (count === 0) return out;
  const src = wasmValues(backend, x);
  const dst = wasmValues(backend, out);
  const strides = tf.util.computeStrides(x.shape);
  if (tf.slice_util.isSliceContinous(x.shape, begin, size)) {
    const offset = tf.slice_util.computeFlatOffset(begin, strides);
    dst.set(src.subarray(offset, offset + count));
    return out;
  }
  // Copy contiguous runs along the last axis, walking the outer indices like an odometer.
  const rank = x.shape.length;
  const run = size[rank - 1]!;
  const index = new Array<number>(rank - 1).fill(0);
  for (let o = 0; o < count; o += run) {
    let offset = begin[rank - 1]!;
    for (let d = 0; d < rank - 1; d++) offset += (begin[d]! + index[d]!) * strides[d]!;
    dst.set(src.subarray(offset, offset + run), o);
    for (let d = rank - 2; d >= 0; d--) {
      if (++index[d]! < size[d]!) break;
      index[d] = 0;
    }
  }
  return out;
}

function splitV(args: {
  inputs: { x: TensorInfo };
  backend: BackendWasm;
  attrs: { numOrSizeSplits: number | number[]; axis: number | number[] };
}): TensorInfo[] {
  const { inputs, backend, attrs } = args;
  const { x } = inputs;
  if (x.dtype === 'string') return passThrough<TensorInfo[]>(tf.SplitV, args);
  const axis = tf.util.parseAxisParam(attrs.axis, x.shape)[0]!;
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, attrs.numOrSizeSplits, axis);
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((s) => {
    const size = [...x.shape];
    size[axis] = s;
    const piece = sliceOf(backend, x, [...begin], size);
    begin[axis]! += s;
    return piece;
  });
}

// ── Sum, Mean ───────────────────────────────────────────────────────────────────────────────────

interface ReduceArgs {
  inputs: { x: TensorInfo };
  backend: BackendWasm;
  attrs: { axis: number | number[]; keepDims: boolean };
}

/**
 * A reduction over a run of adjacent axes that stops before the last one (a sum over N, H, W of an
 * NHWC tensor; a global average pool over H, W), as [outer, reduced, inner]; undefined otherwise.
 */
function adjacentAxes(x: TensorInfo, axes: number[]): { outer: number; reduced: number; inner: number } | undefined {
  const rank = x.shape.length;
  const sorted = [...new Set(axes)].sort((a, b) => a - b);
  if (sorted.length === 0 || sorted.at(-1)! >= rank - 1 || sorted.some((a, i) => a !== sorted[0]! + i)) return undefined;
  return {
    outer: tf.util.sizeFromShape(x.shape.slice(0, sorted[0])),
    reduced: tf.util.sizeFromShape(x.shape.slice(sorted[0], sorted.at(-1)! + 1)),
    inner: tf.util.sizeFromShape(x.shape.slice(sorted.at(-1)! + 1)),
  };
}

function reduce(name: typeof tf.Sum | typeof tf.Mean, args: ReduceArgs): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x } = inputs;
  const axes = tf.util.parseAxisParam(attrs.axis, x.shape);
  const run = x.dtype === 'float32' ? adjacentAxes(x, axes) : undefined;
  const kernels = run ? simdKernels(backend) : undefined;
  if (!run || !kernels) return passThrough(name, args);

  const [outShape] = tf.backend_util.computeOutAndReduceShapes(x.shape, axes);
  const shape = attrs.keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
  const out = wasmAllocate(backend, shape, 'float32');
  const { outer, reduced, inner } = run;
  const scale = name === tf.Mean ? 1 / reduced : 1;
  const src = heapOffset(backend, x);
  const dst = heapOffset(backend, out);
  for (let p = 0; p < outer; p++) kernels.sumRows(src + 4 * p * reduced * inner, reduced, inner, dst + 4 * p * inner, scale);
  return out;
}

const sum = (args: ReduceArgs) => reduce(tf.Sum, args);
const mean = (args: ReduceArgs) => reduce(tf.Mean, args);

// ── GatherV2, Identity ──────────────────────────────────────────────────────────────────────────

function gatherV2(args: {
  inputs: { x: TensorInfo; indices: TensorInfo };
  backend: BackendWasm;
  attrs: { axis: number; batchDims: number };
}): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x, indices } = inputs;
  const axis = tf.util.parseAxisParam(attrs.axis, x.shape)[0];
  if (axis !== 0 || (attrs.batchDims ?? 0) !== 0 || x.dtype === 'string' || x.shape.length === 0) {
    return passThrough(tf.GatherV2, args);
  }
  const rows = x.shape[0]!;
  const row = tf.util.sizeFromShape(x.shape.slice(1));
  const picks = wasmValues(backend, indices);
  for (const i of picks) {
    // The shipped kernel's check and message.
    tf.util.assert(i <= rows - 1 && i >= 0, () => `GatherV2: the index value ${i} is not in [0, ${rows - 1}]`);
  }
  const out = wasmAllocate(backend, [...indices.shape, ...x.shape.slice(1)], x.dtype);
  const src = wasmValues(backend, x);
  const dst = wasmValues(backend, out);
  const at = wasmValues(backend, indices); // again: the allocation may have moved the heap
  for (let j = 0; j < at.length; j++) dst.set(src.subarray(at[j]! * row, (at[j]! + 1) * row), j * row);
  return out;
}

function identity(args: { inputs: { x: TensorInfo }; backend: BackendWasm }): TensorInfo {
  const { inputs, backend } = args;
  const { x } = inputs;
  if (x.dtype === 'string') return passThrough(tf.Identity, args);
  return wasmShare(backend, x);
}

// ── Add, Mul, Sub, RealDiv with a last-axis broadcast ───────────────────────────────────────────

type BinaryName = typeof tf.Add | typeof tf.Multiply | typeof tf.Sub | typeof tf.RealDiv;
interface BinaryArgs {
  inputs: { a: TensorInfo; b: TensorInfo };
  backend: BackendWasm;
}

/** The kernel's op code for `big OP small`, and for `small OP big` (kernels.wat's broadcastRows). */
const OP_CODES: Record<BinaryName, [bigFirst: number, smallFirst: number]> = {
  [tf.Add]: [0, 0],
  [tf.Multiply]: [1, 1],
  [tf.Sub]: [2, 3],
  [tf.RealDiv]: [4, 5],
};

/** How `small` repeats over `big` as rows × cols for kernels.wat's broadcastRows. */
export interface BroadcastLayout {
  rows: number;
  cols: number;
  rowRepeat: number;
  yRowStride: number;
  yColStride: 0 | 1;
}

/**
 * The layout when `small` broadcasts to `big`'s shape as [p, 1…, q] against [p, m…, q] (equal leading
 * and trailing dimensions, ones between them): batch norm's [C] over [N, H, W, C], a pool gradient's
 * [N, 1, 1, C] over [N, H, W, C], a loss's [N, 1] over [N, K], a scalar; undefined otherwise (and for
 * equal shapes, which the shipped kernels run fast).
 */
export function broadcastLayout(big: Pick<TensorInfo, 'shape'>, small: Pick<TensorInfo, 'shape'>): BroadcastLayout | undefined {
  const rank = big.shape.length;
  if (small.shape.length > rank) return undefined;
  const padded = [...new Array<number>(rank - small.shape.length).fill(1), ...small.shape];
  let [p, m, q] = [1, 1, 1];
  let part: 'p' | 'm' | 'q' = 'p';
  for (let d = 0; d < rank; d++) {
    const [b, s] = [big.shape[d]!, padded[d]!];
    if (b === 1 && s === 1) continue;
    if (s === b) {
      if (part === 'm') part = 'q';
      if (part === 'p') p *= b;
      else q *= b;
    } else if (s === 1) {
      if (part === 'q') return undefined;
      part = 'm';
      m *= b;
    } else return undefined;
  }
  if (m === 1) return undefined;
  return q > 1
    ? { rows: p * m, cols: q, rowRepeat: m, yRowStride: q, yColStride: 1 }
    : { rows: p, cols: m, rowRepeat: 1, yRowStride: 1, yColStride: 0 };
}

function binary(name: BinaryName, args: BinaryArgs): TensorInfo {
  const { inputs, backend } = args;
  const { a, b } = inputs;
  const floats = a.dtype === 'float32' && b.dtype === 'float32';
  const bLayout = floats ? broadcastLayout(a, b) : undefined;
  const aLayout = floats && !bLayout ? broadcastLayout(b, a) : undefined;
  const layout = bLayout ?? aLayout;
  const kernels = layout ? simdKernels(backend) : undefined;
  if (!layout || !kernels) return passThrough(name, args);

  const [big, small] = bLayout ? [a, b] : [b, a];
  const out = wasmAllocate(backend, [...big.shape], 'float32');
  if (layout.rows * layout.cols === 0) return out;
  const op = OP_CODES[name][bLayout ? 0 : 1];
  const { rows, cols, rowRepeat, yRowStride, yColStride } = layout;
  kernels.broadcastRows(op, heapOffset(backend, big), heapOffset(backend, small), heapOffset(backend, out), rows, cols, rowRepeat, yRowStride, yColStride);
  return out;
}

const add = (args: BinaryArgs) => binary(tf.Add, args);
const multiply = (args: BinaryArgs) => binary(tf.Multiply, args);
const sub = (args: BinaryArgs) => binary(tf.Sub, args);
const realDiv = (args: BinaryArgs) => binary(tf.RealDiv, args);

/** Each broadcast either way round, 4 columns and a remainder, and a same-shape pair (passed through). */
const BINARY_CHECKS: KernelReplacement['checks'] = [
  { inputs: { a: { shape: [2, 3, 3, 7] }, b: { shape: [7], range: [0.5, 2] } } },
  { inputs: { a: { shape: [1, 1, 6], range: [0.5, 2] }, b: { shape: [2, 5, 6] } } },
  { inputs: { a: { shape: [2, 1, 1, 5], range: [0.5, 2] }, b: { shape: [2, 3, 2, 5] } } },
  { inputs: { a: { shape: [6, 2] }, b: { shape: [6, 1], range: [0.5, 2] } } },
  { inputs: { a: { shape: [], range: [0.5, 2] }, b: { shape: [11] } } },
  { inputs: { a: { shape: [4, 5] }, b: { shape: [4, 5], range: [0.5, 2] } } },
];

/** Start-up check cases: each handled path, and one passed through. */
const CHECKS: Record<string, KernelReplacement['checks']> = {
  [tf.Slice]: [
    { inputs: { x: { shape: [40] } }, attrs: { begin: [7], size: [20] } },
    { inputs: { x: { shape: [6, 7] } }, attrs: { begin: [2, 0], size: [3, 7] } },
    { inputs: { x: { shape: [3, 5, 6, 4] } }, attrs: { begin: [1, 1, 2, 1], size: [2, 3, 3, 2] } },
  ],
  [tf.SplitV]: [{ inputs: { x: { shape: [4, 6, 3] } }, attrs: { numOrSizeSplits: [1, 3, 2], axis: 1 } }],
  [tf.Sum]: [
    { inputs: { x: { shape: [2, 3, 4, 5] } }, attrs: { axis: [0, 1, 2], keepDims: false } },
    { inputs: { x: { shape: [3, 4, 7] } }, attrs: { axis: [1], keepDims: true } },
    { inputs: { x: { shape: [3, 4] } }, attrs: { axis: [1], keepDims: false } },
  ],
  [tf.Mean]: [{ inputs: { x: { shape: [2, 3, 3, 9] } }, attrs: { axis: [1, 2], keepDims: false } }],
  [tf.GatherV2]: [{ inputs: { x: { shape: [5, 3, 2] }, indices: { shape: [4], dtype: 'int32', values: [3, 0, 4, 4] } }, attrs: { axis: 0, batchDims: 0 } }],
  [tf.Identity]: [{ inputs: { x: { shape: [3, 4] } } }],
  ...Object.fromEntries([tf.Add, tf.Multiply, tf.Sub, tf.RealDiv].map((name) => [name, BINARY_CHECKS])),
};

const KERNEL_FUNCS: Record<string, tf.KernelFunc> = {
  [tf.Slice]: kernelFunc(slice),
  [tf.SplitV]: kernelFunc(splitV),
  [tf.Sum]: kernelFunc(sum),
  [tf.Mean]: kernelFunc(mean),
  [tf.GatherV2]: kernelFunc(gatherV2),
  [tf.Identity]: kernelFunc(identity),
  [tf.Add]: kernelFunc(add),
  [tf.Multiply]: kernelFunc(multiply),
  [tf.Sub]: kernelFunc(sub),
  [tf.RealDiv]: kernelFunc(realDiv),
};

/** The faster kernels, each falling back to tfjs's own. */
export const WASM_FAST_PATH_REPLACEMENTS: KernelReplacement[] = WASM_FAST_PATH_KERNELS.map((kernelName) => ({
  kernelName,
  backendName: 'wasm',
  kernelFunc: KERNEL_FUNCS[kernelName]!,
  fallback: 'tfjs',
  checks: CHECKS[kernelName]!,
}));
