/**
 * ReLU6 with a one-kernel gradient. tfjs differentiates clipByValue (what a Keras ReLU(max_value=6)
 * runs) with four kernels over the whole activation — GreaterEqual, LessEqual, LogicalAnd, Select —
 * a fifth of a fine-tuning step of MobileNetV2's top blocks on WASM. Where finetune has registered
 * `FinetuneRelu6Grad` for the backend in use (wasm: a SIMD kernel, src/engine/simd; cpu) the
 * gradient is one pass; elsewhere, or with finetune's kernels off, it is tfjs's own formula. Same
 * values either way: dy where 0 ≤ x ≤ 6, else 0.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelReplacement } from './kernel-overrides.js';
import { heapOffset, simdKernels } from './simd/kernels.js';
import {
  cpuOutput, cpuValues, installKernel, kernelFunc, registeredKernel, runKernel, wasmAllocate, wasmFloats, type TensorInfo, type WasmBackend,
} from './tfjs-internals.js';

export const RELU6_GRAD = 'FinetuneRelu6Grad';

/** dy where 0 ≤ x ≤ 6, else 0, into `out`. */
function maskGradient(dy: Float32Array, x: Float32Array, out: Float32Array): void {
  for (let i = 0; i < out.length; i++) {
    const v = x[i]!;
    out[i] = v >= 0 && v <= 6 ? dy[i]! : 0;
  }
}

const relu6GradWasm = kernelFunc<WasmBackend>(({ inputs, backend }) => {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  const out = wasmAllocate(backend, [...dy.shape]);
  const simd = simdKernels(backend);
  if (simd) {
    simd.relu6Grad(heapOffset(backend, dy), heapOffset(backend, x), heapOffset(backend, out), tf.util.sizeFromShape(dy.shape));
    return out;
  }
  // Views after the allocation: growing the heap detaches earlier ones.
  maskGradient(wasmFloats(backend, dy), wasmFloats(backend, x), wasmFloats(backend, out));
  return out;
});

const relu6GradCpu = kernelFunc(({ inputs, backend }) => {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  const out = new Float32Array(tf.util.sizeFromShape(dy.shape));
  maskGradient(cpuValues(backend, dy), cpuValues(backend, x), out);
  return cpuOutput(backend, [...dy.shape], out);
});

/** tfjs's gradient of clipByValue(x, 0, 6), which the kernel replaces. */
function tfjsRelu6Grad(dy: tf.Tensor, x: tf.Tensor): tf.Tensor {
  return tf.where(tf.logicalAnd(tf.greaterEqual(x, 0), tf.lessEqual(x, 6)), dy, tf.zerosLike(dy));
}

/** The start-up check: edges (0 and 6 pass, −0 too), both sides, odd lengths for the SIMD tail. */
const checks: KernelReplacement['checks'] = [
  { inputs: { dy: { shape: [11] }, x: { shape: [11], values: [-1, 0, 3, 6, 7, -0, 5.9999, 6.0001, -1e-7, 2, 9] } } },
  { inputs: { dy: { shape: [2, 3, 5] }, x: { shape: [2, 3, 5], range: [-2, 8] } } },
];

/** The kernel, for the backends it has a fast path on; without it the gradient is tfjs's formula. */
export const RELU6_GRAD_REPLACEMENTS: KernelReplacement[] = (['wasm', 'cpu'] as const).map((backendName) => ({
  kernelName: RELU6_GRAD,
  backendName,
  kernelFunc: backendName === 'wasm' ? relu6GradWasm : relu6GradCpu,
  fallback: 'ops',
  reference: (inputs) => tfjsRelu6Grad(inputs.dy!, inputs.x!),
  checks,
}));

/** Registers the gradient kernel for wasm and cpu, unchecked (initEngine registers and checks it). Idempotent. */
export function registerRelu6GradKernels(): void {
  for (const r of RELU6_GRAD_REPLACEMENTS) installKernel(r.kernelName, r.backendName, r.kernelFunc);
}

/** min(max(x, 0), 6), differentiable with the one-kernel gradient where there is one. */
export const relu6 = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: tf.clipByValue(x, 0, 6),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const input = saved[0]!;
      if (input.dtype === 'float32' && registeredKernel(RELU6_GRAD, tf.getBackend())) {
        return runKernel(RELU6_GRAD, { dy, x: input }) as tf.Tensor;
      }
      return tfjsRelu6Grad(dy, input);
    },
  };
  // customGrad types its function's arguments as a mix of tensors and the save function.
}) as unknown as Parameters<typeof tf.customGrad>[0]) as (x: tf.Tensor) => tf.Tensor;
