/**
 * The WASM convolution gradient kernels against the cpu backend's, on random inputs.
 * tfjs tensors live on one backend, so every comparison computes on cpu and on wasm from the same
 * plain arrays.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels, WASM_TRAINING_KERNELS } from '../src/engine/wasm-kernels.js';
import { randoms, relativeError, runKernelOn, size } from './helpers/kernel-check.js';

type Shape4 = [number, number, number, number];
type Pad = 'valid' | 'same' | tf.backend_util.ExplicitPadding;

interface Case {
  x: Shape4;
  filter: Shape4;
  strides: number | [number, number];
  pad: Pad;
}

const denseCases: Case[] = [
  { x: [1, 5, 5, 3], filter: [1, 1, 3, 4], strides: 1, pad: 'valid' }, // pointwise: one matmul
  { x: [3, 4, 4, 6], filter: [1, 1, 6, 5], strides: 1, pad: 'same' }, // pointwise, batch 3
  { x: [1, 4, 4, 3], filter: [1, 1, 3, 4], strides: 2, pad: 'valid' },
  { x: [3, 5, 5, 3], filter: [1, 1, 3, 2], strides: 1, pad: [[0, 0], [1, 1], [1, 1], [0, 0]] },
  { x: [3, 6, 6, 4], filter: [3, 3, 4, 5], strides: 1, pad: 'same' },
  { x: [3, 7, 7, 4], filter: [3, 3, 4, 5], strides: 2, pad: 'same' },
  { x: [1, 7, 6, 3], filter: [3, 3, 3, 2], strides: 2, pad: 'valid' },
  { x: [1, 8, 8, 3], filter: [3, 3, 3, 4], strides: 1, pad: 'valid' },
  { x: [3, 6, 5, 2], filter: [3, 3, 2, 3], strides: [1, 2], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
  { x: [2, 14, 14, 32], filter: [3, 3, 32, 24], strides: 1, pad: 'same' },
  { x: [2, 7, 7, 96], filter: [1, 1, 96, 40], strides: 1, pad: 'same' },
  // Taps in the padding at both ends of every row, or with no column clear of it.
  { x: [2, 9, 11, 5], filter: [5, 3, 5, 6], strides: [2, 3], pad: 'same' },
  { x: [2, 2, 2, 3], filter: [3, 3, 3, 4], strides: 1, pad: 'same' },
  { x: [1, 6, 6, 3], filter: [1, 3, 3, 9], strides: 1, pad: [[0, 0], [0, 0], [3, 1], [0, 0]] },
  // Shapes the filter gradient leaves to XNNPACK (see useSimdFilterGradient): pointwise with
  // Ci < Co and Ci > Co, and a 3×3 with many channels.
  { x: [2, 4, 4, 96], filter: [1, 1, 96, 160], strides: 1, pad: 'same' },
  { x: [2, 4, 4, 160], filter: [1, 1, 160, 96], strides: 1, pad: 'valid' },
  { x: [1, 4, 4, 64], filter: [3, 3, 64, 512], strides: 1, pad: 'same' },
];

const depthwiseCases: Case[] = [1, 2].flatMap((m) => [
  { x: [1, 5, 5, 3], filter: [1, 1, 3, m], strides: 1, pad: 'valid' },
  { x: [3, 6, 6, 4], filter: [3, 3, 4, m], strides: 1, pad: 'same' },
  { x: [3, 7, 7, 4], filter: [3, 3, 4, m], strides: 2, pad: 'same' },
  { x: [1, 7, 6, 3], filter: [3, 3, 3, m], strides: 2, pad: 'valid' },
  { x: [3, 6, 5, 2], filter: [3, 3, 2, m], strides: [2, 1], pad: [[0, 0], [1, 0], [2, 1], [0, 0]] },
  { x: [3, 6, 5, 2], filter: [3, 3, 2, m], strides: 1, pad: [[0, 0], [1, 0], [2, 1], [0, 0]] },
  { x: [2, 5, 5, 3], filter: [1, 1, 3, m], strides: 1, pad: [[0, 0], [1, 1], [0, 2], [0, 0]] },
  { x: [2, 14, 14, 24], filter: [3, 3, 24, m], strides: 2, pad: 'same' },
  { x: [2, 14, 14, 24], filter: [3, 3, 24, m], strides: 1, pad: 'same' },
] satisfies Case[]);

function dyShape(c: Case, depthwise: boolean): number[] {
  const info = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad, undefined, depthwise);
  return info.outShape;
}

const label = (c: Case): string =>
  `x ${c.x.join('×')}, filter ${c.filter.join('×')}, strides ${JSON.stringify(c.strides)}, pad ${JSON.stringify(c.pad)}`;

/** Checks both gradient kernels of one convolution case, wasm against cpu. */
async function checkCase(c: Case, depthwise: boolean, seed: number): Promise<void> {
  const dy = dyShape(c, depthwise);
  const x = { shape: c.x, values: randoms(size(c.x), seed) };
  const filter = { shape: c.filter, values: randoms(size(c.filter), seed + 1) };
  const dyIn = { shape: dy, values: randoms(size(dy), seed + 2) };
  const [filterKernel, inputKernel] = depthwise
    ? [tf.DepthwiseConv2dNativeBackpropFilter, tf.DepthwiseConv2dNativeBackpropInput]
    : [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput];
  const common = depthwise
    ? { strides: c.strides, pad: c.pad, dilations: 1 }
    : { strides: c.strides, pad: c.pad, dataFormat: 'NHWC' };
  const filterAttrs = { ...common, filterShape: c.filter } as unknown as tf.NamedAttrMap;
  const inputAttrs = { ...common, inputShape: c.x } as unknown as tf.NamedAttrMap;

  for (const [kernel, inputs, attrs] of [
    [filterKernel, { x, dy: dyIn }, filterAttrs],
    [inputKernel, { dy: dyIn, filter }, inputAttrs],
  ] as const) {
    const want = await runKernelOn('cpu', kernel, inputs, attrs);
    const got = await runKernelOn('wasm', kernel, inputs, attrs);
    expect(got.shape, `${kernel}: ${label(c)}`).toEqual(want.shape);
    expect(relativeError(got.values, want.values), `${kernel}: ${label(c)}`).toBeLessThan(1e-4);
  }
}

