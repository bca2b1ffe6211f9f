/**
 * WebGPUAdam (src/engine/webgpu-adam.ts) against FusedAdam on the cpu backend: the same variables
 * and gradients over several steps give the same weights and moments; checkpoints pass between
 * them; a step dispatches one shader per group of variables the device can bind. Needs a WebGPU adapter (lavapipe will do): skipped without one, failing under CI.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { variablesPerDispatch, WebGPUAdam } from '../src/engine/webgpu-adam.js';
import { maxStorageBuffersPerStage } from '../src/engine/tfjs-internals.js';
import { WebGPUWorkCounter } from '../src/engine/webgpu-counts.js';
import { FusedAdam } from '../src/train/optimizer.js';
import { randoms, relativeError } from './helpers/kernel-check.js';
import { needWebgpu, startWebgpu } from './helpers/webgpu.js';

let unavailable: string | undefined;
beforeAll(async () => {
  unavailable = await startWebgpu();
});

/** Variable shapes of a conv + BN + dense model in miniature, and one left without a gradient. */
const SHAPES: number[][] = [[3, 3, 4, 8], [8], [8], [1, 1, 8, 70], [70], [70, 3], [3], [5]];
const NO_GRADIENT = 7;

function makeVariables(backend: string): tf.Variable[] {
  return SHAPES.map((shape, i) => {
    const values = randoms(tf.util.sizeFromShape(shape), 10 + i);
    return tf.variable(tf.tensor(values, shape), true, `${backend}_v${i}`);
  });
}

function gradientsFor(variables: tf.Variable[], step: number): tf.NamedTensorMap {
  const grads: tf.NamedTensorMap = {};
  variables.forEach((v, i) => {
    if (i !== NO_GRADIENT) grads[v.name] = tf.tensor(randoms(v.size, 100 * step + i), v.shape);
  });
  return grads;
}

async function values(tensors: tf.Tensor[]): Promise<number[]> {
  return (await Promise.all(tensors.map((t) => t.data()))).flatMap((d) => Array.from(d));
}

/** Runs `steps` steps of the optimizer `make` builds on `backend`; returns weights and moments. */
async function run(backend: string, make: (vars: tf.Variable[]) => FusedAdam | WebGPUAdam, steps: number) {
  await tf.setBackend(backend);
  const variables = makeVariables(backend);
  const optimizer = make(variables);
  for (let s = 1; s <= steps; s++) {
    const grads = gradientsFor(variables, s);
    optimizer.applyGradients(grads);
    tf.dispose(Object.values(grads));
  }
  const [iter, ...moments] = await optimizer.getWeights();
  const result = { weights: await values(variables), moments: await values(moments.map((m) => m.tensor)), iter: (await iter!.tensor.data())[0] };
  iter!.tensor.dispose();
  optimizer.dispose();
  tf.dispose(variables);
  return result;
}

