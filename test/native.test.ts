/**
 * Native TensorFlow (`@tensorflow/tfjs-node`, `@tensorflow/tfjs-node-gpu`) as finetune's `tensorflow`
 * backend, and the device it says it computes on. How a device is described and where TensorFlow on
 * the CPU comes in auto's order run everywhere; the rest needs tfjs-node installed
 * (`scripts/install-native-tensorflow.sh`) and is skipped, saying so, where it is not — except with
 * FINETUNE_EXPECT_NATIVE=1 (CI, after running that script), where a missing tfjs-node fails.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import type { DoctorReport } from '../src/cli/doctor.js';
import { autoOrder, BACKEND_ORDER, initEngine, probeBackends, type BackendProbe } from '../src/engine/backend.js';
import {
  describeTensorflowDevice,
  nvidiaGpuNames,
  tensorflowBackendFacts,
  type TensorflowBackendLike,
  type TensorflowDeviceFacts,
} from '../src/engine/tensorflow-device.js';
import { makeShapesDataset } from '../src/data/synthetic.js';
import { needShared, repoRoot, sharedPath, TM_WEIGHTS } from './helpers/shared.js';

describe('describeTensorflowDevice', () => {
  const gpuPackage: TensorflowDeviceFacts = { pkg: '@tensorflow/tfjs-node-gpu', usingGpu: false, tfVersion: '2.9.1', nvidiaGpus: [] };

  it('names the GPU TensorFlow computes on', () => {
    const d = describeTensorflowDevice({ ...gpuPackage, usingGpu: true, nvidiaGpus: ['NVIDIA H200'] });
    expect(d).toEqual({
      device: 'GPU',
      summary: 'GPU: NVIDIA H200',
      detail: 'tensorflow (GPU: NVIDIA H200; libtensorflow 2.9.1, tfjs-node-gpu)',
    });
    expect(describeTensorflowDevice({ ...gpuPackage, usingGpu: true, nvidiaGpus: ['NVIDIA A100', 'NVIDIA A100'] }).summary).toBe('GPU: NVIDIA A100');
    expect(describeTensorflowDevice({ ...gpuPackage, usingGpu: true, nvidiaGpus: ['NVIDIA A100', 'NVIDIA T4'] }).summary).toBe(
      'GPU: one of NVIDIA A100, NVIDIA T4',
    );
    expect(describeTensorflowDevice({ ...gpuPackage, usingGpu: true }).summary).toBe('GPU: a CUDA device');
  });

  it('says tfjs-node-gpu runs on the CPU, and why, when TensorFlow found no GPU', () => {
    const noDriver = describeTensorflowDevice(gpuPackage);
    expect(noDriver.device).toBe('CPU');
    expect(noDriver.detail).toBe(
      'tensorflow (CPU: no CUDA GPU visible (no NVIDIA GPU or driver found on this machine); libtensorflow 2.9.1, tfjs-node-gpu)',
    );
    // The case the package name hides: a GPU is there, but not the CUDA and cuDNN libtensorflow needs.
    const mismatch = describeTensorflowDevice({ ...gpuPackage, nvidiaGpus: ['NVIDIA H200'] });
    expect(mismatch.device).toBe('CPU');
    expect(mismatch.summary).toMatch(/^CPU: no CUDA GPU visible to TensorFlow, though the driver shows the NVIDIA H200: /);
    expect(mismatch.summary).toMatch(/CUDA 11\.2 and cuDNN 8\.1 \(libcudart\.so\.11\.0, libcudnn\.so\.8\)/);
    expect(describeTensorflowDevice({ ...gpuPackage, tfVersion: '2.21.0', nvidiaGpus: ['NVIDIA H200'] }).summary).toMatch(
      /libtensorflow 2\.21\.0 needs the CUDA and cuDNN versions it was built for/,
    );
    const hidden = describeTensorflowDevice({ ...gpuPackage, nvidiaGpus: ['NVIDIA H200'], cudaVisibleDevices: '-1' });
    expect(hidden.summary).toBe('CPU: no CUDA GPU visible (CUDA_VISIBLE_DEVICES=-1 hides the NVIDIA H200)');
  });

  it('says tfjs-node is the CPU build, and what would use a GPU that is there', () => {
    const cpu = describeTensorflowDevice({ pkg: '@tensorflow/tfjs-node', usingGpu: false, tfVersion: '2.21.0', nvidiaGpus: [] });
    expect(cpu.detail).toBe("tensorflow (CPU: tfjs-node is TensorFlow's CPU build; libtensorflow 2.21.0, tfjs-node)");
    const withGpu = describeTensorflowDevice({ pkg: '@tensorflow/tfjs-node', usingGpu: false, nvidiaGpus: ['NVIDIA L4'] });
    expect(withGpu.detail).toBe(
      "tensorflow (CPU: tfjs-node is TensorFlow's CPU build; @tensorflow/tfjs-node-gpu (with its CUDA and cuDNN) could use the NVIDIA L4; tfjs-node)",
    );
  });
});

describe('autoOrder', () => {
  it('keeps TensorFlow first where it computes on a GPU or has not started', () => {
    expect(autoOrder('GPU')).toEqual([...BACKEND_ORDER]);
    expect(autoOrder(undefined)).toEqual([...BACKEND_ORDER]);
  });

  it('puts TensorFlow on the CPU after WebGPU, before wasm', () => {
    expect(autoOrder('CPU')).toEqual(['webgpu', 'tensorflow', 'wasm', 'cpu']);
  });
});

// ---------------------------------------------------------------------------------------------
// With tfjs-node installed.

const require = createRequire(import.meta.url);
const installedPackage = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].find((p) => {
  try {
    require.resolve(p);
    return true;
  } catch {
    return false;
  }
});

/** Skips (or, with FINETUNE_EXPECT_NATIVE=1, fails) a test that needs tfjs-node. */
function needNative(ctx: TestContext): void {
  if (installedPackage) return;
  const why = 'neither @tensorflow/tfjs-node nor @tensorflow/tfjs-node-gpu is installed (scripts/install-native-tensorflow.sh installs tfjs-node)';
  if (process.env.FINETUNE_EXPECT_NATIVE === '1') throw new Error(`FINETUNE_EXPECT_NATIVE=1, but ${why}`);
  ctx.skip(why);
}