beforeAll(async () => {
  registerWasmTrainingKernels();
  registerWasmTrainingKernels(); // idempotent
  await tf.setBackend('wasm');
  await tf.ready();
});

describe('registerWasmTrainingKernels', () => {
  it('registers every training kernel for wasm', () => {
    for (const name of WASM_TRAINING_KERNELS) expect(tf.getKernel(name, 'wasm'), name).toBeDefined();
  });
});

describe('Conv2DBackpropFilter / Conv2DBackpropInput on wasm match cpu', () => {
  denseCases.forEach((c, i) => {
    it(label(c), async () => checkCase(c, false, 100 + 10 * i));
  });
});

describe('DepthwiseConv2dNativeBackpropFilter / ...BackpropInput on wasm match cpu', () => {
  depthwiseCases.forEach((c, i) => {
    it(`${label(c)}`, async () => checkCase(c, true, 500 + 10 * i));
  });
});

describe('unsupported attributes', () => {
  it('rejects dilations other than 1 and NCHW with a clear message', async () => {
    await tf.setBackend('wasm');
    const x = tf.ones([1, 5, 5, 2]);
    const dy = tf.ones([1, 1, 1, 2]);
    expect(() =>
      tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x, dy }, {
        strides: 1, pad: 'valid', dilations: 2, filterShape: [3, 3, 2, 1],
      }),
    ).toThrow(/dilations 1 only/);
    expect(() =>
      tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, {
        strides: 1, pad: 'valid', dataFormat: 'NCHW', filterShape: [3, 3, 2, 2],
      }),
    ).toThrow(/NHWC only/);
    tf.dispose([x, dy]);
  });
});

