/**
 * Backend selection. On the CI/dev machines this project is built on there is no GPU and neither
 * tfjs-node package installs, so `auto` must land on wasm; tests that depend on that are skipped
 * where a better backend exists.
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { autoOrder, BACKEND_ORDER, initEngine, probeBackends, type BackendProbe } from '../src/engine/backend.js';
import { FinetuneError, UsageError } from '../src/errors.js';

let probes: BackendProbe[];
const available = (name: string): boolean => probes.find((p) => p.name === name)!.available;

beforeAll(async () => {
  probes = await probeBackends();
});

describe('probeBackends', () => {
  it('lists all four backends in preference order, each with a detail', () => {
    expect(probes.map((p) => p.name)).toEqual(['tensorflow', 'webgpu', 'wasm', 'cpu']);
    expect(BACKEND_ORDER).toEqual(['tensorflow', 'webgpu', 'wasm', 'cpu']);
    for (const p of probes) expect(p.detail.length, p.name).toBeGreaterThan(0);
    expect(available('wasm')).toBe(true);
    expect(available('cpu')).toBe(true);
    expect(probes.find((p) => p.name === 'wasm')!.detail).toMatch(/^wasm, (no )?SIMD, \d+ threads?$/);
  });

  it('says how to install tfjs-node when it is absent', () => {
    const p = probes.find((x) => x.name === 'tensorflow')!;
    if (!p.available) expect(p.detail).toMatch(/@tensorflow\/tfjs-node/);
  });
});

describe('initEngine', () => {
  it('auto picks the first available backend, and says what it is', async () => {
    const info = await initEngine('auto');
    // TensorFlow on the CPU yields to a real GPU through WebGPU (autoOrder).
    const order = autoOrder(probes.find((p) => p.name === 'tensorflow')?.device);
    const best = order.map((name) => probes.find((p) => p.name === name)!).find((p) => p.available)!;
    expect(info.backend).toBe(best.name);
    expect(tf.getBackend()).toBe(info.backend);
    expect(info.probes.at(-1)).toMatchObject({ name: info.backend, available: true, detail: info.detail });
    expect(info.probes.map((p) => p.name)).toEqual(order.slice(0, info.probes.length));
  });

  it('auto picks wasm on a machine without GPU or tfjs-node', async (ctx) => {
    if (available('tensorflow') || available('webgpu')) ctx.skip();
    const info = await initEngine('auto');
    expect(info.backend).toBe('wasm');
    const threads = availableParallelism();
    expect(info.detail).toBe(`wasm, SIMD, ${threads} thread${threads === 1 ? '' : 's'}`);
    expect(info.probes.map((p) => [p.name, p.available])).toEqual([
      ['tensorflow', false],
      ['webgpu', false],
      ['wasm', true],
    ]);
  });

  it('is idempotent', async () => {
    const a = await initEngine('auto');
    const b = await initEngine('auto');
    expect(b).toEqual(a);
    const [c, d] = await Promise.all([initEngine(), initEngine('auto')]);
    expect(c.backend).toBe(a.backend);
    expect(d.backend).toBe(a.backend);
  });

  it('makes wasm able to train convolutions', async () => {
    const info = await initEngine('wasm');
    expect(info.backend).toBe('wasm');
    const x = tf.ones([2, 6, 6, 4]) as tf.Tensor4D;
    const w = tf.ones([3, 3, 4, 1]) as tf.Tensor4D;
    const k = tf.ones([1, 1, 4, 2]) as tf.Tensor4D;
    const [dw, dk] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      tf.conv2d(tf.depthwiseConv2d(x, a as tf.Tensor4D, 1, 'same'), b as tf.Tensor4D, 1, 'valid').sum(),
    )([w, k]);
    // Over ones, each filter tap's gradient counts the pixels it reads inside the image, times the 2
    // output channels: the corner tap reads 5×5 per image (2 images), the centre tap 6×6.
    expect(dw!.shape).toEqual([3, 3, 4, 1]);
    expect(Array.from(dw!.dataSync().slice(0, 4))).toEqual([100, 100, 100, 100]);
    expect(Array.from(dw!.dataSync().slice(16, 20))).toEqual([144, 144, 144, 144]);
    expect(dk!.shape).toEqual([1, 1, 4, 2]);
    tf.dispose([x, w, k, dw!, dk!]);
  });

  it('starts cpu on request', async () => {
    const info = await initEngine('cpu');
    expect(info).toMatchObject({ backend: 'cpu' });
    expect(info.probes).toHaveLength(1);
    expect(tf.getBackend()).toBe('cpu');
    expect(tf.add(1, 2).arraySync()).toBe(3);
    await initEngine('auto'); // back to the best one for the tests below
    expect(tf.getBackend()).not.toBe('cpu');
  });

  it('refuses an explicit tensorflow request it cannot meet, saying why', async (ctx) => {
    if (available('tensorflow')) ctx.skip();
    const before = tf.getBackend();
    const err = await initEngine('tensorflow').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FinetuneError);
    expect((err as Error).message).toMatch(/tensorflow backend can't be used here: .*not installed/);
    expect((err as Error).message).toMatch(/@tensorflow\/tfjs-node-gpu/);
    expect(tf.getBackend()).toBe(before); // no silent switch
  });

  it('refuses an explicit webgpu request it cannot meet, saying why', async (ctx) => {
    if (available('webgpu')) ctx.skip();
    const err = await initEngine('webgpu').catch((e: unknown) => e);
    if (!(err instanceof Error)) {
      // A CPU-fallback adapter (not available to auto) is still usable on explicit request.
      expect((err as { backend: string }).backend).toBe('webgpu');
      return;
    }
    expect(err).toBeInstanceOf(FinetuneError);
    expect(err.message).toMatch(/webgpu backend can't be used here: (no GPU adapter|not installed)/);
  });

  it('rejects an unknown backend name as a usage error', async () => {
    await expect(initEngine('gpu' as never)).rejects.toBeInstanceOf(UsageError);
  });
});

describe('wasm threads', () => {
  // The WebAssembly module is per process: each thread count runs in a child of its own, on the
  // compiled dist/ (npm test builds it first).
  const repoRoot = fileURLToPath(new URL('..', import.meta.url));
  const script = `
    import * as tf from '@tensorflow/tfjs';
    import { initEngine } from './dist/engine/backend.js';
    const info = await initEngine('wasm');
    const x = tf.randomUniform([4, 32, 32, 32], -1, 1, 'float32', 1);
    const w = tf.randomUniform([3, 3, 32, 64], -1, 1, 'float32', 2);
    const y = tf.conv2d(x, w, 1, 'same');
    const values = await y.data();
    console.log(JSON.stringify({ detail: info.detail, y: Array.from(values.filter((_, i) => i % 61 === 0)) }));
  `;
  const run = (threads: string) => {
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: repoRoot,
      encoding: 'utf8',
      env: { ...process.env, FINETUNE_THREADS: threads },
      timeout: 60_000, // a thread pool that kept the process alive would hit this
    });
    return { status: child.status, signal: child.signal, stderr: child.stderr, out: child.status === 0 ? JSON.parse(child.stdout) : undefined };
  };

  it('runs XNNPACK on the threads asked for, with the same results as one thread, and lets the process exit', () => {
    const one = run('1');
    const two = run('2');
    expect(one).toMatchObject({ status: 0, signal: null });
    expect(two).toMatchObject({ status: 0, signal: null, stderr: '' });
    expect(one.out.detail).toBe('wasm, SIMD, 1 thread');
    expect(two.out.detail).toBe('wasm, SIMD, 2 threads');
    const a = one.out.y as number[];
    const b = two.out.y as number[];
    expect(b.length).toBe(a.length);
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    expect(maxDiff).toBeLessThan(1e-4);
  });

  it('rejects a FINETUNE_THREADS that is not a whole number ≥ 1', () => {
    const bad = run('two');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/FINETUNE_THREADS must be a whole number ≥ 1, got NaN/);
  });
});