describe('the tensorflow backend', () => {
  let probes: BackendProbe[];
  let activeDuringProbe: string | undefined;
  const tensorflowProbe = () => probes.find((p) => p.name === 'tensorflow')!;

  beforeAll(async () => {
    await initEngine('wasm');
    probes = await probeBackends(); // loads tfjs-node, which on its own switches to its backend
    activeDuringProbe = tf.getBackend();
  });

  it('is probed without switching the active backend', (ctx) => {
    needNative(ctx);
    expect(activeDuringProbe).toBe('wasm');
  });

  it("reports the device libtensorflow itself says it uses, with the library's version", (ctx) => {
    needNative(ctx);
    const p = tensorflowProbe();
    expect(p.available, p.detail).toBe(true);
    const backend = tf.findBackend('tensorflow') as unknown as TensorflowBackendLike;
    const facts = tensorflowBackendFacts(backend, installedPackage as '@tensorflow/tfjs-node');
    expect(facts.tfVersion).toMatch(/^2\.\d+\.\d+/);
    expect(p.device).toBe(backend.isUsingGpuDevice === true ? 'GPU' : 'CPU');
    expect(p.detail).toBe(describeTensorflowDevice(facts).detail);
    expect(p.detail).toMatch(new RegExp(`^tensorflow \\(${p.device}: .*; libtensorflow ${facts.tfVersion!.replace(/\./g, '\\.')}, tfjs-node`));
    // Without an NVIDIA driver there is nothing CUDA could run on: TensorFlow must say CPU.
    if (nvidiaGpuNames().length === 0) expect(p.device).toBe('CPU');
  });

  it('starts on request, and says the same', async (ctx) => {
    needNative(ctx);
    const info = await initEngine('tensorflow');
    expect(info.backend).toBe('tensorflow');
    expect(tf.getBackend()).toBe('tensorflow');
    expect(info.detail).toBe(tensorflowProbe().detail);
  });

  it('computes the convolutions and gradients training uses as the JavaScript kernels do', async (ctx) => {
    needNative(ctx);
    const run = () =>
      tf.tidy(() => {
        const x = tf.randomUniform([2, 9, 9, 4], -1, 1, 'float32', 3) as tf.Tensor4D;
        const dw = tf.randomUniform([3, 3, 4, 1], -1, 1, 'float32', 4) as tf.Tensor4D;
        const pw = tf.randomUniform([1, 1, 4, 6], -1, 1, 'float32', 5) as tf.Tensor4D;
        const f = (a: tf.Tensor, b: tf.Tensor) =>
          tf.relu6(tf.conv2d(tf.depthwiseConv2d(x, a as tf.Tensor4D, 2, 'same'), b as tf.Tensor4D, 1, 'valid')).square().sum();
        const { value, grads } = tf.valueAndGrads(f)([dw, pw]);
        return [value, ...grads].map((t) => Array.from(t.dataSync()));
      });
    await initEngine('tensorflow');
    const native = run();
    await initEngine('cpu');
    const js = run();
    for (let i = 0; i < js.length; i++) {
      const scale = Math.max(...js[i]!.map(Math.abs), 1);
      const diff = Math.max(...js[i]!.map((v, j) => Math.abs(v - native[i]![j]!)));
      expect(diff / scale, `output ${i}`).toBeLessThan(1e-4);
    }
  });

  it('is where auto comes to it: first on a GPU, after a real WebGPU adapter on the CPU', async (ctx) => {
    needNative(ctx);
    const device = tensorflowProbe().device;
    const order = autoOrder(device);
    const expected = order.find((name) => probes.find((p) => p.name === name)!.available)!;
    const info = await initEngine('auto');
    expect(info.backend).toBe(expected);
    expect(info.probes.map((p) => p.name)).toEqual(order.slice(0, info.probes.length));
    if (device === 'CPU' && !probes.find((p) => p.name === 'webgpu')!.available) expect(info.backend).toBe('tensorflow');
  });
});