// ---------------------------------------------------------------------------------------------
// A tiny MobileNetV2-like net: conv 3×3/2 → depthwise 3×3 → BN (inference) → relu6 → conv 1×1.

interface NetValues {
  x: Float32Array;
  w1: Float32Array;
  w2: Float32Array;
  gamma: Float32Array;
  beta: Float32Array;
  w3: Float32Array;
  w4: Float32Array;
}
const shapes = {
  x: [3, 9, 9, 3],
  w1: [3, 3, 3, 8],
  w2: [3, 3, 8, 2],
  gamma: [16],
  beta: [16],
  w3: [1, 1, 16, 6],
  w4: [3, 3, 6, 4],
} as const;

function netValues(): NetValues {
  return Object.fromEntries(
    Object.entries(shapes).map(([k, s], i) => [k, randoms(size([...s]), 900 + i)]),
  ) as unknown as NetValues;
}

/** Gradients of a scalar loss w.r.t. every weight, on the current backend. */
function netGrads(v: NetValues): { vars: tf.Variable[]; grads: tf.NamedTensorMap; loss: tf.Scalar } {
  const vars = (['w1', 'w2', 'gamma', 'beta', 'w3', 'w4'] as const).map((k) => {
    const init = tf.tensor(v[k], [...shapes[k]]);
    const variable = tf.variable(init, true, k);
    init.dispose();
    return variable;
  });
  const [w1, w2, gamma, beta, w3, w4] = vars as [tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R1>, tf.Variable<tf.Rank.R1>, tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R4>];
  const x = tf.tensor4d(v.x, [...shapes.x]);
  const mean = tf.linspace(-0.2, 0.2, 16);
  const variance = tf.linspace(0.5, 1.5, 16);
  const { value, grads } = tf.variableGrads(() => {
    let h = tf.conv2d(x, w1, 2, 'same'); // 5×5×8
    h = tf.depthwiseConv2d(h, w2, 1, 'same'); // 5×5×16
    h = tf.batchNorm4d(h, mean, variance, beta, gamma, 1e-3);
    h = tf.relu6(h);
    h = tf.conv2d(h, w3, 1, 'valid'); // 5×5×6
    h = tf.conv2d(h, w4, 1, 'valid'); // 3×3×4
    return tf.sum(tf.square(h));
  });
  tf.dispose([x, mean, variance]);
  return { vars, grads, loss: value };
}

async function gradsOn(backend: 'cpu' | 'wasm', v: NetValues): Promise<Record<string, Float32Array>> {
  await tf.setBackend(backend);
  const { vars, grads, loss } = netGrads(v);
  const out = Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array]));
  tf.dispose([...vars, ...Object.values(grads), loss]);
  return out;
}

describe('end to end on wasm', () => {
  it('gradients of a conv → depthwise → BN → relu6 → conv net equal those on cpu', async () => {
    const v = netValues();
    const want = await gradsOn('cpu', v);
    const got = await gradsOn('wasm', v);
    expect(Object.keys(got).sort()).toEqual(['beta', 'gamma', 'w1', 'w2', 'w3', 'w4']);
    for (const k of Object.keys(want)) {
      expect(relativeError(got[k]!, want[k]!), k).toBeLessThan(1e-4);
    }
  });

  it('does not leak tensors or wasm buffers over repeated gradient computations', async () => {
    await tf.setBackend('wasm');
    const v = netValues();
    const step = (): void => {
      const { vars, grads, loss } = netGrads(v);
      tf.dispose([...vars, ...Object.values(grads), loss]);
    };
    step();
    const before = tf.memory();
    for (let i = 0; i < 5; i++) step();
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.numBytes).toBe(before.numBytes);
  });
});
