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
 * - `Identity` shares its input's data, as the cpu backend's does, instead of copying it (tensors
 *   are immutable; tfjs runs it for every custom gradient's output and every clone).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapOffset, simdKernels } from './simd/kernels.js';

type TensorInfo = tf.TensorInfo;

/** The kernels this module replaces for the 'wasm' backend. */
export const WASM_FAST_PATH_KERNELS = [tf.Slice, tf.SplitV, tf.Sum, tf.Mean, tf.GatherV2, tf.Identity] as const;

/** The shipped kernels, for the cases handled here by passing through. */
const shipped = new Map<string, tf.KernelFunc>();

/** Registers the faster kernels for 'wasm'. Idempotent; before or after the backend starts. */
export function registerWasmFastPaths(): void {
  for (const config of KERNEL_CONFIGS) {
    const existing = tf.getKernel(config.kernelName, 'wasm');
    if (existing?.kernelFunc === config.kernelFunc) continue;
    if (!existing) throw new Error(`tfjs-backend-wasm has no ${config.kernelName} kernel to speed up.`);
    shipped.set(config.kernelName, existing.kernelFunc);
    tf.unregisterKernel(config.kernelName, 'wasm');
    tf.registerKernel({ ...existing, kernelFunc: config.kernelFunc });
  }
}

function passThrough(name: string, args: Parameters<tf.KernelFunc>[0]): TensorInfo {
  return shipped.get(name)!(args) as TensorInfo;
}

// ── Slice, SplitV ───────────────────────────────────────────────────────────────────────────────

interface SliceAttrs {
  begin: number | number[];
  size: number | number[];
}

function slice(args: { inputs: { x: TensorInfo }; backend: BackendWasm; attrs: SliceAttrs }): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x } = inputs;
  if (x.dtype === 'string') return passThrough(tf.Slice, args as unknown as Parameters<tf.KernelFunc>[0]);
  const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, attrs.begin, attrs.size);
  return sliceOf(backend, x, begin, size);
}

/** x[begin : begin + size], copying only that part (views are taken after the allocation, which may
 * grow the heap and detach older ones). */
function sliceOf(backend: BackendWasm, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const out = backend.makeOutput(size, x.dtype);
  const count = tf.util.sizeFromShape(size);
  if (count === 0) return out;
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
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
  if (x.dtype === 'string') return shipped.get(tf.SplitV)!(args as unknown as Parameters<tf.KernelFunc>[0]) as TensorInfo[];
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
  if (!run || !kernels) return passThrough(name, args as unknown as Parameters<tf.KernelFunc>[0]);

  const [outShape] = tf.backend_util.computeOutAndReduceShapes(x.shape, axes);
  const shape = attrs.keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
  const out = backend.makeOutput(shape, 'float32');
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
    return passThrough(tf.GatherV2, args as unknown as Parameters<tf.KernelFunc>[0]);
  }
  const rows = x.shape[0]!;
  const row = tf.util.sizeFromShape(x.shape.slice(1));
  const picks = backend.typedArrayFromHeap(indices);
  for (const i of picks) {
    // The shipped kernel's check and message.
    tf.util.assert(i <= rows - 1 && i >= 0, () => `GatherV2: the index value ${i} is not in [0, ${rows - 1}]`);
  }
  const out = backend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const at = backend.typedArrayFromHeap(indices); // again: makeOutput may have moved the heap
  for (let j = 0; j < at.length; j++) dst.set(src.subarray(at[j]! * row, (at[j]! + 1) * row), j * row);
  return out;
}

function identity(args: { inputs: { x: TensorInfo }; backend: BackendWasm }): TensorInfo {
  const { inputs, backend } = args;
  const { x } = inputs;
  if (x.dtype === 'string') return passThrough(tf.Identity, args as unknown as Parameters<tf.KernelFunc>[0]);
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

const KERNEL_CONFIGS: Array<{ kernelName: string; kernelFunc: tf.KernelFunc }> = [
  { kernelName: tf.Slice, kernelFunc: slice as unknown as tf.KernelFunc },
  { kernelName: tf.SplitV, kernelFunc: splitV as unknown as tf.KernelFunc },
  { kernelName: tf.Sum, kernelFunc: sum as unknown as tf.KernelFunc },
  { kernelName: tf.Mean, kernelFunc: mean as unknown as tf.KernelFunc },
  { kernelName: tf.GatherV2, kernelFunc: gatherV2 as unknown as tf.KernelFunc },
  { kernelName: tf.Identity, kernelFunc: identity as unknown as tf.KernelFunc },
];
