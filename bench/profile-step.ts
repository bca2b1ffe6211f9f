/**
 * Per-kernel profile of one training step (forward, backward and an Adam update of every trainable
 * weight) of MobileNetV2 (α = 1.0) and VGG16 with finetune's head (global average pool → dense),
 * random weights and random inputs, on one tfjs backend; with and without finetune's WebGPU
 * training kernels (src/engine/webgpu-kernels.ts).
 *
 *   npx vite-node bench/profile-step.ts -- --backend wasm|webgpu|cpu [options]
 *
 *   --backend B      wasm (default), webgpu or cpu. webgpu also takes a CPU adapter such as
 *                    lavapipe (whose timings are a CPU emulation, not a GPU's).
 *   --model M        mobilenetv2, vgg16 or both (default both)
 *   --size N         input size in pixels (default 224)
 *   --batch N        batch size (default 16)
 *   --kernels K      on, off or both (default both): finetune's WebGPU kernels registered or not
 *                    (webgpu only; the wasm backend always gets its training kernels, it has none)
 *   --steps N        timed steps after the warm-up step (default 3)
 *   --top N          kernel rows to print (default 30; 0 = all)
 *   --by-shape K,…   also break these kernels' time down by input shapes (default
 *                    Conv2DBackpropFilter,DepthwiseConv2dNativeBackpropFilter; '' for none)
 *   --train-bn       BatchNormalization in training mode (default: inference mode, finetune's default)
 *   --json FILE      also write the results as JSON
 *
 * For each model and kernel setting it prints the wall time per step and images/s (median of the
 * timed steps, unprofiled), then one profiled step: per kernel its total time (GPU timestamps on
 * webgpu, wall time of the kernel call on wasm/cpu), calls, share, and the number of tfjs kernels
 * (and, on webgpu, GPU dispatches) per step.
 *
 * Self-contained so ../shared/tools/gpu-pack can bundle it into one CommonJS file: no top-level
 * await, no import.meta, nothing from src/engine/backend.ts (which uses import.meta.url); the
 * backends are loaded with literal dynamic imports, so esbuild bundles tfjs-backend-webgpu and
 * leaves `webgpu` (native, external) to require().
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { mobileNetV2 } from '../src/backbones/mobilenet_v2.js';
import { vgg16 } from '../src/backbones/vgg16.js';
import { registerWasmTrainingKernels } from '../src/engine/wasm-kernels.js';
import { registerWebgpuTrainingKernels, unregisterWebgpuTrainingKernels } from '../src/engine/webgpu-kernels.js';
import { attachHead } from '../src/train/head.js';

type Backend = 'webgpu' | 'wasm' | 'cpu';
type ModelName = 'mobilenetv2' | 'vgg16';

interface Options {
  backend: Backend;
  models: ModelName[];
  size: number;
  batch: number;
  kernels: ('on' | 'off')[];
  steps: number;
  top: number;
  trainBn: boolean;
  byShape: string[];
  json?: string;
}

interface KernelRow {
  name: string;
  ms: number;
  calls: number;
}

interface ShapeRow {
  kernel: string;
  inputShapes: string;
  ms: number;
  calls: number;
}

interface Result {
  model: ModelName;
  kernels: 'on' | 'off';
  backend: string;
  size: number;
  batch: number;
  stepMs: number[];
  medianStepMs: number;
  imagesPerSecond: number;
  profiledStepWallMs: number;
  kernelMsTotal: number;
  tfjsKernelsPerStep: number;
  gpuDispatchesPerStep?: number;
  rows: KernelRow[];
  shapeRows: ShapeRow[];
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv.filter((a) => a !== '--'),
    options: {
      backend: { type: 'string', default: 'wasm' },
      model: { type: 'string', default: 'both' },
      size: { type: 'string', default: '224' },
      batch: { type: 'string', default: '16' },
      kernels: { type: 'string', default: 'both' },
      steps: { type: 'string', default: '3' },
      top: { type: 'string', default: '30' },
      'train-bn': { type: 'boolean', default: false },
      'by-shape': { type: 'string', default: `${tf.Conv2DBackpropFilter},${tf.DepthwiseConv2dNativeBackpropFilter}` },
      json: { type: 'string' },
    },
    strict: true,
  });
  const fail = (msg: string): never => {
    console.error(`profile-step: ${msg}`);
    process.exit(2);
  };
  const backend = values.backend as Backend;
  if (!['webgpu', 'wasm', 'cpu'].includes(backend)) fail(`--backend must be webgpu, wasm or cpu, got ${backend}`);
  const model = values.model!;
  if (!['mobilenetv2', 'vgg16', 'both'].includes(model)) fail(`--model must be mobilenetv2, vgg16 or both, got ${model}`);
  const kernels = values.kernels!;
  if (!['on', 'off', 'both'].includes(kernels)) fail(`--kernels must be on, off or both, got ${kernels}`);
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer ≥ ${min}, got ${v}`);
    return n;
  };
  return {
    backend,
    models: model === 'both' ? ['mobilenetv2', 'vgg16'] : [model as ModelName],
    size: int('size', values.size!, 32),
    batch: int('batch', values.batch!, 1),
    // Off first: a later "on" run then also shows what registering changes in one process.
    kernels: backend !== 'webgpu' ? ['on'] : kernels === 'both' ? ['off', 'on'] : [kernels as 'on' | 'off'],
    steps: int('steps', values.steps!, 1),
    top: int('top', values.top!, 0),
    trainBn: values['train-bn']!,
    byShape: values['by-shape']!.split(',').filter((k) => k.length > 0),
    json: values.json,
  };
}

// ---------------------------------------------------------------------------------------------
// Backends.

/** The parts of the webgpu package and of the WebGPU API used here. */
interface WebgpuModule {
  create(options: string[]): { requestAdapter(o?: object): Promise<{ info?: Record<string, string> } | null> };
  globals: Record<string, unknown>;
}