describe('finetune with --backend tensorflow (child processes)', () => {
  const bin = path.join(repoRoot, 'bin/finetune.js');
  let dir: string;

  beforeAll(async () => {
    if (!installedPackage) return;
    if (!existsSync(path.join(repoRoot, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
    dir = mkdtempSync(path.join(tmpdir(), 'finetune-native-'));
    await makeShapesDataset(path.join(dir, 'data'), { trainPerClass: 8, validPerClass: 4, testCount: 3, size: 48, seed: 7 });
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const finetune = (...args: string[]) => {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: repoRoot, timeout: 240_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('runs both training stages on TensorFlow and logs the device it used', (ctx) => {
    needNative(ctx);
    const out = path.join(dir, 'out');
    const run = finetune(
      path.join(dir, 'data'),
      '--backbone', 'mobilenetv2', '--alpha', '0.35', '--image-size', '48', '--weights', 'none', '--epochs', '1',
      '--fine-tune-epochs', '1', '--batch-size', '8', '--backend', 'tensorflow', '--out', out,
    );
    expect(run.status, run.stderr).toBe(0);
    const logged = /^backend: (.*)$/m.exec(run.stderr + run.stdout)?.[1]; // progress lines go to stderr
    expect(logged).toMatch(/^tensorflow \((CPU|GPU): .*; libtensorflow \d/);
    const config = JSON.parse(readFileSync(path.join(out, 'finetune.json'), 'utf8'));
    expect(config.engine).toEqual({ backend: 'tensorflow', detail: logged });
    expect(readFileSync(path.join(out, 'predictions.csv'), 'utf8').trim().split('\n')).toHaveLength(4);
  }, 300_000);

  it('solves the head (the default stage 1) on TensorFlow to the optimum WebAssembly finds', (ctx) => {
    needNative(ctx);
    needShared(ctx, 'a solved head needs pretrained weights', TM_WEIGHTS);
    const solved = (backend: string) => {
      const out = path.join(dir, `solved-${backend}`);
      const run = finetune(
        path.join(dir, 'data'), '--alpha', '0.35', '--image-size', '48', '--weights', sharedPath(TM_WEIGHTS),
        '--fine-tune-epochs', '0', '--no-cache', '--backend', backend, '--out', out,
      );
      expect(run.status, run.stderr).toBe(0);
      expect(run.stderr).toMatch(/stage 1: head solved on 24 rows/);
      return JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8')) as { loss: number; accuracy: number };
    };
    const [tensorflow, wasm] = [solved('tensorflow'), solved('wasm')];
    // One convex optimum: the backends' float rounding moves it, not the answer.
    expect(Math.abs(tensorflow.loss - wasm.loss)).toBeLessThan(1e-3);
    expect(tensorflow.accuracy).toBe(wasm.accuracy);
  }, 300_000);

  it('doctor reports the device and the order auto tries', (ctx) => {
    needNative(ctx);
    const run = finetune('doctor', '--no-speed', '--json');
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as DoctorReport;
    const tensorflow = report.backends.find((b) => b.name === 'tensorflow')!;
    expect(tensorflow.usable).toBe('yes');
    expect(['CPU', 'GPU']).toContain(tensorflow.device);
    expect(tensorflow.detail.startsWith(`tensorflow (${tensorflow.device}: `)).toBe(true);
    expect(report.autoOrder).toEqual(autoOrder(tensorflow.device));
    const text = finetune('doctor', '--no-speed');
    if (tensorflow.device === 'CPU') expect(text.stdout).toMatch(/TensorFlow computes on the CPU here, so a GPU through WebGPU comes first/);
  }, 120_000);
});
