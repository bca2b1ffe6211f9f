/**
 * The WebGPU training kernels (src/engine/webgpu-kernels.ts) against the cpu backend, on random
 * inputs at the convolution shapes MobileNetV2 and VGG16 use (spatial sizes scaled down).
 *
 * Needs a WebGPU adapter: a GPU, or a CPU one such as Mesa's lavapipe (llvmpipe) that an explicit
 * `initEngine('webgpu')` accepts (.ci/webgpu-on-cpu installs it). Where there is none every test is
 * skipped saying why, except under CI, where they fail (test/helpers/webgpu.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  registerWebgpuTrainingKernels,
  unregisterWebgpuTrainingKernels,
  WEBGPU_TRAINING_KERNELS,
} from '../src/engine/webgpu-kernels.js';
import { randoms, relativeError, runKernelOn, size } from './helpers/kernel-check.js';
import { needWebgpu, startWebgpu, webgpuMissingMessage } from './helpers/webgpu.js';

type Shape4 = [number, number, number, number];
type Pad = 'valid' | 'same' | tf.backend_util.ExplicitPadding;

/** Why WebGPU can't be used here, or undefined when it can. */
let unavailable: string | undefined;

beforeAll(async () => {
  unavailable = await startWebgpu(); // registers the kernels (activate → registerWebgpuTrainingKernels)
  if (unavailable !== undefined) console.warn(`webgpu-kernels tests cannot run: ${webgpuMissingMessage(unavailable)}`);
});

afterAll(() => {
  for (const [kernel, err] of worst) console.log(`webgpu ${kernel}: max relative error vs cpu ${err.toExponential(2)}`);
});

/** Largest relative error seen per kernel, printed at the end (for the record). */
const worst = new Map<string, number>();

interface Case {
  name: string;
  x: Shape4;
  filter: Shape4;
  strides: number | [number, number];
  pad: Pad;
}

