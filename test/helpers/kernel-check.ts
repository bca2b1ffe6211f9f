/** What the kernel tests (wasm, webgpu) share: seeded inputs, running one kernel, a scale-relative error. */
import * as tf from '@tensorflow/tfjs';
import { expect } from 'vitest';
import { mulberry32Uniforms } from '../../src/data/rng.js';

/** Deterministic uniform(-1, 1) values (mulberry32). */
export function randoms(size: number, seed: number): Float32Array {
  return Float32Array.from(mulberry32Uniforms(size, seed), (u) => 2 * u - 1);
}

export const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** max |a − b| / max |b|: relative to the result's scale, so near-zero entries don't dominate. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / Math.max(scale, 1e-30);
}

/** Runs one kernel on `backend` from plain arrays; returns its output's shape and values. */
export async function runKernelOn(
  backend: string,
  kernel: string,
  inputs: Record<string, { shape: number[]; values: Float32Array }>,
  attrs: tf.NamedAttrMap,
): Promise<{ shape: number[]; values: Float32Array }> {
  await tf.setBackend(backend);
  const tensors: tf.NamedTensorMap = {};
  for (const [name, { shape, values }] of Object.entries(inputs)) tensors[name] = tf.tensor(values, shape);
  const out = tf.engine().runKernel(kernel, tensors, attrs) as tf.Tensor;
  // data(), not dataSync(): WebGPU can't read back synchronously in Node.
  const result = { shape: out.shape, values: (await out.data()) as Float32Array };
  tf.dispose([out, ...Object.values(tensors)]);
  return result;
}
