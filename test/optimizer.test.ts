/**
 * FusedAdam is Adam: the same steps as tfjs' own optimizer, and it picks up where a checkpoint
 * of either layout left off.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../src/engine/backend.js';
import { FusedAdam } from '../src/train/optimizer.js';

beforeAll(async () => {
  await initEngine('wasm');
});

let made = 0;
function problem(seed: number) {
  const id = made++;
  const w1 = tf.variable(tf.randomNormal([5, 4], 0, 1, 'float32', seed), true, `w1-${id}`);
  const w2 = tf.variable(tf.randomNormal([4], 0, 1, 'float32', seed + 1), true, `w2-${id}`);
  const w3 = tf.variable(tf.randomNormal([3, 3, 2, 2], 0, 1, 'float32', seed + 2), true, `w3-${id}`);
  const x = tf.randomNormal([8, 5], 0, 1, 'float32', seed + 3);
  const loss = () =>
    tf.tidy(() => tf.add(tf.sum(tf.square(tf.add(tf.matMul(x, w1), w2))), tf.sum(tf.abs(w3))) as tf.Scalar);
  return { variables: [w1, w2, w3], loss, dispose: () => tf.dispose([w1, w2, w3, x]) };
}

/** tf.train.adam or FusedAdam (tfjs types its gradients as variables). */
type Stepper = { applyGradients(g: never): void };

const values = (vs: tf.Variable[]) => vs.map((v) => Array.from(v.dataSync()));

function maxDiff(a: number[][], b: number[][]): number {
  let d = 0;
  a.forEach((row, i) => row.forEach((x, j) => (d = Math.max(d, Math.abs(x - b[i]![j]!)))));
  return d;
}

function step(opt: Stepper, p: ReturnType<typeof problem>): void {
  const { grads, value } = tf.variableGrads(p.loss, p.variables);
  opt.applyGradients(grads as never);
  tf.dispose([value, ...Object.values(grads)]);
}

describe('FusedAdam', () => {
  it('takes the same steps as tf.train.adam', () => {
    const a = problem(1);
    const b = problem(1);
    const reference = tf.train.adam(0.01);
    const fused = new FusedAdam(b.variables, 0.01);
    for (let i = 0; i < 25; i++) {
      step(reference, a);
      step(fused, b);
    }
    expect(maxDiff(values(a.variables), values(b.variables))).toBeLessThan(1e-5);
    const start = problem(1);
    expect(maxDiff(values(a.variables), values(start.variables))).toBeGreaterThan(0.1); // it did move
    start.dispose();
    reference.dispose();
    fused.dispose();
    a.dispose();
    b.dispose();
  });

  it('resumes from its own checkpoint and from tfjs Adam slots, as if never stopped', async () => {
    const straight = problem(2);
    const opt = new FusedAdam(straight.variables, 0.02);
    for (let i = 0; i < 10; i++) step(opt, straight);

    // Stopped after 4 steps, slots saved, a new optimizer takes them.
    const resumed = problem(2);
    const first = new FusedAdam(resumed.variables, 0.02);
    for (let i = 0; i < 4; i++) step(first, resumed);
    const saved = (await first.getWeights()).map((w) => ({ name: w.name, tensor: w.tensor.clone() }));
    first.dispose();
    const second = new FusedAdam(resumed.variables, 0.02);
    await second.setWeights(saved);
    tf.dispose(saved.map((w) => w.tensor));
    expect(second.iterations).toBe(4);
    for (let i = 0; i < 6; i++) step(second, resumed);
    expect(maxDiff(values(straight.variables), values(resumed.variables))).toBeLessThan(1e-6);

    // tfjs Adam's layout: iterations, every m, every v.
    const legacy = problem(2);
    const tfAdam = tf.train.adam(0.02);
    for (let i = 0; i < 4; i++) step(tfAdam, legacy);
    const slots = await tfAdam.getWeights();
    const third = new FusedAdam(legacy.variables, 0.02);
    await third.setWeights(slots);
    tfAdam.dispose();
    for (let i = 0; i < 6; i++) step(third, legacy);
    expect(maxDiff(values(straight.variables), values(legacy.variables))).toBeLessThan(1e-5);
    for (const o of [opt, second, third]) o.dispose();
    for (const p of [straight, resumed, legacy]) p.dispose();
  });

  it('dispatches a fraction of the kernels tfjs Adam does, and leaves no tensors behind', async () => {
    // Forty small variables, as a network has: the per-variable ops are what a GPU pays for.
    const make = () => Array.from({ length: 40 }, (_, i) => tf.variable(tf.randomNormal([3, 4], 0, 1, 'float32', i), true));
    const kernels = async (opt: Stepper, vars: tf.Variable[]) => {
      const loss = () => tf.addN(vars.map((v) => tf.sum(tf.square(v)))) as tf.Scalar;
      step(opt, { variables: vars, loss, dispose: () => undefined }); // first step creates the slots
      const { grads, value } = tf.variableGrads(loss, vars);
      const before = tf.memory().numTensors;
      const profile = await tf.profile(() => opt.applyGradients(grads as never));
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([value, ...Object.values(grads)]);
      return profile.kernels.length;
    };
    const [a, b] = [make(), make()];
    const reference = tf.train.adam(0.01);
    const fused = new FusedAdam(b, 0.01);
    const [ref, ours] = [await kernels(reference, a), await kernels(fused, b)];
    expect(ours).toBeLessThan(ref / 3);
    console.log(`adam step over 40 variables: tfjs ${ref} kernels, FusedAdam ${ours}`);
    reference.dispose();
    fused.dispose();
    tf.dispose([...a, ...b]);
  });
});
