/**
 * `finetune doctor` and the speed probe behind it. Machines differ (a dev machine may have no
 * WebGPU adapter, or lavapipe, which makes WebGPU usable on request): the tests check what was
 * probed and that it is consistent, never which backends exist beyond wasm and cpu (and, under CI,
 * which installs lavapipe, webgpu), and no timing thresholds.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../src/cli/doctor.js';
import { autoOrder, initEngine } from '../src/engine/backend.js';
import { speedProbes } from '../src/engine/speed-probe.js';
import { inCI, repoRoot } from './helpers/shared.js';
import { webgpuMissingMessage } from './helpers/webgpu.js';

const bin = path.join(repoRoot, 'bin/finetune.js');

function finetune(...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: repoRoot, timeout: 120_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

beforeAll(() => {
  if (!existsSync(path.join(repoRoot, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
});

describe('finetune doctor (child process)', () => {
  it('--no-speed --json lists every backend with what it is or why not, and the auto choice', () => {
    const run = finetune('doctor', '--no-speed', '--json');
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as DoctorReport;
    expect(report.backends.map((b) => b.name)).toEqual(['tensorflow', 'webgpu', 'wasm', 'cpu']);
    // The cache between runs: the test's own temporary folder (test/setup-cache.ts), empty.
    expect(report.cache).toMatchObject({ dir: process.env.FINETUNE_CACHE_DIR, entries: 0, bytes: 0 });
    for (const b of report.backends) {
      expect(b.detail.length, b.name).toBeGreaterThan(0);
      expect(['yes', 'if-asked', 'no'], b.name).toContain(b.usable);
      expect(b.speed, b.name).toBeUndefined();
    }
    const byName = Object.fromEntries(report.backends.map((b) => [b.name, b]));
    expect(byName.wasm!.usable).toBe('yes');
    expect(byName.wasm!.detail).toMatch(/^wasm, (no )?SIMD, \d+ threads?$/);
    expect(byName.cpu!.usable).toBe('yes');
    if (byName.tensorflow!.usable === 'no' && byName.tensorflow!.install) expect(byName.tensorflow!.install).toMatch(/npm install @tensorflow\/tfjs-node/);
    // TensorFlow, where it started, says which device it computes on (what libtensorflow reports).
    const tensorflow = byName.tensorflow!;
    if (tensorflow.usable === 'yes') expect(tensorflow.detail.startsWith(`tensorflow (${tensorflow.device}: `), tensorflow.detail).toBe(true);
    else expect(tensorflow.device).toBeUndefined();

    // WebGPU was probed thoroughly: Dawn answered with an adapter (whose name is reported), or said why not.
    const webgpu = byName.webgpu!;
    // CI installs lavapipe (.ci/webgpu-on-cpu), so there the adapter branches below must run.
    if (inCI()) expect(webgpu.usable, `CI=true: ${webgpuMissingMessage(webgpu.detail)}`).not.toBe('no');
    if (webgpu.usable !== 'no') expect(webgpu.adapter?.name.length).toBeGreaterThan(0);
    if (webgpu.usable === 'if-asked') expect(webgpu.adapter!.cpuFallback).toBe(true);
    if (webgpu.usable === 'no') expect(webgpu.detail).toMatch(/no GPU adapter|not installed|failed|registered no backend/);

    // auto: the first backend usable without asking, in auto's order (TensorFlow on the CPU after WebGPU).
    expect(report.autoOrder).toEqual(autoOrder(tensorflow.device));
    const first = report.autoOrder.map((name) => byName[name]!).find((b) => b.usable === 'yes')!;
    expect(report.auto).toBe(first.name);
    expect(report.backends.filter((b) => b.auto).map((b) => b.name)).toEqual([report.auto]);
    expect(report.speedProbe).toBeNull();
    expect(report.system.tfjs).toBe(tf.version.tfjs);
    // onnxruntime-node is a devDependency: predict's auto takes it unless tfjs has a GPU or native TensorFlow
    // (test/predict-engine.test.ts covers an install without it).
    expect(report.predict.onnxRuntime).toMatchObject({ available: true, version: expect.stringMatching(/^\d+\.\d+\.\d+$/) });
    expect(report.predict.engine).toBe(['wasm', 'cpu'].includes(report.auto!) ? 'onnx' : 'tfjs');
  });

  it('prints a table with the auto choice marked', () => {
    const run = finetune('doctor', '--no-speed');
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout.split('\n');
    expect(lines.find((l) => l.startsWith('backend'))).toMatch(/^backend\s+usable\s+detail$/);
    for (const name of ['tensorflow', 'webgpu', 'wasm', 'cpu']) expect(lines.some((l) => l.startsWith(`${name} `)), name).toBe(true);
    expect(lines.filter((l) => l.startsWith('predict: ONNX Runtime available (onnxruntime-node '))).toHaveLength(1);
    const autoRows = lines.filter((l) => l.endsWith('← auto'));
    expect(autoRows).toHaveLength(1);
    expect(lines.find((l) => l.startsWith('wasm '))).toMatch(/^wasm\s+yes\s+wasm, (no )?SIMD/);
    expect(run.stdout).toMatch(/auto picks (tensorflow|webgpu|wasm)/);
    expect(run.stdout).toMatch(/speed: not measured \(--no-speed\)/);
  });

  it('measures the speed of the backends asked for, within a short budget', () => {
    const run = finetune('doctor', '--json', '--backends', 'wasm', '--seconds', '1', '--alpha', '0.35', '--image-size', '96', '--batch-size', '4');
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as DoctorReport;
    expect(report.speedProbe).toEqual({ model: 'MobileNetV2', alpha: 0.35, imageSize: 96, batchSize: 4, seconds: 1, weights: 'random' });
    const wasm = report.backends.find((b) => b.name === 'wasm')!;
    expect(wasm.speed).toMatchObject({ backend: 'wasm', alpha: 0.35, imageSize: 96 });
    expect(wasm.speed!.imagesPerSecond).toBeGreaterThan(0);
    expect(wasm.speed!.images).toBeGreaterThan(0);
    expect([1, 4]).toContain(wasm.speed!.batchSize);
    expect(report.backends.filter((b) => b.speed).map((b) => b.name)).toEqual(['wasm']);
  });

  it('rejects an unknown backend name as a usage error', () => {
    const run = finetune('doctor', '--backends', 'gpu');
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/--backends takes names from tensorflow, webgpu, wasm, cpu/);
  });
});

describe('speedProbes', () => {
  it('measures each backend in turn, disposes every tensor and restores the active backend', async () => {
    await initEngine('wasm');
    const tensors = tf.memory().numTensors;
    const started: string[] = [];
    const outcomes = await speedProbes(['cpu', 'wasm'], { alpha: 0.35, imageSize: 48, batchSize: 2, seconds: 0.5, onStart: (b) => started.push(b) });
    expect(started).toEqual(['cpu', 'wasm']);
    expect(outcomes.map((o) => o.backend)).toEqual(['cpu', 'wasm']);
    for (const o of outcomes) {
      if (!('result' in o)) throw new Error(`${o.backend}: ${o.error}`);
      const r = o.result;
      expect(r.imagesPerSecond, o.backend).toBeGreaterThan(0);
      // The figure comes from some of the calls made, all at one batch size.
      expect(r.images).toBeLessThanOrEqual(r.calls.reduce((n, c) => n + c.batchSize, 0));
      expect(r.seconds).toBeLessThanOrEqual(r.totalSeconds);
      expect([1, 2]).toContain(r.batchSize);
      expect(r.images % r.batchSize).toBe(0);
    }
    const cpu = outcomes[0]!;
    if ('result' in cpu) expect(cpu.result.firstCallSeconds).toBeUndefined(); // cpu compiles nothing: no warm-up
    const wasm = outcomes[1]!;
    if ('result' in wasm) expect(wasm.result.firstCallSeconds).toBeGreaterThan(0);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(tf.getBackend()).toBe('wasm');
  });
});