// Dense convolutions: every 1×1 convolution of MobileNetV2 (BatchMatMul path; the split-K and the
// tiled product are both reached), its 3×3/2 stem and VGG16's 3×3 convolutions (implicit GEMM).
const denseCases: Case[] = [
  { name: 'MobileNetV2 expand 1×1 16→96 (split-K product)', x: [2, 56, 56, 16], filter: [1, 1, 16, 96], strides: 1, pad: 'same' },
  { name: 'MobileNetV2 expand 1×1 96→576 (tiled product)', x: [2, 7, 7, 96], filter: [1, 1, 96, 576], strides: 1, pad: 'valid' },
  { name: 'MobileNetV2 Conv1 3×3/2 3→32, odd size, many splits', x: [4, 63, 63, 3], filter: [3, 3, 3, 32], strides: 2, pad: 'same' },
  { name: 'VGG16 block1_conv1 3×3 3→64', x: [2, 32, 32, 3], filter: [3, 3, 3, 64], strides: 1, pad: 'same' },
  { name: 'VGG16 block1_conv2 3×3 64→64', x: [1, 16, 16, 64], filter: [3, 3, 64, 64], strides: 1, pad: 'same' },
  { name: 'VGG16 block3_conv1 3×3 128→256', x: [1, 4, 4, 128], filter: [3, 3, 128, 256], strides: 1, pad: 'same' },
  { name: '3×3 valid, ragged tiles 70→66', x: [2, 9, 9, 70], filter: [3, 3, 70, 66], strides: 1, pad: 'valid' },
  { name: '3×3/2 valid', x: [1, 8, 7, 5], filter: [3, 3, 5, 6], strides: 2, pad: 'valid' },
  { name: '1×1/2 (strided: implicit GEMM)', x: [2, 9, 9, 8], filter: [1, 1, 8, 12], strides: 2, pad: 'same' },
  { name: '1×1 explicitly padded (implicit GEMM)', x: [2, 5, 5, 3], filter: [1, 1, 3, 4], strides: 1, pad: [[0, 0], [1, 1], [0, 2], [0, 0]] },
  { name: '3×3 strides [1, 2], explicit padding', x: [3, 6, 5, 2], filter: [3, 3, 2, 3], strides: [1, 2], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
];

// Depthwise 3×3 convolutions of MobileNetV2 (multiplier 1), plus multiplier 2 and padding variants.
const depthwiseCases: Case[] = [
  { name: 'MobileNetV2 expanded_conv 3×3 32, many splits', x: [4, 32, 32, 32], filter: [3, 3, 32, 1], strides: 1, pad: 'same' },
  { name: 'MobileNetV2 block_1 3×3/2 96, even size', x: [2, 16, 16, 96], filter: [3, 3, 96, 1], strides: 2, pad: 'same' },
  { name: 'MobileNetV2 3×3/2 96, odd size', x: [2, 15, 15, 96], filter: [3, 3, 96, 1], strides: 2, pad: 'same' },
  { name: 'MobileNetV2 block_16 3×3 960', x: [2, 4, 4, 960], filter: [3, 3, 960, 1], strides: 1, pad: 'same' },
  { name: '3×3/2 valid, channels not a multiple of 64', x: [2, 9, 9, 70], filter: [3, 3, 70, 1], strides: 2, pad: 'valid' },
  { name: '3×3 multiplier 2', x: [2, 7, 7, 24], filter: [3, 3, 24, 2], strides: 1, pad: 'same' },
  { name: '3×3 strides [2, 1], explicit padding', x: [3, 6, 5, 2], filter: [3, 3, 2, 1], strides: [2, 1], pad: [[0, 0], [1, 0], [2, 1], [0, 0]] },
  { name: '5×5', x: [2, 10, 10, 8], filter: [5, 5, 8, 1], strides: 1, pad: 'same' },
];

const label = (c: Case): string =>
  `${c.name}: x ${c.x.join('×')}, filter ${c.filter.join('×')}, strides ${JSON.stringify(c.strides)}, pad ${JSON.stringify(c.pad)}`;

async function checkCase(c: Case, depthwise: boolean, seed: number): Promise<void> {
  const info = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad, undefined, depthwise);
  const kernel = depthwise ? tf.DepthwiseConv2dNativeBackpropFilter : tf.Conv2DBackpropFilter;
  const attrs = (
    depthwise
      ? { strides: c.strides, pad: c.pad, dilations: 1, filterShape: c.filter }
      : { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', filterShape: c.filter }
  ) as unknown as tf.NamedAttrMap;
  const inputs = {
    x: { shape: c.x, values: randoms(size(c.x), seed) },
    dy: { shape: info.outShape, values: randoms(size(info.outShape), seed + 1) },
  };
  const want = await runKernelOn('cpu', kernel, inputs, attrs);
  const got = await runKernelOn('webgpu', kernel, inputs, attrs);
  expect(got.shape, label(c)).toEqual(want.shape);
  const err = relativeError(got.values, want.values);
  worst.set(kernel, Math.max(worst.get(kernel) ?? 0, err));
  expect(err, label(c)).toBeLessThan(1e-4);
}

describe('registerWebgpuTrainingKernels', () => {
  it('is what initEngine(webgpu) registers, idempotently, and can be undone', async (ctx) => {
    needWebgpu(ctx, unavailable);
    const ours = WEBGPU_TRAINING_KERNELS.map((k) => tf.getKernel(k, 'webgpu')!.kernelFunc);
    registerWebgpuTrainingKernels();
    expect(WEBGPU_TRAINING_KERNELS.map((k) => tf.getKernel(k, 'webgpu')!.kernelFunc)).toEqual(ours);
    unregisterWebgpuTrainingKernels();
    const shipped = WEBGPU_TRAINING_KERNELS.map((k) => tf.getKernel(k, 'webgpu')!.kernelFunc);
    shipped.forEach((f, i) => expect(f, WEBGPU_TRAINING_KERNELS[i]).not.toBe(ours[i]));
    registerWebgpuTrainingKernels();
    expect(WEBGPU_TRAINING_KERNELS.map((k) => tf.getKernel(k, 'webgpu')!.kernelFunc)).toEqual(ours);
  });
});

describe('Conv2DBackpropFilter on webgpu matches cpu', () => {
  denseCases.forEach((c, i) => {
    it(label(c), async (ctx) => {
      needWebgpu(ctx, unavailable);
      await checkCase(c, false, 100 + 10 * i);
    });
  });
});

describe('DepthwiseConv2dNativeBackpropFilter on webgpu matches cpu', () => {
  depthwiseCases.forEach((c, i) => {
    it(label(c), async (ctx) => {
      needWebgpu(ctx, unavailable);
      await checkCase(c, true, 500 + 10 * i);
    });
  });
});

describe('fallbacks and memory', () => {
  it('hands dilated depthwise convolutions to the shipped kernel', async (ctx) => {
    needWebgpu(ctx, unavailable);
    await tf.setBackend('webgpu');
    const x = tf.tensor4d(randoms(2 * 9 * 9 * 4, 7), [2, 9, 9, 4]);
    const dy = tf.tensor4d(randoms(2 * 5 * 5 * 4, 8), [2, 5, 5, 4]);
    const attrs = { strides: 1, pad: 'valid', dilations: 2, filterShape: [3, 3, 4, 1] };
    const ours = tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x, dy }, attrs) as tf.Tensor;
    unregisterWebgpuTrainingKernels();
    const theirs = tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x, dy }, attrs) as tf.Tensor;
    registerWebgpuTrainingKernels();
    expect(Array.from(await ours.data())).toEqual(Array.from(await theirs.data()));
    tf.dispose([x, dy, ours, theirs]);
  });

  it('frees its intermediate buffers', async (ctx) => {
    needWebgpu(ctx, unavailable);
    await tf.setBackend('webgpu');
    const x = tf.tensor4d(randoms(4 * 32 * 32 * 16, 9), [4, 32, 32, 16]);
    const dy = tf.tensor4d(randoms(4 * 32 * 32 * 16, 10), [4, 32, 32, 16]);
    const calls = (): tf.Tensor[] => [
      tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [1, 1, 16, 16] }),
      tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 16, 16] }),
      tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x, dy }, { strides: 1, pad: 'same', dilations: 1, filterShape: [3, 3, 16, 1] }),
    ] as tf.Tensor[];
    const once = async (): Promise<void> => {
      const outs = calls();
      await Promise.all(outs.map((o) => o.data()));
      tf.dispose(outs);
    };
    await once();
    const before = tf.memory();
    for (let i = 0; i < 3; i++) await once();
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.numBytes).toBe(before.numBytes);
    tf.dispose([x, dy]);
  });
});

