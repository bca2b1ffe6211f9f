/**
 * finetune's Slice, SplitV, Sum and Mean for wasm (src/engine/wasm-fast-paths.ts) give what the cpu
 * backend gives, on the shapes they handle and on those they pass to the shipped kernels.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../src/engine/backend.js';
import { runKernelFunc, tfjsKernel } from '../src/engine/tfjs-internals.js';
import { broadcastLayout, WASM_FAST_PATH_KERNELS } from '../src/engine/wasm-fast-paths.js';
import { randoms, relativeError, size } from './helpers/kernel-check.js';

/** Runs `f` on seeded inputs of `shapes` on wasm and on cpu; returns both results' values. */
async function onBoth(shapes: number[][], f: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[]): Promise<{ wasm: Float32Array[]; cpu: Float32Array[] }> {
  const out: Record<string, Float32Array[]> = {};
  for (const backend of ['wasm', 'cpu'] as const) {
    await initEngine(backend);
    const xs = shapes.map((s, i) => tf.tensor(randoms(size(s), 10 + i), s));
    const ys = f(...xs);
    const list = Array.isArray(ys) ? ys : [ys];
    out[backend] = await Promise.all(list.map(async (y) => (await y.data()) as Float32Array));
    out[`${backend}-shapes`] = list.map((y) => new Float32Array(y.shape));
    tf.dispose([...xs, ...list]);
  }
  expect(out['wasm-shapes']!.map((s) => Array.from(s))).toEqual(out['cpu-shapes']!.map((s) => Array.from(s)));
  return { wasm: out.wasm!, cpu: out.cpu! };
}

/** Σ over adjacent axes `axis` (not the last), adding in index order in float32. */
function sequentialSum(values: Float32Array, shape: number[], axis: number | number[]): Float32Array {
  const axes = (Array.isArray(axis) ? axis : [axis]).sort((a, b) => a - b);
  const outer = size(shape.slice(0, axes[0]));
  const reduced = size(shape.slice(axes[0], axes.at(-1)! + 1));
  const inner = size(shape.slice(axes.at(-1)! + 1));
  const out = new Float32Array(outer * inner);
  for (let p = 0; p < outer; p++) {
    for (let c = 0; c < inner; c++) {
      let acc = 0;
      for (let r = 0; r < reduced; r++) acc = Math.fround(acc + values[(p * reduced + r) * inner + c]!);
      out[p * inner + c] = acc;
    }
  }
  return out;
}

