import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine } from '../src/engine/backend.js';

beforeAll(async () => {
  await initEngine('wasm'); // registers finetune's Mean gradient
});

describe("Mean's gradient (ones made on the backend)", () => {
  it("is tfjs's arithmetic, (dy · ones) / n, bit for bit, for a global average pool and other axes", () => {
    for (const [shape, axes] of [
      [[4, 5, 5, 12], [1, 2]],
      [[3, 7], [0]],
      [[2, 3, 4], [2]],
    ] as [number[], number[]][]) {
      const x = tf.randomNormal(shape, 0, 1, 'float32', 3);
      const outShape = shape.filter((_, a) => !axes.includes(a));
      const dy = tf.randomNormal(outShape, 0, 1, 'float32', 5);
      const before = tf.memory().numTensors;
      const grad = tf.grad((t: tf.Tensor) => tf.mean(t, axes))(x, dy);
      expect(tf.memory().numTensors).toBe(before + 1); // nothing but the gradient is left
      const n = axes.reduce((p, a) => p * shape[a]!, 1);
      const expanded = tf.reshape(dy, shape.map((s, a) => (axes.includes(a) ? 1 : s)));
      const expected = tf.div(tf.mul(expanded, tf.ones(shape)), n);
      expect(Array.from(grad.dataSync())).toEqual(Array.from(expected.dataSync()));
      tf.dispose([x, dy, grad, expanded, expected]);
    }
  });
});
