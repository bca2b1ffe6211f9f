/**
 * The device check's kernel self-check: what the WebGPU tests check, on the adapter at hand, in a
 * few seconds. tfjs's own kernel checks of finetune's replacements run when initEngine starts the
 * backend (their failures are in EngineInfo.kernels.failed); this adds the training ops that are not
 * kernel replacements: convBatchNormActivation (value and every gradient, against the cpu backend),
 * WebGPUAdam (3 steps, against FusedAdam on the cpu backend; 7 variables, so more than one
 * dispatch's group) and the softmax cross-entropy (value and gradient, against tfjs ops on cpu).
 */
import * as tf from '@tensorflow/tfjs';
import { mulberry32Uniforms } from '../src/data/rng.js';
import { convBatchNormActivation, type ConvBatchNormUnit } from '../src/engine/conv-bn-activation.js';
import { WebGPUAdam } from '../src/engine/webgpu-adam.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { FusedAdam } from '../src/train/optimizer.js';

export interface KernelCheck {
  name: string;
  maxRelativeError: number;
  ok: boolean;
}

const TOLERANCE = 1e-4;

/** Deterministic uniform(−1, 1) values (the tests' mulberry32). */
function randoms(size: number, seed: number): Float32Array {
  return Float32Array.from(mulberry32Uniforms(size, seed), (u) => 2 * u - 1);
}

function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / Math.max(scale, 1e-30);
}

interface UnitCase {
  name: string;
  x: [number, number, number, number];
  filter: [number, number, number, number];
  depthwise: boolean;
  strides: [number, number];
  activation: 'relu6' | 'linear';
}

const UNIT_CASES: UnitCase[] = [
  { name: '1×1 conv + BN + ReLU6', x: [2, 6, 6, 8], filter: [1, 1, 8, 24], depthwise: false, strides: [1, 1], activation: 'relu6' },
  { name: '1×1 conv + BN', x: [2, 5, 5, 24], filter: [1, 1, 24, 8], depthwise: false, strides: [1, 1], activation: 'linear' },
  { name: '3×3/2 depthwise + BN + ReLU6', x: [2, 9, 9, 70], filter: [3, 3, 70, 1], depthwise: true, strides: [2, 2], activation: 'relu6' },
  { name: '3×3 depthwise + BN + ReLU6, split sums', x: [2, 128, 128, 6], filter: [3, 3, 6, 1], depthwise: true, strides: [1, 1], activation: 'relu6' },
];

async function unitOn(backend: string, c: UnitCase, seed: number): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const channels = c.depthwise ? c.x[3] : c.filter[3];
  const x = tf.tensor4d(randoms(tf.util.sizeFromShape(c.x), seed), c.x);
  const filter = tf.tensor4d(randoms(tf.util.sizeFromShape(c.filter), seed + 1), c.filter);
  const gamma = tf.tensor1d(randoms(channels, seed + 2).map((v) => 4 * v));
  const beta = tf.tensor1d(randoms(channels, seed + 3).map((v) => 3 * v));
  const mean = tf.tensor1d(randoms(channels, seed + 4).map((v) => 0.5 * v));
  const variance = tf.tensor1d(randoms(channels, seed + 5).map((v) => 0.5 + Math.abs(v)));
  const unit = (f: tf.Tensor, g: tf.Tensor, b: tf.Tensor): ConvBatchNormUnit => ({
    filter: f as tf.Tensor4D, gamma: g as tf.Tensor1D, beta: b as tf.Tensor1D, mean, variance, epsilon: 1e-3,
    depthwise: c.depthwise, strides: c.strides, pad: 'same', activation: c.activation, inputGradient: true,
  });
  const value = convBatchNormActivation(x, unit(filter, gamma, beta));
  const dy = tf.tensor(randoms(value.size, seed + 6), value.shape);
  const grads = tf.grads((a: tf.Tensor, f: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => convBatchNormActivation(a as tf.Tensor4D, unit(f, g, b)))(
    [x, filter, gamma, beta],
    dy,
  );
  const out = await Promise.all([value, ...grads].map(async (t) => (await t.data()) as Float32Array));
  tf.dispose([x, filter, gamma, beta, mean, variance, value, dy, ...grads]);
  return out;
}

async function adamOn(backend: 'cpu' | 'webgpu'): Promise<number[]> {
  await tf.setBackend(backend);
  const shapes = [[3, 3, 4, 8], [8], [8], [1, 1, 8, 70], [70], [70, 3], [3]];
  const vars = shapes.map((s, i) => tf.variable(tf.tensor(randoms(tf.util.sizeFromShape(s), 10 + i), s), true, `${backend}_check_${i}`));
  const optimizer = backend === 'webgpu' ? new WebGPUAdam(vars, 0.01) : new FusedAdam(vars, 0.01);
  for (let step = 1; step <= 3; step++) {
    const grads: tf.NamedTensorMap = {};
    vars.forEach((v, i) => (grads[v.name] = tf.tensor(randoms(v.size, 100 * step + i), v.shape)));
    optimizer.applyGradients(grads);
    tf.dispose(Object.values(grads));
  }
  const values = (await Promise.all(vars.map((v) => v.data()))).flatMap((d) => Array.from(d));
  optimizer.dispose();
  tf.dispose(vars);
  return values;
}

/** The class-weighted, label-smoothed loss and its gradient w.r.t. the logits, flat. */
async function lossOn(backend: 'cpu' | 'webgpu'): Promise<number[]> {
  await tf.setBackend(backend);
  const [rows, classes] = [12, 5];
  const x = tf.variable(tf.tensor2d(randoms(rows * classes, 7).map((v) => 8 * v), [rows, classes]));
  const labels = tf.tensor1d(Array.from({ length: rows }, (_, i) => (3 * i) % classes), 'int32');
  const loss = softmaxCrossEntropy({ classWeights: [0.5, 2, 1, 1.5, 0.25], labelSmoothing: 0.1 });
  const { value, grads } = tf.variableGrads(() => loss(x as tf.Tensor2D, labels), [x]);
  const values = [...(await value.data()), ...(await grads[x.name]!.data())];
  tf.dispose([x, labels, value, ...Object.values(grads)]);
  return values;
}

/** Runs every check on the webgpu backend against cpu; leaves webgpu active. */
export async function checkTrainingOps(): Promise<KernelCheck[]> {
  const checks: KernelCheck[] = [];
  try {
    for (const [i, c] of UNIT_CASES.entries()) {
      const want = await unitOn('cpu', c, 10 + 10 * i);
      const got = await unitOn('webgpu', c, 10 + 10 * i);
      const err = Math.max(...got.map((g, k) => relativeError(g, want[k]!)));
      checks.push({ name: `convBatchNormActivation ${c.name} (value, dx, dfilter, dγ, dβ)`, maxRelativeError: err, ok: err < TOLERANCE });
    }
    const want = await adamOn('cpu');
    const got = await adamOn('webgpu');
    const err = relativeError(got, want);
    checks.push({ name: 'WebGPUAdam vs FusedAdam on cpu, 3 steps', maxRelativeError: err, ok: err < TOLERANCE });
    const wantLoss = await lossOn('cpu');
    const gotLoss = await lossOn('webgpu');
    const lossErr = relativeError(gotLoss, wantLoss);
    checks.push({ name: 'softmax cross-entropy (class weights, label smoothing): value and gradient', maxRelativeError: lossErr, ok: lossErr < TOLERANCE });
  } finally {
    await tf.setBackend('webgpu');
  }
  return checks;
}
