/** ReLU6's one-kernel gradient gives exactly what tfjs' clipByValue gradient gives. */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../src/engine/backend.js';
import { RELU6_GRAD, relu6 } from '../src/engine/relu6.js';

describe('relu6', () => {
  for (const backend of ['wasm', 'cpu'] as const) {
    it(`on ${backend}: same values and gradient as clipByValue(x, 0, 6), edges included, in one kernel`, async () => {
      await initEngine(backend);
      expect(tf.getKernel(RELU6_GRAD, backend)).toBeDefined();
      const x = tf.concat([tf.tensor1d([-1, 0, 3, 6, 7, -0]), tf.randomNormal([4000], 3, 4, 'float32', 1)]);
      const dy = tf.randomNormal(x.shape, 0, 1, 'float32', 2);
      const ours = tf.grad((v: tf.Tensor) => tf.mul(relu6(v), dy))(x);
      const theirs = tf.grad((v: tf.Tensor) => tf.mul(tf.clipByValue(v, 0, 6), dy))(x);
      expect(Array.from(relu6(x).dataSync())).toEqual(Array.from(tf.clipByValue(x, 0, 6).dataSync()));
      expect(Array.from(ours.dataSync())).toEqual(Array.from(theirs.dataSync()));
      const profile = await tf.profile(() => tf.grad((v: tf.Tensor) => tf.sum(relu6(v)))(x));
      expect(profile.kernels.map((k) => k.name)).toContain(RELU6_GRAD);
      expect(profile.kernels.map((k) => k.name)).not.toContain('LogicalAnd');
      tf.dispose([x, dy, ours, theirs]);
    });
  }
});
