/**
 * convBatchNormActivation (src/engine/conv-bn-activation.ts): its value and custom gradients equal
 * tfjs's own differentiation of the same ops (convolution, x · s + b, clipByValue) on the cpu backend,
 * and its WebGPU shaders give what the cpu backend gives; on WebGPU a unit costs few dispatches.
 * The WebGPU checks need an adapter (lavapipe will do): skipped without one, failing under CI.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { convBatchNormActivation, SPLIT_PIXELS, type ConvBatchNormUnit, type UnitActivation } from '../src/engine/conv-bn-activation.js';
import { WebGPUWorkCounter } from '../src/engine/webgpu-counts.js';
import { randoms, relativeError } from './helpers/kernel-check.js';
import { needWebgpu, startWebgpu } from './helpers/webgpu.js';

let unavailable: string | undefined;
beforeAll(async () => {
  unavailable = await startWebgpu();
});

interface Case {
  name: string;
  x: [number, number, number, number];
  kernel: number;
  outChannels: number;
  depthwise: boolean;
  strides: [number, number];
  pad: 'same' | 'valid';
  activation: UnitActivation;
  inputGradient: boolean;
}

const cases: Case[] = [
  { name: '1×1 expand, ReLU6', x: [2, 6, 6, 8], kernel: 1, outChannels: 24, depthwise: false, strides: [1, 1], pad: 'same', activation: 'relu6', inputGradient: true },
  { name: '1×1 project, no activation', x: [2, 5, 5, 24], kernel: 1, outChannels: 8, depthwise: false, strides: [1, 1], pad: 'same', activation: 'linear', inputGradient: true },
  { name: '3×3/2 depthwise, valid, ReLU6', x: [2, 9, 9, 70], kernel: 3, outChannels: 70, depthwise: true, strides: [2, 2], pad: 'valid', activation: 'relu6', inputGradient: true },
  { name: '3×3/2 stem, lowest layer (no input gradient)', x: [2, 11, 11, 3], kernel: 3, outChannels: 16, depthwise: false, strides: [2, 2], pad: 'same', activation: 'relu6', inputGradient: false },
  { name: `3×3 depthwise over ≥ ${SPLIT_PIXELS} pixels (split sums)`, x: [2, 128, 128, 6], kernel: 3, outChannels: 6, depthwise: true, strides: [1, 1], pad: 'same', activation: 'relu6', inputGradient: true },
  { name: `1×1 to 70 channels over ≥ ${SPLIT_PIXELS} pixels (split sums, 2 channel tiles)`, x: [2, 128, 128, 4], kernel: 1, outChannels: 70, depthwise: false, strides: [1, 1], pad: 'same', activation: 'linear', inputGradient: true },
];

interface Arrays {
  x: Float32Array;
  filter: Float32Array;
  gamma: Float32Array;
  beta: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
  dy: Float32Array;
}

function filterShape(c: Case): [number, number, number, number] {
  return [c.kernel, c.kernel, c.x[3], c.depthwise ? 1 : c.outChannels];
}

function outShape(c: Case): number[] {
  const fs = filterShape(c);
  return tf.backend_util.computeConv2DInfo(c.x, fs, c.strides, 1, c.pad, undefined, c.depthwise).outShape;
}

function arrays(c: Case, seed: number): Arrays {
  const n = (shape: number[]) => tf.util.sizeFromShape(shape);
  const channels = c.outChannels;
  // γ up to ±4 and β up to ±3: a good share of pre-activations falls below 0 and above 6.
  return {
    x: randoms(n(c.x), seed),
    filter: randoms(n(filterShape(c)), seed + 1),
    gamma: randoms(channels, seed + 2).map((v) => 4 * v),
    beta: randoms(channels, seed + 3).map((v) => 3 * v),
    mean: randoms(channels, seed + 4).map((v) => 0.5 * v),
    variance: randoms(channels, seed + 5).map((v) => 0.5 + Math.abs(v)),
    dy: randoms(n(outShape(c)), seed + 6),
  };
}

/** Value and gradients (x when asked, filter, γ, β), by the op or by tfjs differentiating plain ops. */
async function evaluate(backend: string, c: Case, a: Arrays, how: 'op' | 'ops'): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const channels = c.outChannels;
  const t = {
    x: tf.tensor4d(a.x, c.x),
    filter: tf.tensor4d(a.filter, filterShape(c)),
    gamma: tf.tensor1d(a.gamma),
    beta: tf.tensor1d(a.beta),
    mean: tf.tensor1d(a.mean),
    variance: tf.tensor1d(a.variance),
    dy: tf.tensor(a.dy, outShape(c)),
  };
  expect(t.gamma.size).toBe(channels);
  const unit = (filter: tf.Tensor4D, gamma: tf.Tensor1D, beta: tf.Tensor1D): ConvBatchNormUnit => ({
    filter, gamma, beta, mean: t.mean, variance: t.variance, epsilon: 1e-3,
    depthwise: c.depthwise, strides: c.strides, pad: c.pad, activation: c.activation, inputGradient: c.inputGradient,
  });
  const f = (x: tf.Tensor, filter: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor => {
    const u = unit(filter as tf.Tensor4D, gamma as tf.Tensor1D, beta as tf.Tensor1D);
    if (how === 'op') return convBatchNormActivation(x as tf.Tensor4D, u);
    const z = c.depthwise ? tf.depthwiseConv2d(x as tf.Tensor4D, u.filter, c.strides, c.pad) : tf.conv2d(x as tf.Tensor4D, u.filter, c.strides, c.pad);
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(t.variance, 1e-3)));
    const pre = tf.add(tf.mul(z, scale), tf.sub(beta, tf.mul(t.mean, scale)));
    return c.activation === 'relu6' ? tf.clipByValue(pre, 0, 6) : pre;
  };
  const value = f(t.x, t.filter, t.gamma, t.beta);
  const wrt = c.inputGradient ? [t.x, t.filter, t.gamma, t.beta] : [t.filter, t.gamma, t.beta];
  const grads = tf.grads((...args: tf.Tensor[]) =>
    c.inputGradient ? f(args[0]!, args[1]!, args[2]!, args[3]!) : f(t.x, args[0]!, args[1]!, args[2]!),
  )(wrt, t.dy);
  const out = await Promise.all([value, ...grads].map(async (g) => (await g.data()) as Float32Array));
  tf.dispose([value, ...grads, ...Object.values(t)]);
  return out;
}