describe('wasm fast paths', () => {
  beforeAll(async () => {
    await initEngine('wasm');
  });

  it('are the kernels registered for wasm', () => {
    for (const name of WASM_FAST_PATH_KERNELS) expect(tf.getKernel(name, 'wasm')?.kernelFunc.name).toMatch(/^(slice|splitV|sum|mean|gatherV2|identity|add|multiply|sub|realDiv)$/);
  });

  it('Slice: contiguous, strided in 2-5 dimensions, and empty slices equal cpu exactly', async () => {
    const cases: Array<[number[], number[], number[]]> = [
      [[1000], [17], [300]],
      [[6, 7], [2, 0], [3, 7]],
      [[6, 7], [1, 2], [4, 3]],
      [[3, 5, 6, 4], [1, 1, 2, 1], [2, 3, 3, 2]],
      [[2, 3, 4, 5, 6], [1, 0, 1, 2, 3], [1, 3, 2, 2, 3]],
      [[4, 4], [1, 1], [0, 2]],
    ];
    for (const [shape, begin, sliceSize] of cases) {
      const { wasm, cpu } = await onBoth([shape], (x) => tf.slice(x!, begin, sliceSize));
      expect(Array.from(wasm[0]!)).toEqual(Array.from(cpu[0]!));
    }
  });

  it('SplitV: pieces along the first, a middle and the last axis equal cpu exactly', async () => {
    for (const [shape, sizes, axis] of [
      [[307970], [100, 200000, 7670, 100200], 0],
      [[4, 9, 5], [2, 3, 4], 1],
      [[4, 9, 6], [1, 5], -1],
    ] as Array<[number[], number[], number]>) {
      const { wasm, cpu } = await onBoth([shape], (x) => tf.split(x!, sizes, axis));
      expect(wasm.length).toBe(sizes.length);
      wasm.forEach((piece, i) => expect(Array.from(piece)).toEqual(Array.from(cpu[i]!)));
    }
  });

  it('Sum and Mean over adjacent axes before the last (SIMD) and over others (shipped) match cpu', async () => {
    for (const [shape, axis, keepDims, fast] of [
      [[32, 5, 5, 1280], [0, 1, 2], false, true],
      [[32, 5, 5, 113], [2, 0, 1], true, true],
      [[32, 7, 7, 96], [1, 2], false, true], // a global average pool
      [[16, 7, 3], 0, false, true],
      [[16, 7, 3], 1, true, true],
      [[16, 7, 3], [1, 2], false, false], // ends at the last axis: shipped kernel
      [[16, 7, 3], [0, 2], false, false], // not adjacent: shipped kernel
      [[16, 7, 3], [0, 1, 2], false, false], // everything: shipped kernel
      [[0, 4, 2], 1, false, true],
    ] as Array<[number[], number | number[], boolean, boolean]>) {
      const summed = await onBoth([shape], (x) => tf.sum(x!, axis, keepDims));
      expect(relativeError(summed.wasm[0]!, summed.cpu[0]!)).toBeLessThan(1e-6);
      // The SIMD kernel adds each column's values in order, in float32, as tfjs-wasm's own Sum does.
      if (fast) expect(Array.from(summed.wasm[0]!)).toEqual(Array.from(sequentialSum(randoms(size(shape), 10), shape, axis)));
      const averaged = await onBoth([shape], (x) => tf.mean(x!, axis, keepDims));
      expect(relativeError(averaged.wasm[0]!, averaged.cpu[0]!)).toBeLessThan(1e-6);
    }
  });

  it('GatherV2 along the first axis (rows) and others (shipped) equals cpu exactly, and rejects a bad index', async () => {
    for (const [shape, picks, axis] of [
      [[245, 5, 5, 56], [3, 200, 3, 0, 244], 0],
      [[10, 4], [[1, 2], [9, 0]], 0],
      [[7], [6, 0, 6], 0],
      [[4, 6, 3], [5, 0], 1], // shipped kernel
    ] as Array<[number[], number[] | number[][], number]>) {
      const { wasm, cpu } = await onBoth([shape], (x) => tf.gather(x!, tf.tensor(picks, undefined, 'int32'), axis));
      expect(Array.from(wasm[0]!)).toEqual(Array.from(cpu[0]!));
    }
    await initEngine('wasm');
    const ints = tf.tensor2d([[1, 2], [3, 4], [5, 6]], undefined, 'int32');
    expect(Array.from(await tf.gather(ints, [2, 0]).data())).toEqual([5, 6, 1, 2]);
    expect(() => tf.gather(ints, [3])).toThrow(/GatherV2: the index value 3 is not in \[0, 2\]/);
    ints.dispose();
  });

  it('Add, Multiply, Sub, RealDiv with a broadcast operand equal tfjs-wasm\'s own kernels bit for bit, either operand first', async () => {
    await initEngine('wasm');
    const special = [0, -0, Infinity, -Infinity, NaN, 1e-40, 3e38];
    for (const [aShape, bShape, fast] of [
      [[32, 7, 7, 336], [336], true], // batch norm's scale over MobileNetV2 α=1.0's block 14 input
      [[1, 1, 1, 45], [8, 3, 3, 45], true], // the small operand first, 4 columns and a remainder
      [[5, 7], [1, 7], true],
      [[6, 3], [3], true], // under 4 columns
      [[32, 1, 1, 45], [32, 7, 7, 45], true], // a global average pool's gradient
      [[32, 2], [32, 1], true], // the loss: one value per row
      [[3, 1, 1, 1], [3, 2, 2, 5], true], // one value per image
      [[7, 5], [], true], // a scalar
      [[], [9], true],
      [[2, 1, 3], [2, 4, 3], true],
      [[4, 6], [4, 6], false], // same shape: shipped kernel
      [[4, 1], [1, 6], false], // both broadcast: shipped kernel
      [[2, 3, 4], [2, 1, 1], true], // one value per row of 12
      [[2, 3, 4], [1, 3, 1], false], // ones on both sides: shipped kernel
    ] as Array<[number[], number[], boolean]>) {
      const simd = [[aShape, bShape], [bShape, aShape]].some(([big, small]) => broadcastLayout({ shape: big }, { shape: small }) !== undefined);
      expect(simd, `${aShape} ${bShape} on the SIMD kernel`).toBe(fast);
      const a = tf.tensor(randoms(size(aShape), 3).map((v, i) => (i % 11 === 0 ? special[i % special.length]! : v)), aShape);
      const b = tf.tensor(randoms(size(bShape), 4).map((v, i) => (i % 5 === 0 ? special[(i + 2) % special.length]! : v)), bShape);
      for (const [name, op] of [[tf.Add, tf.add], [tf.Multiply, tf.mul], [tf.Sub, tf.sub], [tf.RealDiv, tf.div]] as const) {
        const ours = op(a, b);
        const [shipped] = runKernelFunc(tfjsKernel(name, 'wasm')!, { a, b });
        expect(ours.shape).toEqual(shipped!.shape);
        // Compared as bits: NaN payloads and the sign of zero included.
        const [x, y] = [new Uint32Array((await ours.data()).buffer), new Uint32Array((await shipped!.data()).buffer)];
        const differs = x.findIndex((bits, i) => bits !== y[i]);
        expect(differs, `${name} ${aShape} ${bShape}: first differing element`).toBe(-1);
        tf.dispose([ours, shipped!]);
      }
      tf.dispose([a, b]);
    }
  });

  it("Mean's gradient (a global average pool's) equals tfjs's (dy · 1) / n bit for bit", async () => {
    await initEngine('wasm');
    const x = tf.tensor(randoms(4 * 3 * 5 * 6, 7), [4, 3, 5, 6]);
    const dy = tf.tensor(randoms(4 * 6, 8).map((v, i) => (i === 0 ? -0 : v)), [4, 6]);
    const ours = tf.grad((t: tf.Tensor) => tf.mean(t, [1, 2]))(x, dy);
    const tfjs = tf.div(tf.mul(tf.reshape(dy, [4, 1, 1, 6]), tf.ones(x.shape)), 15);
    const [a, b] = [new Uint32Array((await ours.data()).buffer), new Uint32Array((await tfjs.data()).buffer)];
    expect(a.findIndex((bits, i) => bits !== b[i])).toBe(-1);
    tf.dispose([x, dy, ours, tfjs]);
  });

  it('Identity shares the data; disposing either tensor leaves the other intact', async () => {
    await initEngine('wasm');
    const x = tf.tensor1d([1, 2, 3]);
    const before = tf.memory().numDataBuffers;
    const y = tf.clone(x);
    expect(tf.memory().numDataBuffers).toBe(before);
    x.dispose();
    expect(Array.from(await y.data())).toEqual([1, 2, 3]);
    y.dispose();
  });

  it('does not leak tensors or wasm memory over repeated calls', async () => {
    await initEngine('wasm');
    const x = tf.tensor(randoms(32 * 5 * 5 * 64, 5), [32, 5, 5, 64]);
    const flat = tf.tensor(randoms(50_000, 6), [50_000]);
    const round = () =>
      tf.tidy(() =>
        [
          tf.sum(x, [0, 1, 2]),
          tf.mean(x, [1, 2]),
          ...tf.split(flat, [10_000, 40_000]),
          tf.slice(x, [1, 1, 1, 1], [2, 2, 2, 2]),
          tf.gather(x, [3, 1]),
          tf.clone(x),
          tf.mul(x, x.slice([0, 0, 0, 0], [1, 1, 1, 64])),
        ].forEach((t) => t.dataSync()),
      );
    const buffers = () => (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
    round();
    const before = { ...tf.memory(), buffers: buffers() };
    for (let i = 0; i < 5; i++) round();
    const after = { ...tf.memory(), buffers: buffers() };
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numBytes).toBe(before.numBytes);
    expect(after.buffers).toBe(before.buffers);
    tf.dispose([x, flat]);
  });
});
