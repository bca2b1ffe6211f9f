/**
 * finetune's own WebAssembly SIMD kernels (kernels.wat), run directly on the tfjs WASM backend's
 * memory: the module imports that memory, so a kernel reads and writes tensors where tfjs keeps
 * them, with no copies. For loops that tfjs-wasm runs slowly (a Sum over leading axes transposes
 * first) or that finetune would otherwise run in JavaScript (ReLU6's gradient, the depthwise
 * convolution gradients), and for the dense convolutions' filter gradient, Xᵀ·dY read in place
 * (XNNPACK's product needs X transposed and a packed copy of dY).
 */
import { wasmByteOffset, wasmMemory, type TensorInfo, type WasmBackend } from '../tfjs-internals.js';
import { PLAIN_MEMORY_KERNELS, SHARED_MEMORY_KERNELS } from './kernels.generated.js';

/** The exports of kernels.wat; pointers are byte offsets into the backend's memory. */
export interface SimdKernels {
  /** dst[c] = scale · Σ_r src[r·cols + c]. */
  sumRows(src: number, rows: number, cols: number, dst: number, scale: number): void;
  /**
   * out[r·cols + c] = x[r·cols + c] OP y[⌊r / rowRepeat⌋·yRowStride + c·yColStride] (yColStride 0 or 1);
   * op 0 +, 1 ·, 2 −, 3 reversed −, 4 ÷, 5 reversed ÷.
   */
  broadcastRows(
    op: number, x: number, y: number, out: number, rows: number, cols: number, rowRepeat: number, yRowStride: number, yColStride: number,
  ): void;
  /** out[i] = dy[i] where 0 ≤ x[i] ≤ 6, else 0. */
  relu6Grad(dy: number, x: number, out: number, n: number): void;
  /** acc[fx·C + k] (float64) += x[ix·C + k] · dy[xo·C + k] over one output row (depthwise, multiplier 1). */
  depthwiseFilterRow(
    x: number, dy: number, acc: number, outWidth: number, width: number, channels: number, stride: number, left: number, filterWidth: number,
  ): void;
  /** dx[ix·C + k] += dy[xo·C + k] · filter[fx·C + k] over one output row (depthwise, multiplier 1). */
  depthwiseInputRow(
    dx: number, dy: number, filter: number, outWidth: number, width: number, channels: number, stride: number, left: number, filterWidth: number,
  ): void;
  /**
   * out[i·outStride + j] = Σ_{q<p} a[q·aStride + i] · b[q·bStride + j] for i < m, j < n (Aᵀ·B), added
   * onto out where `accumulate` is 1; float32 sums in q order (strides in elements).
   */
  matMulTransposeA(
    a: number, aStride: number, b: number, bStride: number, out: number, outStride: number, m: number, n: number, p: number, accumulate: number,
  ): void;
}

/** The WebAssembly API as used here (this project's lib has no WebAssembly types). */
interface WebAssemblyApi {
  Memory: abstract new (...args: never[]) => { buffer: ArrayBufferLike };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: object };
}
const WA = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

const instances = new WeakMap<object, SimdKernels | null>();

/**
 * The kernels, instantiated once per backend memory; undefined where the backend's memory can't be
 * reached (then callers keep to their other paths).
 */
export function simdKernels(backend: WasmBackend): SimdKernels | undefined {
  const memory = wasmMemory(backend);
  if (!(memory instanceof WA.Memory)) return undefined;
  let kernels = instances.get(memory);
  if (kernels === undefined) {
    kernels = instantiate(memory);
    instances.set(memory, kernels);
  }
  return kernels ?? undefined;
}

function instantiate(memory: { buffer: ArrayBufferLike }): SimdKernels | null {
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  try {
    const bytes = Buffer.from(shared ? SHARED_MEMORY_KERNELS : PLAIN_MEMORY_KERNELS, 'base64');
    const instance = new WA.Instance(new WA.Module(bytes), { env: { memory } });
    return instance.exports as SimdKernels;
  } catch {
    return null; // e.g. a WebAssembly without SIMD
  }
}

/** Where a tensor's data starts in the backend's memory (a byte offset). */
export function heapOffset(backend: WasmBackend, info: TensorInfo): number {
  return wasmByteOffset(backend, info);
}
