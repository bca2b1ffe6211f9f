/**
 * ReLU6 with a one-kernel gradient. tfjs differentiates clipByValue (what a Keras ReLU(max_value=6)
 * runs) with four kernels over the whole activation — GreaterEqual, LessEqual, LogicalAnd, Select —
 * a fifth of a fine-tuning step of MobileNetV2's top blocks on WASM. Where this module has
 * registered `FinetuneRelu6Grad` for the backend in use (wasm: a SIMD kernel, src/engine/simd; cpu) the gradient is one pass; elsewhere
 * it is tfjs' own formula. Same values either way: dy where 0 ≤ x ≤ 6, else 0.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapOffset, simdKernels } from './simd/kernels.js';

export const RELU6_GRAD = 'FinetuneRelu6Grad';

/** dy where 0 ≤ x ≤ 6, else 0, into `out`. */
function maskGradient(dy: Float32Array, x: Float32Array, out: Float32Array): void {
  for (let i = 0; i < out.length; i++) {
    const v = x[i]!;
    out[i] = v >= 0 && v <= 6 ? dy[i]! : 0;
  }
}

interface CpuBackendLike {
  data: { get(dataId: object): { values: Float32Array } };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): tf.TensorInfo;
}

/** Registers the gradient kernel for the backends it has a fast path on. Idempotent. */
export function registerRelu6GradKernels(): void {
  if (!tf.getKernel(RELU6_GRAD, 'wasm')) {
    tf.registerKernel({
      kernelName: RELU6_GRAD,
      backendName: 'wasm',
      kernelFunc: ({ inputs, backend }) => {
        const wasm = backend as BackendWasm;
        const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
        const out = wasm.makeOutput([...dy.shape], 'float32');
        const simd = simdKernels(wasm);
        if (simd) {
          simd.relu6Grad(heapOffset(wasm, dy), heapOffset(wasm, x), heapOffset(wasm, out), tf.util.sizeFromShape(dy.shape));
          return out;
        }
        // Views after the allocation: growing the heap detaches earlier ones.
        const view = (t: tf.TensorInfo) => wasm.typedArrayFromHeap(t) as Float32Array;
        maskGradient(view(dy), view(x), view(out));
        return out;
      },
    });
  }
  if (!tf.getKernel(RELU6_GRAD, 'cpu')) {
    tf.registerKernel({
      kernelName: RELU6_GRAD,
      backendName: 'cpu',
      kernelFunc: ({ inputs, backend }) => {
        const cpu = backend as unknown as CpuBackendLike;
        const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
        const out = new Float32Array(dy.shape.reduce((a, b) => a * b, 1));
        maskGradient(cpu.data.get(dy.dataId).values, cpu.data.get(x.dataId).values, out);
        return cpu.makeTensorInfo([...dy.shape], 'float32', out);
      },
    });
  }
}

/** min(max(x, 0), 6), differentiable with the one-kernel gradient where there is one. */
export const relu6 = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: tf.clipByValue(x, 0, 6),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const input = saved[0]!;
      if (input.dtype === 'float32' && tf.getKernel(RELU6_GRAD, tf.getBackend())) {
        return tf.engine().runKernel(RELU6_GRAD, { dy, x: input }) as tf.Tensor;
      }
      return tf.where(tf.logicalAnd(tf.greaterEqual(input, 0), tf.lessEqual(input, 6)), dy, tf.zerosLike(dy));
    },
  };
  // customGrad types its function's arguments as a mix of tensors and the save function.
}) as unknown as Parameters<typeof tf.customGrad>[0]) as (x: tf.Tensor) => tf.Tensor;