describe('WebGPUAdam', () => {
  it('matches FusedAdam on the cpu backend over 3 steps (weights and moments)', async (ctx) => {
    needWebgpu(ctx, unavailable);
    const want = await run('cpu', (v) => new FusedAdam(v, 0.01), 3);
    const got = await run('webgpu', (v) => new WebGPUAdam(v, 0.01), 3);
    expect(got.iter).toBe(3);
    expect(relativeError(got.weights, want.weights)).toBeLessThan(1e-5);
    expect(relativeError(got.moments, want.moments)).toBeLessThan(1e-5);
  });

  it('with per-variable learning-rate scales (--layer-lr-decay) matches FusedAdam with the same scales', async (ctx) => {
    needWebgpu(ctx, unavailable);
    const lrScales = SHAPES.map((_, i) => 0.5 ** i);
    const want = await run('cpu', (v) => new FusedAdam(v, 0.01, { lrScales }), 3);
    const got = await run('webgpu', (v) => new WebGPUAdam(v, 0.01, { lrScales }), 3);
    const unscaled = await run('cpu', (v) => new FusedAdam(v, 0.01), 3);
    expect(relativeError(got.weights, want.weights)).toBeLessThan(1e-5);
    expect(relativeError(want.weights, unscaled.weights)).toBeGreaterThan(1e-3); // the scales do change the steps
  });

  it('continues from a FusedAdam checkpoint as FusedAdam would', async (ctx) => {
    needWebgpu(ctx, unavailable);
    // FusedAdam on cpu: 2 steps, save, 1 more.
    await tf.setBackend('cpu');
    const cpuVars = makeVariables('cpu');
    const fused = new FusedAdam(cpuVars, 0.01);
    for (const s of [1, 2]) fused.applyGradients(gradientsFor(cpuVars, s));
    const saved = await Promise.all((await fused.getWeights()).map(async (w) => ({ name: w.name, shape: w.tensor.shape, dtype: w.tensor.dtype, data: await w.tensor.data() })));
    const startWeights = await values(cpuVars);
    fused.applyGradients(gradientsFor(cpuVars, 3));
    const want = await values(cpuVars);

    await tf.setBackend('webgpu');
    const gpuVars = makeVariables('webgpu');
    gpuVars.forEach((v, i) => v.assign(tf.tensor(startWeights.slice(...span(i)), v.shape)));
    const adam = new WebGPUAdam(gpuVars, 0.01);
    const restored = saved.map((w) => ({ name: w.name, tensor: tf.tensor(w.data, w.shape, w.dtype) }));
    await adam.setWeights(restored);
    tf.dispose(restored.map((w) => w.tensor));
    expect(adam.iterations).toBe(2);
    adam.applyGradients(gradientsFor(gpuVars, 3));
    expect(relativeError(await values(gpuVars), want)).toBeLessThan(1e-5);
    adam.dispose();
    tf.dispose(gpuVars);
    fused.dispose();
    tf.dispose(cpuVars);
  });

  it('dispatches one shader per group of variables the device can bind, and reads nothing back', async (ctx) => {
    needWebgpu(ctx, unavailable);
    await tf.setBackend('webgpu');
    const variables = makeVariables('count');
    const adam = new WebGPUAdam(variables, 0.01);
    const grads = gradientsFor(variables, 1);
    adam.applyGradients(grads); // first step: also makes the zero moments
    const counter = new WebGPUWorkCounter();
    try {
      adam.applyGradients(grads);
      const step = counter.take();
      const perDispatch = variablesPerDispatch(maxStorageBuffersPerStage(tf.backend()));
      expect(step.reads).toBe(0);
      expect(step.dispatches).toBe(Math.ceil(variables.length / perDispatch));
      expect(step.byProgram).toEqual({ FinetuneAdamGroup: step.dispatches });
    } finally {
      counter.stop();
      tf.dispose(Object.values(grads));
      adam.dispose();
      tf.dispose(variables);
    }
  });

  it('asks the device for every storage buffer per shader stage the adapter offers', async (ctx) => {
    needWebgpu(ctx, unavailable);
    await tf.setBackend('webgpu');
    // WebGPU's default, which tfjs-backend-webgpu asks for, is 8; lavapipe's adapter offers 16.
    const gpu = (globalThis as unknown as { navigator: { gpu: { requestAdapter(): Promise<{ limits: { maxStorageBuffersPerShaderStage: number } }> } } }).navigator.gpu;
    const adapter = await gpu.requestAdapter();
    expect(maxStorageBuffersPerStage(tf.backend())).toBe(adapter.limits.maxStorageBuffersPerShaderStage);
    expect(variablesPerDispatch(16)).toBe(5);
    expect(variablesPerDispatch(8)).toBe(2);
  });

  it('refuses another backend, saying what to use', async () => {
    await tf.setBackend('cpu');
    expect(() => new WebGPUAdam([], 0.01)).toThrow(/webgpu backend only.*FusedAdam/);
  });
});

/** [start, end) of variable i's values in the flat weights. */
function span(i: number): [number, number] {
  const sizes = SHAPES.map((s) => tf.util.sizeFromShape(s));
  const start = sizes.slice(0, i).reduce((a, b) => a + b, 0);
  return [start, start + sizes[i]!];
}
