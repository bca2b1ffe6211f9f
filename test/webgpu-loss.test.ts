/**
 * Softmax cross-entropy on WebGPU (src/engine/webgpu-loss.ts, what src/train/loss.ts uses there)
 * against the same loss as tfjs ops on the cpu backend: the value and the logits' gradient, plain
 * and with class weights and label smoothing; one dispatch forward, one backward. Needs a WebGPU
 * adapter (lavapipe will do): skipped without one, failing under CI.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { WebGPUWorkCounter } from '../src/engine/webgpu-counts.js';
import { softmaxCrossEntropy, type CrossEntropyOptions } from '../src/train/loss.js';
import { randoms, relativeError } from './helpers/kernel-check.js';
import { needWebgpu, startWebgpu } from './helpers/webgpu.js';

let unavailable: string | undefined;
beforeAll(async () => {
  unavailable = await startWebgpu();
});

const ROWS = 12;
const CLASSES = 5;

/** Loss and d loss / d logits on `backend`, for logits spread over ±8 (so some rows are confident). */
async function lossAndGradient(backend: string, options: CrossEntropyOptions): Promise<{ loss: number; grad: Float32Array }> {
  await tf.setBackend(backend);
  const logits = tf.tensor2d(randoms(ROWS * CLASSES, 5).map((v) => 8 * v), [ROWS, CLASSES]);
  const labels = tf.tensor1d(Array.from({ length: ROWS }, (_, i) => (3 * i) % CLASSES), 'int32');
  const loss = softmaxCrossEntropy(options);
  const x = tf.variable(logits);
  const out = tf.variableGrads(() => loss(x as tf.Tensor2D, labels), [x]);
  const result = { loss: (await out.value.data())[0]!, grad: (await out.grads[x.name]!.data()) as Float32Array };
  tf.dispose([logits, labels, x, out.value, ...Object.values(out.grads)]);
  return result;
}

describe('softmax cross-entropy on WebGPU', () => {
  const cases: Array<[string, CrossEntropyOptions]> = [
    ['plain', {}],
    ['class weights and label smoothing', { classWeights: [0.5, 2, 1, 1.5, 0.25], labelSmoothing: 0.1 }],
  ];
  for (const [name, options] of cases) {
    it(`${name}: value and gradient equal the tfjs ops on cpu`, async (ctx) => {
      needWebgpu(ctx, unavailable);
      const want = await lossAndGradient('cpu', options);
      // Submitting after every dispatch frees a disposed tensor's buffer at once: the backward pass
      // must not use anything the forward pass's tidy disposed.
      const submitEvery = tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE');
      tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', 1);
      let got: Awaited<ReturnType<typeof lossAndGradient>>;
      try {
        got = await lossAndGradient('webgpu', options);
      } finally {
        tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', submitEvery);
      }
      expect(Math.abs(got.loss - want.loss) / Math.abs(want.loss)).toBeLessThan(1e-5);
      expect(relativeError(got.grad, want.grad)).toBeLessThan(1e-5);
    });
  }

  it('costs one dispatch forward and one backward', async (ctx) => {
    needWebgpu(ctx, unavailable);
    await tf.setBackend('webgpu');
    const x = tf.variable(tf.tensor2d(randoms(ROWS * CLASSES, 6), [ROWS, CLASSES]));
    const labels = tf.tensor1d(Array.from({ length: ROWS }, (_, i) => i % CLASSES), 'int32');
    const loss = softmaxCrossEntropy();
    tf.tidy(() => tf.variableGrads(() => loss(x as tf.Tensor2D, labels), [x])); // warm-up (uploads)
    const counter = new WebGPUWorkCounter();
    try {
      tf.tidy(() => loss(x as tf.Tensor2D, labels));
      expect(counter.take().byProgram).toEqual({ SoftmaxCrossEntropyProgram: 1 });
      tf.tidy(() => tf.variableGrads(() => loss(x as tf.Tensor2D, labels), [x]));
      const step = counter.take();
      expect(step.byProgram).toEqual({ SoftmaxCrossEntropyProgram: 1, SoftmaxCrossEntropyGradProgram: 1 });
    } finally {
      counter.stop();
      tf.dispose([x, labels]);
    }
  });
});