const NAMES = (c: Case) => ['value', ...(c.inputGradient ? ['dx'] : []), 'dfilter', 'dgamma', 'dbeta'];

describe('convBatchNormActivation', () => {
  cases.forEach((c, i) => {
    it(`${c.name}: value and gradients equal tfjs's differentiation of the plain ops (cpu)`, async () => {
      const a = arrays(c, 10 + 10 * i);
      const want = await evaluate('cpu', c, a, 'ops');
      const got = await evaluate('cpu', c, a, 'op');
      NAMES(c).forEach((name, k) => expect(relativeError(got[k]!, want[k]!), name).toBeLessThan(1e-5));
    });

    it(`${c.name}: WebGPU equals cpu`, async (ctx) => {
      needWebgpu(ctx, unavailable);
      const a = arrays(c, 10 + 10 * i);
      const want = await evaluate('cpu', c, a, 'op');
      const got = await evaluate('webgpu', c, a, 'op');
      NAMES(c).forEach((name, k) => expect(relativeError(got[k]!, want[k]!), name).toBeLessThan(1e-4));
    });
  });

  it('on WebGPU a ReLU6 unit costs 2 dispatches forward and at most 6 backward, fewer than the plain ops', async (ctx) => {
    needWebgpu(ctx, unavailable);
    await tf.setBackend('webgpu');
    const c = cases[0]!;
    const a = arrays(c, 3);
    const x = tf.tensor4d(a.x, c.x);
    const vars = {
      filter: tf.variable(tf.tensor4d(a.filter, filterShape(c))),
      gamma: tf.variable(tf.tensor1d(a.gamma)),
      beta: tf.variable(tf.tensor1d(a.beta)),
    };
    const mean = tf.tensor1d(a.mean);
    const variance = tf.tensor1d(a.variance);
    const unit = (): ConvBatchNormUnit => ({
      filter: vars.filter as tf.Tensor4D, gamma: vars.gamma as tf.Tensor1D, beta: vars.beta as tf.Tensor1D, mean, variance,
      epsilon: 1e-3, depthwise: false, strides: [1, 1], pad: 'same', activation: 'relu6', inputGradient: true,
    });
    const plain = (): tf.Scalar => {
      const u = unit();
      const scale = tf.mul(u.gamma, tf.rsqrt(tf.add(variance, 1e-3)));
      return tf.sum(tf.clipByValue(tf.add(tf.mul(tf.conv2d(x, u.filter, 1, 'same'), scale), tf.sub(u.beta, tf.mul(mean, scale))), 0, 6));
    };
    const fused = (): tf.Scalar => tf.sum(convBatchNormActivation(x, unit()));
    const counter = new WebGPUWorkCounter();
    try {
      const dispatches = (loss: () => tf.Scalar) => {
        tf.tidy(() => tf.variableGrads(loss)); // warm-up (uploads)
        counter.take();
        tf.tidy(() => tf.variableGrads(loss));
        return counter.take().dispatches;
      };
      const forward = () => {
        counter.take();
        tf.tidy(() => convBatchNormActivation(x, unit()));
        return counter.take().dispatches;
      };
      expect(forward()).toBe(2);
      const fusedTotal = dispatches(fused);
      // The step's own sum and its gradient (a fill) are in both counts.
      expect(fusedTotal - 2).toBeLessThanOrEqual(2 + 6);
      expect(dispatches(plain)).toBeGreaterThan(fusedTotal);
    } finally {
      counter.stop();
      tf.dispose([x, mean, variance, ...Object.values(vars)]);
    }
  });
});