/** Starts the backend; returns a description of it. */
async function startBackend(name: Backend): Promise<string> {
  if (name === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
    registerWasmTrainingKernels(); // tfjs-backend-wasm has no conv gradients of its own
  } else if (name === 'webgpu') {
    process.env.XDG_RUNTIME_DIR ??= '/tmp';
    const webgpu = (await import('webgpu')) as unknown as WebgpuModule;
    for (const [k, v] of Object.entries(webgpu.globals)) {
      if (!(k in globalThis)) Object.defineProperty(globalThis, k, { value: v, writable: true, configurable: true });
    }
    const gpu = webgpu.create([]);
    const g = globalThis as { navigator?: { gpu?: unknown } };
    // tfjs-backend-webgpu registers itself at import only if navigator.gpu exists.
    if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true, writable: true });
    else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    await import('@tensorflow/tfjs-backend-webgpu');
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('no WebGPU adapter');
    const info = adapter.info ?? {};
    const adapterName = [info.description, info.device, info.vendor].find((s) => s) ?? 'unnamed adapter';
    if (!(await tf.setBackend('webgpu'))) throw new Error('the webgpu backend failed to start');
    await tf.ready();
    return `webgpu on ${adapterName}`;
  }
  if (!(await tf.setBackend(name))) throw new Error(`the ${name} backend failed to start`);
  await tf.ready();
  return name;
}

/** Counts the GPU programs the webgpu backend dispatches (a wrapper on runWebGPUProgram). */
function gpuDispatchCounter(): { count: () => number; reset: () => void } | undefined {
  const backend = tf.backend() as unknown as { runWebGPUProgram?: (...a: unknown[]) => unknown };
  if (tf.getBackend() !== 'webgpu' || typeof backend.runWebGPUProgram !== 'function') return undefined;
  let n = 0;
  const original = backend.runWebGPUProgram;
  backend.runWebGPUProgram = function (this: unknown, ...a: unknown[]) {
    n++;
    return original.apply(this, a);
  };
  return { count: () => n, reset: () => void (n = 0) };
}

// ---------------------------------------------------------------------------------------------
// The step.

function buildModel(name: ModelName, size: number): tf.LayersModel {
  const backbone = name === 'mobilenetv2' ? mobileNetV2({ alpha: 1.0, imageSize: size }) : vgg16({ imageSize: size });
  return attachHead(backbone, { numClasses: 10, dropout: 0, seed: 1 });
}

interface Step {
  run: () => Promise<void>;
  dispose: () => void;
}

