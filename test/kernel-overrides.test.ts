/**
 * finetune's replacement kernels: off with `kernels: 'tfjs'` / FINETUNE_KERNELS=tfjs, and checked
 * against tfjs when a backend starts, a failing one giving way to tfjs's kernel with a warning.
 */
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine, probeBackends } from '../src/engine/backend.js';
import { kernelsInUse, replaceKernelForTesting, replacementsFor } from '../src/engine/kernel-overrides.js';
import { RELU6_GRAD, relu6 } from '../src/engine/relu6.js';
import { cpuOutput, cpuValues, registeredKernel, wasmFloats, type WasmBackend } from '../src/engine/tfjs-internals.js';
import { UsageError } from '../src/errors.js';

/** tfjs-backend-wasm's own kernels, as registered before finetune replaced any (importing backend.js registers them). */
const tfjsWasm = new Map(replacementsFor('wasm').map((r) => [r.kernelName, registeredKernel(r.kernelName, 'wasm')]));

const undo: Array<() => void> = [];
afterEach(() => {
  while (undo.length) undo.pop()!();
  vi.restoreAllMocks();
  delete process.env.FINETUNE_KERNELS;
});

/** A conv → depthwise conv → relu6 → sum, and its gradients for the filters and the input, computed on `backend`. */
async function gradients(backend: 'wasm' | 'cpu', kernels?: 'tfjs' | 'finetune'): Promise<Float32Array[]> {
  await initEngine(backend, kernels ? { kernels } : {});
  return tf.tidy(() => {
    const x = tf.randomUniform([2, 7, 7, 3], -1, 1, 'float32', 1);
    const w = tf.randomUniform([3, 3, 3, 8], -1, 1, 'float32', 2);
    const d = tf.randomUniform([3, 3, 8, 1], -1, 1, 'float32', 3);
    const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
      tf.sum(relu6(tf.mul(tf.depthwiseConv2d(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same'), c as tf.Tensor4D, 1, 'same'), 3)));
    return tf.grads(f)([x, w, d]).map((g) => g.dataSync() as Float32Array);
  });
}

function maxRelativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

let reference: Float32Array[];
beforeAll(async () => {
  reference = await gradients('cpu', 'tfjs');
});

describe("kernels: 'tfjs'", () => {
  it("registers none of finetune's kernels: tfjs's own run, and tfjs's cpu kernels where wasm has none", async () => {
    const info = await initEngine('wasm', { kernels: 'tfjs' });
    expect(info.kernels).toEqual({ mode: 'tfjs', failed: [] });
    for (const r of replacementsFor('wasm')) {
      const own = tfjsWasm.get(r.kernelName);
      if (own) expect(registeredKernel(r.kernelName, 'wasm'), r.kernelName).toBe(own);
    }
    expect(kernelsInUse('wasm')).toEqual({
      Conv2DBackpropFilter: 'tfjs-cpu',
      Conv2DBackpropInput: 'tfjs',
      DepthwiseConv2dNativeBackpropFilter: 'tfjs-cpu',
      DepthwiseConv2dNativeBackpropInput: 'tfjs-cpu',
      Slice: 'tfjs',
      SplitV: 'tfjs',
      Sum: 'tfjs',
      Mean: 'tfjs',
      GatherV2: 'tfjs',
      Identity: 'tfjs',
      Add: 'tfjs',
      Multiply: 'tfjs',
      Sub: 'tfjs',
      RealDiv: 'tfjs',
      [RELU6_GRAD]: 'tfjs-ops',
    });
    expect(registeredKernel(RELU6_GRAD, 'wasm')).toBeUndefined();
    // Training still works, with tfjs's arithmetic.
    const grads = await gradients('wasm', 'tfjs');
    grads.forEach((g, i) => expect(maxRelativeError(g, reference[i]!), `gradient ${i}`).toBeLessThan(1e-4));
  });

  it("goes back to finetune's kernels when asked, all passing their start-up check, which leaves no tensor behind", async () => {
    await initEngine('wasm', { kernels: 'tfjs' });
    const before = { tensors: tf.memory().numTensors, data: tf.backend().numDataIds() };
    const info = await initEngine('wasm', { kernels: 'finetune' }); // the first check of wasm's kernels in this process
    expect({ tensors: tf.memory().numTensors, data: tf.backend().numDataIds() }).toEqual(before);
    expect(info.kernels).toEqual({ mode: 'finetune', failed: [] });
    expect(Object.values(kernelsInUse('wasm')).every((k) => k === 'finetune')).toBe(true);
    const cpu = await initEngine('cpu', { kernels: 'finetune' });
    expect(cpu.kernels).toEqual({ mode: 'finetune', failed: [] });
    expect(kernelsInUse('cpu')).toEqual({ [RELU6_GRAD]: 'finetune' });
  });

  it('is also chosen by FINETUNE_KERNELS, which must be finetune or tfjs', async () => {
    process.env.FINETUNE_KERNELS = 'tfjs';
    expect((await initEngine('wasm')).kernels.mode).toBe('tfjs');
    expect(kernelsInUse('wasm').Sum).toBe('tfjs');
    process.env.FINETUNE_KERNELS = 'fast';
    const err = await initEngine('wasm').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toBe("FINETUNE_KERNELS must be finetune or tfjs, got 'fast'.");
    delete process.env.FINETUNE_KERNELS;
    expect((await initEngine('wasm')).kernels.mode).toBe('finetune');
  });
});

describe('the start-up check', () => {
  /** Starts `backend` afresh, so that its kernels are registered and checked again. */
  async function restart(backend: 'wasm' | 'cpu') {
    await initEngine(backend === 'wasm' ? 'cpu' : 'wasm');
    return initEngine(backend);
  }

  it("replaces a wrong Sum with tfjs's own, saying so in one line", async () => {
    const sum = replacementsFor('wasm').find((r) => r.kernelName === tf.Sum)!.kernelFunc;
    const broken: tf.KernelFunc = (args) => {
      const out = sum(args) as tf.TensorInfo;
      wasmFloats(args.backend as WasmBackend, out)[0]! += 1; // off by one in one place
      return out;
    };
    undo.push(replaceKernelForTesting(tf.Sum, 'wasm', broken));
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const info = await restart('wasm');
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toMatch(
      /^finetune: kernel Sum \(wasm\) failed its start-up check \(relative error \S+ against tfjs, on x 2×3×4×5, axis \[0,1,2\], keepDims false\); using tfjs's own kernel instead\.$/,
    );
    expect(info.kernels.failed).toEqual([{ kernel: 'Sum', backend: 'wasm', problem: expect.stringMatching(/relative error/) }]);
    expect(registeredKernel(tf.Sum, 'wasm')).toBe(tfjsWasm.get(tf.Sum));
    expect(Array.from(tf.sum(tf.ones([2, 3, 4, 5]), [0, 1, 2]).dataSync())).toEqual([24, 24, 24, 24, 24]);
  });

  it("replaces a throwing convolution filter gradient with tfjs's cpu kernel, and training still gives tfjs's gradients", async () => {
    const broken: tf.KernelFunc = () => {
      throw new Error('deliberately broken');
    };
    undo.push(replaceKernelForTesting(tf.Conv2DBackpropFilter, 'wasm', broken));
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const info = await restart('wasm');
    expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
      expect.stringMatching(
        /^finetune: kernel Conv2DBackpropFilter \(wasm\) failed its start-up check \(it threw: deliberately broken, on x 2×3×3×4, .*\); using tfjs's cpu kernel \(slower\) instead\.$/,
      ),
    ]);
    // The wrong Sum of the test above is gone (its replacement is the shipped one again).
    expect(info.kernels.failed.map((f) => f.kernel)).toEqual(['Conv2DBackpropFilter']);
    expect(kernelsInUse('wasm').Conv2DBackpropFilter).toBe('tfjs-cpu');
    const grads = await gradients('wasm');
    grads.forEach((g, i) => expect(maxRelativeError(g, reference[i]!), `gradient ${i}`).toBeLessThan(1e-4));
  });

  it("drops a wrong ReLU6 gradient on cpu, which then runs tfjs's ops", async () => {
    const relu6Cpu = replacementsFor('cpu')[0]!;
    const passEverything: tf.KernelFunc = ({ inputs, backend }) =>
      cpuOutput(backend as tf.KernelBackend, inputs.dy!.shape, cpuValues(backend as tf.KernelBackend, inputs.dy!).slice());
    undo.push(replaceKernelForTesting(relu6Cpu.kernelName, 'cpu', passEverything));
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const info = await restart('cpu');
    expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
      expect.stringMatching(/^finetune: kernel FinetuneRelu6Grad \(cpu\) failed its start-up check \(.*\); using tfjs ops instead\.$/),
    ]);
    expect(info.kernels.failed).toEqual([{ kernel: RELU6_GRAD, backend: 'cpu', problem: expect.any(String) }]);
    expect(registeredKernel(RELU6_GRAD, 'cpu')).toBeUndefined();
    const x = tf.tensor1d([-1, 0, 3, 6, 7]);
    expect(Array.from(tf.grad((v: tf.Tensor) => tf.sum(relu6(v)))(x).dataSync())).toEqual([0, 1, 1, 1, 0]);
  });
});

describe('on WebGPU', () => {
  it("finetune's filter gradients pass their start-up check", async (ctx) => {
    const webgpu = (await probeBackends({ thorough: true })).find((p) => p.name === 'webgpu')!;
    if (!webgpu.requestable) ctx.skip(`no WebGPU here (${webgpu.detail})`);
    const info = await initEngine('webgpu');
    expect(info.kernels).toEqual({ mode: 'finetune', failed: [] });
    expect(kernelsInUse('webgpu')).toEqual({ Conv2DBackpropFilter: 'finetune', DepthwiseConv2dNativeBackpropFilter: 'finetune' });
    await initEngine('webgpu', { kernels: 'tfjs' });
    expect(kernelsInUse('webgpu')).toEqual({ Conv2DBackpropFilter: 'tfjs', DepthwiseConv2dNativeBackpropFilter: 'tfjs' });
  });
});