// ---------------------------------------------------------------------------------------------
// A tiny MobileNetV2-like net: conv 3×3/2 → depthwise 3×3 → BN → relu6 → conv 1×1 → conv 3×3.

const shapes = {
  x: [2, 9, 9, 3],
  w1: [3, 3, 3, 8],
  w2: [3, 3, 8, 1],
  gamma: [8],
  beta: [8],
  w3: [1, 1, 8, 6],
  w4: [3, 3, 6, 4],
} as const;
type NetValues = Record<keyof typeof shapes, Float32Array>;

async function gradsOn(backend: 'cpu' | 'webgpu', v: NetValues): Promise<Record<string, Float32Array>> {
  await tf.setBackend(backend);
  const vars = (['w1', 'w2', 'gamma', 'beta', 'w3', 'w4'] as const).map((k) => tf.variable(tf.tensor(v[k], [...shapes[k]]), true, `${k}_${backend}`));
  const [w1, w2, gamma, beta, w3, w4] = vars as unknown as [tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R1>, tf.Variable<tf.Rank.R1>, tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R4>];
  const x = tf.tensor4d(v.x, [...shapes.x]);
  const { value, grads } = tf.variableGrads(() => {
    let h = tf.conv2d(x, w1, 2, 'same'); // 5×5×8
    h = tf.depthwiseConv2d(h, w2, 1, 'same');
    const { mean, variance } = tf.moments(h, [0, 1, 2]);
    h = tf.batchNorm4d(h, mean as tf.Tensor1D, variance as tf.Tensor1D, beta, gamma, 1e-3);
    h = tf.relu6(h);
    h = tf.conv2d(h, w3, 1, 'valid'); // 5×5×6
    h = tf.conv2d(h, w4, 1, 'valid'); // 3×3×4
    return tf.sum(tf.square(h));
  });
  const out: Record<string, Float32Array> = {};
  for (const [k, g] of Object.entries(grads)) out[k.replace(`_${backend}`, '')] = (await g.data()) as Float32Array;
  tf.dispose([x, value, ...vars, ...Object.values(grads)]);
  return out;
}

describe('end to end on webgpu', () => {
  it('gradients of a conv → depthwise → BN → relu6 → conv net equal those on cpu', async (ctx) => {
    needWebgpu(ctx, unavailable);
    const v = Object.fromEntries(
      Object.entries(shapes).map(([k, s], i) => [k, randoms(size([...s]), 900 + i)]),
    ) as NetValues;
    const want = await gradsOn('cpu', v);
    const got = await gradsOn('webgpu', v);
    expect(Object.keys(got).sort()).toEqual(['beta', 'gamma', 'w1', 'w2', 'w3', 'w4']);
    for (const k of Object.keys(want)) expect(relativeError(got[k]!, want[k]!), k).toBeLessThan(1e-4);
  });

});