function makeStep(model: tf.LayersModel, batch: number, size: number, trainBn: boolean): Step {
  const optimizer: tf.Optimizer = tf.train.adam(1e-4);
  const x = tf.randomUniform([batch, size, size, 3], -1, 1);
  const labels = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 10), 'int32'), 10);
  const vars = model.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read());
  return {
    run: async () => {
      const loss = tf.tidy(() => {
        const { value, grads } = tf.variableGrads(() => {
          const probs = model.apply(x, { training: trainBn }) as tf.Tensor2D;
          return tf.losses.softmaxCrossEntropy(labels, tf.log(tf.add(probs, 1e-7))) as tf.Scalar;
        }, vars);
        optimizer.applyGradients(grads);
        return value;
      });
      await loss.data();
      loss.dispose();
    },
    dispose: () => {
      optimizer.dispose();
      tf.dispose([x, labels]);
    },
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function profileModel(name: ModelName, kernels: 'on' | 'off', opts: Options, backendDetail: string): Promise<Result> {
  if (opts.backend === 'webgpu') {
    if (kernels === 'on') registerWebgpuTrainingKernels();
    else unregisterWebgpuTrainingKernels();
  }
  const model = buildModel(name, opts.size);
  const step = makeStep(model, opts.batch, opts.size, opts.trainBn);
  const dispatches = gpuDispatchCounter();

  await step.run(); // warm-up: shader compiles, Adam's slots
  const stepMs: number[] = [];
  dispatches?.reset();
  for (let i = 0; i < opts.steps; i++) {
    const t0 = performance.now();
    await step.run();
    stepMs.push(performance.now() - t0);
  }
  const gpuDispatchesPerStep = dispatches ? Math.round(dispatches.count() / opts.steps) : undefined;

  const t0 = performance.now();
  const profile = await tf.profile(() => step.run());
  const profiledStepWallMs = performance.now() - t0;
  // tf.profile also lists custom-gradient scopes (e.g. fusedConv2d__op) whose time includes the
  // kernels inside them, which it lists too: keep registered kernels only, so nothing counts twice.
  const backendName = tf.getBackend();
  const kernelCalls = profile.kernels.filter((k) => tf.getKernel(k.name, backendName) != null);
  const byName = new Map<string, KernelRow>();
  for (const k of kernelCalls) {
    const row = byName.get(k.name) ?? { name: k.name, ms: 0, calls: 0 };
    row.ms += Number(k.kernelTimeMs) || 0;
    row.calls++;
    byName.set(k.name, row);
  }
  const rows = [...byName.values()].sort((a, b) => b.ms - a.ms || b.calls - a.calls);
  const byShape = new Map<string, ShapeRow>();
  for (const k of kernelCalls) {
    if (!opts.byShape.includes(k.name)) continue;
    const inputShapes = k.inputShapes.map((sh) => (sh ?? []).join('×')).join(', ');
    const key = `${k.name} ${inputShapes}`;
    const row = byShape.get(key) ?? { kernel: k.name, inputShapes, ms: 0, calls: 0 };
    row.ms += Number(k.kernelTimeMs) || 0;
    row.calls++;
    byShape.set(key, row);
  }
  const shapeRows = [...byShape.values()].sort((a, b) => b.ms - a.ms);

  step.dispose();
  model.dispose();
  const medianStepMs = median(stepMs);
  return {
    model: name,
    kernels,
    backend: backendDetail,
    size: opts.size,
    batch: opts.batch,
    stepMs,
    medianStepMs,
    imagesPerSecond: (opts.batch * 1000) / medianStepMs,
    profiledStepWallMs,
    kernelMsTotal: rows.reduce((a, r) => a + r.ms, 0),
    tfjsKernelsPerStep: kernelCalls.length,
    gpuDispatchesPerStep,
    rows,
    shapeRows,
  };
}

// ---------------------------------------------------------------------------------------------
// Output.

const f1 = (x: number): string => x.toFixed(1);

function printResult(r: Result, top: number): void {
  const label = r.backend.startsWith('webgpu') ? `, finetune webgpu kernels ${r.kernels}` : '';
  console.log(`\n== ${r.model} ${r.size}px, batch ${r.batch}, ${r.backend}${label}`);
  console.log(
    `step ${f1(r.medianStepMs)} ms (median of ${r.stepMs.length}: ${r.stepMs.map(f1).join(', ')}), ${r.imagesPerSecond.toFixed(2)} img/s`,
  );
  console.log(
    `profiled step: ${f1(r.profiledStepWallMs)} ms wall, kernels ${f1(r.kernelMsTotal)} ms; ` +
      `${r.tfjsKernelsPerStep} tfjs kernels` +
      (r.gpuDispatchesPerStep !== undefined ? `, ${r.gpuDispatchesPerStep} GPU dispatches per step` : ''),
  );
  const shown = top > 0 ? r.rows.slice(0, top) : r.rows;
  console.log(`${'kernel'.padEnd(40)} ${'ms'.padStart(10)} ${'calls'.padStart(6)} ${'share'.padStart(6)}`);
  for (const row of shown) {
    const share = r.kernelMsTotal > 0 ? `${((100 * row.ms) / r.kernelMsTotal).toFixed(1)}%` : '-';
    console.log(`${row.name.padEnd(40)} ${f1(row.ms).padStart(10)} ${String(row.calls).padStart(6)} ${share.padStart(6)}`);
  }
  if (shown.length < r.rows.length) {
    const rest = r.rows.slice(shown.length);
    console.log(
      `${`(${rest.length} more)`.padEnd(40)} ${f1(rest.reduce((a, x) => a + x.ms, 0)).padStart(10)} ${String(rest.reduce((a, x) => a + x.calls, 0)).padStart(6)}`,
    );
  }
}

function printShapes(r: Result, top: number): void {
  for (const kernel of new Set(r.shapeRows.map((x) => x.kernel))) {
    const all = r.shapeRows.filter((x) => x.kernel === kernel);
    const shown = top > 0 ? all.slice(0, top) : all;
    console.log(`${kernel} by input shapes:`);
    for (const x of shown) console.log(`  ${x.inputShapes.padEnd(48)} ${f1(x.ms).padStart(10)} ${String(x.calls).padStart(6)}`);
    if (shown.length < all.length) console.log(`  (${all.length - shown.length} more shapes)`);
  }
}

function printComparison(off: Result, on: Result): void {
  console.log(`\n== ${on.model}: shipped kernels → finetune webgpu kernels`);
  console.log(`step ${f1(off.medianStepMs)} → ${f1(on.medianStepMs)} ms, ${off.imagesPerSecond.toFixed(2)} → ${on.imagesPerSecond.toFixed(2)} img/s`);
  console.log(`kernel time ${f1(off.kernelMsTotal)} → ${f1(on.kernelMsTotal)} ms; GPU dispatches ${off.gpuDispatchesPerStep} → ${on.gpuDispatchesPerStep}`);
  for (const name of [tf.Conv2DBackpropFilter, tf.DepthwiseConv2dNativeBackpropFilter]) {
    const a = off.rows.find((r) => r.name === name);
    const b = on.rows.find((r) => r.name === name);
    if (a || b) console.log(`  ${name}: ${f1(a?.ms ?? 0)} → ${f1(b?.ms ?? 0)} ms over ${b?.calls ?? a?.calls} calls`);
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const backendDetail = await startBackend(opts.backend);
  console.log(
    `tfjs ${tf.version.tfjs}, ${backendDetail}; ${opts.models.join(', ')} at ${opts.size}px, batch ${opts.batch}; ` +
      `BatchNormalization in ${opts.trainBn ? 'training' : 'inference'} mode`,
  );
  if (/llvmpipe|lavapipe|swiftshader/i.test(backendDetail)) {
    console.log('note: a CPU WebGPU adapter: its timings emulate a GPU on the CPU and only loosely indicate GPU behaviour');
  }
  const results: Result[] = [];
  for (const model of opts.models) {
    const mine: Partial<Record<'on' | 'off', Result>> = {};
    for (const kernels of opts.kernels) {
      const r = await profileModel(model, kernels, opts, backendDetail);
      printResult(r, opts.top);
      printShapes(r, opts.top);
      results.push(r);
      mine[kernels] = r;
    }
    if (mine.off && mine.on) printComparison(mine.off, mine.on);
  }
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ options: opts, results }, null, 2));
}

main().then(
  () => process.exit(0), // Dawn keeps the event loop alive
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(1);
  },
);
